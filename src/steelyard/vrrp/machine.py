"""The VRRP state machine of one virtual router (RFC 9568 section 6.4), sans-IO.

Time is given, never read: every input takes `now` (seconds, monotonic), and `deadline` says
when the machine wants `on_timer()` next. Outputs are actions for the I/O layer: `Send` an
advertisement with a priority, and `Became` a new state (on MASTER the layer adds the virtual
addresses and sends gratuitous ARP; leaving MASTER it removes them; notify scripts run on
every one).

Keepalived's additions are here too: FAULT (tracked interfaces or scripts down: no address,
no advert, priority 0 sent when leaving MASTER so a backup takes over after its skew time),
`preempt: false` (nopreempt) and `preempt_delay` (a higher-priority backup waits that long
after it started before it takes over from a lower-priority master), and a priority that
tracking changes at run time. In a sync group (`synced`), a backup whose timer fires does not
take over alone: it reports `Ready` and its group promotes every member once all are ready.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from steelyard.vrrp.packet import Advert

OWNER = 255  # the address owner: master at once


class State(Enum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


@dataclass(frozen=True)
class Send:
    priority: int  # 0: the master resigns


@dataclass(frozen=True)
class Became:
    old: State
    new: State
    reason: str


@dataclass(frozen=True)
class Ready:
    """A backup in a sync group would become MASTER now; its group decides (group.py)."""


Action = Send | Became | Ready


@dataclass
class Settings:
    vrid: int
    priority: int  # 1..255 (255: the owner of the addresses)
    interval_cs: int = 100  # advertisement interval, centiseconds
    address: str = "0.0.0.0"  # this router's own primary address (the tie-break)
    preempt: bool = True
    preempt_delay: float = 0.0  # seconds after start before preempting a lower master
    synced: bool = False  # in a sync group: MASTER only when the group says so


def skew(priority: int, interval_cs: int) -> float:
    """Skew_Time in seconds: (256 - priority) x Master_Adver_Interval / 256."""
    return (256 - priority) * interval_cs / 256 / 100


def master_down(priority: int, interval_cs: int) -> float:
    """Master_Down_Interval in seconds: 3 x Master_Adver_Interval + Skew_Time."""
    return 3 * interval_cs / 100 + skew(priority, interval_cs)


class Machine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.priority = settings.priority  # effective (tracking moves it)
        self.state = State.INIT
        self.deadline: float | None = None
        self.master_interval_cs = settings.interval_cs  # learnt from the master's adverts
        self.started = 0.0
        self.master: str | None = None  # the current master's address, when known
        self.faults: set[str] = set()  # what holds it in FAULT
        # in a sync group: its Master_Down timer fired and no advert has held it since
        self.ready = False

    # inputs ----------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        self.started = now
        if self.faults:
            return self._become(State.FAULT, "a tracked object is down at start")
        if self.priority == OWNER:
            return self._to_master(now, "address owner (priority 255)")
        return self._to_backup(now, "started")

    def stop(self, now: float) -> list[Action]:
        """Graceful stop: a master resigns with a priority-0 advert."""
        actions: list[Action] = []
        if self.state is State.MASTER:
            actions.append(Send(0))
        self.deadline = None
        return actions + self._become(State.INIT, "stopped")

    def on_timer(self, now: float) -> list[Action]:
        if self.deadline is None or now < self.deadline:
            return []
        if self.state is State.MASTER:
            self.deadline = now + self.settings.interval_cs / 100
            return [Send(self.priority)]
        if self.state is State.BACKUP:
            if self.settings.synced:
                # ask again after another interval, in case the group said no
                self.ready = True
                self.deadline = now + master_down(self.priority, self.master_interval_cs)
                return [Ready()]
            return self._to_master(now, "no advertisement within Master_Down_Interval")
        self.deadline = None
        return []

    def on_advert(self, ad: Advert, src: str, now: float) -> list[Action]:
        """An advertisement for this VRID that passed the receive checks."""
        if self.state is State.BACKUP:
            if ad.priority == 0:
                self.deadline = now + skew(self.priority, self.master_interval_cs)
                return []
            lower = ad.priority < self.priority
            waiting = now - self.started < self.settings.preempt_delay
            if not self.settings.preempt or not lower or waiting:
                self.ready = False
                self.master = src
                self.master_interval_cs = ad.interval_cs
                self.deadline = now + master_down(self.priority, ad.interval_cs)
            return []  # a lower-priority master: let the timer fire and preempt
        if self.state is State.MASTER:
            if ad.priority == 0:
                self.deadline = now + self.settings.interval_cs / 100
                return [Send(self.priority)]
            if ad.priority > self.priority or (
                ad.priority == self.priority and _ip(src) > _ip(self.settings.address)
            ):
                self.master = src
                self.master_interval_cs = ad.interval_cs
                self.deadline = now + master_down(self.priority, ad.interval_cs)
                return self._become(State.BACKUP, f"{src} advertises priority {ad.priority}")
            return []
        return []

    def set_priority(self, priority: int, now: float) -> list[Action]:
        """Tracking changed the effective priority (1..254; the owner's stays 255). Nothing
        is sent when it stays what it was."""
        priority = max(1, min(254, priority))
        if self.settings.priority == OWNER or priority == self.priority:
            return []
        self.priority = priority
        if self.state is State.MASTER:
            return [Send(self.priority)]  # a backup with more now sees it and preempts
        return []

    def fault(self, what: str, now: float) -> list[Action]:
        """A tracked object went down: no address, no advert until every one is back."""
        self.faults.add(what)
        if self.state in (State.FAULT, State.INIT):  # INIT: start() sees the fault
            return []
        actions: list[Action] = [Send(0)] if self.state is State.MASTER else []
        self.deadline = None
        return actions + self._become(State.FAULT, f"{what} is down")

    def recover(self, what: str, now: float) -> list[Action]:
        self.faults.discard(what)
        if self.state is not State.FAULT or self.faults:
            return []
        if self.priority == OWNER:
            return self._to_master(now, f"{what} is back (address owner)")
        return self._to_backup(now, f"{what} is back")

    def promote(self, now: float, reason: str) -> list[Action]:
        """The sync group goes MASTER together (every member is ready)."""
        if self.state is not State.BACKUP:
            return []
        return self._to_master(now, reason)

    def demote(self, now: float, reason: str) -> list[Action]:
        """Another member of the sync group gave MASTER up: so does this one. No priority 0 is
        sent: the peer's group is taking over these addresses already."""
        if self.state is not State.MASTER:
            return []
        return self._to_backup(now, reason)

    # transitions -----------------------------------------------------------------------------

    def _to_master(self, now: float, reason: str) -> list[Action]:
        self.ready = False
        self.master = self.settings.address
        self.deadline = now + self.settings.interval_cs / 100
        return [Send(self.priority), *self._become(State.MASTER, reason)]

    def _to_backup(self, now: float, reason: str) -> list[Action]:
        self.ready = False
        self.master = None
        self.master_interval_cs = self.settings.interval_cs
        self.deadline = now + master_down(self.priority, self.master_interval_cs)
        return self._become(State.BACKUP, reason)

    def _become(self, new: State, reason: str) -> list[Action]:
        old, self.state = self.state, new
        return [Became(old, new, reason)] if old is not new else []


def _ip(address: str) -> int:
    return int(ipaddress.ip_address(address))
