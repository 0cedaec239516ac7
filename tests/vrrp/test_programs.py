"""Operators' programs of the VRRP tier under a hang: a track script and a notify program that
each start a child and never finish. Before: the track script's child (and with notify, the
program itself) kept running, one more at every interval. Now each is killed with its process
group at its timeout (`timeout` of the script, `script_timeout` of the instance, 10 s by
default) and logged; the tracker logs a timeout once per streak, not at every interval."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fixtures.netns import Lab, lab_skip_reason
from fixtures.processes import SHELL_AND_CHILD, alive, log_records, read_pids, sh, wait_gone
from fixtures.procs import wait_for
from fixtures.vrrp_node import holds_vip, node_config
from steelyard.config.vrrp_model import TrackConfig
from steelyard.vrrp.track import Tracker, run_script

SKIP = lab_skip_reason()


async def test_run_script_exit_statuses() -> None:
    assert await run_script(["true"], 10.0) == 0
    assert await run_script(sh("exit 4"), 10.0) == 4
    assert await run_script(["/nonexistent/check"], 10.0) == 127


async def test_a_hung_script_is_killed_with_its_child(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    assert await run_script(sh(SHELL_AND_CHILD, str(pids)), 0.3) is None
    for pid in await read_pids(pids, 2):
        await wait_gone(pid)


async def test_the_tracker_logs_a_timeout_once_a_streak(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cfg = TrackConfig.model_validate({"scripts": [{
        "name": "hang", "command": sh('echo $$ >> "$1"; sleep 1000 & echo $! >> "$1"; wait',
                                      str(pids)),
        "interval": "10ms", "timeout": "100ms", "weight": -10,
    }]})  # fmt: skip
    verdicts: list[tuple[set[str], int]] = []
    tracker = Tracker(cfg, "web", lambda faults, change: verdicts.append((faults, change)))
    with log_records() as records:
        tracker.start(asyncio.get_running_loop())
        try:
            started = await read_pids(pids, 6)  # three runs, each killed at its timeout
        finally:
            await tracker.stop()
    for pid in started:
        await wait_gone(pid)
    timeouts = [r.fields for r in records if r.getMessage() == "vrrp_track_timeout"]  # type: ignore[attr-defined]
    assert timeouts == [{"instance": "web", "script": "hang", "timeout": "100ms",
                         "action": "killed with its process group"}]  # fmt: skip
    assert verdicts[-1] == (set(), -10)  # a timeout is a failed run


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_hung_notify_and_track_programs_of_a_running_node(tmp_path, steelyard):
    hang = tmp_path / "hang"
    # $1 (the pid file) for a track script; a notify program gets the instance and the state
    hang.write_text('#!/bin/sh\nf="$0.${2:-track}"\necho $$ >> "$f"\nsleep 1000 &\n'
                    'echo $! >> "$f"\nwait\n')  # fmt: skip
    hang.chmod(0o755)
    lab = Lab(tmp_path)
    try:
        node = lab.host("lb1", "10.0.0.1/24")
        track = {"scripts": [{"name": "hang", "command": [str(hang)], "interval": "100ms",
                              "timeout": "300ms", "weight": -10}]}  # fmt: skip
        cfg = node_config(tmp_path, priority=150, notify=str(hang), script_timeout="500ms",
                          track=track)  # fmt: skip
        sy = steelyard(cfg, tmp_path, node.argv())
        wait_for(lambda: holds_vip(node), what="the node master")
        sy.wait_log(
            r"event=vrrp_notify_failed instance=web state=MASTER program=\S+hang "
            r"pid=\d+ cause=\"timeout after 500ms\"",
            what="the notify timeout logged",
        )
        notify = asyncio.run(read_pids(Path(f"{hang}.MASTER"), 2))
        track_pids = asyncio.run(read_pids(Path(f"{hang}.track"), 6))  # three runs
        for pid in notify + track_pids[:4]:  # the third run may still be under way
            asyncio.run(wait_gone(pid))
        assert not any(alive(p) for p in notify)
        assert sy.count_log(r"event=vrrp_track_timeout instance=web script=hang") == 1
        assert holds_vip(node)  # 150 - 10 alone on the link: still master
    finally:
        lab.close()
