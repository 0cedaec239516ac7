"""Operators' programs (VRRP notify, quorum_up / quorum_down): run without a shell, killed with
every child they started when they run past their timeout or their caller is cancelled, each
failure a log line and never an exception."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from fixtures.processes import SHELL_AND_CHILD, alive, log_records, read_pids, sh, wait_gone
from steelyard.core.programs import run_program


def fields(records, event: str) -> list[dict]:
    return [r.fields for r in records if r.getMessage() == event]  # type: ignore[attr-defined]


async def test_exit_codes_and_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with log_records() as records:
        assert await run_program(sh('echo "$X $1" > "$2"', "arg", str(out)), "ev", 10.0,
                                 {"X": "from env"}) == 0  # fmt: skip
        assert out.read_text() == "from env arg\n"
        assert await run_program(sh("exit 3"), "ev", 10.0, service="s") == 3
    assert fields(records, "ev") == [{"service": "s", "program": "sh", "code": 3}]


async def test_a_program_that_cannot_start_is_logged() -> None:
    with log_records() as records:
        assert await run_program(["/nonexistent/notify"], "ev", 10.0, instance="web") is None
    [f] = fields(records, "ev")
    assert f["program"] == "/nonexistent/notify" and "No such file" in f["cause"]


async def test_a_hung_program_is_killed_with_its_children_at_the_timeout(tmp_path: Path) -> None:
    """Before: a notify script stuck on a child ran for ever (and a stop waited on it)."""
    pids = tmp_path / "pids"
    with log_records() as records:
        code = await run_program(sh(SHELL_AND_CHILD, str(pids)), "vrrp_notify_failed", 0.3,
                                 instance="web", state="MASTER")  # fmt: skip
    assert code is None
    started = await read_pids(pids, 2)
    for pid in started:  # the shell and its child, not only the one we started
        await wait_gone(pid)
    [f] = fields(records, "vrrp_notify_failed")
    assert f == {
        "instance": "web",
        "state": "MASTER",
        "program": "sh",
        "pid": started[0],
        "cause": "timeout after 300ms",
        "action": "killed with its process group",
    }


async def test_a_cancelled_caller_kills_the_program_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    task = asyncio.create_task(run_program(sh(SHELL_AND_CHILD, str(pids)), "ev", 1000.0))
    started = await read_pids(pids, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for pid in started:
        await wait_gone(pid)


async def test_a_child_that_left_the_group_on_purpose_is_left_alone(tmp_path: Path) -> None:
    """`setsid` is how a program says its child is a daemon: not ours to kill."""
    pids = tmp_path / "pids"
    daemon = f"import os, time; open({str(pids)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    code = await run_program(sh('setsid "$1" -c "$2" & sleep 1000', sys.executable, daemon),
                             "ev", 0.5)  # fmt: skip
    assert code is None
    [pid] = await read_pids(pids, 1)
    try:
        assert alive(pid)
    finally:
        os.kill(pid, 9)
