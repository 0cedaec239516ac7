"""Redis proxy benchmark: steelyard (1 worker) against twemproxy (1 process) and one Redis alone.

Why: the Redis tier's timing goal (GET and SET at pipeline depths 1 and 16: steelyard serves
>= 1.0x twemproxy's operations/s) only means something when every system is measured in the
same run on the same machine, so this script starts two redis-server backends, twemproxy over
both, steelyard over both, measures each path in turn and prints ratios. Timing never lives in
the test suite.

What: redis-benchmark with 50 connections, random keys over a 100000-key space, SET, GET and
a 10-key MGET at pipeline depths 1 and 16: operations/s, p99 latency and the proxy's CPU time
per operation; SET and GET again in RESP3 (`redis-benchmark -3`), without twemproxy, which
has no RESP3. The direct path is one of the two backends alone, the single-server baseline.
Results go to stdout (markdown), `redis.json` and `redis.png` under --out. Everything binds to
127.0.0.1.

Big replies: one client's `LRANGE` of a 1M-element list (on both backends, so every path
finds it), timed from the request to the last element parsed (hiredis), on each path: the
proxy's framing of a long array reply must stay linear (goal: steelyard <= 3x direct).
`--big-only` runs this part alone.

Run: `make bench-redis` or `.venv/bin/python bench/redis.py [--duration 5] [--requests N]
[--repeat 1] [--only direct,twemproxy,steelyard] [--big-only] [--out bench/results]`.
"""

from __future__ import annotations

import sys

# This file's name is that of redis-py, which the venv holds for the tests, and Python puts the
# script's directory first on sys.path: moved to the end, it still serves `harness` and no
# longer hides redis-py from anything that imports it.
sys.path.append(sys.path.pop(0))

import argparse
import csv
import secrets
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hiredis
import yaml

from harness import (
    HOST,
    BenchError,
    Proc,
    Procs,
    all_of,
    bench_parser,
    busy_machine_warning,
    cpu_seconds,
    fmt_ratio,
    free_ports,
    guarded,
    http_ok,
    machine_facts,
    parse_bench_args,
    process_tree,
    require_tools,
    rotations,
    run_systems,
    steelyard_argv,
    tool_version,
    wait_until,
    write_json,
    write_outputs,
)

SYSTEMS = ("direct", "twemproxy", "steelyard")
PROXIES = ("twemproxy", "steelyard")
COLUMN = {"direct": "direct (1 of 2 backends)", "twemproxy": "twemproxy", "steelyard": "steelyard"}

CLIENTS = 50  # redis-benchmark -c
KEYSPACE = 100_000  # redis-benchmark -r: keys key:000000000000 .. key:000000099999
VALUE = b"xxx"  # what redis-benchmark's SET writes with its default -d 3
MGET_KEYS = 10
CALIBRATION_START = 2000  # operations per pipeline slot of the first calibration run
CALIBRATION_MIN_S = 0.5  # a calibration run at least this long gives the rate
MIN_REQUESTS = 10_000
CHECK_KEYS = 16  # keys set and read back per path before measuring
BIG_KEY = b"bench:biglist"
BIG_ELEMENTS = 1_000_000
BIG_REPEAT = 3  # LRANGE runs per path; the median counts
BIG_GOAL = 3.0  # steelyard's time for the big reply <= this many times direct's


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    test: str  # "set", "get" or "mget"
    pipeline: int  # redis-benchmark -P
    protocol: int = 2  # 3: redis-benchmark -3 (HELLO 3), as redis-py 8 and go-redis 9 connect


METRICS = tuple(
    Metric(f"{test}_p{depth}", f"{test.upper()} P{depth}", test, depth)
    for test in ("set", "get", "mget")
    for depth in (1, 16)
) + tuple(
    # twemproxy speaks RESP2 only: these compare steelyard with the server alone
    Metric(f"{test}_p{depth}_resp3", f"{test.upper()} P{depth} RESP3", test, depth, 3)
    for test in ("set", "get")
    for depth in (1, 16)
)
RESP2_ONLY = ("twemproxy",)

# The Redis tier's timing goal: steelyard's ops/s >= 1.0x twemproxy's on these metrics.
GOAL_METRICS = ("get_p1", "get_p16", "set_p1", "set_p16")
GOAL_PEER = "twemproxy"
GOAL_LIMIT = 1.0


