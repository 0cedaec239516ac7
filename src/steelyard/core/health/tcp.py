"""TCP connect check: the server is up when it accepts a connection within the timeout.

This is HAProxy's plain `check` and Keepalived's TCP_CHECK: connect, then close without sending
anything. It proves the listener is there and the accept queue moves; it says nothing about the
application (use the HTTP checker for that).

Checkers never raise. Every failure, including a bad host name, becomes a failed `CheckResult`
whose detail reads like an operator's note ("connection refused", "timeout after 1s
(connecting)"), because it lands verbatim in the `health_flip` log line and the admin API.
"""

from __future__ import annotations

import asyncio
import os
import socket

from steelyard.config.units import format_duration
from steelyard.core.health.state import CheckResult


def describe_error(exc: BaseException) -> str:
    """An exception from a probe -> a short lower-case reason for logs."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def timeout_detail(timeout: float, phase: str) -> str:
    return f"timeout after {format_duration(timeout)} ({phase})"


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    """Close a probe connection; the verdict is already made, so errors here do not count."""
    writer.close()
    try:
        # Bounded: a peer that never acknowledges our FIN must not hold the probe open.
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except Exception:
        pass


async def check_tcp(host: str, port: int, timeout: float) -> CheckResult:
    """Connect to host:port and close again; ok when the connection was accepted in time."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
        ok, detail = True, "connected"
    except TimeoutError:
        ok, detail = False, timeout_detail(timeout, "connecting")
    except Exception as exc:
        ok, detail = False, describe_error(exc)
    except BaseException:  # cancelled (monitor stopping): still release the socket
        if writer is not None:
            writer.close()
        raise
    duration = loop.time() - started
    if writer is not None:
        await close_quietly(writer)
    return CheckResult(ok, detail, duration)
