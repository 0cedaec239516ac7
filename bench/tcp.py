"""TCP proxy benchmark: steelyard (1 worker) against HAProxy `mode tcp` (1 thread) and no proxy.

Why: the TCP tier's timing goals (bulk throughput >= 1.5x HAProxy and >= 0.5x direct, connection
rate >= 0.9x HAProxy) only mean something when every system is measured in the same run on the
same machine, so this script starts the backends (iperf3, nginx), HAProxy and steelyard itself,
measures each path in turn and prints ratios. Timing never lives in the test suite.

What: bulk throughput with iperf3 (1 and 8 streams), connection rate with wrk against a tiny
nginx response with `Connection: close`. Results go to stdout (markdown), `tcp.json` and
`tcp.png` under --out. Everything binds to 127.0.0.1.

Run: `make bench-tcp` or `.venv/bin/python bench/tcp.py [--duration 5] [--repeat 1]
[--only direct,haproxy,steelyard] [--out bench/results]`.
"""

from __future__ import annotations

import sys

# bench/http.py is named as the stdlib package `http`, which urllib imports, and Python puts
# the script's directory first on sys.path: moved to the end, it still serves `harness` but no
# longer hides the stdlib.
sys.path.append(sys.path.pop(0))

import argparse
import statistics
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import (
    HAPROXY_MAXCONN,
    HOST,
    BenchError,
    Procs,
    accepts,
    all_of,
    bench_parser,
    busy_machine_warning,
    cpu_seconds,
    fmt_ratio,
    fmt_value,
    free_ports,
    guarded,
    haproxy_maxconn,
    http_ok,
    listening,
    machine_facts,
    measure_all,
    nginx_conf,
    parse_bench_args,
    process_tree,
    require_tools,
    run_iperf,
    run_systems,
    run_wrk,
    start_nginx,
    steelyard_argv,
    steelyard_tcp_config,
    summarize,
    tool_version,
    wait_until,
    write_outputs,
)
from harness import (
    start_haproxy as harness_start_haproxy,
)

SYSTEMS = ("direct", "haproxy", "steelyard")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    backend: str  # which backend the metric runs against: "iperf" or "web"
    streams: int = 0  # iperf3 -P; 0 for the wrk metric
    detail: str = ""  # shown after the unit in the table


METRICS = (
    Metric("bulk_1", "bulk 1 stream", "Gbit/s", "iperf", streams=1),
    Metric("bulk_8", "bulk 8 streams", "Gbit/s", "iperf", streams=8),
    Metric("conn_rate", "connection rate", "req/s", "web", detail="Connection: close"),
)

# (metric keys, peer, minimum steelyard/peer ratio): the goals from the TCP issue.
GOALS = (
    (("bulk_1", "bulk_8"), "haproxy", 1.5),
    (("bulk_1", "bulk_8"), "direct", 0.5),
    (("conn_rate",), "haproxy", 0.9),
)


# systems -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    """The two ports of one path: where iperf3 and wrk connect (or a backend listens)."""

    iperf: int
    web: int


def start_backends(procs: Procs, ports: Ports) -> Ports:
    iperf = procs.start("iperf3-server", ["iperf3", "-s", "-B", HOST, "-p", str(ports.iperf)])
    nginx = start_nginx(procs, "nginx", write_nginx_conf(procs.workdir, ports.web))
    wait_until("iperf3 server", listening(ports.iperf), [iperf])
    wait_until("nginx", accepts(ports.web), [nginx])
    return ports


def write_nginx_conf(workdir: Path, port: int) -> Path:
    server = f"""
    server {{
        listen {HOST}:{port};
        location / {{ return 200 "ok\\n"; }}
    }}"""
    return nginx_conf(workdir, "nginx", server)


def start_haproxy(procs: Procs, backends: Ports, front: Ports) -> Ports:
    # Defaults on purpose (no splice options): the goal is stated against a stock HAProxy.
    sections = f"""
defaults
    mode tcp
    timeout connect 3s
    timeout client 300s
    timeout server 300s

listen iperf
    bind {HOST}:{front.iperf}
    balance roundrobin
    server s1 {HOST}:{backends.iperf}

listen web
    bind {HOST}:{front.web}
    balance roundrobin
    server s1 {HOST}:{backends.web}
"""
    harness_start_haproxy(procs, sections, all_of(listening(front.iperf), accepts(front.web)))
    return front


