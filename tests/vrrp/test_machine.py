"""The VRRP state machine with a given clock: RFC 9568's timers (Master_Down_Interval, skew,
the interval learnt from the master), priority-0 resignations, preemption (on, off, delayed),
the tie-break on equal priority, faults, and routers talking over a simulated wire (one
master, takeover, preemption back, a partition healing)."""

from __future__ import annotations

import pytest

from steelyard.vrrp.machine import (
    Became,
    Machine,
    Send,
    Settings,
    State,
    master_down,
    skew,
)
from steelyard.vrrp.packet import Advert


def advert(priority: int, interval_cs: int = 100) -> Advert:
    return Advert(51, priority, interval_cs, ("10.0.0.100",))


def test_timers_as_the_rfc_defines_them():
    assert skew(100, 100) == pytest.approx(156 / 256)
    assert master_down(100, 100) == pytest.approx(3 + 156 / 256)
    assert master_down(128, 100) == pytest.approx(3.5)  # keepalived's man page example
    assert master_down(254, 5) == pytest.approx(0.15 + 2 * 5 / 256 / 100)


def test_a_backup_takes_over_after_master_down_interval():
    m = Machine(Settings(51, 100, address="10.0.0.2"))
    assert m.start(0.0) == [Became(State.INIT, State.BACKUP, "started")]
    assert m.deadline == pytest.approx(master_down(100, 100))
    assert m.on_timer(3.0) == []  # not yet
    actions = m.on_timer(m.deadline)
    assert actions[0] == Send(100) and actions[1].new is State.MASTER
    assert m.deadline == pytest.approx(master_down(100, 100) + 1.0)  # the next advert
    assert m.on_timer(m.deadline) == [Send(100)]


def test_the_address_owner_is_master_at_once():
    m = Machine(Settings(51, 255, address="10.0.0.1"))
    actions = m.start(0.0)
    assert actions[0] == Send(255) and m.state is State.MASTER


def test_adverts_hold_a_backup_and_teach_it_the_interval():
    m = Machine(Settings(51, 100, address="10.0.0.2"))
    m.start(0.0)
    m.on_advert(advert(150, 200), "10.0.0.1", 1.0)  # the master advertises every 2 s
    assert m.deadline == pytest.approx(1.0 + master_down(100, 200))
    assert m.master == "10.0.0.1" and m.on_timer(7.0) == []
    # priority 0: the master resigns, the backup takes over after its skew time
    m.on_advert(advert(0, 200), "10.0.0.1", 7.0)
    assert m.deadline == pytest.approx(7.0 + skew(100, 200))
    assert m.on_timer(m.deadline)[1].new is State.MASTER


def test_a_master_yields_to_higher_priority_and_to_the_higher_address():
    m = Machine(Settings(51, 100, address="10.0.0.2"))
    m.start(0.0)
    m.on_timer(m.deadline)
    assert m.state is State.MASTER
    assert m.on_advert(advert(100), "10.0.0.1", 5.0) == []  # equal, lower address: stays
    assert m.on_advert(advert(50), "10.0.0.9", 5.0) == []  # lower priority: stays
    assert m.on_advert(advert(0), "10.0.0.9", 5.0) == [Send(100)]  # answered at once
    actions = m.on_advert(advert(100), "10.0.0.3", 6.0)  # equal, higher address: yields
    assert actions == [Became(State.MASTER, State.BACKUP, "10.0.0.3 advertises priority 100")]
    m2 = Machine(Settings(51, 100, address="10.0.0.2"))
    m2.start(0.0)
    m2.on_timer(m2.deadline)
    assert m2.on_advert(advert(200), "10.0.0.1", 5.0)[0].new is State.BACKUP


def test_preemption_on_off_and_delayed():
    # preempt (default): a lower master's adverts do not hold a higher backup
    m = Machine(Settings(51, 200, address="10.0.0.2"))
    m.start(0.0)
    first = m.deadline
    m.on_advert(advert(100), "10.0.0.1", 1.0)
    assert m.deadline == first and m.on_timer(first)[1].new is State.MASTER
    # nopreempt: they do
    m = Machine(Settings(51, 200, address="10.0.0.2", preempt=False))
    m.start(0.0)
    for t in range(1, 20):
        m.on_advert(advert(100), "10.0.0.1", float(t))
        assert m.on_timer(float(t)) == [] and m.state is State.BACKUP
    # preempt_delay: they do for that long after the start, then it preempts
    m = Machine(Settings(51, 200, address="10.0.0.2", preempt_delay=10.0))
    m.start(0.0)
    t = 1.0
    while m.state is State.BACKUP:
        m.on_advert(advert(100), "10.0.0.1", t)
        m.on_timer(t)
        t += 1.0
    assert 10.0 <= t - 1.0 <= 10.0 + master_down(200, 100) + 1


