"""Operators' programs that steelyard runs on events (VRRP notify, quorum_up / quorum_down):
no shell, stdin closed, their exit status logged when it is not 0, never raising, so a broken
script costs a log line and nothing else."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from steelyard.log import log


async def run_program(
    argv: list[str], event: str, env: dict[str, str] | None = None, **fields: Any
) -> int | None:
    """Run `argv` (with `env` added to ours) and wait; its exit code, None when it could not
    start. A failure is logged as `event` with `fields`."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, env={**os.environ, **(env or {})}
        )
        code = await proc.wait()
    except OSError as exc:
        log(event, "error", **fields, program=argv[0], cause=str(exc))
        return None
    if code != 0:
        log(event, "warn", **fields, program=argv[0], code=code)
    return code