def write_steelyard_config(workdir: Path, backends: Ports, front: Ports, admin_port: int) -> Path:
    cfg = steelyard_tcp_config(workdir, f"{HOST}:{admin_port}", {
        "iperf": (f"{HOST}:{front.iperf}", f"{HOST}:{backends.iperf}"),
        "web": (f"{HOST}:{front.web}", f"{HOST}:{backends.web}"),
    })  # fmt: skip
    path = workdir / "steelyard.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_steelyard(procs: Procs, backends: Ports, front: Ports, admin_port: int) -> Ports:
    path = write_steelyard_config(procs.workdir, backends, front, admin_port)
    proc = procs.start("steelyard", steelyard_argv(path))
    healthz = f"http://{HOST}:{admin_port}/healthz"
    ready = all_of(listening(front.iperf), accepts(front.web), http_ok(healthz))
    wait_until("steelyard", ready, [proc])
    return front


def check_path(system: str, ports: Ports) -> None:
    """Fail fast with a clear message if a path does not carry a request end to end."""
    url = f"http://{HOST}:{ports.web}/"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read()
    except (OSError, urllib.error.URLError) as exc:
        raise BenchError(f"{system}: GET {url} failed: {exc}") from exc
    if body != b"ok\n":
        raise BenchError(f"{system}: GET {url} returned {body!r}, expected b'ok\\n'")


# load generators ---------------------------------------------------------------------------------


def measure(
    bench: Bench, metric: Metric, system: str, duration: float
) -> tuple[float, dict[str, Any]]:
    ports = bench.paths[system]
    # The proxy's own CPU time per unit of work: on a 2-core machine shared with the load
    # generator and the backend, this shows the proxy's cost even where it is not the limit.
    proxy = bench.procs.find(system)
    pids = process_tree(proxy.popen.pid) if proxy else []
    cpu_before = cpu_seconds(pids)
    if metric.backend == "iperf":
        # iperf3 closes and reopens its listener after every test: a client that comes too
        # soon is reset, through a proxy or not.
        wait_until("iperf3 server", listening(bench.backends.iperf), bench.procs.items)
        value, raw = run_iperf(ports.iperf, metric.streams, duration)
    else:
        value, raw = run_wrk(ports.web, duration)
    if pids:
        raw["proxy_cpu_s"] = cpu_seconds(pids) - cpu_before
    return value, raw


# environment -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return machine_facts(
        haproxy=tool_version(["haproxy", "-v"]),
        haproxy_maxconn=haproxy_maxconn(),
        nginx=tool_version(["nginx", "-v"]),
        iperf3=tool_version(["iperf3", "-v"]),
        wrk=tool_version(["wrk", "-v"]),
    )


def check_tools(systems: list[str]) -> None:
    require_tools(["iperf3", "wrk", "nginx"] + (["haproxy"] if "haproxy" in systems else []))


# run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    procs: Procs
    backends: Ports
    paths: dict[str, Ports]  # system -> where its clients connect, in table order


def start_systems(procs: Procs, systems: list[str]) -> Bench:
    ports = iter(free_ports(7))
    backends = start_backends(procs, Ports(next(ports), next(ports)))
    paths = {"direct": backends}
    if "haproxy" in systems:
        paths["haproxy"] = start_haproxy(procs, backends, Ports(next(ports), next(ports)))
    if "steelyard" in systems:
        front = Ports(next(ports), next(ports))
        paths["steelyard"] = start_steelyard(procs, backends, front, next(ports))
    for system, path in paths.items():
        check_path(system, path)
    return Bench(procs, backends, {s: paths[s] for s in systems})


def run_all(bench: Bench, duration: float, repeat: int) -> list[dict[str, Any]]:
    return measure_all(METRICS, list(bench.paths), repeat, bench.procs,
                       lambda metric, system: measure(bench, metric, system, duration))  # fmt: skip


def cpu_cost(run: dict[str, Any]) -> float | None:
    """Proxy CPU per unit of work: seconds per GB moved, or microseconds per connection."""
    raw = run["raw"]
    cpu = raw.get("proxy_cpu_s")
    if cpu is None:
        return None
    if "received_bytes" in raw:
        return cpu / (raw["received_bytes"] / 1e9) if raw["received_bytes"] else None
    return cpu * 1e6 / raw["requests"] if raw.get("requests") else None


