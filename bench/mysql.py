"""MySQL proxy benchmark: steelyard (1 worker) against HAProxy `mode tcp` (1 thread) and no proxy.

Why: the MySQL tier's timing goal (point selects, text and prepared: steelyard serves >= 1.0x
HAProxy's queries/s) only means something when every system is measured in the same run on the
same machine, so this script starts one MariaDB server, HAProxy and steelyard in front of it,
measures each path in turn and prints ratios. Timing never lives in the test suite.

What: sysbench oltp_point_select and oltp_read_only, each with text statements
(--db-ps-mode=disable) and server-side prepared statements (--db-ps-mode=auto), 8 threads,
one table of 10000 rows: queries/s, p95 latency and the proxy's CPU time per query. A sysbench
run that fails is recorded with its error text and shown as FAILED, never dropped. Results go
to stdout (markdown), `mysql.json` and `mysql.png` under --out. Everything binds to 127.0.0.1.

Run: `make bench-mysql` or `.venv/bin/python bench/mysql.py [--duration 5] [--repeat 1]
[--only direct,haproxy,steelyard] [--out bench/results]`.
"""

from __future__ import annotations

import sys

# This file's name is that of mysql-connector's package, which the venv holds for the tests,
# and Python puts the script's directory first on sys.path: moved to the end, it still serves
# `harness` and no longer hides mysql-connector from anything that imports it.
sys.path.append(sys.path.pop(0))

import argparse
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import yaml

from harness import (
    HAPROXY_MAXCONN,
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
    haproxy_maxconn,
    http_ok,
    listening,
    machine_facts,
    parse_bench_args,
    process_tree,
    require_tools,
    rotations,
    run_systems,
    steelyard_argv,
    tool_version,
    wait_until,
    write_outputs,
)
from harness import (
    start_haproxy as harness_start_haproxy,
)

SYSTEMS = ("direct", "haproxy", "steelyard")
PROXIES = ("haproxy", "steelyard")

USER = PASSWORD = DATABASE = "sbtest"  # sysbench's defaults, spelled out on every command line
THREADS = 8
TABLES = 1
TABLE_SIZE = 10_000
WARMUP_S = 1  # sysbench seconds on each path before its first measurement
MARIADB_READY_S = 60.0  # mariadbd's first start (InnoDB files) can take long on a busy machine
OUTPUT_TAIL = 4000  # characters of a failed sysbench's output kept in the JSON


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    test: str  # sysbench's Lua test
    ps_mode: str  # sysbench --db-ps-mode: "disable" (text protocol) or "auto" (prepared)


METRICS = tuple(
    Metric(f"{test}_{kind}", f"{test} {kind}", f"oltp_{test}", mode)
    for test in ("point_select", "read_only")
    for kind, mode in (("text", "disable"), ("ps", "auto"))
)

# The MySQL tier's timing goal: steelyard's queries/s >= 1.0x HAProxy's on these metrics.
GOAL_METRICS = ("point_select_text", "point_select_ps")
GOAL_PEER = "haproxy"
GOAL_LIMIT = 1.0


# systems -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MariaDB:
    proc: Proc
    port: int
    socket: Path


def root_sql(socket: Path, statements: str, timeout: float = 60) -> str:
    """Run `statements` as root over the server's socket (unix_socket authentication)."""
    argv = ["mariadb", f"--socket={socket}", "-uroot", "-N", "-B", "-e", statements]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"mariadb -e {statements!r}: no answer after {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise BenchError(f"mariadb -e {statements!r}: {done.stderr.strip()}")
    return done.stdout


def root_ready(socket: Path) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return root_sql(socket, "SELECT 1", timeout=10).strip() == "1"
        except BenchError:
            return False

    return probe


