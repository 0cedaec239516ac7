"""Shared machinery of the benchmarks in bench/: processes, readiness probes, tools, environment.

Why: every benchmark starts peers and steelyard, waits for them to be ready, runs a load tool,
measures the proxy's CPU and stops everything it started, also on Ctrl-C. Keeping that in one
place means a fix to teardown or readiness reaches every benchmark. The scripts run as
`python bench/x.py`, so this module is imported as `harness` from the script's directory.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
HAPROXY_MAXCONN = 100000


class BenchError(RuntimeError):
    """A system failed to start or a measurement failed; the message says which and why."""


# processes -------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self.popen.returncode}; its last output:\n"
                + self.tail()
            )


@dataclass
class Procs:
    """Every long-running process this run started, stopped in reverse order by `stop_all`."""

    workdir: Path
    items: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str]) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            # A new session: Ctrl-C reaches only this script, which then stops each group
            # itself, including any workers a supervisor forked.
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.workdir,
            )
        proc = Proc(name, popen, log)
        self.items.append(proc)
        return proc

    def find(self, name: str) -> Proc | None:
        return next((p for p in self.items if p.name == name), None)

    def stop_all(self) -> None:
        # A second Ctrl-C must not cut the teardown short and leave a proxy running.
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for proc in reversed(self.items):
                _stop_group(proc.popen)
            self.items.clear()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _stop_group(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    # Children of the group (steelyard workers) may outlive their parent: kill what is left.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(STOP_TIMEOUT)


def raise_on_sigterm(signum: int, frame: object) -> None:
    """Signal handler: SIGTERM becomes KeyboardInterrupt, so `finally` stops every process."""
    raise KeyboardInterrupt


def free_ports(n: int) -> list[int]:
    """n distinct free ports: all sockets stay open until every port is picked."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((HOST, 0))
            ports.append(s.getsockname()[1])
        return ports


# readiness ---------------------------------------------------------------------------------------


def wait_until(what: str, ready: Callable[[], bool], procs: list[Proc]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        for proc in procs:
            proc.check_alive()
        if ready():
            return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}, last output:\n{p.tail()}" for p in procs)
            raise BenchError(f"{what} not ready after {READY_TIMEOUT:.0f}s\n{tails}")
        time.sleep(0.05)


def accepts(port: int) -> Callable[[], bool]:
    # Only for listeners in front of nginx, which shrugs off an empty connection. Not for iperf3:
    # an empty control connection fails its test, and iperf3 then closes and reopens its
    # listener, resetting whichever client comes next.
    def probe() -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            return False

    return probe


def listening(port: int) -> Callable[[], bool]:
    """A socket on HOST:port is in LISTEN state: what a connect would see, without connecting."""
    local = f"{socket.htonl(0x7F000001):08X}:{port:04X}"  # as /proc/net/tcp spells 127.0.0.1

    def probe() -> bool:
        with open("/proc/net/tcp") as table:
            next(table)  # header
            return any(
                fields[1] == local and fields[3] == "0A"  # 0A: TCP_LISTEN
                for fields in (line.split() for line in table)
            )

    return probe


