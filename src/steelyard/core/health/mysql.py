"""MySQL/MariaDB check: log in as the backend user and run `SELECT 1`.

A server that accepts TCP connections may still refuse logins (too many connections, a user
that was dropped) or hang on queries (a full disk, a lock): the check covers the handshake,
authentication and one round trip of a statement, within the timeout. Like every checker it
never raises; the detail reads like an operator's note, with MySQL's error code when the
server gave one.

The same round trips tell the admin view what the server is (`CheckResult.facts`): whether it
is read_only, its version, and on replicas the replication lag and whether both replication
threads run. They cost no extra query: `SELECT 1` asks for the two variables too.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

from steelyard.config.units import format_duration
from steelyard.core.health.state import CheckResult
from steelyard.core.health.tcp import describe_error, timeout_detail
from steelyard.mysql.client import Client, MySQLError
from steelyard.mysql.protocol.resultset import ResultSet


async def check_mysql(
    host: str, port: int, timeout: float, user: str, password: str, max_lag: float = 0.0,
    tls: ssl.SSLContext | None = None, server_name: str | None = None,
) -> CheckResult:  # fmt: skip
    """`max_lag` > 0: the server is a replica, and must replicate within that many seconds;
    `tls`: log in inside TLS (the listener's backend_tls)."""
    started = time.monotonic()
    phase = "connecting"
    client: Client | None = None
    facts: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(timeout):
            client = await Client.connect(
                f"{host}:{port}", user, password, timeout=timeout, tls=tls,
                server_name=server_name,
            )  # fmt: skip
            phase = "SELECT 1"
            result = await client.query("SELECT 1, @@read_only, @@version")
            facts = server_facts(result)
            lag = None
            if max_lag > 0:
                phase = "SHOW SLAVE STATUS"
                status = await client.query("SHOW SLAVE STATUS")
                facts.update(replication_facts(status))
                lag = replication_problem(status, max_lag)
        if lag is not None:
            return CheckResult(False, lag, time.monotonic() - started, facts)
        if len(result.rows) != 1 or result.rows[0][:1] != [b"1"]:
            return CheckResult(
                False, f"SELECT 1 answered {result.rows!r}", time.monotonic() - started, facts
            )
        return CheckResult(True, "SELECT 1 ok", time.monotonic() - started, facts)
    except TimeoutError:
        detail = timeout_detail(timeout, phase)
        return CheckResult(False, detail, time.monotonic() - started, facts)
    except MySQLError as exc:
        detail = f"error {exc.code}: {exc.message}"
        return CheckResult(False, detail, time.monotonic() - started, facts)
    except ssl.SSLError as exc:  # an OSError, but its errno says nothing (1: "not permitted")
        return CheckResult(False, f"TLS: {exc}", time.monotonic() - started, facts)
    except (OSError, ConnectionError, ValueError) as exc:
        return CheckResult(False, describe_error(exc), time.monotonic() - started, facts)
    finally:
        if client is not None:
            client.close()


def server_facts(result: ResultSet) -> dict[str, Any]:
    """read_only and version from the answer to `SELECT 1, @@read_only, @@version`."""
    row = result.rows[0] if result.rows else []
    read_only = row[1] if len(row) > 1 else None
    version = row[2] if len(row) > 2 else None
    return {
        # None when the server did not say (an odd answer): unknown is not "writable"
        "read_only": None if read_only is None else read_only not in (b"0", b"OFF"),
        "version": None if version is None else version.decode("utf-8", "replace"),
    }


def replication_facts(status: ResultSet) -> dict[str, Any]:
    """lag (seconds, None when unknown), io_running and sql_running from SHOW SLAVE STATUS;
    a server that is no replica has neither thread running."""
    rows = status.dicts()
    row = rows[0] if rows else {}
    behind = row.get("Seconds_Behind_Master")
    try:
        lag = None if behind is None else int(behind)
    except ValueError:
        lag = None
    return {
        "lag": lag,
        "io_running": row.get("Slave_IO_Running") == b"Yes",
        "sql_running": row.get("Slave_SQL_Running") == b"Yes",
    }


def replication_problem(status: ResultSet, max_lag: float) -> str | None:
    """What is wrong with a replica's replication, from SHOW SLAVE STATUS (None: nothing)."""
    rows = status.dicts()
    if not rows:
        return "not a replica (SHOW SLAVE STATUS is empty)"
    row = rows[0]
    if row.get("Slave_IO_Running") != b"Yes" or row.get("Slave_SQL_Running") != b"Yes":
        io = (row.get("Slave_IO_Running") or b"?").decode()
        sql = (row.get("Slave_SQL_Running") or b"?").decode()
        return f"replication is not running (IO thread {io}, SQL thread {sql})"
    behind = row.get("Seconds_Behind_Master")
    if behind is None:
        return "replication lag unknown"
    seconds = int(behind)
    if seconds > max_lag:
        return f"replication lag {seconds}s over the {format_duration(max_lag)} allowed"
    return None