def start_mariadb(procs: Procs, port: int) -> MariaDB:
    """One mariadbd with a fresh data directory in the workdir, its errors in its Procs log."""
    base = procs.workdir / "mariadb"
    datadir, socket = base / "data", base / "mysqld.sock"
    base.mkdir()
    install = ["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root"]
    install += ["--auth-root-authentication-method=socket", "--skip-test-db"]
    try:
        done = subprocess.run(install, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError("mariadb-install-db: no result after 300s") from exc
    if done.returncode != 0:
        out = (done.stdout + done.stderr).strip()[-2000:]
        raise BenchError(f"mariadb-install-db: exit {done.returncode}\n{out}")
    # No binary log (one server, nothing replicates); a buffer pool that holds the table many
    # times over; room for every client the bench and the proxies' pools open.
    argv = ["mariadbd", "--no-defaults", f"--datadir={datadir}", "--user=root"]
    argv += [f"--port={port}", f"--bind-address={HOST}", f"--socket={socket}"]
    argv += [f"--pid-file={base / 'mariadbd.pid'}", "--skip-log-bin", "--skip-name-resolve"]
    argv += ["--innodb-buffer-pool-size=128M", "--max-connections=500"]
    argv += ["--performance-schema=OFF"]
    proc = procs.start("mariadb", argv)
    deadline = time.monotonic() + MARIADB_READY_S
    while True:  # harness.wait_until's 15 s are short for InnoDB's first start on 2 busy cores
        try:
            wait_until("mariadbd", all_of(listening(port), root_ready(socket)), [proc])
            break
        except BenchError:
            proc.check_alive()
            if time.monotonic() > deadline:
                raise
    root_sql(
        socket,
        f"CREATE DATABASE {DATABASE};"
        f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';"
        f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'%';",
    )
    return MariaDB(proc, port, socket)


def sql_ok(port: int) -> Callable[[], bool]:
    """Readiness probe: a client logs in as the bench user on this port and runs SELECT 1."""

    def probe() -> bool:
        try:
            with connect(port, timeout=1) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except (OSError, pymysql.err.Error):
            return False

    return probe


def client_error(port: int) -> str | None:
    """What a client sees when it logs in on this port and runs SELECT 1, if that fails."""
    try:
        with connect(port, timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    except (OSError, pymysql.err.Error) as exc:
        return repr(exc)
    return None


def connect(port: int, timeout: float = 5) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=HOST,
        port=port,
        user=USER,
        password=PASSWORD,
        database=DATABASE,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
    )


def start_haproxy(procs: Procs, backend: int, port: int) -> int:
    # Defaults on purpose: the goal is stated against a stock HAProxy. Timeouts only because
    # HAProxy warns without them; long, so sysbench's idle moments never cut a connection.
    sections = f"""
defaults
    mode tcp
    timeout connect 3s
    timeout client 300s
    timeout server 300s

listen mysql
    bind {HOST}:{port}
    server s1 {HOST}:{backend}
"""
    harness_start_haproxy(procs, sections, sql_ok(port))
    return port


def start_steelyard(procs: Procs, backend: int, port: int, admin_port: int) -> int:
    workdir = procs.workdir
    cfg = {
        "workers": 1,
        "admin": {"listen": f"{HOST}:{admin_port}"},
        "store": {"kind": "embedded", "path": str(workdir / "store")},
        "pools": {
            "primary": {
                "health": {"kind": "mysql"},
                "servers": [{"address": f"{HOST}:{backend}"}],
            }
        },
        "mysql": {
            "listeners": [
                {
                    "listen": f"{HOST}:{port}",
                    "users": [{"name": USER, "password": PASSWORD}],
                    "backend_user": USER,
                    "backend_password": PASSWORD,
                    # No replicas: every statement goes to the primary.
                    "primary": "primary",
                }
            ]
        },
    }
    path = workdir / "steelyard.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = procs.start("steelyard", steelyard_argv(path))
    healthz = f"http://{HOST}:{admin_port}/healthz"
    wait_until("steelyard", all_of(http_ok(healthz), sql_ok(port)), [proc])
    return port


def check_path(system: str, port: int, expected: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """Fail fast with a clear message unless the path reads the prepared table: its row count
    and one row, the same as the server's own answer (`expected`, from the direct path)."""
    try:
        with connect(port) as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM sbtest1")
            count = cur.fetchone()
            cur.execute("SELECT id, k, c, pad FROM sbtest1 WHERE id = %s", (TABLE_SIZE // 2,))
            row = cur.fetchone()
    except (OSError, pymysql.err.Error) as exc:
        raise BenchError(f"{system}: reading sbtest1 failed: {exc!r}") from exc
    if count != (TABLE_SIZE,):
        raise BenchError(f"{system}: SELECT COUNT(*) FROM sbtest1 answered {count!r}")
    if row is None or (expected is not None and row != expected):
        raise BenchError(
            f"{system}: row {TABLE_SIZE // 2} of sbtest1 reads {row!r}, the server has {expected!r}"
        )
    return row


# load generator ----------------------------------------------------------------------------------


def sysbench_argv(port: int, test: str, *extra: str) -> list[str]:
    argv = ["sysbench", test, "--db-driver=mysql", f"--mysql-host={HOST}", f"--mysql-port={port}"]
    argv += [f"--mysql-user={USER}", f"--mysql-password={PASSWORD}", f"--mysql-db={DATABASE}"]
    return [*argv, f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", *extra]


def prepare_table(port: int) -> None:
    """sbtest1 with TABLE_SIZE rows, written once straight to the server."""
    argv = sysbench_argv(port, "oltp_point_select", "prepare")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(argv)}: no result after 600s") from exc
    if done.returncode != 0:
        out = (done.stdout + done.stderr).strip()[-2000:]
        raise BenchError(f"{' '.join(argv)}: exit {done.returncode}\n{out}")


def run_argv(port: int, metric: Metric, duration: int) -> list[str]:
    return sysbench_argv(
        port,
        metric.test,
        f"--db-ps-mode={metric.ps_mode}",
        f"--threads={THREADS}",
        f"--time={duration}",
        "--events=0",
        "--report-interval=0",
        "--percentile=95",
        "run",
    )


_QUERIES = re.compile(r"^\s*queries:\s+(\d+)\s+\(([\d.]+) per sec\.\)", re.MULTILINE)
_TRANSACTIONS = re.compile(r"^\s*transactions:\s+(\d+)\s+\(([\d.]+) per sec\.\)", re.MULTILINE)
_IGNORED = re.compile(r"^\s*ignored errors:\s+(\d+)", re.MULTILINE)
_RECONNECTS = re.compile(r"^\s*reconnects:\s+(\d+)", re.MULTILINE)
_P95 = re.compile(r"^\s*95th percentile:\s+([\d.]+)", re.MULTILINE)
_TOTAL_TIME = re.compile(r"^\s*total time:\s+([\d.]+)s", re.MULTILINE)
# What sysbench prints when a query, a connection or its Lua code fails.
_ERROR_LINE = re.compile(r"FATAL|ALERT|error", re.IGNORECASE)


def run_sysbench(port: int, metric: Metric, duration: int) -> dict[str, Any]:
    """One sysbench run. Never raises for the run's own failure: a run that exits non-zero,
    prints a FATAL line or gives no statistics comes back with `error` set (its error lines,
    or the end of its output), so the tables can say FAILED and why."""
    argv = run_argv(port, metric, duration)
    raw: dict[str, Any] = {"argv": " ".join(argv)}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = ((exc.stdout or b"") + (exc.stderr or b"")).decode(errors="replace")
        raw["error"] = f"no result after {duration + 60}s (sysbench killed)"
        raw["output_tail"] = out[-OUTPUT_TAIL:]
        return raw
    out = done.stdout + done.stderr
    raw["exit"] = done.returncode
    fields = {
        "queries": _QUERIES,
        "transactions": _TRANSACTIONS,
        "ignored_errors": _IGNORED,
        "reconnects": _RECONNECTS,
        "p95_ms": _P95,
        "total_time_s": _TOTAL_TIME,
    }
    for name, pattern in fields.items():
        if m := pattern.search(done.stdout):
            raw[name] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
            if name in ("queries", "transactions"):
                raw[f"{name}_per_sec"] = float(m.group(2))
    errors = [line.strip() for line in out.splitlines() if _ERROR_LINE.search(line)]
    # "ignored errors: 0" is a statistics line, not an error.
    errors = [line for line in errors if not line.startswith("ignored errors:")]
    if done.returncode != 0 or errors or "queries_per_sec" not in raw or "p95_ms" not in raw:
        lines = errors or out.strip().splitlines()[-10:]
        raw["error"] = f"exit {done.returncode}: " + "\n".join(dict.fromkeys(lines))[-2000:]
        raw["output_tail"] = out[-OUTPUT_TAIL:]
    return raw


def measure(bench: Bench, metric: Metric, system: str, duration: int) -> dict[str, Any]:
    # The proxy's own CPU time per query: on a 2-core machine shared with sysbench and
    # MariaDB, this shows the proxy's cost even where it is not the limit.
    proxy = bench.procs.find(system) if system in PROXIES else None
    pids = process_tree(proxy.popen.pid) if proxy else []
    server = [bench.mariadb.proc.popen.pid]
    cpu_before, server_before = cpu_seconds(pids), cpu_seconds(server)
    started = time.monotonic()
    raw = run_sysbench(bench.paths[system], metric, duration)
    raw["wall_s"] = time.monotonic() - started
    raw["server_cpu_s"] = cpu_seconds(server) - server_before
    if pids:
        raw["proxy_cpu_s"] = cpu_seconds(pids) - cpu_before
        if raw.get("queries") and "error" not in raw:
            raw["proxy_cpu_us_per_query"] = raw["proxy_cpu_s"] * 1e6 / raw["queries"]
    if proxy is not None and proxy.popen.poll() is not None:
        died = f"{system} exited with status {proxy.popen.returncode}; its last output:\n"
        raw["error"] = died + proxy.tail() + ("\n" + raw["error"] if "error" in raw else "")
    return raw


# environment -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return machine_facts(
        mariadbd=tool_version(["mariadbd", "--version"]),
        sysbench=tool_version(["sysbench", "--version"]),
        haproxy=tool_version(["haproxy", "-v"]),
        haproxy_maxconn=haproxy_maxconn(),
        pymysql=pymysql.__version__,
    )


def check_tools(systems: list[str]) -> None:
    needed = ["sysbench", "mariadbd", "mariadb-install-db", "mariadb"]
    require_tools(needed + (["haproxy"] if "haproxy" in systems else []))


# run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    procs: Procs
    mariadb: MariaDB
    paths: dict[str, int]  # system -> the port sysbench connects to, in table order
    # proxy -> why it could not start or failed its check: its runs are recorded as failed
    broken: dict[str, str]


def start_systems(procs: Procs, systems: list[str]) -> Bench:
    server_port, haproxy_port, steelyard_port, admin_port = free_ports(4)
    mariadb = start_mariadb(procs, server_port)
    print("  preparing sbtest1 on the server ...", file=sys.stderr, flush=True)
    prepare_table(mariadb.port)
    expected = check_path("direct", mariadb.port, None)
    paths = {"direct": mariadb.port, "haproxy": haproxy_port, "steelyard": steelyard_port}
    starters = {
        "haproxy": lambda: start_haproxy(procs, mariadb.port, haproxy_port),
        "steelyard": lambda: start_steelyard(procs, mariadb.port, steelyard_port, admin_port),
    }
    broken: dict[str, str] = {}
    for system in (s for s in PROXIES if s in systems):
        # A proxy that cannot start or read the table is a result (FAILED, with why), not a
        # reason to leave the other paths unmeasured: the server is what the bench needs.
        try:
            starters[system]()
            check_path(system, paths[system], expected)
        except BenchError as exc:
            first, _, rest = str(exc).partition("\n")
            if seen := client_error(paths[system]):
                first += f"\na client's SELECT 1 through it: {seen}"
            broken[system] = f"{first}\n{rest}".strip()
            what = first.replace("\n", "; ")
            print(f"  {system} FAILED to start or check: {what}", file=sys.stderr, flush=True)
    return Bench(procs, mariadb, {s: paths[s] for s in systems}, broken)


def run_all(bench: Bench, duration: int, repeat: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    warm: set[str] = set()
    for metric in METRICS:
        for rep, system in rotations(list(bench.paths), repeat):
            # The server gone, nothing can be measured; a proxy gone, its runs fail and say so.
            bench.mariadb.proc.check_alive()
            if system in bench.broken:
                raw: dict[str, Any] = {"error": f"not measured: {bench.broken[system]}"}
            else:
                if system not in warm:
                    # Connections, the proxy's backend pool and caches filled before
                    # counting; a failure here shows again, with its error, in the measured run.
                    run_sysbench(bench.paths[system], metric, min(WARMUP_S, duration))
                    warm.add(system)
                raw = measure(bench, metric, system, duration)
            where = f"  {metric.label:<17} {system:<10} run {rep + 1}/{repeat}:"
            if "error" in raw:
                first = raw["error"].splitlines()[0]
                print(f"{where} FAILED: {first}", file=sys.stderr, flush=True)
            else:
                print(
                    f"{where} {raw['queries_per_sec']:>9,.0f} qps, p95 {raw['p95_ms']:.2f} ms, "
                    f"{raw['ignored_errors']} ignored errors, {raw['reconnects']} reconnects",
                    file=sys.stderr,
                    flush=True,
                )
            runs.append(
                {
                    "metric": metric.key,
                    "system": system,
                    "rep": rep,
                    "ok": "error" not in raw,
                    "raw": raw,
                }
            )
    return runs


SUMMARY_KEYS = ("queries_per_sec", "p95_ms", "proxy_cpu_us_per_query")


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """quantity -> metric -> system -> median over the runs that did not fail: robust to one
    run hit by a noisy neighbour. Each quantity's median is taken on its own. Failed runs are
    counted by `tally`, not here."""
    cells: dict[str, dict[str, dict[str, list[float]]]] = {k: {} for k in SUMMARY_KEYS}
    for run in runs:
        if not run["ok"]:
            continue
        for key in SUMMARY_KEYS:
            if (value := run["raw"].get(key)) is not None:
                by_system = cells[key].setdefault(run["metric"], {})
                by_system.setdefault(run["system"], []).append(value)
    return {
        key: {m: {s: statistics.median(v) for s, v in by.items()} for m, by in per.items()}
        for key, per in cells.items()
    }


def tally(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """metric -> system -> runs, failed runs, ignored errors and reconnects over the runs."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for run in runs:
        cell = out.setdefault(run["metric"], {}).setdefault(
            run["system"], {"runs": 0, "failed": 0, "ignored_errors": 0, "reconnects": 0}
        )
        cell["runs"] += 1
        cell["failed"] += not run["ok"]
        cell["ignored_errors"] += run["raw"].get("ignored_errors", 0)
        cell["reconnects"] += run["raw"].get("reconnects", 0)
    return out


def ratio(table: dict[str, dict[str, float]], metric: str, peer: str) -> float | None:
    cell = table.get(metric, {})
    if "steelyard" not in cell or not cell.get(peer):
        return None
    return cell["steelyard"] / cell[peer]


def evaluate_goals(
    summary: dict[str, dict[str, dict[str, float]]], counts: dict[str, dict[str, dict[str, int]]]
) -> list[dict[str, Any]]:
    goals = []
    for key in GOAL_METRICS:
        label = next(m.label for m in METRICS if m.key == key)
        r = ratio(summary["queries_per_sec"], key, GOAL_PEER)
        measured = summary["queries_per_sec"].get(key, {})
        # Steelyard run but never measured (every run failed) misses the goal; a peer that
        # failed or was left out leaves nothing to compare with.
        failed = "steelyard" in counts.get(key, {}) and "steelyard" not in measured
        if failed and measured.get(GOAL_PEER):
            status = "MISS (steelyard failed)"
        else:
            status = "n/a" if r is None else ("PASS" if r >= GOAL_LIMIT else "MISS")
        goals.append(
            {
                "goal": f"{label}: steelyard qps >= {GOAL_LIMIT:.1f}x {GOAL_PEER}",
                "metric": key,
                "quantity": "queries_per_sec",
                "peer": GOAL_PEER,
                "limit": GOAL_LIMIT,
                "ratio": r,
                "status": status,
            }
        )
    return goals


# output ------------------------------------------------------------------------------------------


def failures(runs: list[dict[str, Any]]) -> list[str]:
    """One line per failed run or run with errors: what the tables' FAILED and errors mean."""
    out = []
    for run in runs:
        raw, where = run["raw"], f"{run['system']} {run['metric']} run {run['rep'] + 1}"
        if "error" in raw:
            # The first distinct lines: sysbench repeats its FATAL line per thread, a log tail
            # repeats one error per connection (they differ only in a timestamp or a query).
            lines: list[str] = []
            for line in raw["error"].splitlines():
                line = re.sub(r"^ts=\S+ |peer=\S+ |\bid=\d+", "", line.strip())
                if line and line not in lines:
                    lines.append(line)
            out.append(f"{where} FAILED: {' | '.join(lines[:4])[:800]}")
        elif raw.get("ignored_errors"):
            out.append(f"{where}: {raw['ignored_errors']} ignored errors (sysbench went on)")
        if raw.get("reconnects"):
            out.append(f"{where}: {raw['reconnects']} reconnects")
    return out


def warnings(info: dict[str, Any], systems: list[str]) -> list[str]:
    out = []
    if busy := busy_machine_warning(info):
        out.append(busy)
    if "haproxy" in systems and info["haproxy_maxconn"] < HAPROXY_MAXCONN:
        out.append(
            f"haproxy maxconn lowered to {info['haproxy_maxconn']} to fit the FD hard limit "
            f"(the bench opens at most {THREADS} client connections at a time)"
        )
    return out


def fmt(value: float | None, decimals: int, count: dict[str, int] | None) -> str:
    if value is not None:
        return f"{value:,.{decimals}f}"
    return "FAILED" if count and count["failed"] else "n/a"


def errors_cell(counts: dict[str, dict[str, int]], systems: tuple[str, ...]) -> str:
    parts = []
    for system in systems:
        c = counts.get(system)
        if not c:
            continue
        if c["failed"]:
            parts.append(f"{system} FAILED {c['failed']}/{c['runs']}")
        if c["ignored_errors"]:
            parts.append(f"{system} {c['ignored_errors']} ignored errors")
        if c["reconnects"]:
            parts.append(f"{system} {c['reconnects']} reconnects")
    return "; ".join(parts) or "none"


def table(
    title: str,
    values: dict[str, dict[str, float]],
    counts: dict[str, dict[str, dict[str, int]]],
    columns: tuple[str, ...],
    decimals: int,
    errors: bool = False,
) -> str:
    head = [title, *columns, f"steelyard/{GOAL_PEER}"] + (["errors"] if errors else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in METRICS:
        cell, count = values.get(metric.key, {}), counts.get(metric.key, {})
        row = [metric.label]
        row += [fmt(cell.get(s), decimals, count.get(s)) for s in columns]
        row.append(fmt_ratio(ratio(values, metric.key, GOAL_PEER)))
        if errors:
            row.append(errors_cell(count, SYSTEMS))
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

    summary, settings, counts = report["summary"], report["settings"], report["counts"]
    systems = settings["systems"]
    colors = {"direct": "#7f7f7f", "haproxy": "#1f77b4", "steelyard": "#d62728"}
    panels = (
        ("queries_per_sec", "queries/s", "{:,.0f}"),
        ("p95_ms", "p95 latency (ms)", "{:.2f}"),
    )
    width = 0.8 / len(systems)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5))
    for ax, (key, ylabel, spell) in zip(axes, panels, strict=True):
        for i, system in enumerate(systems):
            xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(METRICS))]
            cells = [summary[key].get(m.key, {}).get(system) for m in METRICS]
            labels = [
                spell.format(v)
                if v is not None
                else fmt(None, 0, counts.get(m.key, {}).get(system))
                for m, v in zip(METRICS, cells, strict=True)
            ]
            values = [v or 0.0 for v in cells]
            bars = ax.bar(xs, values, width, label=system, color=colors[system])
            ax.bar_label(bars, labels=labels, padding=2, fontsize=7, rotation=90)
        ax.set_xticks(range(len(METRICS)), [m.label for m in METRICS])
        ax.set_ylabel(ylabel)
        ax.margins(y=0.25)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"MySQL proxy on 127.0.0.1, sysbench --threads={THREADS}, "
        f"{report['machine']['nproc']} cores, {settings['duration_s']}s per run, "
        f"median of {settings['repeat']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__, "mysql", SYSTEMS, int, "seconds per measurement (sysbench --time)")
    return parse_bench_args(p, argv, SYSTEMS)


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
    counts = tally(runs)
    goals = evaluate_goals(summary, counts)
    report = {
        "timestamp": started,
        "machine": info,
        "settings": {
            "duration_s": args.duration,
            "repeat": args.repeat,
            "systems": args.systems,
            "sysbench": f"oltp_point_select and oltp_read_only, --db-ps-mode=disable|auto "
            f"--threads={THREADS} --time={args.duration} --events=0 --report-interval=0 "
            f"--percentile=95 --tables={TABLES} --table-size={TABLE_SIZE}; "
            f"{WARMUP_S}s of sysbench on each path before its first measurement",
            "server": "1 x mariadbd --innodb-buffer-pool-size=128M --max-connections=500 "
            "--skip-name-resolve --performance-schema=OFF --skip-log-bin; table prepared "
            "once with `sysbench oltp_point_select prepare` on the server",
            "direct": "sysbench to mariadbd's TCP port",
            "haproxy": "nbthread 1, mode tcp, one server, otherwise defaults",
            "steelyard": "workers 1, one mysql listener, a primary pool of the one server "
            "(health kind mysql), no replicas",
        },
        "summary": summary,
        "counts": counts,
        "goals": goals,
        "runs": runs,
    }
    write_outputs(args.out, "mysql", report, plot)
    print()
    for tool in ("mariadbd", "sysbench"):
        print(info[tool])
    if "haproxy" in args.systems:
        print(f"{info['haproxy']} (nbthread 1, mode tcp, default options)")
    print(
        f"{info['nproc']} cores shared by sysbench, proxy and server; --threads={THREADS}, "
        f"{TABLES} table of {TABLE_SIZE} rows; {args.duration}s per run, median of "
        f"{args.repeat} run(s) per cell\n"
    )
    print(table("qps", summary["queries_per_sec"], counts, SYSTEMS, 0, errors=True))
    print()
    print(table("p95 (ms)", summary["p95_ms"], counts, SYSTEMS, 2))
    print()
    cpu = summary["proxy_cpu_us_per_query"]
    print(table("proxy CPU us/query", cpu, counts, PROXIES, 1))
    print()
    print(goals_table(goals))
    failed = failures(runs)
    if failed:
        print(f"\nWARNING: {len(failed)} run(s) failed or had errors:")
        for line in failed:
            print(f"- {line}")
    for line in warnings(info, args.systems):
        print(f"\nnote: {line}")
    # Everything is written and shown; a failed run still makes the exit status say so.
    return 2 if any(not run["ok"] for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
