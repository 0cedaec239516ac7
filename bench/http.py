"""HTTP proxy benchmark: steelyard (1 worker) against nginx and HAProxy (1 process each), no proxy.

Why: the HTTP tier's timing goals (at 50 keep-alive connections and 64-byte responses, steelyard
serves >= 1.0x nginx's requests/s with a p99 latency <= 1.3x nginx's) only mean something when
every system is measured in the same run on the same machine, so this script starts the backend
(nginx), the peers and steelyard itself, measures each path in turn and prints ratios. Timing
never lives in the test suite.

What: wrk with keep-alive at 50 and 200 connections, for a 64-byte and a 16 KiB response:
requests/s, p99 latency and the proxy's CPU time per request. Results go to stdout (markdown),
`http.json` and `http.png` under --out. Everything binds to 127.0.0.1.

Run: `make bench-http` or `.venv/bin/python bench/http.py [--duration 5] [--repeat 1]
[--only direct,nginx,haproxy,steelyard] [--out bench/results]`.
"""

from __future__ import annotations

import sys

# This file's name is the stdlib package `http`, which urllib imports, and Python puts the
# script's directory first on sys.path: moved to the end, it still serves `harness` but no
# longer hides the stdlib.
sys.path.append(sys.path.pop(0))

import argparse
import re
import statistics
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
    free_ports,
    guarded,
    haproxy_maxconn,
    http_ok,
    machine_facts,
    nginx_conf,
    parse_bench_args,
    process_tree,
    require_tools,
    rotations,
    run_systems,
    run_tool,
    start_nginx,
    steelyard_argv,
    tool_version,
    wait_until,
    write_outputs,
)
from harness import (
    start_haproxy as harness_start_haproxy,
)

SYSTEMS = ("direct", "nginx", "haproxy", "steelyard")
PROXIES = ("nginx", "haproxy", "steelyard")
BODIES = {"/64": 64, "/16k": 16384}  # backend path -> exact body size in bytes
WARMUP_S = 1.0


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    connections: int  # wrk -c
    path: str  # a key of BODIES


METRICS = (
    Metric("c50_64", "c50 64B", 50, "/64"),
    Metric("c50_16k", "c50 16KiB", 50, "/16k"),
    Metric("c200_64", "c200 64B", 200, "/64"),
    Metric("c200_16k", "c200 16KiB", 200, "/16k"),
)


@dataclass(frozen=True)
class Goal:
    """steelyard's value of `quantity` on `metric` against `peer`'s: ratio >= or <= `limit`."""

    metric: str
    quantity: str  # a key of the summary: "requests_per_sec" or "p99_ms"
    peer: str
    limit: float
    at_least: bool  # True: ratio >= limit (throughput); False: ratio <= limit (latency)

    def label(self) -> str:
        metric = next(m.label for m in METRICS if m.key == self.metric)
        what = "req/s" if self.quantity == "requests_per_sec" else "p99"
        op = ">=" if self.at_least else "<="
        return f"{metric}: steelyard {what} {op} {self.limit:.1f}x {self.peer}"


# The goals from the HTTP issue.
GOALS = (
    Goal("c50_64", "requests_per_sec", "nginx", 1.0, at_least=True),
    Goal("c50_64", "p99_ms", "nginx", 1.3, at_least=False),
)


# systems -----------------------------------------------------------------------------------------


