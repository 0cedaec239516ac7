"""Tracking: the verdict of interfaces and scripts (FAULT with weight 0, the priority moved
otherwise, rise and fall for scripts), and in the lab a master that loses a tracked interface
goes to FAULT (the backup takes over at once) and comes back, and a failing script with a
negative weight lowers its priority below the backup's, which preempts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fixtures.netns import Lab, lab_skip_reason
from fixtures.procs import wait_for
from fixtures.vrrp_node import holder, node_config
from steelyard.config.vrrp_model import TrackConfig
from steelyard.vrrp.track import ScriptState, Tracker, effect


def test_effects_as_keepalived_defines_them():
    assert effect(0, up=False) == (True, 0) and effect(0, up=True) == (False, 0)
    assert effect(20, up=True) == (False, 20) and effect(20, up=False) == (False, 0)
    assert effect(-20, up=False) == (False, -20) and effect(-20, up=True) == (False, 0)


def test_a_trackers_verdict_and_script_hysteresis():
    cfg = TrackConfig.model_validate({
        "interfaces": [{"name": "lo", "weight": 0}, {"name": "nosuch0", "weight": -30}],
        "scripts": [{"name": "chk", "command": ["true"], "weight": 10, "rise": 2, "fall": 2}],
    })  # fmt: skip
    seen = []
    t = Tracker(cfg, "web", lambda faults, change: seen.append((faults, change)))
    assert t.interfaces == {"lo": True, "nosuch0": False}
    assert t.verdict() == (set(), -30 + 10)
    state: ScriptState = t.scripts["chk"]
    state.result(False)
    assert state.up  # one failure of fall 2
    state.result(False)
    assert not state.up and t.verdict() == (set(), -30)
    state.result(True)
    assert not state.up
    state.result(True)
    assert state.up
    t.interfaces["lo"] = False
    t.changed()
    t.changed()  # no change, no call
    assert seen == [({"interface lo"}, -20)]


SKIP = lab_skip_reason()


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_tracked_interface_and_script_in_the_lab(tmp_path, steelyard):
    lab = Lab(tmp_path)
    try:
        lb1, lb2 = lab.host("lb1", "10.0.0.1/24"), lab.host("lb2", "10.0.0.2/24")
        lb1.ip("link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1")  # no dummy driver
        lb1.ip("link", "set", "dummy0", "up")
        lb1.ip("link", "set", "dummy1", "up")
        flag = tmp_path / "healthy"
        flag.write_text("ok")
        procs = {}
        track = {
            "interval": "50ms",
            "interfaces": [{"name": "dummy0", "weight": 0}],
            "scripts": [{"name": "flag", "command": ["test", "-f", str(flag)],
                         "interval": "100ms", "weight": -60}],
        }  # fmt: skip
        for host, extra in ((lb1, {"priority": 150, "track": track}), (lb2, {})):
            workdir = tmp_path / host.name
            workdir.mkdir()
            procs[host.name] = steelyard(node_config(workdir, **extra), workdir, host.argv())

        wait_for(lambda: holder(lb1, lb2) == "lb1", what="lb1 master")
        lb1.ip("link", "set", "dummy0", "down")  # weight 0: FAULT, the VIP released at once
        wait_for(lambda: holder(lb1, lb2) == "lb2", what="lb2 taking over from a faulty lb1")
        procs["lb1"].wait_log(r"event=vrrp_state .*new=FAULT .*reason=\"?interface dummy0 is down",
                              what="lb1 in FAULT")  # fmt: skip
        lb1.ip("link", "set", "dummy0", "up")
        wait_for(lambda: holder(lb1, lb2) == "lb1", what="lb1 back and preempting")
        flag.unlink()  # the script fails: 150 - 60 = 90, below lb2's 100
        wait_for(lambda: holder(lb1, lb2) == "lb2", what="lb2 preempting a lower-priority lb1")
        flag.write_text("ok")
        wait_for(lambda: holder(lb1, lb2) == "lb1", what="lb1 preempting again at 150")
    finally:
        lab.close()


LISTENER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 7001))
s.listen(16)
print("listening", flush=True)
while True:
    s.accept()[0].close()
"""


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_a_tracked_pool_without_a_usable_server_puts_the_master_in_fault(tmp_path, steelyard):
    """The pool is checked by the shared health checks; with no usable server left the master
    goes to FAULT and the backup takes over; the server back, the master preempts back."""
    lab = Lab(tmp_path)
    backend = None
    try:
        lb1, lb2 = lab.host("lb1", "10.0.0.1/24"), lab.host("lb2", "10.0.0.2/24")

        def listen() -> subprocess.Popen:
            proc = subprocess.Popen(lb1.argv(sys.executable, "-c", LISTENER),
                                    stdout=subprocess.PIPE, text=True)  # fmt: skip
            assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
            return proc

        backend = listen()
        for host in (lb1, lb2):
            workdir = tmp_path / host.name
            workdir.mkdir()
            if host is lb1:
                track = {"interval": "50ms", "pools": [{"name": "web"}]}
                cfg = node_config(workdir, priority=150, track=track)
                cfg["pools"] = {"web": {
                    "health": {"kind": "tcp", "interval": "100ms", "timeout": "100ms",
                               "rise": 1, "fall": 1},
                    "servers": [{"address": "127.0.0.1:7001"}],
                }}  # fmt: skip
            else:
                cfg = node_config(workdir)
            steelyard(cfg, workdir, host.argv())

        wait_for(lambda: holder(lb1, lb2) == "lb1", what="lb1 master")
        backend.kill()
        backend.wait()
        wait_for(
            lambda: holder(lb1, lb2) == "lb2", what="lb2 taking over: lb1's pool has no server"
        )
        backend = listen()
        wait_for(lambda: holder(lb1, lb2) == "lb1", what="lb1 back once its pool is")
    finally:
        if backend is not None:
            backend.kill()
            backend.wait()
        lab.close()