def summarize_cost(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    cells: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        cost = cpu_cost(run)
        if cost is not None:
            cells.setdefault(run["metric"], {}).setdefault(run["system"], []).append(cost)
    return {m: {s: statistics.median(v) for s, v in by.items()} for m, by in cells.items()}


def cost_table(costs: dict[str, dict[str, float]]) -> str:
    head = ["proxy CPU cost", "haproxy", "steelyard", "steelyard/haproxy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in METRICS:
        cell = costs.get(metric.key, {})
        unit = "CPU s per GB" if metric.backend == "iperf" else "CPU us per connection"
        hap, sy = cell.get("haproxy"), cell.get("steelyard")
        row = [f"{metric.label} ({unit})", fmt_value(hap, ""), fmt_value(sy, "")]
        row.append(fmt_ratio(sy / hap) if hap and sy else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ratio(summary: dict[str, dict[str, float]], metric: str, peer: str) -> float | None:
    cell = summary.get(metric, {})
    if "steelyard" not in cell or not cell.get(peer):
        return None
    return cell["steelyard"] / cell[peer]


def evaluate_goals(summary: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    goals = []
    for metrics, peer, minimum in GOALS:
        for metric in metrics:
            r = ratio(summary, metric, peer)
            status = "n/a" if r is None else ("PASS" if r >= minimum else "MISS")
            goals.append(
                {"metric": metric, "peer": peer, "min_ratio": minimum, "ratio": r, "status": status}
            )
    return goals


# output ------------------------------------------------------------------------------------------


def warnings(runs: list[dict[str, Any]], info: dict[str, Any], systems: list[str]) -> list[str]:
    """What a reader of the table should know: failed requests count as no requests in wrk."""
    out = []
    for run in runs:
        raw, where = run["raw"], f"{run['system']} {run['metric']} run {run['rep'] + 1}"
        if raw.get("socket_errors"):
            out.append(f"{where}: wrk socket errors: {raw['socket_errors']}")
        if raw.get("non_2xx"):
            out.append(f"{where}: {raw['non_2xx']} non-2xx responses")
    if busy := busy_machine_warning(info):
        out.append(busy)
    if "haproxy" in systems and info["haproxy_maxconn"] < HAPROXY_MAXCONN:
        out.append(
            f"haproxy maxconn lowered to {info['haproxy_maxconn']} to fit the FD hard limit "
            "(the bench opens at most 50 client connections at a time)"
        )
    return out


def markdown_table(summary: dict[str, dict[str, float]]) -> str:
    head = ["metric", *SYSTEMS, "steelyard/haproxy", "steelyard/direct"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in METRICS:
        cell = summary.get(metric.key, {})
        row = [f"{metric.label} ({', '.join(filter(None, (metric.unit, metric.detail)))})"]
        row += [fmt_value(cell.get(s), metric.unit) for s in SYSTEMS]
        row += [fmt_ratio(ratio(summary, metric.key, p)) for p in ("haproxy", "direct")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def goals_table(goals: list[dict[str, Any]]) -> str:
    labels = {m.key: m.label for m in METRICS}
    lines = ["| goal | ratio | result |", "|---|---|---|"]
    for g in goals:
        goal = f"{labels[g['metric']]}: steelyard >= {g['min_ratio']}x {g['peer']}"
        lines.append(f"| {goal} | {fmt_ratio(g['ratio'])} | {g['status']} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, settings = report["summary"], report["settings"]
    systems = settings["systems"]
    colors = {"direct": "#7f7f7f", "haproxy": "#1f77b4", "steelyard": "#d62728"}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 4))
    for ax, metric in zip(axes, METRICS, strict=True):
        cell = summary.get(metric.key, {})
        names = [s for s in systems if s in cell]
        values = [cell[s] for s in names]
        bars = ax.bar(names, values, color=[colors[s] for s in names])
        ax.bar_label(bars, labels=[fmt_value(v, metric.unit) for v in values], padding=2)
        ax.set_title(metric.label + (f" ({metric.detail})" if metric.detail else ""), fontsize=10)
        ax.set_ylabel(metric.unit)
        ax.margins(y=0.15)
    fig.suptitle(
        f"TCP proxy on 127.0.0.1, {report['machine']['nproc']} cores, "
        f"{settings['duration_s']:g}s per run, median of {settings['repeat']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_bench_args(bench_parser(__doc__, "tcp", SYSTEMS), argv, SYSTEMS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """Measure, then print the tables and write the JSON and the chart."""
    info, started, runs = run_systems(
        args.systems, check_tools, machine_info, start_systems,
        lambda bench: run_all(bench, args.duration, args.repeat),
    )  # fmt: skip
    summary = summarize(runs)
    costs = summarize_cost(runs)
    goals = evaluate_goals(summary)
    report = {
        "timestamp": started,
        "machine": info,
        "settings": {
            "duration_s": args.duration,
            "repeat": args.repeat,
            "systems": args.systems,
            "wrk": "-t1 -c50 -H 'Connection: close'",
            "iperf3_streams": [1, 8],
        },
        "summary": summary,
        "proxy_cpu_cost": costs,
        "goals": goals,
        "runs": runs,
    }
    write_outputs(args.out, "tcp", report, plot)
    print()
    if "haproxy" in args.systems:
        print(f"{info['haproxy']} (nbthread 1, mode tcp, default options)")
    print(
        f"{info['nproc']} cores shared by load generator, proxy and backend; "
        f"{args.duration:g}s per run, median of {args.repeat} run(s) per cell\n"
    )
    print(markdown_table(summary))
    print()
    print(cost_table(costs))
    print()
    print(goals_table(goals))
    for line in warnings(runs, info, args.systems):
        print(f"\nnote: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
