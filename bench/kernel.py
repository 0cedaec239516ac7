"""Kernel L4 benchmark: a virtual service in nftables (steelyard's kernel tier) against
steelyard's userspace TCP proxy and no balancer, in a lab of network namespaces.

Why: the kernel tier exists because moving packets in the kernel costs less than moving bytes
through a process; this shows how much, on the same wire in one run. LVS (IPVS), the peer, is
not in this machine's kernel, so the reference is the direct path.

What: namespaces client (10.0.0.50), lb (10.0.0.1, holding the VIP 10.0.0.100, forwarding on)
and rs (10.0.0.11: iperf3 and a tiny nginx), on one bridge. Three paths: direct (client to rs),
kernel (client to the VIP: DNAT and masquerade by the table steelyard installed) and steelyard
(client to lb's userspace `tcp` listener, one worker). Bulk throughput with iperf3 (1 and 8
streams) and connection rate with wrk (`Connection: close`). Results: stdout (markdown),
`kernel.json` and `kernel.png` under --out. A connection-rate run with wrk timeouts or with a
SYN dropped, refused or sent again (nstat in each namespace, around each run) fails the
benchmark (exit 1): such a stall costs a second or more per connection and is a defect to
find, not noise.

Needs root (namespaces, nftables). Run: `make bench-kernel` or `.venv/bin/python
bench/kernel.py [--duration 5] [--repeat 1] [--only direct,kernel,steelyard] [--out DIR]`.
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # see bench/tcp.py: the script's directory must not hide `http`

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import (
    BenchError,
    Procs,
    bench_parser,
    busy_machine_warning,
    counter_deltas,
    fmt_ratio,
    fmt_value,
    guarded,
    machine_facts,
    measure_all,
    nginx_conf,
    parse_bench_args,
    require_tools,
    run_iperf,
    run_systems,
    run_wrk,
    steelyard_argv,
    steelyard_tcp_config,
    summarize,
    tcp_counters,
    tool_version,
    wait_until,
    write_outputs,
    wrk_timeouts,
)

# the lab's namespaces come from the test fixtures: one implementation of the lab
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fixtures.netns import Host, Lab

SYSTEMS = ("direct", "kernel", "steelyard")
VIP, LB, RS, CLIENT = "10.0.0.100", "10.0.0.1", "10.0.0.11", "10.0.0.50"
IPERF, WEB = 5201, 8080  # on rs
# nginx's port for steelyard's userspace path, apart from the kernel path's. The kernel path
# masquerades to lb's address keeping the client's source ports, so after a connection-rate run
# rs holds ~30k TIME_WAIT sockets for (lb:port, rs:8080) stamped with the client's TCP
# timestamps. steelyard's own connections come from lb's address too, with lb's timestamps:
# one that picked such a port had its SYN refused by rs (PAWS, TcpExtPAWSTimewait), answered
# by a reset, and sent again 1 s later, twice for some (3 s): the 15-30 wrk timeouts per run
# that appeared only when steelyard ran after the kernel path. Any node that both masquerades
# and proxies to the same server port from one address shares this; the lab gives each path
# its own server port, and `stalled_runs` fails the benchmark if a stall comes back.
WEB_PROXY = 8081
PROXY_IPERF, PROXY_WEB = 15201, 18080  # steelyard's userspace listeners on lb
# where each path's clients connect: (host, iperf port, web port)
PATHS = {
    "direct": (RS, IPERF, WEB),
    "kernel": (VIP, IPERF, 80),
    "steelyard": (LB, PROXY_IPERF, PROXY_WEB),
}


# One core for the load tool, the other for the server (iperf3 3.12 runs every stream in one
# thread): left to the scheduler, which core each lands on moved results by 2x between runs.
# The balancer (kernel softirq or steelyard) takes what is left of both.
CLIENT_CPU, SERVER_CPU = ("taskset", "-c", "0"), ("taskset", "-c", "1")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    streams: int = 0  # iperf3 -P; 0: the wrk metric


METRICS = (
    Metric("bulk_1", "bulk 1 stream", "Gbit/s", streams=1),
    Metric("bulk_8", "bulk 8 streams", "Gbit/s", streams=8),
    Metric("conn_rate", "connection rate (Connection: close)", "req/s"),
)


@dataclass
class Bench:
    procs: Procs
    lab: Lab
    client: Host
    lb: Host
    rs: Host
    systems: list[str]


def listening(host: Host, port: int) -> Callable[[], bool]:
    """A TCP socket listens on `port` in the host's namespace."""

    def probe() -> bool:
        out = host.run("ss", "-Hltn", f"sport = :{port}")
        return out.returncode == 0 and bool(out.stdout.strip())

    return probe