# RESP over a raw socket --------------------------------------------------------------------------


@dataclass(frozen=True)
class RespError:
    message: str


class Resp:
    """One RESP2 connection: enough of the protocol to check a path, nothing that could hide
    a proxy's mistake (no retries, no reconnects, no decoding of values)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()
        self.sock.close()

    def send(self, *commands: tuple[bytes, ...]) -> None:
        self.sock.sendall(b"".join(encode(c) for c in commands))

    def call(self, *args: bytes) -> Any:
        self.send(args)
        return self.read()

    def read(self) -> Any:
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise BenchError(f"connection closed mid-reply (got {line!r})")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.reader.read(size + 2)[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.read() for _ in range(count)]
        raise BenchError(f"not a RESP reply: {line!r}")


def encode(args: tuple[bytes, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def pong(port: int) -> Callable[[], bool]:
    """Readiness probe: the listener answers PING with +PONG."""

    def probe() -> bool:
        try:
            with Resp(port, timeout=1) as conn:
                return conn.call(b"PING") == "PONG"
        except (OSError, BenchError):
            return False

    return probe


# systems -----------------------------------------------------------------------------------------


def bench_key(i: int) -> bytes:
    """The name redis-benchmark gives random key i (`key:__rand_int__`, 12 digits)."""
    return b"key:%012d" % i


def start_backend(procs: Procs, name: str, port: int) -> Proc:
    data = procs.workdir / name
    data.mkdir()
    argv = ["redis-server", "--port", str(port), "--bind", HOST, "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(data)]
    return procs.start(name, argv)


def preload(port: int) -> None:
    """Every key of the bench's key space, with the value SET writes, on this backend.

    Both backends hold all keys, so GET and MGET find their keys on every path whichever
    backend a key hashes to (twemproxy and steelyard hash differently), and every path reads
    the same replies. SET then only overwrites a value with itself.
    """
    batch = 1000
    commands = []
    for start in range(0, KEYSPACE, batch):
        pairs = [arg for i in range(start, start + batch) for arg in (bench_key(i), VALUE)]
        commands.append((b"MSET", *pairs))
    try:
        with Resp(port, timeout=30) as conn:
            conn.send(*commands)
            replies = [conn.read() for _ in commands]
    except OSError as exc:
        raise BenchError(f"preloading the backend on port {port}: {exc}") from exc
    if bad := [r for r in replies if r != "OK"]:
        raise BenchError(f"preloading the backend on port {port}: MSET answered {bad[0]!r}")


def preload_big(port: int) -> None:
    """The 1M-element list of the big-reply measure, on this backend."""
    batch = 10_000
    commands = [(b"DEL", BIG_KEY)]
    for start in range(0, BIG_ELEMENTS, batch):
        commands.append(
            (b"RPUSH", BIG_KEY, *(b"element:%d" % i for i in range(start, start + batch)))
        )
    try:
        with Resp(port, timeout=60) as conn:
            conn.send(*commands)
            replies = [conn.read() for _ in commands]
    except OSError as exc:
        raise BenchError(f"preloading the big list on port {port}: {exc}") from exc
    if replies[-1] != BIG_ELEMENTS:
        raise BenchError(f"preloading the big list on port {port}: RPUSH answered {replies[-1]!r}")


def time_big_reply(port: int) -> float:
    """Seconds from sending LRANGE of the big list to its last element parsed."""
    reader = hiredis.Reader()
    with socket.create_connection((HOST, port), timeout=120) as sock:
        started = time.perf_counter()
        sock.sendall(encode((b"LRANGE", BIG_KEY, b"0", b"-1")))
        reply = reader.gets()
        while reply is False:
            data = sock.recv(1 << 20)
            if not data:
                raise BenchError("connection closed mid big reply")
            reader.feed(data)
            reply = reader.gets()
        elapsed = time.perf_counter() - started
    if (
        not isinstance(reply, list)
        or len(reply) != BIG_ELEMENTS
        or reply[-1] != b"element:%d" % (BIG_ELEMENTS - 1)
    ):
        raise BenchError(f"LRANGE of the big list on port {port} answered a wrong reply")
    return elapsed


def run_big(bench: Bench, repeat: int) -> dict[str, Any]:
    """system -> the big reply's seconds per run and their median; steelyard's ratio."""
    times: dict[str, list[float]] = {s: [] for s in bench.paths}
    for rep, system in rotations(list(bench.paths), repeat):
        for proc in bench.procs.items:
            proc.check_alive()
        try:
            seconds = time_big_reply(bench.paths[system])
        except (OSError, BenchError) as exc:
            raise BenchError(f"{system}, big reply: {exc}") from exc
        print(
            f"  LRANGE {BIG_ELEMENTS:,} {system:<10} run {rep + 1}/{repeat}: {seconds:.3f}s",
            file=sys.stderr,
            flush=True,
        )
        times[system].append(seconds)
    median = {s: statistics.median(v) for s, v in times.items() if v}
    r = median["steelyard"] / median["direct"] if {"steelyard", "direct"} <= median.keys() else None
    return {
        "runs_s": times,
        "median_s": median,
        "goal": f"LRANGE of {BIG_ELEMENTS:,} elements: steelyard <= {BIG_GOAL:g}x direct's time",
        "ratio": r,
        "status": "n/a" if r is None else ("PASS" if r <= BIG_GOAL else "MISS"),
    }


def big_table(big: dict[str, Any]) -> str:
    median = big["median_s"]
    systems = [s for s in SYSTEMS if s in median]
    head = [f"LRANGE {BIG_ELEMENTS:,} (s)", *(COLUMN[s] for s in systems), "steelyard/direct"]
    row = ["median", *(f"{median[s]:.3f}" for s in systems), fmt_ratio(big["ratio"])]
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |"]
    )


def commands_processed(port: int) -> int:
    """Commands a backend has served so far (INFO stats), to see how a proxy spread the load."""
    try:
        with Resp(port) as conn:
            info = conn.call(b"INFO", b"stats")
    except OSError as exc:
        raise BenchError(f"INFO stats on port {port}: {exc}") from exc
    if not isinstance(info, bytes):
        raise BenchError(f"INFO stats on port {port} answered {info!r}")
    for line in info.decode().splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.partition(":")[2])
    raise BenchError(f"INFO stats on port {port} has no total_commands_processed")


def start_twemproxy(procs: Procs, backends: list[int], port: int, stats_port: int) -> int:
    # Defaults otherwise (one connection per server, no timeouts, no preconnect): the goal is
    # stated against a stock twemproxy.
    servers = "".join(f"    - {HOST}:{b}:1\n" for b in backends)
    conf = f"""bench:
  listen: {HOST}:{port}
  redis: true
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: false
  servers:
{servers}"""
    path = procs.workdir / "twemproxy.yml"
    path.write_text(conf)
    argv = ["nutcracker", "-c", str(path), "-s", str(stats_port), "-a", HOST]
    # Pid file in the workdir; an empty log name means stderr, which Procs keeps in its log
    # (the default log and pid file are under /var and /run).
    argv += ["-p", str(procs.workdir / "twemproxy.pid"), "-o", ""]
    proc = procs.start("twemproxy", argv)
    wait_until("twemproxy", pong(port), [proc])
    return port


def start_steelyard(procs: Procs, backends: list[int], port: int, admin_port: int) -> int:
    workdir = procs.workdir
    cfg = {
        "workers": 1,
        "admin": {"listen": f"{HOST}:{admin_port}"},
        "store": {"kind": "embedded", "path": str(workdir / "store")},
        "redis": {
            "proxies": [{"listen": f"{HOST}:{port}"}],
            "groups": [{"id": i, "master": f"{HOST}:{b}"} for i, b in enumerate(backends, start=1)],
        },
    }
    path = workdir / "steelyard.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = procs.start("steelyard", steelyard_argv(path))
    healthz = f"http://{HOST}:{admin_port}/healthz"
    wait_until("steelyard", all_of(pong(port), http_ok(healthz)), [proc])
    return port


def check_path(system: str, port: int, backends: list[int]) -> None:
    """Fail fast with a clear message unless SET, GET and MGET carry values end to end, and,
    through a proxy, the keys land on both backends (the pool really spans them)."""
    # Random names: twemproxy's fnv1a_64 keeps 32 bits of the hash, so names that differ
    # only in a last digit or two fall in one ketama arc, on one backend.
    keys = [b"steelyard-bench:check:" + secrets.token_hex(8).encode() for _ in range(CHECK_KEYS)]
    values = [secrets.token_hex(8).encode() for _ in range(CHECK_KEYS)]
    try:
        with Resp(port) as conn:
            for key, value in zip(keys, values, strict=True):
                if (reply := conn.call(b"SET", key, value)) != "OK":
                    raise BenchError(f"{system}: SET {key.decode()} answered {reply!r}")
                if (reply := conn.call(b"GET", key)) != value:
                    raise BenchError(
                        f"{system}: GET {key.decode()} answered {reply!r}, expected {value!r}"
                    )
            if (reply := conn.call(b"MGET", *keys)) != values:
                raise BenchError(f"{system}: MGET of {CHECK_KEYS} keys answered {reply!r}")
        if system == "direct":
            return
        held = []
        for backend in backends:
            with Resp(backend) as conn:
                held.append(
                    sum(conn.call(b"GET", k) == v for k, v in zip(keys, values, strict=True))
                )
    except OSError as exc:
        raise BenchError(f"{system}: {exc}") from exc
    if sum(held) != CHECK_KEYS or not all(held):
        raise BenchError(
            f"{system}: of {CHECK_KEYS} keys set through it, the backends hold {held}: "
            "expected every key once and some on each backend"
        )


# load generator ----------------------------------------------------------------------------------

# What redis-benchmark 7 prints with --csv before its one row per test.
CSV_HEADER = [
    "test",
    "rps",
    "avg_latency_ms",
    "min_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "max_latency_ms",
]
CONFIG_WARNING = "WARNING: Could not fetch server CONFIG"


def benchmark_argv(port: int, metric: Metric, requests: int) -> list[str]:
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-c", str(CLIENTS)]
    argv += ["-n", str(requests), "-P", str(metric.pipeline), "-r", str(KEYSPACE), "--csv"]
    if metric.protocol == 3:
        argv.append("-3")
    if metric.test == "mget":
        # redis-benchmark 7 has no MGET test (`-t mget` runs nothing): given as a command,
        # each __rand_int__ becomes its own random key, so one MGET spans several slots.
        return [*argv, "mget", *(["key:__rand_int__"] * MGET_KEYS)]
    return [*argv, "-t", metric.test]


def run_benchmark(port: int, metric: Metric, requests: int, timeout: float) -> dict[str, Any]:
    argv = benchmark_argv(port, metric, requests)
    spelled = " ".join(argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        # redis-benchmark spins forever when its server is gone: the timeout is the only end.
        raise BenchError(f"{spelled}: no result after {timeout:.0f}s") from exc
    rows = list(csv.reader(done.stdout.splitlines()))
    # An error reply ends redis-benchmark with status 1 and no result row: it never counts a
    # failed request as a fast one, so any such exit is the proxy's failure to report.
    if done.returncode != 0 or len(rows) != 2 or rows[0] != CSV_HEADER:
        raise BenchError(
            f"{spelled}: exit {done.returncode}\nstdout: {done.stdout.strip()}\n"
            f"stderr: {done.stderr.strip()[-2000:]}"
        )
    row = dict(zip(CSV_HEADER, rows[1], strict=True))
    raw: dict[str, Any] = {"requests": requests, "ops_per_sec": float(row["rps"])}
    for name in CSV_HEADER[2:]:
        raw[name.removesuffix("_latency_ms") + "_ms"] = float(row[name])
    # Neither proxy serves CONFIG, which redis-benchmark asks for only to print settings.
    stderr = [line for line in done.stderr.splitlines() if line.strip() and line != CONFIG_WARNING]
    if stderr:
        raw["stderr"] = "\n".join(stderr)[-2000:]
    return raw


def calibrate(port: int, metric: Metric, duration: float) -> tuple[int, dict[str, Any]]:
    """Requests for a run of about `duration` seconds on this path, from short runs that grow
    until one lasts CALIBRATION_MIN_S; they also warm up the path's connections and caches."""
    requests = CALIBRATION_START * metric.pipeline
    while True:
        started = time.monotonic()
        raw = run_benchmark(port, metric, requests, timeout=60)
        took = time.monotonic() - started
        if took >= CALIBRATION_MIN_S:
            break
        requests *= 4
    raw["wall_s"] = took
    planned = max(MIN_REQUESTS, round(raw["ops_per_sec"] * duration, -3))
    return int(planned), raw


