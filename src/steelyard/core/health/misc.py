"""Misc check: run an operator's program; its exit status is the verdict.

Keepalived's MISC_CHECK. When no built-in checker knows what "healthy" means for a service (a
queue depth, a licence server, a replica's position), the operator writes a script and we run
it. Exit 0 is up, anything else is down. With `dynamic` (Keepalived's `misc_dynamic`) the script
may also set the server's weight: exit 1 is down, exit 2..255 is up with weight exit - 2, and
exit 0 is up with the weight left alone; the new weight is returned as `facts={"weight": n}`.

The program runs without a shell (the argv is the config's list, so no quoting rules stand in
between), with stdin and stdout on /dev/null and the caller's environment plus
`STEELYARD_SERVER_HOST` and `STEELYARD_SERVER_PORT`, so one script can check every server of a
pool. The last line of its stderr goes into the detail ("exit 1: replica lags 30s"), because
that is where a script says why it failed.

It runs in a session of its own, so on timeout (or when the monitor stops) SIGKILL goes to the
whole process group (core/programs.py, as for every operator's program): a script's children
(`curl`, `sleep`) must not outlive the probe and pile up at every interval. stderr goes
through a pipe of our own rather than asyncio's: with an asyncio pipe, `Process.wait()`
(Python 3.11) also waits for every holder of the pipe, so a daemon that a script started
outside its group would hang the probe for good. Here only the command's own exit is awaited,
and its stderr is whatever reached the pipe by then.

Like every checker it never raises: a program that cannot be started, a timeout or a signal all
become a failed `CheckResult` with an operator's note for a detail.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from steelyard.config.units import format_duration
from steelyard.core.health.state import CheckResult
from steelyard.core.health.tcp import describe_error
from steelyard.core.programs import kill_group, reap, wait_or_kill

STDERR_KEEP = 4096  # bytes of stderr kept: the end is what the detail shows
DETAIL_MAX = 200  # characters of the last stderr line put into the detail
# After the exit, how long to wait for the end of stderr: normally it comes at once (the writer
# is gone); only a process that escaped the group and holds the pipe makes this wait run out.
STDERR_GRACE = 0.1


class _Tail(asyncio.Protocol):
    """Read end of the stderr pipe: keeps the last STDERR_KEEP bytes; `done` resolves at EOF."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.data = bytearray()
        self.done: asyncio.Future[None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        # Bounded: a chatty script must not grow the supervisor's memory for the whole timeout.
        self.data += data
        del self.data[:-STDERR_KEEP]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def last_line(data: bytes) -> str:
    """The last non-blank line of a program's stderr, printable and at most DETAIL_MAX long."""
    text = data.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    # The detail lands verbatim in log lines and the admin API: no terminal escapes there.
    line = "".join(c if c.isprintable() else " " for c in lines[-1])
    return line if len(line) <= DETAIL_MAX else line[: DETAIL_MAX - 3] + "..."


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def verdict(code: int, dynamic: bool) -> tuple[bool, dict[str, Any] | None]:
    """An exit status (negative: killed by that signal) -> (ok, facts)."""
    if code == 0:
        return True, None
    if dynamic and 2 <= code <= 255:
        return True, {"weight": code - 2}
    return False, None


async def check_misc(
    command: list[str], timeout: float, dynamic: bool, host: str, port: int
) -> CheckResult:
    """Run `command` for the server host:port; ok when it exits 0 (or 2..255 with `dynamic`)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    if not command:
        return CheckResult(False, "no command to run", 0.0)
    env = {**os.environ, "STEELYARD_SERVER_HOST": host, "STEELYARD_SERVER_PORT": str(port)}
    try:
        read_fd, write_fd = os.pipe()
    except OSError as exc:  # out of file descriptors
        return CheckResult(
            False, f"cannot run {command[0]}: {describe_error(exc)}", loop.time() - started
        )
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=write_fd,
            env=env,
            start_new_session=True,
        )
    except Exception as exc:
        os.close(read_fd)
        return CheckResult(
            False, f"cannot run {command[0]}: {describe_error(exc)}", loop.time() - started
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # the child has its copy; ours would keep the pipe from ever ending

    pipe = os.fdopen(read_fd, "rb", buffering=0)
    tail = _Tail(loop)
    transport: asyncio.BaseTransport | None = None
    try:
        transport, _ = await loop.connect_read_pipe(lambda: tail, pipe)
        code = await wait_or_kill(proc, timeout)
        if code is None:
            return CheckResult(
                False, f"timeout after {format_duration(timeout)}", loop.time() - started
            )
        duration = loop.time() - started
        await asyncio.wait([tail.done], timeout=STDERR_GRACE)
    except Exception as exc:  # the pipe could not be watched: do not leave the command behind
        kill_group(proc.pid)
        await reap(proc)
        return CheckResult(False, f"checker error: {describe_error(exc)}", loop.time() - started)
    except BaseException:  # cancelled (monitor stopping): the command must not outlive the probe
        kill_group(proc.pid)
        await reap(proc)
        raise
    finally:
        # The transport owns the pipe once connected; before that, nobody does.
        if transport is not None:
            transport.close()
        else:
            pipe.close()

    detail = f"killed by {signal_name(-code)}" if code < 0 else f"exit {code}"
    ok, facts = verdict(code, dynamic)
    if facts is not None:
        detail += f" (weight {facts['weight']})"
    reason = last_line(bytes(tail.data))
    if reason:
        detail += f": {reason}"
    return CheckResult(ok, detail, duration, facts)