def start_systems(procs: Procs, systems: list[str]) -> Bench:
    if os.geteuid() != 0:
        raise BenchError("the kernel benchmark needs root (network namespaces, nftables)")
    lab = Lab(procs.workdir)
    try:
        client = lab.host("client", f"{CLIENT}/24")
        lb = lab.host("lb", f"{LB}/24")
        rs = lab.host("rs", f"{RS}/24")
        lb.ip("addr", "add", f"{VIP}/24", "dev", "eth0")
        # connecting sides reuse TIME_WAIT ports, as load tests set up: without it, both
        # proxies (HAProxy measured too) fall to ~500 connections/s once the ephemeral ports
        # of the client or of the balancer are used up (loopback has this on by default)
        reuse = ("net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000")
        settings = {
            client: reuse,
            lb: (*reuse, "net.ipv4.ip_forward=1",
                 # a director's usual tuning: closed flows leave conntrack after 2 s instead
                 # of 120, or a connection-rate run fills the table
                 "net.netfilter.nf_conntrack_tcp_timeout_time_wait=2"),
        }  # fmt: skip
        for host, values in settings.items():
            for setting in values:
                out = host.run("sysctl", "-qw", setting)
                if out.returncode != 0:
                    raise BenchError(f"sysctl {setting} in {host.name}: {out.stderr.strip()}")
        iperf = procs.start("iperf3-server", rs.argv(*SERVER_CPU, "iperf3", "-s", "-p", str(IPERF)))
        server = f"""
    server {{
        listen {WEB} backlog=4096;
        listen {WEB_PROXY} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}"""
        conf = nginx_conf(procs.workdir, "nginx", server)
        argv = ["nginx", "-p", str(procs.workdir), "-e", "stderr", "-c", str(conf)]
        nginx = procs.start("nginx", rs.argv(*SERVER_CPU, *argv))
        ready = (listening(rs, IPERF), listening(rs, WEB), listening(rs, WEB_PROXY))
        wait_until("iperf3 and nginx", lambda: all(probe() for probe in ready), [iperf, nginx])
        if "kernel" in systems or "steelyard" in systems:
            start_steelyard(procs, lb)
        bench = Bench(procs, lab, client, lb, rs, systems)
        for system in systems:
            check_path(bench, system)
        return bench
    except BaseException:
        lab.close()
        raise


def start_steelyard(procs: Procs, lb: Host) -> None:
    cfg = steelyard_tcp_config(procs.workdir, "127.0.0.1:9900", {
        "iperf": (f"{LB}:{PROXY_IPERF}", f"{RS}:{IPERF}"),
        "web": (f"{LB}:{PROXY_WEB}", f"{RS}:{WEB_PROXY}"),
    })  # fmt: skip
    cfg["pools"]["kernel_web"] = {"servers": [{"address": f"{RS}:{WEB}"}]}  # see WEB_PROXY
    cfg["virtual_services"] = [
        {"address": f"{VIP}:{IPERF}", "protocol": "tcp", "pool": "iperf"},
        {"address": f"{VIP}:80", "protocol": "tcp", "pool": "kernel_web"},
    ]
    path = procs.workdir / "steelyard.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = procs.start("steelyard", lb.argv(*steelyard_argv(path)))
    wait_until("steelyard", lambda: "event=ready" in proc.log.read_text(errors="replace"), [proc])


def check_path(bench: Bench, system: str) -> None:
    host, _, web = PATHS[system]
    out = bench.client.run("curl", "-sf", "--max-time", "5", f"http://{host}:{web}/")
    if out.returncode != 0 or out.stdout != "ok\n":
        raise BenchError(f"{system}: GET http://{host}:{web}/ failed: {out.stderr.strip()!r}")


def measure(bench: Bench, metric: Metric, system: str, duration: float) -> tuple[float, Any]:
    host, iperf, web = PATHS[system]
    prefix = bench.client.argv(*CLIENT_CPU)
    if metric.streams:
        # iperf3 reopens its listener after every test: wait for it
        wait_until("iperf3 server", listening(bench.rs, IPERF), bench.procs.items)
        return run_iperf(iperf, metric.streams, duration, host=host, prefix=prefix)
    hosts = {"client": bench.client, "lb": bench.lb, "rs": bench.rs}
    before = {name: tcp_counters(h.argv()) for name, h in hosts.items()}
    value, raw = run_wrk(web, duration, host=host, prefix=prefix)
    stalls = {}
    for name, h in hosts.items():
        if moved := counter_deltas(before[name], tcp_counters(h.argv())):
            stalls[name] = moved
    if stalls:
        raw["tcp_stalls"] = stalls  # per namespace, see STALL_COUNTERS
    return value, raw


