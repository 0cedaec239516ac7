"""MySQL/MariaDB check: log in as the backend user and run `SELECT 1`.

A server that accepts TCP connections may still refuse logins (too many connections, a user
that was dropped) or hang on queries (a full disk, a lock): the check covers the handshake,
authentication and one round trip of a statement, within the timeout. Like every checker it
never raises; the detail reads like an operator's note, with MySQL's error code when the
server gave one.
"""

from __future__ import annotations

import asyncio
import time

from steelyard.config.units import format_duration
from steelyard.core.health.state import CheckResult
from steelyard.core.health.tcp import describe_error, timeout_detail
from steelyard.mysql.client import Client, MySQLError
from steelyard.mysql.protocol.resultset import ResultSet


async def check_mysql(
    host: str, port: int, timeout: float, user: str, password: str, max_lag: float = 0.0
) -> CheckResult:
    """`max_lag` > 0: the server is a replica, and must replicate within that many seconds."""
    started = time.monotonic()
    phase = "connecting"
    client: Client | None = None
    try:
        async with asyncio.timeout(timeout):
            client = await Client.connect(f"{host}:{port}", user, password, timeout=timeout)
            phase = "SELECT 1"
            result = await client.query("SELECT 1")
            lag = None
            if max_lag > 0:
                phase = "SHOW SLAVE STATUS"
                lag = replication_problem(await client.query("SHOW SLAVE STATUS"), max_lag)
        if lag is not None:
            return CheckResult(False, lag, time.monotonic() - started)
        if result.rows != [[b"1"]]:
            return CheckResult(
                False, f"SELECT 1 answered {result.rows!r}", time.monotonic() - started
            )
        return CheckResult(True, "SELECT 1 ok", time.monotonic() - started)
    except TimeoutError:
        return CheckResult(False, timeout_detail(timeout, phase), time.monotonic() - started)
    except MySQLError as exc:
        return CheckResult(False, f"error {exc.code}: {exc.message}", time.monotonic() - started)
    except (OSError, ConnectionError, ValueError) as exc:
        return CheckResult(False, describe_error(exc), time.monotonic() - started)
    finally:
        if client is not None:
            client.close()


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
