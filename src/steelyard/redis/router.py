"""Where each slot's commands go in one proxy, and what waits while a slot moves.

The dashboard pushes a view of the cluster (owners, and the state of each moving slot); the
router applies it and says when the change has taken hold here, so the dashboard can wait for
every proxy before the next step (the barrier that keeps a lagging proxy from writing a key on
the old owner after it moved):

- locked: the slot's new commands wait here; the change holds once the commands already sent
  to the source have been answered (a PING behind them on each connection to the source).
- migrating: each command first moves the keys it names from the source to the target
  (`MIGRATE ... KEYS ... REPLACE`, atomic per call; NOKEY when they are there already), then
  runs on the target. Keys the mover is copying in chunks (big keys) wait until it is done.
- done (the owner changed): new commands wait until the moves this proxy started are answered,
  so a command never overtakes an earlier one on the same key.

A command whose keys are in several slots of one group (`cross_slot: group`) does not move its
keys itself: it waits until none of its slots is moving (`when_settled`), then is routed again
(`via_slots`); once sent to the owner, a later lock's barrier covers it like any command.

The fast path is `moving[slot] is None`: one list lookup, then the owner from `route`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from steelyard.redis import resp
from steelyard.redis.dispatch import CROSSSLOT
from steelyard.redis.slots import SLOTS

if TYPE_CHECKING:
    from steelyard.redis.backend import BackendPool

Go = Callable[[str], None]  # run the command on this master
Fail = Callable[[bytes], None]  # answer the command with this error reply
Waiting = tuple[int, list[bytes], Go, Fail]  # (db, keys, go, fail)

LOCKED = "locked"
MIGRATING = "migrating"
UNASSIGNED = "unassigned"


class Moving:
    __slots__ = ("done", "ended", "held", "pending", "settled", "slot", "source", "state", "target",
                 "waiting")  # fmt: skip

    def __init__(self, slot: int, state: str, source: str = "", target: str = "") -> None:
        self.slot = slot
        self.state = state
        self.source = source
        self.target = target
        self.held: set[bytes] = set()  # keys the mover is copying itself
        self.waiting: list[Waiting] = []
        self.settled: list[Callable[[], None]] = []  # called once the slot is at rest again
        self.pending = 0  # migrate-on-access requests not yet answered
        self.done: Callable[[], None] | None = None  # set when the move has ended here
        self.ended: asyncio.Future[None] | None = None  # resolved by `done`


class Router:
    def __init__(self, backends: BackendPool, auth: str | None, migrate_timeout: float) -> None:
        self.backends = backends
        self.auth = auth
        self.migrate_timeout_ms = str(max(1, int(migrate_timeout * 1000))).encode()
        self.route: list[str] = [""] * SLOTS  # the master of each slot's owner
        self.moving: list[Moving | None] = [Moving(s, UNASSIGNED) for s in range(SLOTS)]
        self.masters: dict[int, str] = {}  # group id -> master
        self.replicas: dict[int, list[str]] = {}
        self.readers: dict[str, list[str]] = {}  # master -> replicas serving reads now
        self.version = -1
        # Called with (source, slots) when slots start moving (commands blocked there wake).
        self.on_lock: Callable[[str, set[int]], None] | None = None
        # While a view is applied: what waited for slots to settle, called once it is all in
        # place (a command routed halfway through would see other slots' old state).
        self._settled: list[Callable[[], None]] | None = None

    # applying a view -----------------------------------------------------------------------

    def apply(self, view: dict[str, Any]) -> list[asyncio.Future[None]]:
        """Take a new view now; the futures resolve when every change has taken hold here."""
        loop = self.backends.loop
        groups = view["groups"]
        self.masters = {int(g): v["master"] for g, v in groups.items()}
        self.replicas = {int(g): list(v.get("replicas", [])) for g, v in groups.items()}
        self.version = int(view.get("version", 0))
        self.readers = {
            self.masters[int(g)]: list(r)
            for g, r in view.get("readers", {}).items()
            if int(g) in self.masters
        }
        moving_view: dict[str, Any] = view.get("moving", {})
        self._settled = []
        waits: list[asyncio.Future[None]] = []
        lock_sources: set[str] = set()
        locked: dict[str, set[int]] = {}  # source -> slots that start moving now
        for slot, gid in enumerate(view["slots"]):
            owner = self.masters.get(gid, "") if gid else ""
            new = moving_view.get(str(slot))
            old = self.moving[slot]
            self.route[slot] = owner
            if new is not None:
                state = new["state"]
                held = {k.encode("latin-1") for k in new.get("held", [])}
                if old is None or old.state == UNASSIGNED:
                    locked.setdefault(new["from"], set()).add(slot)
                    m = self.moving[slot] = Moving(slot, state, new["from"], new["to"])
                    m.held = held
                    if old is not None:
                        m.waiting = old.waiting
                    lock_sources.add(new["from"])
                    if state == MIGRATING:
                        self._release(m)
                    continue
                if old.ended is not None and not old.ended.done():
                    old.ended.set_result(None)  # a new move of the slot before the last ended
                old.done = old.ended = None
                grown = held - old.held
                old.state, old.source, old.target, old.held = state, new["from"], new["to"], held
                if grown:
                    lock_sources.add(old.source)  # in-flight moves of those keys must land
                if state == MIGRATING:
                    self._release(old)
                continue
            if not owner:
                if old is None or old.state != UNASSIGNED:
                    self.moving[slot] = Moving(slot, UNASSIGNED)
                    if old is not None:
                        self._end(old, old.ended)  # what waited on it gets the unassigned error
                continue
            if old is None:
                continue
            if old.pending:
                fut = old.ended = loop.create_future()
                waits.append(fut)
                old.done = lambda m=old, f=fut: self._end(m, f)
                old.state = LOCKED  # new commands wait behind the moves in flight
            else:
                self._end(old, None)
        settled, self._settled = self._settled, None
        for then in settled:
            then()
        if self.on_lock is not None:
            for source, slots in locked.items():
                self.on_lock(source, slots)
        for source in lock_sources:
            waits.append(self._barrier(source))
        return waits

    def _end(self, m: Moving, fut: asyncio.Future[None] | None) -> None:
        if self.moving[m.slot] is m:
            self.moving[m.slot] = None
        self._release(m)
        settled, m.settled = m.settled, []
        if self._settled is not None:
            self._settled += settled  # called at the end of apply()
        else:
            for then in settled:
                then()
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _release(self, m: Moving) -> None:
        waiting, m.waiting = m.waiting, []
        for db, keys, go, fail in waiting:
            self.via(m.slot, db, keys, go, fail)

    def _barrier(self, source: str) -> asyncio.Future[None]:
        """Resolves when every request sent to `source` so far has been answered."""
        fut: asyncio.Future[None] = self.backends.loop.create_future()
        # Not subscriber connections: they carry no command on a key, and a RESP2 PONG there
        # arrives among the messages, so a message could be taken for it.
        conns = [
            c
            for c in self.backends.all()
            if c.address == source and not c.closed and not c.blocking and c.push is None
        ]
        left = [len(conns)]
        if not conns:
            fut.set_result(None)
            return fut

        def answered(_raw: bytes) -> None:
            left[0] -= 1
            if left[0] == 0 and not fut.done():
                fut.set_result(None)

        for c in conns:
            c.send(resp.PING_COMMAND, answered)
        self.backends.flush()
        return fut

    # routing -------------------------------------------------------------------------------

    def via(self, slot: int, db: int, keys: list[bytes], go: Go, fail: Fail) -> None:
        """Run a command on `slot` (naming `keys`) wherever the slot's state says."""
        m = self.moving[slot]
        if m is None:
            go(self.route[slot])
            return
        if m.state == UNASSIGNED:
            fail(resp.error(f"ERR slot {slot} is not assigned to any group"))
            return
        if m.state == LOCKED or (m.held and not m.held.isdisjoint(keys)):
            m.waiting.append((db, keys, go, fail))
            return
        if not keys:
            go(m.target)
            return
        m.pending += 1
        target = m.target

        def moved(raw: bytes) -> None:
            m.pending -= 1
            if raw == b"+OK\r\n" or raw == b"+NOKEY\r\n":
                go(target)
            else:
                fail(
                    resp.error(
                        f"ERR slot {slot} is migrating and moving its keys failed: "
                        f"{raw[1:-2].decode('utf-8', 'replace')}"
                    )
                )
            if m.pending == 0 and m.done is not None:
                m.done()

        command = self.migrate_command(target, db, list(dict.fromkeys(keys)))
        self.backends.get(m.source, db).send(command, moved)

    def when_settled(self, slots: Sequence[int], then: Callable[[], None]) -> bool:
        """True when none of `slots` is moving (locked, migrating, or done with moves still in
        flight); otherwise False, and `then` is called once the first moving one is at rest
        again (the caller checks again then: another may still be moving). A slot no group
        owns counts as at rest: routing answers its error."""
        moving = self.moving
        for slot in slots:
            m = moving[slot]
            if m is not None and m.state != UNASSIGNED:
                m.settled.append(then)
                return False
        return True

    def via_slots(self, slots: Sequence[int], go: Go, fail: Fail) -> None:
        """Run a command naming keys in several `slots` on the master of the one group that
        owns them all, once none of them is moving; CROSSSLOT when they are in several
        groups, the unassigned error for a slot no group owns."""
        if not self.when_settled(slots, lambda: self.via_slots(slots, go, fail)):
            return
        error = self.owner_error(slots)
        if error is not None:
            fail(error)
        else:
            go(self.route[slots[0]])

    def owner_error(self, slots: Sequence[int]) -> bytes | None:
        """None when one group owns every one of `slots`, else the error to answer."""
        route = self.route
        for slot in slots:
            if not route[slot]:
                return resp.error(f"ERR slot {slot} is not assigned to any group")
        owner = route[slots[0]]
        for slot in slots:
            if route[slot] != owner:
                return resp.error(CROSSSLOT)
        return None

    def migrate_command(self, target: str, db: int, keys: list[bytes]) -> bytes:
        host, _, port = target.rpartition(":")
        argv = [b"MIGRATE", host.strip("[]").encode(), port.encode(), b"", str(db).encode(),
                self.migrate_timeout_ms, b"REPLACE"]  # fmt: skip
        if self.auth:
            argv += [b"AUTH", self.auth.encode()]
        argv.append(b"KEYS")
        argv += keys
        return resp.encode_command(argv)