def measure(
    bench: Bench, metric: Metric, system: str, requests: int, timeout: float
) -> dict[str, Any]:
    # The proxy's own CPU time per operation: on a 2-core machine shared with redis-benchmark
    # and the backends, this shows the proxy's cost even where it is not the limit.
    proxy = bench.procs.find(system) if system in PROXIES else None
    pids = process_tree(proxy.popen.pid) if proxy else []
    backends = [p.popen.pid for p in bench.backends]
    cpu_before, backends_before = cpu_seconds(pids), cpu_seconds(backends)
    commands_before = [commands_processed(port) for port in bench.backend_ports]
    started = time.monotonic()
    raw = run_benchmark(bench.paths[system], metric, requests, timeout)
    raw["wall_s"] = time.monotonic() - started
    raw["backends_cpu_s"] = cpu_seconds(backends) - backends_before
    # Per backend: how evenly the path spread the keys (the INFO calls add one each).
    raw["backend_commands"] = [
        commands_processed(port) - before
        for port, before in zip(bench.backend_ports, commands_before, strict=True)
    ]
    if pids:
        raw["proxy_cpu_s"] = cpu_seconds(pids) - cpu_before
        raw["proxy_cpu_us_per_op"] = raw["proxy_cpu_s"] * 1e6 / requests
    return raw


