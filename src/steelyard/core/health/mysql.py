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

from steelyard.core.health.state import CheckResult
from steelyard.core.health.tcp import describe_error, timeout_detail
from steelyard.mysql.client import Client, MySQLError


async def check_mysql(
    host: str, port: int, timeout: float, user: str, password: str
) -> CheckResult:
    started = time.monotonic()
    phase = "connecting"
    client: Client | None = None
    try:
        async with asyncio.timeout(timeout):
            client = await Client.connect(f"{host}:{port}", user, password, timeout=timeout)
            phase = "SELECT 1"
            result = await client.query("SELECT 1")
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
