"""One VRRP instance at run time: the state machine (machine.py) driven by the event loop's
clock and the wire (io.py), its actions carried out on the interface (netif.py): adverts sent,
virtual IPs added with gratuitous ARP bursts on becoming MASTER and removed on leaving it, the
`notify` program run on every transition. Runs in the supervisor, which owns decisions
(workers only move bytes).

Dropped adverts are counted by reason and logged at most once per source and reason a minute
(droplog.py). An advert for our VRID whose addresses differ from ours (count or list) is
dropped as `addresses`, as keepalived does, unless `skip_check_adv_addr` is set.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from steelyard.config.vrrp_model import VrrpInstanceConfig
from steelyard.core.programs import run_program
from steelyard.log import log
from steelyard.vrrp import netif
from steelyard.vrrp.droplog import DropLog
from steelyard.vrrp.group import SYNC, SyncGroup
from steelyard.vrrp.io import VrrpSocket
from steelyard.vrrp.machine import Action, Became, Machine, Send, Settings, State
from steelyard.vrrp.packet import (
    MULTICAST_V4,
    MULTICAST_V6,
    Advert,
    BadAdvert,
    build,
    canonical,
    check_addresses,
)
from steelyard.vrrp.track import PoolUp, Tracker


class Instance:
    def __init__(
        self, cfg: VrrpInstanceConfig, loop: asyncio.AbstractEventLoop,
        pool_up: PoolUp = lambda name: True,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.loop = loop
        self.pool_up = pool_up  # the supervisor's pools, for tracking
        self.address = "0.0.0.0"
        self.machine = Machine(Settings(cfg.vrid, cfg.priority, cfg.interval_cs))
        self.sock: VrrpSocket | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.garp_timers: list[asyncio.TimerHandle] = []
        self.dropped: Counter[str] = Counter()
        self.sent = self.received = self.send_errors = 0
        self._logged = DropLog()
        self.vips = canonical(cfg.addresses())  # what a peer's advert must carry
        self.tasks: set[asyncio.Task[None]] = set()
        self.group: SyncGroup | None = None
        self.members: dict[str, Instance] = {}  # the group's instances, by name

    def join(self, group: SyncGroup, members: dict[str, Instance]) -> None:
        """Become a member of a sync group (before start)."""
        self.group, self.members = group, members
        self.machine.settings.synced = True

    # life -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the socket and start as BACKUP (or MASTER for the owner). Raises OSError when
        the interface or the privileges are missing."""
        cfg = self.cfg
        ifindex = netif.index(cfg.interface)
        if cfg.ipv6:
            found = netif.link_local(cfg.interface)
            if found is None:
                raise OSError(f"no usable IPv6 link-local address on {cfg.interface} (IPv6 off, "
                              "or still in duplicate address detection)")  # fmt: skip
            self.address = found
        else:
            self.address = netif.primary_address(cfg.interface)
        self.machine.settings.address = self.address
        self.sock = VrrpSocket(cfg.interface, ifindex, self._advert, self._drop, self.loop,
                               multicast=not cfg.unicast_peers,
                               source6=self.address if cfg.ipv6 else None)  # fmt: skip
        # a leftover VIP from a crash must not answer for a master elsewhere
        netif.remove_addresses(cfg.interface, cfg.virtual_ips)
        self.tracker = Tracker(cfg.track, cfg.name, self._tracked, self.pool_up)
        self.tracker.changed()  # faults and priority known before the start (INIT records them)
        self._apply(self.machine.start(self.loop.time()))
        self.tracker.start(self.loop)

    tracker: Tracker | None = None

    async def reconfigure(self, cfg: VrrpInstanceConfig) -> None:
        """A reload changed what can change without a restart (reconfigurable()): priority,
        preemption, notify, gratuitous ARP, tracking. The state is kept."""
        tracking = cfg.track != self.cfg.track
        self.cfg = cfg
        settings = self.machine.settings
        settings.priority, settings.preempt = cfg.priority, cfg.preempt
        settings.preempt_delay = cfg.preempt_delay
        if tracking and self.tracker is not None:
            await self.tracker.stop()
            self.tracker = Tracker(cfg.track, cfg.name, self._tracked, self.pool_up)
            self.tracker.start(self.loop)
        faults, change = self.tracker.verdict() if self.tracker is not None else (set(), 0)
        self._tracked(faults, change)

    def _tracked(self, faults: set[str], change: int) -> None:
        """Tracked objects changed: faults entered or left, the priority moved."""
        now = self.loop.time()
        m = self.machine
        actions: list[Action] = []
        for what in faults - m.faults:
            actions += m.fault(what, now)
        # a sync group's faults are the group's to lift, not the tracker's
        for what in {f for f in m.faults if not f.startswith(SYNC)} - faults:
            actions += m.recover(what, now)
        actions += m.set_priority(self.cfg.priority + change, now)
        self._apply(actions)

    async def stop(self) -> None:
        """Resign (a priority-0 advert when MASTER, the VIPs removed) and close."""
        if self.tracker is not None:
            await self.tracker.stop()
        self._apply(self.machine.stop(self.loop.time()))
        for t in (self.timer, *self.garp_timers):
            if t is not None:
                t.cancel()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    # inputs -----------------------------------------------------------------------------------

    def _advert(self, ad: Advert, src: str, dst: str) -> None:
        if ad.vrid != self.cfg.vrid:
            self._drop("vrid", src)
            return
        if src == self.address:
            return  # our own, looped back by a unicast peer list that names us
        if self.cfg.unicast_peers and src not in self.cfg.unicast_peers:
            self._drop("peer", src)  # unicast: only the peers named speak for this router
            return
        if not self.cfg.skip_check_adv_addr:
            try:
                check_addresses(ad, self.vips)
            except BadAdvert as exc:
                self._drop(exc.reason, src, str(exc))
                return
        self.received += 1
        self._apply(self.machine.on_advert(ad, src, self.loop.time()))

    def _drop(self, reason: str, src: str, detail: str | None = None) -> None:
        self.dropped[reason] += 1
        if self._logged.due(src, reason, time.monotonic()):
            log("vrrp_advert_dropped", "warn", instance=self.cfg.name, source=src, reason=reason,
                count=self.dropped[reason], detail=detail)  # fmt: skip

    def _tick(self) -> None:
        self.timer = None
        self._apply(self.machine.on_timer(self.loop.time()))

    # actions ----------------------------------------------------------------------------------

    def _apply(self, actions: list[Action], forced: bool = False) -> None:
        """Carry out the machine's actions; then, in a sync group, what the group makes every
        member do (`forced`: the group's own doing, which it has already reacted to)."""
        for action in actions:
            if isinstance(action, Send):
                self._send(action.priority)
            elif isinstance(action, Became):
                self._became(action)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        deadline = self.machine.deadline
        if deadline is not None:
            self.timer = self.loop.call_at(deadline, self._tick)
        if self.group is not None and not forced:
            for name, more in self.group.react(self.cfg.name, actions, self.loop.time()).items():
                self.members[name]._apply(more, forced=True)
            settled = self.group.settle()
            if settled is not None and self.group.notify:
                # `notify GROUP STATE` once the whole group is in its new state
                self._run(run_program([self.group.notify, self.group.name, settled.value],
                                      "vrrp_notify_failed", self.cfg.script_timeout,
                                      group=self.group.name, state=settled.value))  # fmt: skip

    def _send(self, priority: int) -> None:
        if self.sock is None:
            return
        cfg = self.cfg
        ad = Advert(cfg.vrid, priority, cfg.interval_cs, tuple(cfg.addresses()),
                    checksum_as_v2=cfg.checksum_as_v2)  # fmt: skip
        for dst in cfg.unicast_peers or [MULTICAST_V6 if cfg.ipv6 else MULTICAST_V4]:
            error = self.sock.send(build(ad, self.address, dst), dst)
            if error is None:
                self.sent += 1
            else:
                self.send_errors += 1
                self._drop(f"send: {error.strerror or error}", dst)

    def _became(self, change: Became) -> None:
        cfg = self.cfg
        log("vrrp_state", "warn" if change.new is State.FAULT else "info", instance=cfg.name,
            old=change.old.value, new=change.new.value, reason=change.reason,
            priority=self.machine.priority)  # fmt: skip
        if change.new is State.MASTER:
            netif.add_addresses(cfg.interface, cfg.virtual_ips)
            self._garp_burst()
            if cfg.garp.repeat_after > 0:
                self.garp_timers.append(
                    self.loop.call_later(cfg.garp.repeat_after, self._garp_burst)
                )
        elif change.old is State.MASTER:
            for t in self.garp_timers:
                t.cancel()
            self.garp_timers.clear()
            netif.remove_addresses(cfg.interface, cfg.virtual_ips)
        if cfg.notify:
            # `notify NAME STATE`, as keepalived's notify script
            self._run(run_program([cfg.notify, cfg.name, change.new.value], "vrrp_notify_failed",
                                  cfg.script_timeout, instance=cfg.name,
                                  state=change.new.value))  # fmt: skip

    def _run(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _garp_burst(self) -> None:
        if self.machine.state is not State.MASTER:
            return
        cfg = self.cfg
        for i in range(cfg.garp.count):
            self.garp_timers.append(self.loop.call_later(i * cfg.garp.interval, self._garp))

    def _garp(self) -> None:
        if self.machine.state is State.MASTER:
            announce = netif.send_unsolicited_na if self.cfg.ipv6 else netif.send_garp
            try:
                announce(self.cfg.interface, self.cfg.addresses())
            except OSError as exc:
                self._drop(f"garp: {exc.strerror or exc}", self.cfg.interface)

    # reading ----------------------------------------------------------------------------------

    def view(self) -> dict[str, object]:
        m = self.machine
        return {
            "name": self.cfg.name, "interface": self.cfg.interface, "vrid": self.cfg.vrid,
            "state": m.state.value, "priority": m.priority, "address": self.address,
            "master": m.master, "virtual_ips": self.cfg.virtual_ips, "sent": self.sent,
            "received": self.received, "send_errors": self.send_errors,
            "dropped": dict(self.dropped),
            "sync_group": None if self.group is None else self.group.name,
        }  # fmt: skip


# what a reload may change in a running instance; anything else restarts it (Instance.reconfigure)
RECONFIGURABLE = frozenset(
    {
        "priority",
        "preempt",
        "preempt_delay",
        "notify",
        "script_timeout",
        "garp",
        "track",
        "skip_check_adv_addr",
    }
)


def reconfigurable(old: VrrpInstanceConfig, new: VrrpInstanceConfig) -> bool:
    """True when `new` differs from `old` only in what a running instance takes in place (not
    the address owner's priority: an owner is master at once, a restart does that)."""
    if 255 in (old.priority, new.priority) and old.priority != new.priority:
        return False
    return old.model_copy(update={k: getattr(new, k) for k in RECONFIGURABLE}) == new