# environment -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return machine_facts(
        redis_server=tool_version(["redis-server", "--version"]),
        redis_benchmark=tool_version(["redis-benchmark", "--version"]),
        nutcracker=tool_version(["nutcracker", "--version"]),
    )


def check_tools(systems: list[str]) -> None:
    needed = ["redis-server", "redis-benchmark"] + (
        ["nutcracker"] if "twemproxy" in systems else []
    )
    require_tools(needed, "make deps-system deps-bench-redis")


# run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    procs: Procs
    backends: list[Proc]
    backend_ports: list[int]
    paths: dict[str, int]  # system -> the port redis-benchmark connects to, in table order


def start_systems(procs: Procs, systems: list[str]) -> Bench:
    ports = iter(free_ports(6))
    backend_ports = [next(ports), next(ports)]
    backends = [
        start_backend(procs, f"backend{i}", port) for i, port in enumerate(backend_ports, 1)
    ]
    for proc, port in zip(backends, backend_ports, strict=True):
        wait_until(proc.name, pong(port), [proc])
        preload(port)
        preload_big(port)
    paths = {"direct": backend_ports[0]}
    if "twemproxy" in systems:
        paths["twemproxy"] = start_twemproxy(procs, backend_ports, next(ports), next(ports))
    if "steelyard" in systems:
        paths["steelyard"] = start_steelyard(procs, backend_ports, next(ports), next(ports))
    for system in systems:
        check_path(system, paths[system], backend_ports)
    return Bench(procs, backends, backend_ports, {s: paths[s] for s in systems})