def stalled_runs(runs: list[dict[str, Any]]) -> list[str]:
    """Connection-rate runs in which a connection waited on the kernel: wrk timeouts, or SYNs
    dropped, refused or sent again in any namespace. Each is a defect of a path or of the lab
    (see WEB_PROXY), not noise to take a median over."""
    problems = []
    for run in runs:
        raw = run["raw"]
        timeouts, stalls = wrk_timeouts(raw), raw.get("tcp_stalls")
        if run["metric"] == "conn_rate" and (timeouts or stalls):
            problems.append(f"{run['system']} run {run['rep'] + 1}: {timeouts} wrk timeouts, "
                            f"kernel counters {stalls or {}}")  # fmt: skip
    return problems


def run_all(bench: Bench, duration: float, repeat: int) -> list[dict[str, Any]]:
    try:

        def one(metric: Metric, system: str) -> tuple[float, Any]:
            return measure(bench, metric, system, duration)

        return measure_all(METRICS, bench.systems, repeat, bench.procs, one)
    finally:
        bench.procs.stop_all()  # before the namespaces go
        bench.lab.close()


def ratio(summary: dict[str, dict[str, float]], metric: str, a: str, b: str) -> float | None:
    cell = summary.get(metric, {})
    return cell[a] / cell[b] if cell.get(a) and cell.get(b) else None


def markdown_table(summary: dict[str, dict[str, float]]) -> str:
    head = ["metric", *SYSTEMS, "kernel/direct", "kernel/steelyard"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in METRICS:
        cell = summary.get(metric.key, {})
        row = [f"{metric.label} ({metric.unit})"]
        row += [fmt_value(cell.get(s), metric.unit) for s in SYSTEMS]
        row += [fmt_ratio(ratio(summary, metric.key, "kernel", p)) for p in ("direct", "steelyard")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, settings = report["summary"], report["settings"]
    colors = {"direct": "#7f7f7f", "kernel": "#2ca02c", "steelyard": "#d62728"}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 4))
    for ax, metric in zip(axes, METRICS, strict=True):
        cell = summary.get(metric.key, {})
        names = [s for s in settings["systems"] if s in cell]
        bars = ax.bar(names, [cell[s] for s in names], color=[colors[s] for s in names])
        ax.bar_label(bars, labels=[fmt_value(cell[s], metric.unit) for s in names], padding=2)
        ax.set_title(metric.label, fontsize=10)
        ax.set_ylabel(metric.unit)
        ax.margins(y=0.15)
    cores, secs, reps = report["machine"]["nproc"], settings["duration_s"], settings["repeat"]
    fig.suptitle(f"L4 through a namespace lab, {cores} cores, {secs:g}s per run, median of {reps}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_info() -> dict[str, Any]:
    return machine_facts(nft=tool_version(["nft", "--version"]),
                         iperf3=tool_version(["iperf3", "-v"]), wrk=tool_version(["wrk", "-v"]),
                         nginx=tool_version(["nginx", "-v"]))  # fmt: skip


def check_tools(systems: list[str]) -> None:
    require_tools(["iperf3", "wrk", "nginx", "nft", "ip", "ss", "curl", "taskset", "nstat"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_bench_args(bench_parser(__doc__, "kernel", SYSTEMS), argv, SYSTEMS)


def run(args: argparse.Namespace) -> int:
    info, started, runs = run_systems(
        args.systems, check_tools, machine_info, start_systems,
        lambda bench: run_all(bench, args.duration, args.repeat),
    )  # fmt: skip
    summary = summarize(runs)
    stalled = stalled_runs(runs)
    report = {
        "timestamp": started, "machine": info,
        "settings": {"duration_s": args.duration, "repeat": args.repeat,
                     "systems": args.systems, "wrk": "-t1 -c50 -H 'Connection: close'",
                     "iperf3_streams": [1, 8]},
        "summary": summary, "stalled_runs": stalled, "runs": runs,
    }  # fmt: skip
    write_outputs(args.out, "kernel", report, plot)
    print()
    print(f"{info['nproc']} cores shared by client, balancer and server namespaces; "
          f"{args.duration:g}s per run, median of {args.repeat} run(s) per cell\n")  # fmt: skip
    print(markdown_table(summary))
    if busy := busy_machine_warning(info):
        print(f"\nnote: {busy}")
    if stalled:
        print("\ncheck failed: connections waited on the kernel (SYN drops, retries, refusals):")
        for line in stalled:
            print(f"  {line}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
