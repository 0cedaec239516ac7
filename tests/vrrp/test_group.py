"""Sync groups, sans-IO: two nodes with two virtual routers each (VRID 51 and 52) in one group
per node, on a simulated wire. The group fails over whole (a fault in one member moves both
routers), never splits between nodes (one member still hearing a better master holds the group
back), and comes back whole; members' own faults are told apart from the group's."""

from __future__ import annotations

import pytest

from fixtures.netns import Lab, lab_skip_reason
from fixtures.procs import wait_for
from fixtures.vrrp_node import holder, node_config
from steelyard.vrrp.group import SyncGroup
from steelyard.vrrp.machine import Action, Became, Machine, Ready, Send, Settings, State
from steelyard.vrrp.packet import Advert


class Node:
    def __init__(self, address: str, priorities: dict[int, int]) -> None:
        self.address = address
        self.machines = {
            vrid: Machine(Settings(vrid, prio, 100, address=address, synced=True))
            for vrid, prio in priorities.items()
        }
        self.group = SyncGroup("router", {str(v): m for v, m in self.machines.items()})
        self.up = True


class Wire:
    def __init__(self, *nodes: Node) -> None:
        self.nodes = nodes
        self.became: list[tuple[float, str, int, State, str]] = []

    def apply(self, node: Node, vrid: int, actions: list[Action], now: float, forced=False):
        for action in actions:
            if isinstance(action, Became):
                self.became.append((now, node.address, vrid, action.new, action.reason))
            if isinstance(action, Send):
                for other in self.nodes:
                    if other is not node and other.up:
                        ad = Advert(vrid, action.priority, 100, ("10.0.0.100",))
                        m = other.machines[vrid]
                        self.apply(other, vrid, m.on_advert(ad, node.address, now), now)
        if not forced:
            for name, more in node.group.react(str(vrid), actions, now).items():
                self.apply(node, int(name), more, now, forced=True)

    def start(self, now: float) -> None:
        for node in self.nodes:
            for vrid, m in node.machines.items():
                self.apply(node, vrid, m.start(now), now)

    def run(self, start: float, end: float, step: float = 0.01) -> None:
        t = start
        while t <= end:
            for node in self.nodes:
                if node.up:
                    for vrid, m in node.machines.items():
                        self.apply(node, vrid, m.on_timer(t), t)
            t = round(t + step, 6)

    def states(self) -> dict[str, dict[int, str]]:
        return {
            n.address: {v: m.state.value for v, m in n.machines.items()} for n in self.nodes if n.up
        }


def test_a_group_goes_master_only_when_every_member_is_ready():
    m1 = Machine(Settings(51, 100, address="10.0.0.2", synced=True))
    m2 = Machine(Settings(52, 100, address="10.0.0.2", synced=True))
    group = SyncGroup("router", {"a": m1, "b": m2})
    m1.start(0.0)
    m2.start(0.0)
    assert m1.on_timer(m1.deadline) == [Ready()] and m1.state is State.BACKUP
    assert group.react("a", [Ready()], m1.deadline) == {}  # b still waits for its timer
    now = m2.deadline
    assert m2.on_timer(now) == [Ready()]
    out = group.react("b", [Ready()], now)
    assert set(out) == {"a", "b"} and m1.state is m2.state is State.MASTER
    assert out["a"][0] == Send(100)
    assert out["a"][1] == Became(
        State.BACKUP, State.MASTER, "sync group router: every member ready"
    )
    assert group.settle() is State.MASTER and group.settle() is None  # once per transition


def test_settle_waits_for_every_member():
    m1, m2 = Machine(Settings(51, 100)), Machine(Settings(52, 100))
    group = SyncGroup("router", {"a": m1, "b": m2})
    m1.start(0.0)
    assert group.settle() is None  # b still in INIT
    m2.start(0.0)
    assert group.settle() is State.BACKUP


def test_a_group_fails_over_whole_and_comes_back_whole():
    a = Node("10.0.0.1", {51: 150, 52: 150})
    b = Node("10.0.0.2", {51: 100, 52: 100})
    wire = Wire(a, b)
    wire.start(0.0)
    wire.run(0.0, 5.0)
    assert wire.states() == {
        "10.0.0.1": {51: "MASTER", 52: "MASTER"},
        "10.0.0.2": {51: "BACKUP", 52: "BACKUP"},
    }
    # a tracked object of VRID 52 alone fails on a: both of a's routers go to FAULT (51 with
    # the group's cause), b takes both over after the skew time
    wire.apply(a, 52, a.machines[52].fault("interface eth1", 5.0), 5.0)
    assert a.machines[51].faults == {"sync group router: 52"}
    assert a.machines[52].faults == {"interface eth1"}  # no echo from 51
    wire.run(5.0, 7.0)
    assert wire.states() == {
        "10.0.0.1": {51: "FAULT", 52: "FAULT"},
        "10.0.0.2": {51: "MASTER", 52: "MASTER"},
    }
    # it recovers: both back to BACKUP, then preempt together
    wire.apply(a, 52, a.machines[52].recover("interface eth1", 7.0), 7.0)
    assert a.machines[51].faults == set()
    wire.run(7.0, 12.0)
    assert wire.states()["10.0.0.1"] == {51: "MASTER", 52: "MASTER"}
    assert wire.states()["10.0.0.2"] == {51: "BACKUP", 52: "BACKUP"}