def http_ok(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    return probe


def all_of(*probes: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: all(p() for p in probes)


# systems -----------------------------------------------------------------------------------------


def nginx_conf(workdir: Path, name: str, http_body: str) -> Path:
    """Write `<name>.conf` for one foreground nginx process; `http_body` goes in `http {}`.

    `master_process off`: one process that serves requests as root, so it reads files in the
    private temp dir and needs no user switch. It runs the same event loop a worker would.
    """
    tmp = workdir / name
    tmp.mkdir(exist_ok=True)
    # Temp paths and pid in the workdir: runs as root without touching /var or /run.
    conf = f"""
daemon off;
master_process off;
worker_processes 1;
error_log stderr;
pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{http_body}
}}
"""
    path = workdir / f"{name}.conf"
    path.write_text(conf)
    return path


def start_nginx(procs: Procs, name: str, conf: Path) -> Proc:
    return procs.start(name, ["nginx", "-p", str(procs.workdir), "-e", "stderr", "-c", str(conf)])


def haproxy_maxconn() -> int:
    """100000, or less when the hard FD limit is lower (containers): HAProxy needs two FDs per
    connection and refuses to start if it cannot raise its limit. The benches hold at most a
    few hundred client connections at a time, so the cap changes nothing they measure."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return HAPROXY_MAXCONN
    return max(1000, min(HAPROXY_MAXCONN, (hard - 1000) // 2))


def steelyard_argv(config: Path) -> list[str]:
    script = Path(sys.executable).with_name("steelyard")
    if script.exists():
        return [str(script), "run", "-c", str(config)]
    return [sys.executable, "-m", "steelyard.cli", "run", "-c", str(config)]


# measurement -------------------------------------------------------------------------------------


def run_tool(argv: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(argv)}: no answer after {timeout:.0f}s") from exc
    if done.returncode != 0 and not done.stdout.strip():
        raise BenchError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


# load tools ------------------------------------------------------------------------------------


def run_iperf(
    port: int, streams: int, duration: float, host: str = HOST, prefix: Sequence[str] = ()
) -> tuple[float, dict[str, Any]]:
    """iperf3 to host:port (received Gbit/s, raw facts); `prefix` runs it elsewhere
    (`ip netns exec NS`)."""
    argv = [
        *prefix,
        "iperf3",
        "-c",
        host,
        "-p",
        str(port),
        "-t",
        f"{duration:g}",
        "-P",
        str(streams),
    ]
    out = run_tool([*argv, "-J"], timeout=duration + 30)
    data = json.loads(out)
    if "error" in data:
        raise BenchError(f"{' '.join(argv)}: {data['error']}")
    end = data["end"]
    received = end["sum_received"]["bits_per_second"]
    raw = {
        "received_bps": received,
        "received_bytes": end["sum_received"]["bytes"],
        "sent_bps": end["sum_sent"]["bits_per_second"],
        "retransmits": end["sum_sent"].get("retransmits"),
        "cpu_host_pct": end["cpu_utilization_percent"]["host_total"],
        "cpu_remote_pct": end["cpu_utilization_percent"]["remote_total"],
    }
    return received / 1e9, raw


def run_wrk(
    port: int, duration: float, host: str = HOST, prefix: Sequence[str] = ()
) -> tuple[float, dict[str, Any]]:
    """wrk with one connection per request (Connection: close) to http://host:port/."""
    url = f"http://{host}:{port}/"
    argv = [*prefix, "wrk", "-t1", "-c50", f"-d{duration:g}s", "-H", "Connection: close", url]
    out = run_tool(argv, timeout=duration + 30)
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m:
        raise BenchError(f"{' '.join(argv)}: no Requests/sec in output:\n{out}")
    raw: dict[str, Any] = {"requests_per_sec": float(m.group(1))}
    if n := re.search(r"(\d+) requests in", out):
        raw["requests"] = int(n.group(1))
    if err := re.search(r"Socket errors: (.*)", out):
        raw["socket_errors"] = err.group(1).strip()
    if non2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raw["non_2xx"] = int(non2xx.group(1))
    return float(m.group(1)), raw


def wrk_timeouts(raw: dict[str, Any]) -> int:
    """Requests wrk gave up on (no answer within its 2 s), from run_wrk's raw results."""
    m = re.search(r"timeout (\d+)", raw.get("socket_errors", ""))
    return int(m.group(1)) if m else 0


# Kernel TCP counters that mean a connection waited on the kernel rather than on a process: an
# accept queue or SYN queue full, a SYN sent again (after 1 s, then 3 s: past wrk's 2 s timeout),
# a SYN refused by a TIME_WAIT socket whose last timestamp was newer (PAWS).
STALL_COUNTERS = (
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
    "TcpExtTCPReqQFullDrop",
    "TcpExtTCPSynRetrans",
    "TcpExtPAWSTimewait",
)


def tcp_counters(prefix: Sequence[str] = ()) -> dict[str, int]:
    """STALL_COUNTERS as they are now (nstat's absolute values; its history file untouched),
    in the network namespace `prefix` runs in."""
    data = json.loads(run_tool([*prefix, "nstat", "-asz", "--json"], timeout=10))
    values = data.get("kernel", data)
    return {name: int(values.get(name, 0)) for name in STALL_COUNTERS}


def counter_deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What moved between two tcp_counters() snapshots."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (steelyard's supervisor forks its workers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by these processes."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rotations(systems: list[str], repeat: int) -> Iterator[tuple[int, str]]:
    # Each round starts one system later, so no system always runs first (on a cold cache)
    # or last (after the others heated the machine).
    for rep in range(repeat):
        shift = rep % len(systems)
        for system in systems[shift:] + systems[:shift]:
            yield rep, system


# environment -------------------------------------------------------------------------------------


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {exc}"
    # nginx prints its version on stderr, the others on stdout.
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def git_revision() -> str:
    repo = Path(__file__).resolve().parent.parent
    rev = tool_version(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return rev + ("-dirty" if dirty else "")


def busy_machine_warning(info: dict[str, Any]) -> str | None:
    """A note when the load before the run was high: the bench itself keeps all cores busy,
    so only the load average taken before it started says something about other users."""
    busy = info["loadavg_before"]
    if busy <= 0.5 * (info["nproc"] or 1):
        return None
    return (
        f"1-minute load average was {busy:.1f} before the run on {info['nproc']} cores: "
        "something else is using the CPUs, so absolute numbers are low and noisy; "
        "use --repeat to steady the ratios"
    )


# output ------------------------------------------------------------------------------------------


def measure_all(
    metrics: Sequence[Any], systems: list[str], repeat: int, procs: Procs,
    measure: Callable[[Any, str], tuple[float, dict[str, Any]]],
) -> list[dict[str, Any]]:  # fmt: skip
    """Each metric (with .key, .label, .unit) on each system, `repeat` times in rotation, with
    progress on stderr: runs {metric, system, rep, value, raw}. A system that died or a
    measurement that failed stops the run with a BenchError naming both."""
    runs: list[dict[str, Any]] = []
    for metric in metrics:
        for rep, system in rotations(systems, repeat):
            for proc in procs.items:
                proc.check_alive()
            try:
                value, raw = measure(metric, system)
            except BenchError as exc:
                raise BenchError(f"{system}, {metric.label}: {exc}") from exc
            print(f"  {metric.label:<38} {system:<10} run {rep + 1}/{repeat}: "
                  f"{value:,.2f} {metric.unit}", file=sys.stderr, flush=True)  # fmt: skip
            runs.append({"metric": metric.key, "system": system, "rep": rep,
                         "value": value, "raw": raw})  # fmt: skip
    return runs


def steelyard_tcp_config(
    workdir: Path, admin: str, routes: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """`steelyard run`'s config with one worker and, per route name, a pool of one server and a
    `tcp` listener in front of it: routes = {name: (listen, server address)}."""
    return {
        "workers": 1,
        "admin": {"listen": admin},
        "store": {"kind": "embedded", "path": str(workdir / "store")},
        "pools": {name: {"servers": [{"address": server}]} for name, (_, server) in routes.items()},
        "tcp": [
            {"name": name, "listen": listen, "pool": name} for name, (listen, _) in routes.items()
        ],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median per (metric, system) of runs {metric, system, value}: robust to one run hit by a
    noisy neighbour."""
    cells: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        cells.setdefault(run["metric"], {}).setdefault(run["system"], []).append(run["value"])
    return {m: {s: statistics.median(v) for s, v in by.items()} for m, by in cells.items()}


def fmt_value(value: float | None, unit: str) -> str:
    """Requests per second as whole numbers, anything else with two decimals."""
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if unit == "req/s" else f"{value:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def write_json(path: Path, report: dict[str, Any]) -> None:
    # Written beside, then renamed: an interrupted run never leaves half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


# command line and main -------------------------------------------------------------------------


def bench_parser(
    doc: str, name: str, systems: Sequence[str], duration_type: type = float,
    duration_help: str = "seconds per measurement",
) -> argparse.ArgumentParser:  # fmt: skip
    """The options every benchmark takes: --duration, --repeat, --only, --out (a script adds
    its own before parsing with parse_bench_args)."""
    p = argparse.ArgumentParser(
        description=doc.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--duration", type=duration_type, default=duration_type(5), help=duration_help)
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is kept")
    p.add_argument("--only", default=",".join(systems), help="comma-separated systems to run")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help=f"directory for {name}.json and {name}.png",
    )
    return p


def parse_bench_args(
    p: argparse.ArgumentParser, argv: list[str] | None, systems: Sequence[str]
) -> argparse.Namespace:
    """Parsed and checked; `args.systems` is --only in the fixed order of tables and charts."""
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(systems))
    if unknown or not wanted:
        p.error(f"--only takes a subset of {','.join(systems)}; got {args.only!r}")
    args.systems = [s for s in systems if s in wanted]
    if args.duration <= 0 or args.repeat < 1:
        p.error("--duration must be > 0 and --repeat >= 1")
    return args


def run_systems(
    systems: list[str],
    check_tools: Callable[[list[str]], None],
    machine_info: Callable[[], dict[str, Any]],
    start_systems: Callable[[Procs, list[str]], Any],
    measure: Callable[[Any], Any],
) -> tuple[dict[str, Any], str, Any]:
    """Check the tools, start the systems in a temp dir, measure, and stop every process
    started, whatever happens. Returns the machine info (with the load after), the start time
    and what `measure` returned. Raises BenchError (and KeyboardInterrupt) as they come."""
    check_tools(systems)
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="steelyard-bench-") as tmp:
        procs = Procs(Path(tmp))
        try:
            bench = start_systems(procs, systems)
            started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            result = measure(bench)
        finally:
            procs.stop_all()
    info["loadavg_after"] = os.getloadavg()[0]
    return info, started, result


def guarded(body: Callable[[], int]) -> int:
    """A benchmark's main: SIGTERM stops it as Ctrl-C does; a BenchError is one line and exit
    code 1, an interrupt 130 (every process already stopped by run_systems)."""
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    try:
        return body()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; all processes stopped", file=sys.stderr)
        return 130


def write_outputs(
    out: Path, name: str, report: dict[str, Any], plot: Callable[[dict[str, Any], Path], None]
) -> None:
    """`<name>.json` (every raw run and the settings) and the `<name>.png` chart under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}.json"
    write_json(json_path, report)
    plot(report, out / f"{name}.png")
    print(f"\nwrote {json_path} and {out / f'{name}.png'}", file=sys.stderr)


# environment and peers -------------------------------------------------------------------------


def machine_facts(**tools: Any) -> dict[str, Any]:
    """What every benchmark records of the machine, with `tools` (versions and the like) in
    between, and the load before the run (the busy-machine warning reads it)."""
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **tools,
        "steelyard_git": git_revision(),
        "loadavg_before": os.getloadavg()[0],
    }


def require_tools(needed: list[str], install: str = "make deps-system") -> None:
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: run `{install}` (as root)")


def start_haproxy(procs: Procs, sections: str, ready: Callable[[], bool]) -> Proc:
    """HAProxy in the foreground, one thread, `maxconn` to fit the FD limit, with `sections`
    (defaults, listen ...) after that global section; returns once `ready()`."""
    cfg = f"""
global
    nbthread 1
    maxconn {haproxy_maxconn()}
{sections}"""
    path = procs.workdir / "haproxy.cfg"
    path.write_text(cfg)
    proc = procs.start("haproxy", ["haproxy", "-f", str(path), "-db"])
    wait_until("haproxy", ready, [proc])
    return proc
