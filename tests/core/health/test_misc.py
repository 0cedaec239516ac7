"""check_misc with real programs: exit statuses, misc_dynamic weights, timeouts that take the
whole process group down, and the `kind: misc` config driving a HealthMonitor."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from fixtures.processes import read_pids, sh, wait_gone
from steelyard.config.load import check_config_text
from steelyard.config.model import PoolConfig
from steelyard.core.backend import Pool, Server
from steelyard.core.health.misc import DETAIL_MAX, check_misc
from steelyard.core.health.monitor import HealthMonitor
from steelyard.core.health.state import CheckResult

HOST, PORT = "10.0.0.7", 8080


async def run(command: list[str], timeout: float = 5.0, dynamic: bool = False) -> CheckResult:
    return await check_misc(command, timeout, dynamic, HOST, PORT)


# exit statuses -------------------------------------------------------------------------------


async def test_exit_0_is_up() -> None:
    r = await run(sh("exit 0"))
    assert r.ok and r.detail == "exit 0" and r.facts is None
    assert 0 <= r.duration < 5.0


async def test_exit_1_is_down_with_the_last_stderr_line() -> None:
    r = await run(sh("echo 'on stdout'; printf 'first\\nreplica lags 30s\\n\\n' >&2; exit 1"))
    assert not r.ok
    assert r.detail == "exit 1: replica lags 30s"


async def test_a_long_stderr_line_is_cut() -> None:
    r = await run(sh("printf '%0500d\\n' 0 >&2; exit 1"))
    reason = r.detail.removeprefix("exit 1: ")
    assert len(reason) == DETAIL_MAX and reason.endswith("...")


async def test_without_dynamic_any_other_exit_is_down() -> None:
    r = await run(sh("exit 3"))
    assert not r.ok and r.detail == "exit 3" and r.facts is None


@pytest.mark.parametrize(
    ("code", "ok", "facts", "detail"),
    [
        (0, True, None, "exit 0"),
        (1, False, None, "exit 1"),
        (2, True, {"weight": 0}, "exit 2 (weight 0)"),
        (5, True, {"weight": 3}, "exit 5 (weight 3)"),
        (255, True, {"weight": 253}, "exit 255 (weight 253)"),
    ],
)
async def test_dynamic_exit_sets_the_weight(
    code: int, ok: bool, facts: dict[str, int] | None, detail: str
) -> None:
    r = await run(sh(f"exit {code}"), dynamic=True)
    assert (r.ok, r.facts, r.detail) == (ok, facts, detail)


async def test_killed_by_a_signal_is_down_even_when_dynamic() -> None:
    r = await run(sh("kill -TERM $$"), dynamic=True)
    assert not r.ok and r.detail == "killed by SIGTERM" and r.facts is None


async def test_the_server_address_and_the_callers_environment_are_passed(monkeypatch) -> None:
    monkeypatch.setenv("STEELYARD_MISC_TEST", "inherited")
    script = 'echo "$STEELYARD_SERVER_HOST $STEELYARD_SERVER_PORT $STEELYARD_MISC_TEST" >&2'
    r = await run(sh(script + "; exit 1"))
    assert r.detail == "exit 1: 10.0.0.7 8080 inherited"


async def test_arguments_are_not_run_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    r = await run(
        [sys.executable, "-c", "import sys; sys.exit(len(sys.argv))", f"; touch {marker}"]
    )
    assert r.detail == "exit 2" and not marker.exists()


# timeouts and cancellation -------------------------------------------------------------------


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The shell and a child of its own: both must be gone, not only the one we started.
    # The child sleeps far longer than any deadline here: a check that waited for it would
    # never return, so the liveness bound below is not a speed threshold.
    script = 'echo $$ > "$1"; sleep 1000 & echo $! >> "$1"; wait'
    r = await asyncio.wait_for(run(sh(script, str(pids)), timeout=0.3), 60)
    assert not r.ok and r.detail == "timeout after 300ms"
    for pid in await read_pids(pids, 2):
        await wait_gone(pid)


async def test_an_escaped_daemon_holding_stderr_does_not_hang_the_check(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # setsid leaves our process group, so only its holding the stderr pipe could delay us.
    # The daemon outlives any deadline here and the check's own timeout is longer than the
    # liveness bound: only returning at the script's exit passes.
    daemon = f"import os, time; open({str(pids)!r}, 'w').write(str(os.getpid())); time.sleep(1000)"
    script = 'setsid "$1" -c "$2" & echo oops >&2; exit 1'
    try:
        r = await asyncio.wait_for(run(sh(script, sys.executable, daemon), timeout=600.0), 60)
        assert not r.ok and r.detail.startswith("exit 1")
    finally:
        [pid] = await read_pids(pids, 1)
        os.kill(pid, 9)


async def test_cancelling_the_check_kills_the_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = 'echo $$ > "$1"; sleep 5 & echo $! >> "$1"; wait'
    task = asyncio.create_task(run(sh(script, str(pids))))
    started = await read_pids(pids, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for pid in started:
        await wait_gone(pid)


# programs that cannot run --------------------------------------------------------------------


async def test_a_missing_program_is_down_naming_the_cause() -> None:
    r = await run(["/nonexistent/steelyard-check"])
    assert not r.ok
    assert r.detail == "cannot run /nonexistent/steelyard-check: no such file or directory"


async def test_a_program_without_exec_permission_is_down(tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    r = await run([str(script)])
    assert not r.ok and r.detail == f"cannot run {script}: permission denied"


async def test_an_empty_command_is_down() -> None:
    r = await run([])
    assert not r.ok and r.detail == "no command to run"


# config --------------------------------------------------------------------------------------


def issues(health: str) -> list[str]:
    text = f"pools:\n  web:\n    health: {health}\n    servers: [{{address: 127.0.0.1:80}}]\n"
    _, found = check_config_text(text)
    return [f"{i.line}: {i.path}: {i.message}" for i in found]


def test_kind_misc_needs_a_command() -> None:
    expected = "3: pools.web.health: kind misc needs command: the program to run and its arguments"
    assert issues("{kind: misc}") == [expected]
    assert issues("{kind: misc, command: []}") == [expected]


def test_command_is_refused_for_other_kinds() -> None:
    assert issues("{kind: tcp, command: [/bin/true]}") == [
        "3: pools.web.health: command is only for kind misc, not kind tcp"
    ]
    assert issues("{kind: http, misc_dynamic: true}") == [
        "3: pools.web.health: misc_dynamic is only for kind misc, not kind http"
    ]


def test_a_misc_check_is_accepted() -> None:
    text = (
        "pools:\n  web:\n"
        "    health: {kind: misc, command: [/usr/local/bin/check, --port, '8080'],"
        " misc_dynamic: true, timeout: 3s}\n"
        "    servers: [{address: 127.0.0.1:80}]\n"
    )
    cfg, found = check_config_text(text)
    assert found == [] and cfg is not None
    hc = cfg.pools["web"].health
    assert hc is not None and hc.kind == "misc"
    assert (hc.command, hc.misc_dynamic, hc.timeout) == (
        ["/usr/local/bin/check", "--port", "8080"],
        True,
        3.0,
    )


# monitor -------------------------------------------------------------------------------------


def misc_pool(address: str, command: list[str], dynamic: bool = False) -> dict:
    health = {"kind": "misc", "command": command, "misc_dynamic": dynamic}
    pc = PoolConfig(
        servers=[{"address": address}],
        health={**health, "interval": "50ms", "timeout": "2s", "rise": 1, "fall": 2},
    )
    return {"jobs": (Pool("jobs", [Server(address)]), pc)}


async def test_monitor_marks_a_server_down_when_its_command_fails(
    tmp_path: Path, log_lines
) -> None:
    flag = tmp_path / "healthy"
    flag.touch()
    address = "127.0.0.1:7001"
    # One script for the pool: it learns which server it checks from the environment.
    script = '[ "$STEELYARD_SERVER_PORT" = 7001 ] && test -e "$1" || { echo "no $1" >&2; exit 1; }'
    pools = misc_pool(address, sh(script, str(flag)))
    server = pools["jobs"][0].servers[0]
    results: list[CheckResult] = []
    down = asyncio.Event()

    def on_change(pool: str, s: Server) -> None:
        if not s.healthy:
            down.set()

    monitor = HealthMonitor(
        pools, on_change=on_change, on_check=lambda p, s, r: results.append(r), spread=False
    )
    monitor.start()
    try:
        deadline = time.monotonic() + 5.0
        while len(results) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert server.healthy and all(r.ok for r in results)
        flag.unlink()
        await asyncio.wait_for(down.wait(), 5.0)
        assert not server.healthy
        [line] = log_lines("health_flip")
        assert "pool=jobs" in line and "state=down" in line and "checks=2" in line
        assert f'reason="exit 1: no {flag}"' in line
        st = monitor.status()["jobs"][address]
        assert st["check"] == "misc" and st["up"] is False
    finally:
        await monitor.stop()


async def test_monitor_shows_the_dynamic_weight(tmp_path: Path) -> None:
    address = "127.0.0.1:7002"
    pools = misc_pool(address, sh("exit 7"), dynamic=True)
    seen = asyncio.Event()
    monitor = HealthMonitor(pools, on_check=lambda p, s, r: seen.set(), spread=False)
    monitor.start()
    try:
        await asyncio.wait_for(seen.wait(), 5.0)
        st = monitor.status()["jobs"][address]
        assert st["up"] is True and st["last_ok"] is True
        assert st["last_facts"] == {"weight": 5} and st["last_detail"] == "exit 7 (weight 5)"
    finally:
        await monitor.stop()