def test_a_group_never_splits_between_nodes():
    # b's VRID 51 gets more priority than a's (tracking), its 52 does not: without groups b
    # would take 51 and leave 52 on a; with them both stay on a
    a = Node("10.0.0.1", {51: 150, 52: 150})
    b = Node("10.0.0.2", {51: 100, 52: 100})
    wire = Wire(a, b)
    wire.start(0.0)
    wire.run(0.0, 5.0)
    wire.apply(b, 51, b.machines[51].set_priority(200, 5.0), 5.0)
    wire.run(5.0, 15.0)
    assert wire.states()["10.0.0.1"] == {51: "MASTER", 52: "MASTER"}
    assert wire.states()["10.0.0.2"] == {51: "BACKUP", 52: "BACKUP"}
    assert b.machines[51].ready and not b.machines[52].ready
    # now 52 too: the group moves whole, and a gives both up
    wire.apply(b, 52, b.machines[52].set_priority(200, 15.0), 15.0)
    wire.run(15.0, 25.0)
    assert wire.states()["10.0.0.1"] == {51: "BACKUP", 52: "BACKUP"}
    assert wire.states()["10.0.0.2"] == {51: "MASTER", 52: "MASTER"}
    left = [r for t, who, vrid, new, r in wire.became if who == "10.0.0.1" and t >= 15.0]
    assert any(r.startswith("sync group router: ") for r in left)


def test_the_master_killed_the_group_moves_whole():
    a = Node("10.0.0.1", {51: 150, 52: 150})
    b = Node("10.0.0.2", {51: 100, 52: 90})
    wire = Wire(a, b)
    wire.start(0.0)
    wire.run(0.0, 5.0)
    a.up = False
    wire.run(5.0, 10.0)
    assert wire.states() == {"10.0.0.2": {51: "MASTER", 52: "MASTER"}}
    took = [t for t, who, vrid, new, r in wire.became if who == "10.0.0.2" and new is State.MASTER]
    assert len(took) == 2 and took[0] == took[1]  # at once, when the slower timer fired


SKIP = lab_skip_reason()
VIP2 = "10.0.0.101"


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_a_sync_group_in_the_lab(tmp_path, steelyard):
    """Two nodes, two instances each in one group; lb1's `db` instance tracks a script. The
    script failing moves both VIPs to lb2; back, lb1 preempts both."""
    lab = Lab(tmp_path)
    try:
        lb1, lb2 = lab.host("lb1", "10.0.0.1/24"), lab.host("lb2", "10.0.0.2/24")
        flag = tmp_path / "healthy"
        flag.write_text("ok")
        track = {"scripts": [{"name": "flag", "command": ["test", "-f", str(flag)],
                              "interval": "100ms"}]}  # fmt: skip
        procs = {}
        for host, prio, extra in ((lb1, 150, {"track": track}), (lb2, 100, {})):
            workdir = tmp_path / host.name
            workdir.mkdir()
            db = {"name": "db", "vrid": 52, "priority": prio, "virtual_ips": [f"{VIP2}/24"]}
            cfg = node_config(workdir, ({**db, **extra},), priority=prio)
            notify = tmp_path / f"{host.name}-notify.sh"
            notify.write_text(f'#!/bin/sh\necho "$1 $2" >> {tmp_path}/{host.name}-group.log\n')
            notify.chmod(0o755)
            cfg["vrrp"]["sync_groups"] = [
                {"name": "router", "instances": ["web", "db"], "notify": str(notify)}
            ]
            procs[host.name] = steelyard(cfg, workdir, host.argv())

        def both(name: str) -> bool:
            return holder(lb1, lb2) == name and holder(lb1, lb2, vip=VIP2) == name

        wait_for(lambda: both("lb1"), what="lb1 holding both VIPs")
        flag.unlink()  # db's script: weight 0, FAULT; web follows as the group's
        wait_for(lambda: both("lb2"), what="lb2 holding both VIPs")
        in_fault = r"event=vrrp_state instance=web .*new=FAULT .*reason=\"sync group router: db"
        procs["lb1"].wait_log(in_fault, what="web in FAULT by db")
        flag.write_text("ok")
        wait_for(lambda: both("lb1"), what="lb1 preempting both back")
        said = tmp_path / "lb1-group.log"
        wait_for(lambda: said.read_text().splitlines()[-1:] == ["router MASTER"],
                 what="lb1's group notified MASTER again")  # fmt: skip
        # once per group transition, not once per member
        assert said.read_text().splitlines() == [
            "router BACKUP",
            "router MASTER",
            "router FAULT",
            "router BACKUP",
            "router MASTER",
        ]
    finally:
        lab.close()
