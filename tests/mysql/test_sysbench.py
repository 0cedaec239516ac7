"""sysbench oltp_read_write through the proxy for 30 s (prepared statements, transactions,
reads and writes from 4 threads, MariaDB Connector/C underneath): no error, no reconnect, and
the data on the primary is what the transactions left.

One error is the database's own answer and not a fault: InnoDB's deadlock (1213), which
conflicting transactions get directly from MariaDB as well and which sysbench retries (its
default). It is the only one let through; any other error stops the run and fails the test."""

from __future__ import annotations

import re
import subprocess

from fixtures.mysql_client import connect
from fixtures.procs import wait_for


def sysbench(port: int, *args: str, timeout: float) -> str:
    argv = [
        "sysbench", "oltp_read_write", "--db-driver=mysql", "--mysql-host=127.0.0.1",
        f"--mysql-port={port}", "--mysql-user=app", "--mysql-password=proxy-secret",
        "--mysql-db=sbtest", "--tables=2", "--table-size=2000", *args,
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_oltp_read_write_for_30_seconds_without_an_error(proxy):
    port, primary, *_ = proxy
    primary.sql("DROP DATABASE IF EXISTS sbtest; CREATE DATABASE sbtest")
    wait_for(lambda: connect(port), what="the proxy accepting logins").close()
    sysbench(port, "prepare", timeout=120)
    out = sysbench(port, "--threads=4", "--time=30", "--report-interval=0",
                   "--mysql-ignore-errors=1213", "run", timeout=120)  # fmt: skip
    stats = dict(re.findall(r"^\s+(transactions|ignored errors|reconnects):\s+(\d+)", out, re.M))
    assert int(stats["transactions"]) > 1000, out
    assert stats["reconnects"] == "0", out
    # deadlocks are rare next to the transactions that went through
    assert int(stats["ignored errors"]) < int(stats["transactions"]) // 100, out
    # every transaction inserts one row and deletes one: each table keeps its size
    for table in ("sbtest1", "sbtest2"):
        assert primary.sql(f"SELECT COUNT(*) FROM sbtest.{table}").strip() == "2000"