def run_all(
    bench: Bench, duration: float, requests: int | None, repeat: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runs: list[dict[str, Any]] = []
    calibrations: list[dict[str, Any]] = []
    # (metric, system) -> requests for a run of --duration, and the rate they came from
    plan: dict[tuple[str, str], tuple[int, float]] = {}
    for metric in METRICS:
        paths = [s for s in bench.paths if metric.protocol == 2 or s not in RESP2_ONLY]
        for rep, system in rotations(paths, repeat):
            for proc in bench.procs.items:
                proc.check_alive()
            try:
                if (metric.key, system) not in plan:
                    planned, raw = calibrate(bench.paths[system], metric, duration)
                    plan[metric.key, system] = planned, raw["ops_per_sec"]
                    calibrations.append({"metric": metric.key, "system": system, "raw": raw})
                planned, rate = plan[metric.key, system]
                n = requests or planned
                # Generous: a slow path is what the bench is there to show, not an error.
                raw = measure(bench, metric, system, n, timeout=3 * n / rate + 30)
            except BenchError as exc:
                raise BenchError(f"{system}, {metric.label}: {exc}") from exc
            print(
                f"  {metric.label:<8} {system:<10} run {rep + 1}/{repeat}: "
                f"{raw['ops_per_sec']:>9,.0f} ops/s, p99 {raw['p99_ms']:.2f} ms "
                f"({n:,} requests, {raw['wall_s']:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
            runs.append({"metric": metric.key, "system": system, "rep": rep, "raw": raw})
    return runs, calibrations


SUMMARY_KEYS = ("ops_per_sec", "p99_ms", "proxy_cpu_us_per_op")


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
    for key in GOAL_METRICS:
        label = next(m.label for m in METRICS if m.key == key)
        r = ratio(summary["ops_per_sec"], key, GOAL_PEER)
        goals.append(
            {
                "goal": f"{label}: steelyard ops/s >= {GOAL_LIMIT:.1f}x {GOAL_PEER}",
                "metric": key,
                "quantity": "ops_per_sec",
                "peer": GOAL_PEER,
                "limit": GOAL_LIMIT,
                "ratio": r,
                "status": "n/a" if r is None else ("PASS" if r >= GOAL_LIMIT else "MISS"),
            }
        )
    return goals


# output ------------------------------------------------------------------------------------------


def backend_shares(runs: list[dict[str, Any]]) -> dict[str, float]:
    """system -> share of the backends' commands that went to backend 1, over all its runs."""
    totals: dict[str, list[int]] = {}
    for run in runs:
        first, second = run["raw"]["backend_commands"]
        total = totals.setdefault(run["system"], [0, 0])
        total[0] += first
        total[1] += second
    return {s: first / (first + second) for s, (first, second) in totals.items() if first + second}


def backend_commands_per_op(runs: list[dict[str, Any]], test: str) -> dict[str, float]:
    """system -> commands the backends served per operation of `test`: how a proxy splits
    a multi-key command (per server, per slot, per key)."""
    totals: dict[str, list[int]] = {}
    for run in runs:
        if run["metric"].startswith(f"{test}_"):
            total = totals.setdefault(run["system"], [0, 0])
            total[0] += sum(run["raw"]["backend_commands"])
            total[1] += run["raw"]["requests"]
    return {s: commands / ops for s, (commands, ops) in totals.items() if ops}


def warnings(runs: list[dict[str, Any]], info: dict[str, Any]) -> list[str]:
    out = []
    shares = backend_shares(runs)
    if spread := [f"{s} {shares[s]:.0%}" for s in PROXIES if s in shares]:
        out.append(
            "share of the backends' commands served by backend 1 (each proxy hashes keys its "
            "own way): " + ", ".join(spread)
        )
    per_mget = backend_commands_per_op(runs, "mget")
    if split := [f"{s} {per_mget[s]:.1f}" for s in PROXIES if s in per_mget]:
        out.append(
            f"backend commands per {MGET_KEYS}-key MGET (how each proxy splits it): "
            + ", ".join(split)
        )
    for run in runs:
        if stderr := run["raw"].get("stderr"):
            where = f"{run['system']} {run['metric']} run {run['rep'] + 1}"
            out.append(f"{where}: redis-benchmark said: {stderr.splitlines()[-1]}")
    if busy := busy_machine_warning(info):
        out.append(busy)
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
    head = [title, *(COLUMN[s] for s in columns), *(f"steelyard/{p}" for p in peers)]
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
    colors = {"direct": "#7f7f7f", "twemproxy": "#1f77b4", "steelyard": "#d62728"}
    panels = (
        ("ops_per_sec", "operations/s", "{:,.0f}"),
        ("p99_ms", "p99 latency (ms)", "{:.2f}"),
    )
    width = 0.8 / len(systems)
    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 4.5))
    for ax, (key, ylabel, spell) in zip(axes, panels, strict=True):
        for i, system in enumerate(systems):
            xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(METRICS))]
            values = [summary[key].get(m.key, {}).get(system, 0.0) for m in METRICS]
            bars = ax.bar(xs, values, width, label=COLUMN[system], color=colors[system])
            ax.bar_label(
                bars, labels=[spell.format(v) for v in values], padding=2, fontsize=7, rotation=90
            )
        ax.set_xticks(range(len(METRICS)), [m.label for m in METRICS])
        ax.set_ylabel(ylabel)
        ax.margins(y=0.25)
        ax.legend(fontsize=8)
    runs = (
        f"{settings['requests']:,} requests per run"
        if settings["requests"]
        else f"~{settings['duration_s']:g}s per run"
    )
    fig.suptitle(
        f"Redis proxy on 127.0.0.1, redis-benchmark -c {CLIENTS} -r {KEYSPACE}, "
        f"{report['machine']['nproc']} cores, {runs}, median of {settings['repeat']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(
        __doc__, "redis", SYSTEMS,
        duration_help="seconds per measurement: each path's request count comes from a "
        "calibration run",
    )  # fmt: skip
    p.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests per measurement on every path instead of --duration's calibrated count",
    )
    p.add_argument(
        "--big-only",
        action="store_true",
        help="measure only the big reply (LRANGE of a 1M-element list), not redis-benchmark",
    )
    args = parse_bench_args(p, argv, SYSTEMS)
    if args.requests is not None and args.requests < 1:
        p.error("--requests must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """Measure, then print the tables and write the JSON and the chart."""

    def measure_all(bench: Bench) -> tuple[list[Any], list[Any], dict[str, Any]]:
        runs, calibrations = (
            ([], []) if args.big_only else run_all(bench, args.duration, args.requests, args.repeat)
        )
        return runs, calibrations, run_big(bench, max(BIG_REPEAT, args.repeat))

    info, started, (runs, calibrations, big) = run_systems(
        args.systems, check_tools, machine_info, start_systems, measure_all
    )
    summary = summarize(runs)
    goals = evaluate_goals(summary)
    report = {
        "timestamp": started,
        "machine": info,
        "settings": {
            "duration_s": args.duration,
            "requests": args.requests,
            "repeat": args.repeat,
            "systems": args.systems,
            "redis_benchmark": f"-c {CLIENTS} -r {KEYSPACE} -P 1|16 --csv; -t set, -t get, "
            f"and mget with {MGET_KEYS} random keys as a command; -n from a calibration run "
            "per path and metric unless --requests",
            "preload": f"{KEYSPACE} keys key:%012d = {VALUE.decode()!r} on both backends",
            "backends": "2 x redis-server --save '' --appendonly no",
            "direct": "backend 1 alone",
            "twemproxy": "1 process, one pool over both backends: redis true, hash fnv1a_64, "
            "distribution ketama, auto_eject_hosts false, otherwise defaults",
            "steelyard": "workers 1, one redis proxy, 2 groups (slots seeded by weight)",
        },
        "summary": summary,
        "goals": goals,
        "big_reply": big,
        "runs": runs,
        "calibrations": calibrations,
    }
    if args.big_only:
        # Not the redis-benchmark results: kept apart, so redis.json keeps the last full run.
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "redis_big.json", report)
    else:
        write_outputs(args.out, "redis", report, plot)
    print()
    for tool in ("redis_server", "nutcracker"):
        print(info[tool])
    how = (
        f"{args.requests:,} requests per run"
        if args.requests
        else f"about {args.duration:g}s per run"
    )
    if args.big_only:
        runs_each = len(next(iter(big["runs_s"].values())))
        print(f"{info['nproc']} cores; one client; median of {runs_each} run(s) per path\n")
    else:
        print(
            f"{info['nproc']} cores shared by redis-benchmark, proxy and backends; "
            f"-c {CLIENTS} -r {KEYSPACE}; MGET of {MGET_KEYS} keys; "
            f"{how}, median of {args.repeat} run(s) per cell\n"
        )
    print(big_table(big))
    print(f"\n| {big['goal']} | {fmt_ratio(big['ratio'])} | {big['status']} |\n")
    if args.big_only:
        return 0
    print(table("ops/s", summary["ops_per_sec"], SYSTEMS, ("twemproxy", "direct"), 0))
    print()
    print(table("p99 (ms)", summary["p99_ms"], SYSTEMS, ("twemproxy",), 2))
    print()
    cpu = summary["proxy_cpu_us_per_op"]
    print(table("proxy CPU us/op", cpu, PROXIES, ("twemproxy",), 1))
    print()
    print(goals_table(goals))
    for line in warnings(runs, info):
        print(f"\nnote: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
