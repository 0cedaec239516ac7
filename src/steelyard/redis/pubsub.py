"""Pub/Sub through the proxy: channels live on the group that owns their slot.

A channel is placed like a key (`slot_of(channel)`), so PUBLISH goes to one server and the
subscribers of that channel listen on the same one. Patterns can match channels of any group,
so PSUBSCRIBE listens on every master (a message is published on one server only, so it is
never delivered twice). A subscribing session gets a connection of its own per server in push
mode; confirmations carry the session's own subscription count, as one Redis would give.

In RESP3 (after HELLO 3) confirmations and messages are push frames (`>`), and the push
connections say HELLO 3 too, so messages arrive as the server's own push frames; a message from
a connection opened before the client switched protocol is relabelled (`*` and `>` frames of
Pub/Sub messages differ only in their type byte).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from steelyard.redis import resp
from steelyard.redis.slots import slot_of

if TYPE_CHECKING:
    from steelyard.redis.backend import BackendConn
    from steelyard.redis.frontend import RedisFrontend

# subscribe kind -> (the kind that undoes it, whether it is a pattern)
KINDS = {
    b"subscribe": (b"unsubscribe", False),
    b"ssubscribe": (b"sunsubscribe", False),
    b"psubscribe": (b"punsubscribe", True),
}
UNDO = {undo: kind for kind, (undo, _) in KINDS.items()}
ALLOWED = frozenset(
    {b"SUBSCRIBE", b"SSUBSCRIBE", b"PSUBSCRIBE", b"UNSUBSCRIBE", b"SUNSUBSCRIBE",
     b"PUNSUBSCRIBE", b"PING", b"QUIT", b"RESET"}
)  # fmt: skip


class Subscriptions:
    """The channels and patterns of one session, and its push connections.

    Each (un)subscribe request reserves its reply's place in the session's FIFO at once and
    fills it when the server confirms, so confirmations stay in request order and the session
    is in subscriber mode from the request on, as with one Redis.
    """

    def __init__(
        self, fe: RedisFrontend, db: int, reserve: Callable[[], Callable[[bytes], None]],
        emit: Callable[[bytes], None],
    ) -> None:  # fmt: skip
        self.fe = fe
        self.db = db
        self.reserve = reserve  # a place in the reply FIFO, filled by calling what it returns
        self.emit = emit  # a message pushed by a server: appended to the replies now
        # What the client has asked for, in request order: the count a confirmation carries
        # is this set's size right after its request, as one Redis processing them in turn.
        self.requested: set[tuple[bytes, bytes]] = set()
        self.pending: dict[tuple[bytes, bytes], list[tuple[Callable[[bytes], None], int]]] = {}
        self.conns: dict[str, BackendConn] = {}
        self.where: dict[tuple[bytes, bytes], set[str]] = {}  # channel -> servers listened on
        self.protocol = 2  # the session's: confirmations and messages are framed for it

    @property
    def active(self) -> bool:
        """Subscriber mode: from the first subscribe request until nothing is left."""
        return bool(self.requested)

    def _conn(self, address: str) -> BackendConn:
        conn = self.conns.get(address)
        if conn is None or conn.closed:
            conn = self.fe.backends.private(address, self.db, self.protocol)
            self.conns[address] = conn
            conn.push = self._on_push
        return conn

    def _servers(self, kind: bytes, name: bytes) -> list[str]:
        if KINDS[kind][1]:
            return sorted(set(self.fe.masters.values()))
        return sorted(self._homes(name))

    def _homes(self, channel: bytes) -> set[str]:
        """Where a channel is listened to: its slot's owner, and while the slot moves, its
        target too (PUBLISH switches at the end of the move: no message falls in between)."""
        slot = slot_of(channel)
        homes = {self.fe.owner(slot)} - {""}
        moving = self.fe.router.moving[slot]
        if moving is not None and moving.target:
            homes.add(moving.target)
        return homes

    def rehome(self) -> None:
        """The slot map changed: listen where each channel now lives. The servers' own
        confirmations of these changes are not the client's and are dropped (no pending)."""
        masters = set(self.fe.masters.values())
        for kind, name in sorted(self.requested):
            # Patterns listen on every master (a group may have come or gone, or failed over).
            want = masters if KINDS[kind][1] else self._homes(name)
            have = self.where.get((kind, name), set())
            undo = KINDS[kind][0]
            for address in want - have:
                self._conn(address).send_push(resp.encode_command([kind.upper(), name]))
            for address in have - want:
                conn = self.conns.get(address)
                if conn is not None and not conn.closed:
                    conn.send_push(resp.encode_command([undo.upper(), name]))
            self.where[(kind, name)] = want

    def _confirmation(self, kind: bytes, name: bytes | None, count: int) -> bytes:
        protocol = self.protocol
        channel = resp.null(protocol) if name is None else resp.bulk(name)
        return resp.push([resp.bulk(kind), channel, resp.integer(count)], protocol)

    def subscribe(self, kind: bytes, names: list[bytes]) -> None:
        for name in names:
            fill = self.reserve()
            if (kind, name) in self.requested:
                fill(self._confirmation(kind, name, len(self.requested)))
                continue
            self.requested.add((kind, name))
            self._send(kind, kind, name, fill)

    def unsubscribe(self, undo: bytes, names: list[bytes]) -> None:
        kind = UNDO[undo]
        targets = names or sorted(n for k, n in self.requested if k == kind)
        if not targets:
            # Redis answers an UNSUBSCRIBE of nothing with one confirmation naming nothing.
            self.reserve()(self._confirmation(undo, None, len(self.requested)))
            return
        for name in targets:
            fill = self.reserve()
            if (kind, name) not in self.requested:
                fill(self._confirmation(undo, name, len(self.requested)))
                continue
            self.requested.discard((kind, name))
            self._send(kind, undo, name, fill)

    def _send(self, kind: bytes, verb: bytes, name: bytes, fill: Callable[[bytes], None]) -> None:
        self.pending.setdefault((verb, name), []).append((fill, len(self.requested)))
        servers = self._servers(kind, name)
        if verb == kind:
            self.where[(kind, name)] = set(servers)
        else:
            servers = sorted(self.where.pop((kind, name), set(servers)))
        for address in servers:
            self._conn(address).send_push(resp.encode_command([verb.upper(), name]))

    def _on_push(self, raw: bytes) -> None:
        message = resp.parse(raw)
        if not isinstance(message, list) or not message:
            return
        kind = message[0]
        if kind in KINDS or kind in UNDO:
            self._confirm(kind, message[1])
        elif (raw[0] == 0x3E) != (self.protocol == 3):  # '>': framed for the other protocol
            self.emit((b">" if self.protocol == 3 else b"*") + raw[1:])
        else:
            self.emit(raw)  # message, pmessage, smessage: as the server wrote it

    def _confirm(self, verb: bytes, name: bytes) -> None:
        """One confirmation per request, however many servers it went to."""
        waiting = self.pending.get((verb, name))
        if not waiting:
            return  # a pattern confirmed again by the second and later servers
        fill, count = waiting.pop(0)
        if not waiting:
            del self.pending[(verb, name)]
        fill(self._confirmation(verb, name, count))

    def close(self) -> None:
        for conn in self.conns.values():
            conn.fail("subscriber gone")
        self.conns.clear()