def test_faults_and_a_graceful_stop():
    m = Machine(Settings(51, 100, address="10.0.0.2"))
    m.start(0.0)
    m.on_timer(m.deadline)
    actions = m.fault("eth1", 10.0)
    assert actions == [Send(0), Became(State.MASTER, State.FAULT, "eth1 is down")]
    assert m.on_advert(advert(50), "10.0.0.1", 11.0) == [] and m.deadline is None
    m.fault("check.sh", 11.0)
    assert m.recover("eth1", 12.0) == []  # one fault left
    assert m.recover("check.sh", 13.0)[0].new is State.BACKUP
    m.on_timer(m.deadline)
    assert m.stop(30.0) == [Send(0), Became(State.MASTER, State.INIT, "stopped")]
    faulty = Machine(Settings(51, 100))
    faulty.fault("eth1", 0.0)
    assert faulty.start(0.0)[0].new is State.FAULT


def test_tracking_changes_the_priority_advertised():
    m = Machine(Settings(51, 150, address="10.0.0.2"))
    m.start(0.0)
    m.on_timer(m.deadline)
    assert m.set_priority(90, 10.0) == [Send(90)]
    assert m.set_priority(300, 11.0) == [Send(254)]  # never the owner's 255


class Wire:
    """Routers on one link: whatever a router sends reaches the others it can reach."""

    def __init__(self, *machines: Machine) -> None:
        self.machines = list(machines)
        self.down: set[int] = set()  # stopped routers (killed: they send nothing)
        self.cut = False  # partitioned: nobody hears anybody
        self.became: list[tuple[float, str, State]] = []

    def deliver(self, sender: Machine, actions: list, now: float) -> None:
        for action in actions:
            if isinstance(action, Became):
                self.became.append((now, sender.settings.address, action.new))
            if isinstance(action, Send) and not self.cut:
                for other in self.machines:
                    if other is not sender and id(other) not in self.down:
                        ad = advert(action.priority, sender.settings.interval_cs)
                        self.deliver(other, other.on_advert(ad, sender.settings.address, now), now)

    def run(self, start: float, end: float, step: float = 0.01) -> None:
        t = start
        while t <= end:
            for m in self.machines:
                if id(m) not in self.down:
                    self.deliver(m, m.on_timer(t), t)
            t = round(t + step, 6)

    def masters(self) -> list[str]:
        return [m.settings.address for m in self.machines
                if m.state is State.MASTER and id(m) not in self.down]  # fmt: skip


def test_routers_on_a_wire_failover_preempt_and_heal():
    a = Machine(Settings(51, 150, address="10.0.0.1"))
    b = Machine(Settings(51, 100, address="10.0.0.2"))
    wire = Wire(a, b)
    wire.deliver(a, a.start(0.0), 0.0)
    wire.deliver(b, b.start(0.0), 0.0)
    wire.run(0.0, 10.0)
    assert wire.masters() == ["10.0.0.1"]
    # the master is killed: the backup takes over within 3 x interval + skew
    wire.down.add(id(a))
    wire.run(10.01, 20.0)
    assert wire.masters() == ["10.0.0.2"]
    took = next(t for t, who, new in wire.became if who == "10.0.0.2" and new is State.MASTER)
    # its last advert from the master came at most one interval before the kill
    assert master_down(100, 100) - 1.0 <= took - 10.0 <= master_down(100, 100) + 0.02
    # it comes back: higher priority preempts
    wire.down.discard(id(a))
    a2 = Machine(Settings(51, 150, address="10.0.0.1"))
    wire.machines[0] = a2
    wire.deliver(a2, a2.start(20.0), 20.0)
    wire.run(20.0, 30.0)
    assert wire.masters() == ["10.0.0.1"]
    # a partition: both become master; healed: exactly one again
    wire.cut = True
    wire.run(30.0, 40.0)
    assert sorted(wire.masters()) == ["10.0.0.1", "10.0.0.2"]
    wire.cut = False
    wire.run(40.0, 45.0)
    assert wire.masters() == ["10.0.0.1"]