def body(size: int) -> bytes:
    """`size` printable bytes ending in a newline, so a mangled or cut body is easy to spot."""
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
    return (pattern * (size // len(pattern) + 1))[: size - 1] + b"\n"


def start_backend(procs: Procs, port: int) -> int:
    www = procs.workdir / "www"
    www.mkdir()
    for path, size in BODIES.items():
        (www / path.lstrip("/")).write_bytes(body(size))
    # Static files rather than `return 200 "..."`: nginx refuses a 16 KiB config token.
    # keepalive_requests high: the backend never forces a reconnect, so only each proxy's own
    # defaults decide how long its connections live.
    server = f"""
    sendfile on;
    open_file_cache max=16;
    keepalive_requests 1000000;
    server {{
        listen {HOST}:{port};
        root {www};
        location = /64 {{ }}
        location = /16k {{ }}
        location / {{ return 404; }}
    }}"""
    proc = start_nginx(procs, "backend", nginx_conf(procs.workdir, "backend", server))
    wait_until("backend nginx", accepts(port), [proc])
    return port


def start_nginx_proxy(procs: Procs, backend: int, port: int) -> int:
    # Upstream keep-alive as the nginx docs set it up: HTTP/1.1 and no Connection header to
    # the server. Otherwise stock: buffering on, keepalive_requests 1000 on both sides.
    server = f"""
    upstream backend {{
        server {HOST}:{backend};
        keepalive 32;
    }}
    server {{
        listen {HOST}:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    proc = start_nginx(procs, "nginx", nginx_conf(procs.workdir, "nginx", server))
    wait_until("nginx", accepts(port), [proc])
    return port


def start_haproxy(procs: Procs, backend: int, port: int) -> int:
    # Defaults on purpose (http-keep-alive, http-reuse safe): the goal is stated against a
    # stock HAProxy. Timeouts only because HAProxy warns without them.
    sections = f"""
defaults
    mode http
    timeout connect 3s
    timeout client 30s
    timeout server 30s

listen web
    bind {HOST}:{port}
    server s1 {HOST}:{backend}
"""
    harness_start_haproxy(procs, sections, accepts(port))
    return port


def start_steelyard(procs: Procs, backend: int, port: int, admin_port: int) -> int:
    workdir = procs.workdir
    cfg = {
        "workers": 1,
        "admin": {"listen": f"{HOST}:{admin_port}"},
        "store": {"kind": "embedded", "path": str(workdir / "store")},
        "pools": {"web": {"servers": [{"address": f"{HOST}:{backend}"}]}},
        "http": [
            {"name": "web", "listen": f"{HOST}:{port}", "routes": [{"path": "/", "pool": "web"}]}
        ],
    }
    path = workdir / "steelyard.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = procs.start("steelyard", steelyard_argv(path))
    healthz = f"http://{HOST}:{admin_port}/healthz"
    wait_until("steelyard", all_of(accepts(port), http_ok(healthz)), [proc])
    return port


def check_path(system: str, port: int) -> None:
    """Fail fast with a clear message if a path does not carry both bodies intact."""
    for path, size in BODIES.items():
        url = f"http://{HOST}:{port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                status, got = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            raise BenchError(
                f"{system}: GET {url} returned status {exc.code}, expected 200"
            ) from exc
        except (OSError, urllib.error.URLError) as exc:
            raise BenchError(f"{system}: GET {url} failed: {exc}") from exc
        if status != 200 or got != body(size):
            raise BenchError(
                f"{system}: GET {url} returned status {status} and {len(got)} bytes, "
                f"expected 200 and the backend's {size} bytes"
            )


# load generator ----------------------------------------------------------------------------------

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # as wrk prints them
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_AVG_LATENCY = re.compile(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def run_wrk(port: int, metric: Metric, duration: float) -> dict[str, Any]:
    url = f"http://{HOST}:{port}{metric.path}"
    # Keep-alive is wrk's default: every connection carries request after request.
    argv = ["wrk", "-t1", f"-c{metric.connections}", f"-d{duration:g}s", "--latency", url]
    out = run_tool(argv, timeout=duration + 30)
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    percentiles = {p: float(v) * _TIME_UNITS_MS[u] for p, v, u in _PERCENTILE.findall(out)}
    if not rps or "99" not in percentiles:
        raise BenchError(f"{' '.join(argv)}: no Requests/sec or latency distribution:\n{out}")
    raw: dict[str, Any] = {
        "requests_per_sec": float(rps.group(1)),
        **{f"p{p}_ms": v for p, v in sorted(percentiles.items())},
    }
    if avg := _AVG_LATENCY.search(out):
        raw["latency_avg_ms"] = float(avg.group(1)) * _TIME_UNITS_MS[avg.group(2)]
    if n := re.search(r"(\d+) requests in", out):
        raw["requests"] = int(n.group(1))
    if err := _SOCKET_ERRORS.search(out):
        kinds = ("connect", "read", "write", "timeout")
        raw["socket_errors"] = {
            k: int(v) for k, v in zip(kinds, err.groups(), strict=True) if int(v)
        }
    if non2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raw["non_2xx"] = int(non2xx.group(1))
    return raw


def time_wait_sockets() -> int:
    """IPv4 TCP sockets in TIME_WAIT on the machine."""
    with open("/proc/net/tcp") as table:
        next(table)  # header
        return sum(1 for line in table if line.split()[3] == "06")  # 06: TCP_TIME_WAIT


def ephemeral_ports() -> int:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(high) - int(low) + 1


def measure(bench: Bench, metric: Metric, system: str, duration: float) -> dict[str, Any]:
    # A proxy that closes upstream connections (nginx beyond its `keepalive 32` idle ones)
    # leaves TIME_WAIT sockets that make every later connect search longer for a free port:
    # recorded so a reader can tell when that weighed on a run.
    time_wait = time_wait_sockets()
    # The proxy's own CPU time per request: on a 2-core machine shared with wrk and the
    # backend, this shows the proxy's cost even where it is not the limit.
    proxy = bench.procs.find(system) if system in PROXIES else None
    pids = process_tree(proxy.popen.pid) if proxy else []
    cpu_before = cpu_seconds(pids)
    raw = run_wrk(bench.paths[system], metric, duration)
    raw["time_wait_before"] = time_wait
    if pids:
        raw["proxy_cpu_s"] = cpu_seconds(pids) - cpu_before
        if raw.get("requests"):
            raw["proxy_cpu_us_per_request"] = raw["proxy_cpu_s"] * 1e6 / raw["requests"]
    return raw


# environment -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return machine_facts(
        nginx=tool_version(["nginx", "-v"]),
        haproxy=tool_version(["haproxy", "-v"]),
        haproxy_maxconn=haproxy_maxconn(),
        wrk=tool_version(["wrk", "-v"]),
        ephemeral_ports=ephemeral_ports(),
    )


def check_tools(systems: list[str]) -> None:
    require_tools(["wrk", "nginx"] + (["haproxy"] if "haproxy" in systems else []))


# run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    procs: Procs
    paths: dict[str, int]  # system -> the port wrk connects to, in table order


def start_systems(procs: Procs, systems: list[str]) -> Bench:
    ports = iter(free_ports(5))
    backend = start_backend(procs, next(ports))
    paths = {"direct": backend}
    if "nginx" in systems:
        paths["nginx"] = start_nginx_proxy(procs, backend, next(ports))
    if "haproxy" in systems:
        paths["haproxy"] = start_haproxy(procs, backend, next(ports))
    if "steelyard" in systems:
        paths["steelyard"] = start_steelyard(procs, backend, next(ports), next(ports))
    for system, port in paths.items():
        check_path(system, port)
    return Bench(procs, {s: paths[s] for s in systems})


def run_all(bench: Bench, duration: float, repeat: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    warm: set[str] = set()
    for metric in METRICS:
        for rep, system in rotations(list(bench.paths), repeat):
            for proc in bench.procs.items:
                proc.check_alive()
            try:
                if system not in warm:
                    # Connection pools, caches and branch predictors filled before counting.
                    run_wrk(bench.paths[system], metric, min(WARMUP_S, duration))
                    warm.add(system)
                raw = measure(bench, metric, system, duration)
            except BenchError as exc:
                raise BenchError(f"{system}, {metric.label}: {exc}") from exc
            print(
                f"  {metric.label:<11} {system:<10} run {rep + 1}/{repeat}: "
                f"{raw['requests_per_sec']:>9,.0f} req/s, p99 {raw['p99_ms']:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
            runs.append({"metric": metric.key, "system": system, "rep": rep, "raw": raw})
    return runs


SUMMARY_KEYS = ("requests_per_sec", "p99_ms", "proxy_cpu_us_per_request")


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """quantity -> metric -> system -> median over the repeats: robust to one run hit by a
    noisy neighbour. Each quantity's median is taken on its own."""
    cells: dict[str, dict[str, dict[str, list[float]]]] = {k: {} for k in SUMMARY_KEYS}
    for run in runs:
        for key in SUMMARY_KEYS:
            if (value := run["raw"].get(key)) is not None:
                by_system = cells[key].setdefault(run["metric"], {})
                by_system.setdefault(run["system"], []).append(value)
    return {
        key: {m: {s: statistics.median(v) for s, v in by.items()} for m, by in per.items()}
        for key, per in cells.items()
    }


def ratio(table: dict[str, dict[str, float]], metric: str, peer: str) -> float | None:
    cell = table.get(metric, {})
    if "steelyard" not in cell or not cell.get(peer):
        return None
    return cell["steelyard"] / cell[peer]


def evaluate_goals(summary: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    goals = []
    for goal in GOALS:
        r = ratio(summary[goal.quantity], goal.metric, goal.peer)
        met = r is not None and (r >= goal.limit if goal.at_least else r <= goal.limit)
        goals.append(
            {
                "goal": goal.label(),
                "metric": goal.metric,
                "quantity": goal.quantity,
                "peer": goal.peer,
                "limit": goal.limit,
                "at_least": goal.at_least,
                "ratio": r,
                "status": "n/a" if r is None else ("PASS" if met else "MISS"),
            }
        )
    return goals


# output ------------------------------------------------------------------------------------------


def warnings(runs: list[dict[str, Any]], info: dict[str, Any], systems: list[str]) -> list[str]:
    """What a reader of the tables should know: wrk counts a failed request as no request."""
    out = []
    for run in runs:
        raw, where = run["raw"], f"{run['system']} {run['metric']} run {run['rep'] + 1}"
        if errors := raw.get("socket_errors"):
            spelled = ", ".join(f"{kind} {n}" for kind, n in errors.items())
            out.append(f"{where}: wrk socket errors: {spelled}")
        if raw.get("non_2xx"):
            out.append(f"{where}: {raw['non_2xx']} non-2xx responses")
    time_wait = max((run["raw"]["time_wait_before"] for run in runs), default=0)
    if time_wait > info["ephemeral_ports"] // 2:
        out.append(
            f"up to {time_wait} sockets were in TIME_WAIT when a run started "
            f"({info['ephemeral_ports']} ephemeral ports): new connections paid a longer "
            "search for a free port (see time_wait_before per run in the JSON)"
        )
    if busy := busy_machine_warning(info):
        out.append(busy)
    if "haproxy" in systems and info["haproxy_maxconn"] < HAPROXY_MAXCONN:
        out.append(
            f"haproxy maxconn lowered to {info['haproxy_maxconn']} to fit the FD hard limit "
            "(the bench opens at most 200 client connections at a time)"
        )
    return out


def fmt(value: float | None, decimals: int) -> str:
    return "n/a" if value is None else f"{value:,.{decimals}f}"


def table(
    title: str,
    values: dict[str, dict[str, float]],
    columns: tuple[str, ...],
    peers: tuple[str, ...],
    decimals: int,
) -> str:
    head = [title, *columns, *(f"steelyard/{p}" for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in METRICS:
        cell = values.get(metric.key, {})
        row = [metric.label]
        row += [fmt(cell.get(s), decimals) for s in columns]
        row += [fmt_ratio(ratio(values, metric.key, p)) for p in peers]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def goals_table(goals: list[dict[str, Any]]) -> str:
    lines = ["| goal | ratio | result |", "|---|---|---|"]
    for g in goals:
        lines.append(f"| {g['goal']} | {fmt_ratio(g['ratio'])} | {g['status']} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, settings = report["summary"], report["settings"]
    systems = settings["systems"]
    colors = {"direct": "#7f7f7f", "nginx": "#2ca02c", "haproxy": "#1f77b4", "steelyard": "#d62728"}
    panels = (
        ("requests_per_sec", "requests/s", "{:,.0f}"),
        ("p99_ms", "p99 latency (ms)", "{:.2f}"),
    )
    width = 0.8 / len(systems)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5))
    for ax, (key, ylabel, spell) in zip(axes, panels, strict=True):
        for i, system in enumerate(systems):
            xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(METRICS))]
            values = [summary[key].get(m.key, {}).get(system, 0.0) for m in METRICS]
            bars = ax.bar(xs, values, width, label=system, color=colors[system])
            ax.bar_label(
                bars, labels=[spell.format(v) for v in values], padding=2, fontsize=7, rotation=90
            )
        ax.set_xticks(range(len(METRICS)), [m.label for m in METRICS])
        ax.set_ylabel(ylabel)
        ax.margins(y=0.25)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"HTTP proxy on 127.0.0.1, keep-alive, {report['machine']['nproc']} cores, "
        f"{settings['duration_s']:g}s per run, median of {settings['repeat']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_bench_args(bench_parser(__doc__, "http", SYSTEMS), argv, SYSTEMS)


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
    goals = evaluate_goals(summary)
    report = {
        "timestamp": started,
        "machine": info,
        "settings": {
            "duration_s": args.duration,
            "repeat": args.repeat,
            "systems": args.systems,
            "warmup_s": min(WARMUP_S, args.duration),
            "wrk": "-t1 -c50|-c200 --latency, keep-alive",
            "bodies": dict(BODIES),
            "backend": "nginx, 1 process, static files, sendfile, keepalive_requests 1000000",
            "nginx": "1 process, upstream keepalive 32, proxy_http_version 1.1, "
            'proxy_set_header Connection "", access_log off',
            "haproxy": "nbthread 1, mode http, default options (http-reuse safe)",
            "steelyard": "workers 1, one http listener, one route to one pool",
        },
        "summary": summary,
        "goals": goals,
        "runs": runs,
    }
    write_outputs(args.out, "http", report, plot)
    print()
    for peer in ("nginx", "haproxy"):
        if peer in args.systems:
            print(info[peer])
    print(
        f"{info['nproc']} cores shared by wrk, proxy and backend; keep-alive; "
        f"{args.duration:g}s per run, median of {args.repeat} run(s) per cell\n"
    )
    print(
        table("requests/s", summary["requests_per_sec"], SYSTEMS, ("nginx", "haproxy", "direct"), 0)
    )
    print()
    print(table("p99 (ms)", summary["p99_ms"], SYSTEMS, ("nginx",), 2))
    print()
    cpu = summary["proxy_cpu_us_per_request"]
    print(table("proxy CPU us/request", cpu, PROXIES, ("nginx", "haproxy"), 1))
    print()
    print(goals_table(goals))
    for line in warnings(runs, info, args.systems):
        print(f"\nnote: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
