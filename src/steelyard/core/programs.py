"""Operators' programs that steelyard runs on events (VRRP notify, quorum_up / quorum_down) and
on a timer (VRRP track scripts, misc health checks).

No shell, stdin closed. Each program runs in a session of its own, so a timeout, or the caller
being cancelled (a stop, a reload), sends SIGKILL to its whole process group: the children it
started (`curl`, `sleep`, a pipeline) go with it instead of piling up at every event or
interval. Only the program's own exit is awaited, never pipes that a child may still hold. A
program started outside the group on purpose (`setsid`) is left alone, as it asked.

`run_program` never raises: a program that cannot start, fails or runs past its timeout costs a
log line and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from steelyard.config.units import format_duration
from steelyard.log import log

REAP_TIMEOUT = 1.0  # a SIGKILLed process exits at once unless stuck in the kernel (D state)


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group (a program started with start_new_session=True has
    its pid for a group id)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


async def reap(proc: asyncio.subprocess.Process) -> None:
    """Wait for a killed program's exit, bounded so that a stuck one cannot stop the caller."""
    try:
        async with asyncio.timeout(REAP_TIMEOUT):
            await proc.wait()
    except TimeoutError:
        pass


async def wait_or_kill(proc: asyncio.subprocess.Process, timeout: float) -> int | None:
    """The exit code of `proc` (started with start_new_session=True), or None when it ran past
    `timeout`: then its process group is killed and the program reaped. A cancelled caller
    kills the group too before the cancellation goes on."""
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait()
    except TimeoutError:
        kill_group(proc.pid)
        await reap(proc)
        return None
    except BaseException:
        kill_group(proc.pid)
        await reap(proc)
        raise


async def run_program(
    argv: list[str], event: str, timeout: float, env: dict[str, str] | None = None, **fields: Any
) -> int | None:
    """Run `argv` (with `env` added to ours) for at most `timeout` seconds; its exit code, None
    when it could not start or was killed at the timeout. A failure is logged as `event` with
    `fields`."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    except OSError as exc:
        log(event, "error", **fields, program=argv[0], cause=str(exc))
        return None
    code = await wait_or_kill(proc, timeout)
    if code is None:
        log(event, "warn", **fields, program=argv[0], pid=proc.pid,
            cause=f"timeout after {format_duration(timeout)}",
            action="killed with its process group")  # fmt: skip
        return None
    if code != 0:
        log(event, "warn", **fields, program=argv[0], code=code)
    return code
