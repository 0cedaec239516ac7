"""One client connection to the Redis proxy: commands in, replies out in the order asked.

Every command gets a reply slot in a FIFO the moment it is read, and is dispatched at once
(pipelined commands of one client run in parallel on their backends); replies leave from the
head of the FIFO as soon as they are filled, gathered into one write per loop turn. A command
split over slots (MGET, MSET, DEL, ...) fills its slot when every part has answered. A long
reply at the head of the FIFO leaves before it is filled: its head is written as it comes from
the backend (`stream`), the rest when it ends.

A command whose keys are in several slots of one group (`cross_slot: group`) runs on that
group. Two kinds of command hold the client's next commands until they are on their way, so
that none overtakes them: one waiting for a moving slot to settle, and EXEC (its transaction
runs on a connection of its own) until it has answered.

After HELLO 3 a session speaks RESP3: its requests go on backend connections that speak it
too (backend.py), so the servers' replies pass through as they are, and what the session builds
or merges itself (nulls, INFO, HELLO, MGET over groups, Pub/Sub confirmations) is framed for
its protocol.

Before AUTH (with `auth` set) a client is read one command at a time under Redis's limits for
strangers (a bulk over 16 KiB or more than 10 arguments is refused at its header).

Limits (Redis's): unread input past client_query_buffer_limit closes the client at once;
unsent replies past client_output_buffer_limit close it too (hard: what is buffered beyond the
largest single reply being written, so one reply bigger than `hard` still reaches a client
that reads it; soft: everything buffered, for soft_seconds), a client that is closing (after
QUIT or a protocol error) included. Input is paused while max_pipeline requests are in flight
or more than PAUSE_READING_AT of replies wait unsent. A closing client that reads nothing of
its replies for CLOSE_STALL_SECONDS (idle_timeout if shorter) is cut off (see frontend._sweep).
"""

from __future__ import annotations

import asyncio
import hmac
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING
from zlib import crc32

from steelyard.log import log
from steelyard.redis import pubsub, resp, scripting
from steelyard.redis.backend import ReplySlot
from steelyard.redis.dispatch import (
    CROSSSLOT,
    SCRIPTS,
    Decision,
    Kind,
    classify,
    not_supported,
)
from steelyard.redis.slots import SLOTS, slot_of, slots_of

if TYPE_CHECKING:
    from steelyard.redis.backend import BackendConn
    from steelyard.redis.frontend import RedisFrontend

SLOT_MASK = SLOTS - 1  # crc32 % 1024, as a mask


# Commands that act on the transaction itself rather than being queued in it.
TX_CONTROL = frozenset({"multi", "exec", "discard", "watch", "unwatch", "quit"})


class ClientSession(asyncio.Protocol):
    def __init__(self, fe: RedisFrontend) -> None:
        self.fe = fe
        self.loop = fe.loop
        self.transport: asyncio.Transport | None = None
        self.parser = resp.FastRequestParser(fe.redis.max_bulk_bytes)
        self.replies: deque[ReplySlot] = deque()
        self.db = 0
        self.authed = fe.cfg.auth is None
        if not self.authed:
            self.parser.guard = True  # Redis's limits for strangers until AUTH
        self.closing = False  # QUIT or a protocol error: close once replies are out
        self.paused = False  # reading paused: max_pipeline requests in flight
        self.write_blocked = False  # reading paused: replies piling up unread (see below)
        self.soft_since = 0.0  # when its unsent replies went over the soft limit
        # The largest single reply written since the unsent replies were last drained (to
        # the low water mark): the hard output limit applies to what is buffered beyond it.
        self.big_reply = 0
        self.stream_bytes = 0  # of the reply being streamed (stream()), written so far
        self.sent = 0  # bytes handed to the transport, for close_stalled
        # A closing client: the bytes it had read at the last sweep, and since when.
        self.stalled_read = -1
        self.stalled_since = 0.0
        self.last_read = 0.0
        self.connected = 0.0  # when accepted (auth_timeout counts from here)
        self.peer = "-"
        self._flush_scheduled = False
        self.private_conns: dict[tuple[str, int, int], BackendConn] = {}  # address, db, protocol
        self.blocked: dict[BackendConn, deque[Blocked]] = {}  # per blocking connection
        # The router's tables (changed in place by every view the dashboard pushes).
        self.route = fe.router.route
        self.moving = fe.router.moving
        self.read_replicas = fe.cfg.read_from_replicas
        # The shared backend connections this session used, by address, for its current db.
        self.conns: dict[str, BackendConn] = {}
        self.fast = fe.fast
        self._turn = 0

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        if len(self.fe.sessions) >= self.fe.cfg.max_clients:
            # Redis's answer at maxclients; counted per worker.
            self.transport.write(b"-ERR max number of clients reached\r\n")
            self.transport.close()
            self.closing = True
            return
        self.fe.sessions.add(self)
        self.last_read = self.connected = self.loop.time()
        self.transport.set_write_buffer_limits(high=PAUSE_READING_AT, low=PAUSE_READING_AT // 4)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_read = self.loop.time()
        if not self.authed:
            self.read_unauthenticated(data)
            return
        parser = self.parser
        commands = parser.feed(data)
        if parser.buffered() > self.fe.cfg.client_query_buffer_limit:
            self.query_buffer_full()
            return
        self.fe.commands += len(commands)
        fast, moving, route, replies = self.fast, self.moving, self.route, self.replies
        conns = self.conns
        for argv, raw in zip(commands, parser.raws, strict=True):
            # The fast path: a single-key command (GET, SET, INCR, HSET, ...) on a slot at
            # rest goes straight to its owner; everything else takes dispatch().
            spec = fast.get(argv[0])
            if spec is not None and self.tx is None and self.subs is None:
                arity, write = spec
                n = len(argv)
                if n == arity or (arity < 0 and n >= -arity):
                    key = argv[1]
                    start = key.find(b"{")
                    if start >= 0:
                        end = key.find(b"}", start + 1)
                        if end >= 0:
                            key = key[start + 1 : end]
                    slot = crc32(key) & SLOT_MASK
                    if moving[slot] is None:
                        command = raw or resp.encode_command(argv)
                        if write or not self.read_replicas:
                            address = route[slot]
                            conn = conns.get(address)
                            if conn is None or conn.closed:
                                conn = conns[address] = self.fe.backends.get(
                                    address, self.db, self.protocol
                                )
                            reply = ReplySlot(self)
                            replies.append(reply)
                            conn.send(command, reply)
                        else:
                            self.read(route[slot], command)
                        continue
            self.dispatch(argv)
            if self.closing:
                break
            fast = self.fast  # none while a command waits for its slots (see hold())
        self.after_read()

    def read_unauthenticated(self, data: bytes) -> None:
        """Before AUTH, one command at a time under Redis's limits for strangers (a bulk over
        16 KiB or more than 10 arguments is refused, not buffered); what follows a successful
        AUTH in the same read is read as an authenticated client's."""
        parser = self.parser
        while not self.closing:
            commands = parser.feed(data)
            data = b""
            if not commands:
                break
            self.fe.commands += 1
            self.dispatch(commands[0])
            if self.authed:
                parser.guard = False
                if not self.closing:
                    self.data_received(b"")
                    return
        self.after_read()

    def query_buffer_full(self) -> None:
        """More unread input than client_query_buffer_limit: closed at once, as Redis does."""
        log(
            "redis_query_buffer_limit",
            "warn",
            peer=self.peer,
            buffered=self.parser.buffered(),
            limit=self.fe.cfg.client_query_buffer_limit,
        )
        self.cut()

    def after_read(self) -> None:
        error = self.parser.error
        if error is not None and not self.closing:
            log("redis_protocol_error", "warn", peer=self.peer, cause=str(error))
            self.replies.append(ReplySlot(self, resp.error(f"ERR Protocol error: {error}")))
            self.closing = True
        # The requests leave at the end of this loop turn, with those of every other client
        # read in the same turn: one send per backend for all of them.
        self.write_ready()
        if len(self.replies) >= self.fe.cfg.max_pipeline and self.transport is not None:
            # Too many requests in flight: read no more until most are answered.
            self.transport.pause_reading()
            self.paused = True

    # A client that does not read its replies: its input is paused while more than
    # PAUSE_READING_AT of them wait to be sent, so it cannot ask for more; what it asked for
    # already is bounded by client_output_buffer_limit, past which it is closed. The backend
    # connections are not paused for it: they are shared, and would stall every other client.

    def pause_writing(self) -> None:
        self.write_blocked = True
        if self.transport is not None:
            self.transport.pause_reading()
        self.check_output()

    def resume_writing(self) -> None:
        self.write_blocked = False
        self.soft_since = 0.0
        self.big_reply = 0  # drained: the big reply is (all but) read
        if not self.paused and not self.closing and self.transport is not None:
            self.transport.resume_reading()

    def check_output(self) -> None:
        """Close the client when its unsent replies are over the hard limit, or over the soft
        one for soft_seconds (Redis's client-output-buffer-limit). A closing client too: after
        QUIT it may still have thousands of replies coming that it never reads.

        The hard limit counts what is buffered beyond the largest single reply written since
        the buffer last drained: a reply bigger than `hard` (a 512 MB value, written whole
        from an MGET, EXEC or replica read, or streamed) reaches a client that reads it, while
        replies piling up behind it still count in full."""
        transport = self.transport
        if transport is None:
            return
        size = transport.get_write_buffer_size()
        limit = self.fe.cfg.client_output_buffer_limit
        if limit.hard and size - max(self.big_reply, self.stream_bytes) > limit.hard:
            self.output_overflow(size, "hard", limit.hard)
        elif limit.soft and size > limit.soft:
            now = self.loop.time()
            if not self.soft_since:
                self.soft_since = now
            elif now - self.soft_since >= limit.soft_seconds:
                self.output_overflow(size, "soft", limit.soft)
        else:
            self.soft_since = 0.0

    def output_overflow(self, size: int, kind: str, limit: int) -> None:
        log("redis_output_buffer_limit", "warn", peer=self.peer, buffered=size, limit=kind,
            bytes=limit)  # fmt: skip
        self.cut()  # its unsent replies are dropped with it

    def cut(self) -> None:
        """Abort the connection, dropping what is unsent: a close would wait for the client
        to read it."""
        self.closing = True
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()

    def close_stalled(self, now: float, stall: float) -> bool:
        """A closing client (QUIT, protocol error) is closed once its replies are out; one
        of whose replies no byte leaves for `stall` seconds (it does not read them, or one it
        is owed does not come) is cut off instead (True): a close would wait for it forever,
        holding its replies and its connection."""
        transport = self.transport
        if transport is None:
            return False
        size = transport.get_write_buffer_size()
        read = self.sent - size
        if read != self.stalled_read:
            self.stalled_read, self.stalled_since = read, now  # it reads: start again
            return False
        if now - self.stalled_since < stall:
            return False
        log("redis_close_stalled", "warn", peer=self.peer, buffered=size, replies=len(self.replies))
        self.cut()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        self.fe.sessions.discard(self)
        for conn in self.private_conns.values():
            conn.fail("the client is gone")  # a blocked command must not outlive its client
        self.private_conns.clear()
        self.blocked.clear()
        self.drop_watch()
        if self.subs is not None:
            self.subs.close()

    # commands -------------------------------------------------------------------------------

    def dispatch(self, argv: list[bytes]) -> None:
        held = self.held
        if held is not None:
            held.append(argv)  # behind a command waiting for its slots to settle
            if len(held) >= self.fe.cfg.max_pipeline and self.transport is not None:
                self.transport.pause_reading()  # as with max_pipeline replies in flight
                self.paused = True
            return
        if not self.authed and argv[0].upper() not in (b"AUTH", b"QUIT", b"HELLO"):
            self.answer(b"-NOAUTH Authentication required.\r\n")
            return
        subs = self.subs
        if (
            subs is not None
            and subs.active
            and self.protocol == 2  # RESP3 runs any command while subscribed
            and argv[0].upper() not in pubsub.ALLOWED
        ):
            name = argv[0].decode("utf-8", "replace").lower()
            self.answer(
                resp.error(
                    f"ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING "
                    "/ QUIT / RESET are allowed in this context"
                )
            )
            return
        decision = classify(argv, self.fe.table)
        if decision.name in SCRIPTS and self.fe.redis.scripts == "deny":
            decision = Decision(
                Kind.ERROR, decision.name, error=not_supported(decision.name) + " (scripts: deny)"
            )
        kind = decision.kind
        if kind is Kind.PUBSUB:
            self.pubsub(argv, decision.name)
            return
        if self.tx is not None and decision.name not in TX_CONTROL:
            self.queue_in_tx(argv, decision)
            return
        if kind is Kind.TRANSACTION:
            self.transaction(argv, decision)
            return
        if kind is Kind.SLOT:
            slot = decision.slot
            if self.moving[slot] is None:
                address = self.route[slot]
                if self.read_replicas and not decision.write:
                    self.read(address, resp.encode_command(argv))
                else:
                    conn = self.fe.backends.get(address, self.db, self.protocol)
                    conn.send(resp.encode_command(argv), self.reserve())
            else:
                self.forward(slot, [argv[i] for i in decision.keys], resp.encode_command(argv))
        elif kind is Kind.BLOCKING:
            self.blocking([decision.slot], [argv[i] for i in decision.keys], argv)
        elif kind is Kind.ERROR:
            if decision.cross is not None and self.fe.redis.cross_slot == "group":
                self.colocated(argv, decision)
            else:
                self.answer(resp.error(decision.error))
        elif kind is Kind.LOCAL:
            self.local(argv, decision)
        elif kind is Kind.SPLIT:
            self.split(argv, decision)
        elif kind is Kind.SERVER:
            scripting.run(self, argv, decision)
        elif kind is Kind.FANOUT:
            if not self.fe.redis.allow_fanout:
                self.answer(resp.error(not_supported(decision.name) + " (allow_fanout is off)"))
            elif decision.name == "keys":
                self.fanout(argv, merge_arrays)
            else:
                self.fanout(argv, merge_ok)
        else:
            self.answer(resp.error(not_supported(decision.name.split("|")[0]) + " yet"))

    def idle(self) -> bool:
        """Nothing in flight, no subscription, no blocking command waiting."""
        if self.replies or (self.subs is not None and self.subs.active):
            return False
        return not any(self.blocked.values())

    def answer(self, data: bytes) -> None:
        self.replies.append(ReplySlot(self, data))

    def reader(self, master: str) -> str:
        """A replica of `master` for a read, in turn (the master when none is fit)."""
        readers = self.fe.router.readers.get(master)
        if not readers:
            return master
        self._turn += 1
        return readers[self._turn % len(readers)]

    def read(
        self, master: str, command: bytes, fill: Callable[[bytes], None] | None = None, db: int = -1
    ) -> None:
        """A read on a replica of `master`; if that replica cannot answer, on the master.
        (`fill` and `db`: of a command read earlier, whose place in the FIFO is taken.)"""
        if fill is None:
            fill = self.reserve()
        reader = self.reader(master)
        backends, protocol = self.fe.backends, self.protocol
        if db < 0:
            db = self.db
        if reader == master:
            backends.get(master, db, protocol).send(command, fill)
            return

        def answered(raw: bytes) -> None:
            if raw.startswith(REPLICA_UNFIT):
                backends.get(master, db, protocol).send(command, fill)
                backends.flush()
            else:
                fill(raw)

        backends.get(reader, db, protocol).send(command, answered)

    def forward(self, slot: int, keys: list[bytes], command: bytes) -> None:
        """Send `command` (naming `keys`) to `slot` on the shared connections."""
        db, protocol = self.db, self.protocol
        backends = self.fe.backends

        def go(address: str, fill: Callable[[bytes], None]) -> None:
            backends.get(address, db, protocol).send(command, fill)

        self.routed(slot, keys, go)

    def routed(
        self, slot: int, keys: list[bytes], go: Callable[[str, Callable[[bytes], None]], None]
    ) -> None:
        """A place in the FIFO now, then `go(master, fill)` where the slot's state says: at
        once on its owner, or after its keys have moved, or once a lock on it is lifted."""
        fill = self.reserve()
        if self.moving[slot] is None:
            go(self.route[slot], fill)
        else:
            self.fe.router.via(slot, self.db, keys, lambda address: go(address, fill), fill)

    def colocated(self, argv: list[bytes], decision: Decision) -> None:
        """Keys in several slots (`cross_slot: group`): the command runs on the group that
        owns them all, once none of those slots is moving (CROSSSLOT across groups)."""
        keys = [argv[i] for i in decision.keys]
        slots = slots_of(keys)
        if decision.cross is Kind.TRANSACTION:
            self.transaction(argv, decision, slots)
            return
        if decision.cross is Kind.BLOCKING:
            self.blocking(slots, keys, argv)
            return
        command, db, protocol = resp.encode_command(argv), self.db, self.protocol
        backends = self.fe.backends
        reads = self.read_replicas and not decision.write

        def go(address: str, fill: Callable[[bytes], None]) -> None:
            if reads:
                self.read(address, command, fill, db)
            else:
                backends.get(address, db, protocol).send(command, fill)

        fill = self.reserve()
        router = self.fe.router
        self.hold(slots, lambda: router.via_slots(slots, lambda address: go(address, fill), fill))

    # Commands read while an earlier one waits (for its slots to settle, or for the answer
    # of a transaction): dispatched in order once it is on its way.
    held: deque[list[bytes]] | None = None

    def hold(self, slots: list[int], run: Callable[[], None]) -> None:
        """`run` (which routes a command on `slots`) now if none of them is moving, else once
        they have all settled, with the commands this client sends meanwhile held behind
        it: none overtakes it on a key they share, as commands on one slot never overtake
        each other."""
        if not self.fe.router.when_settled(slots, lambda: self.hold(slots, run)):
            self.hold_next()
            return
        run()
        self.release_held()

    def hold_next(self) -> None:
        """The commands this client sends from now on wait until release_held()."""
        if self.held is None:
            self.held = deque()
            self.fast = {}  # every command through dispatch(), to be held

    def release_held(self) -> None:
        """Dispatch the held commands in order (until one of them has to wait in its turn)."""
        held = self.held
        if held is None:
            return
        self.held = None
        self.fast = self.fe.fast
        while held and self.held is None and not self.closing:
            self.dispatch(held.popleft())
        if self.held is not None:
            self.held.extend(held)  # the rest wait behind the one that waits
        self.ready()

    def one_group(self, slots: list[int]) -> bool:
        """May a transaction name keys in all of `slots`? One slot: yes; several: with
        `cross_slot: group`, when one group owns them all, a moving slot counted as its
        target's (EXEC waits for it; a slot no group owns is left for routing to report)."""
        if len(slots) <= 1:
            return True
        if self.fe.redis.cross_slot != "group":
            return False
        route, moving = self.route, self.moving
        owners = set()
        for s in slots:
            m = moving[s]
            owner = route[s] if m is None or not m.target else m.target
            if owner:
                owners.add(owner)
        return len(owners) <= 1

    # pub/sub ----------------------------------------------------------------------------------

    subs: pubsub.Subscriptions | None = None

    def pubsub(self, argv: list[bytes], name: str) -> None:
        word = name.encode()
        if name in ("publish", "spublish"):
            # Channels are not keys: nothing moves with a slot, publish on its owner now.
            address = self.route[slot_of(argv[1])]
            if address:
                conn = self.fe.backends.get(address, self.db, self.protocol)
                self.send_on(conn, resp.encode_command(argv))
            else:
                self.answer(resp.error(f"ERR slot {slot_of(argv[1])} is not assigned to any group"))
            return
        if word in pubsub.KINDS or word in pubsub.UNDO:
            if self.subs is None:
                self.subs = pubsub.Subscriptions(self.fe, self.db, self.reserve, self.emit)
                self.subs.protocol = self.protocol
            if word in pubsub.KINDS:
                self.subs.subscribe(word, argv[1:])
            else:
                self.subs.unsubscribe(word, argv[1:])
            self.fe.backends.flush()
            return
        if name in ("pubsub|channels", "pubsub|shardchannels"):
            self.fanout(argv, merge_unique)
        elif name in ("pubsub|numsub", "pubsub|shardnumsub"):
            self.fanout(argv, merge_numsub)
        elif name == "pubsub|numpat":
            # Patterns listen on every master: each one counts them all.
            self.fanout(argv, lambda parts: resp.integer(max(int(p[1:-2]) for p in parts)))
        else:
            self.answer(resp.error(not_supported(name.split("|")[0]) + " yet"))

    def reserve(self) -> ReplySlot:
        """A place in the reply FIFO now; calling it with the reply fills it later."""
        reply = ReplySlot(self)
        self.replies.append(reply)
        return reply

    def emit(self, raw: bytes) -> None:
        """A reply that is not the answer to a waiting request (Pub/Sub): in order, now."""
        self.replies.append(ReplySlot(self, raw))
        self.ready()

    # transactions ---------------------------------------------------------------------------
    # MULTI ... EXEC is queued here and sent in one go on a connection of the session's own,
    # to the master of the one slot every key of the transaction hashes to (or, with
    # `cross_slot: group`, of the one group that owns all their slots). WATCH pins that
    # connection first (the server watches per connection), so EXEC must run on it.

    tx: list[bytes] | None = None  # commands queued since MULTI
    tx_keys: list[bytes] = []  # every key the queued commands name
    tx_slots: list[int] = []  # their slots (and the watched ones), each once
    tx_error: str | None = None  # set when a queued command was refused: EXEC aborts
    # After WATCH: (slots, pinned connection, its master). No connection when a slot was
    # moving: the keys may change place, so EXEC fails as if they had been modified.
    watch: tuple[list[int], BackendConn | None, str] | None = None

    def transaction(
        self, argv: list[bytes], decision: Decision, slots: list[int] | None = None
    ) -> None:
        """`slots`: WATCH's keys' slots when they are several (`cross_slot: group`)."""
        name = decision.name
        if name == "multi":
            if self.tx is not None:
                self.answer(resp.error("ERR MULTI calls can not be nested"))
                return
            self.tx = []
            self.tx_keys = []
            self.tx_slots = list(self.watch[0]) if self.watch else []
            self.tx_error = None
            self.answer(resp.OK)
        elif name == "exec":
            self.exec()
        elif name == "discard":
            if self.tx is None:
                self.answer(resp.error("ERR DISCARD without MULTI"))
                return
            self.tx = None
            self.drop_watch()
            self.answer(resp.OK)
        elif name == "watch":
            if self.tx is not None:
                self.answer(resp.error("ERR WATCH inside MULTI is not allowed"))
                return
            slots = slots or [decision.slot]
            watch = self.watch
            every = list(dict.fromkeys(watch[0] + slots)) if watch else slots
            if not self.one_group(every):
                self.answer(resp.error(CROSSSLOT))
                return
            at_rest = all(self.moving[s] is None for s in slots)
            if watch is None:
                if at_rest:
                    address = self.route[slots[0]]
                    conn = self.fe.backends.private(address, self.db, self.protocol)
                else:
                    conn, address = None, ""
            else:
                _, conn, address = watch
                if conn is not None and not at_rest:
                    conn.fail("watch dropped")  # EXEC fails as if the keys had been modified
                    conn = None
            self.watch = (every, conn, address)
            if conn is None:
                self.answer(resp.OK)
            else:
                self.send_on(conn, resp.encode_command(argv))
        elif name == "unwatch":
            self.drop_watch()  # closing the pinned connection drops its watches on the server
            self.answer(resp.OK)

    def queue_in_tx(self, argv: list[bytes], decision: Decision) -> None:
        kind = decision.kind
        if (
            kind is Kind.ERROR
            and decision.cross is not None
            and self.fe.redis.cross_slot == "group"
        ):
            kind = decision.cross  # its slots are checked below
        if kind is Kind.ERROR:
            self.tx_error = "EXECABORT Transaction discarded because of previous errors."
            self.answer(resp.error(decision.error))
            return
        if kind not in (Kind.SLOT, Kind.BLOCKING, Kind.SPLIT) and decision.name not in (
            "ping",
            "echo",
        ):
            self.tx_error = "EXECABORT Transaction discarded because of previous errors."
            self.answer(resp.error(f"ERR {decision.name.upper()} is not allowed in a transaction"))
            return
        keys = [argv[i] for i in decision.keys]
        slots = [decision.slot] if decision.slot >= 0 else slots_of(keys)
        every = list(dict.fromkeys(self.tx_slots + slots))
        if not self.one_group(every):
            self.tx_error = "EXECABORT Transaction discarded because of previous errors."
            self.answer(resp.error(CROSSSLOT))
            return
        self.tx_slots = every
        assert self.tx is not None
        self.tx.append(resp.encode_command(argv))
        self.tx_keys += keys
        self.answer(b"+QUEUED\r\n")

    def exec(self) -> None:
        if self.tx is None:
            self.answer(resp.error("ERR EXEC without MULTI"))
            return
        queued, self.tx = self.tx, None
        if self.tx_error is not None:
            self.drop_watch()
            self.answer(resp.error(self.tx_error))
            return
        slots = self.tx_slots or [0]
        watch, self.watch = self.watch, None  # EXEC ends the watch on the server too
        conn: BackendConn | None = None
        if watch is not None:
            _, conn, address = watch
            moving, route = self.moving, self.route
            if conn is None or any(moving[s] is not None or route[s] != address for s in slots):
                # The watched keys may have changed place: report them as modified.
                if conn is not None:
                    conn.fail("watch dropped")
                self.answer(resp.null_array(self.protocol))
                return
        # It runs on a connection of its own: the client's next commands wait for its answer
        # (on the shared connections they would overtake it).
        fill = self.reserve()
        self.hold_next()

        def done(raw: bytes) -> None:
            fill(raw)
            self.release_held()

        if conn is not None:
            self.run_tx(conn, queued, done)  # pinned by WATCH
            return
        db, backends, router, protocol = self.db, self.fe.backends, self.fe.router, self.protocol

        def go(address: str) -> None:
            self.run_tx(backends.private(address, db, protocol), queued, done)

        if len(slots) == 1:
            router.via(slots[0], db, self.tx_keys, go, done)
        else:
            router.via_slots(slots, go, done)

    @staticmethod
    def run_tx(conn: BackendConn, queued: list[bytes], fill: Callable[[bytes], None]) -> None:
        ignore: Callable[[bytes], None] = lambda raw: None  # noqa: E731 - +OK / +QUEUED
        conn.send(resp.encode_command([b"MULTI"]), ignore)
        for command in queued:
            conn.send(command, ignore)

        def done(raw: bytes) -> None:
            fill(raw)
            conn.fail("transaction done")  # a private connection per transaction

        conn.send(resp.encode_command([b"EXEC"]), done)

    def send_on(self, conn: BackendConn, command: bytes) -> None:
        """Send `command` on `conn`; its reply takes its place in the FIFO."""
        conn.send(command, self.reserve())

    def drop_watch(self) -> None:
        if self.watch is not None:
            conn = self.watch[1]
            if conn is not None:
                conn.fail("watch dropped")
            self.watch = None

    def blocking(self, slots: list[int], keys: list[bytes], argv: list[bytes]) -> None:
        """On this session's own connection to the slots' master: waiting there blocks no one
        else. Replies still leave in order through the FIFO, and the client's later commands
        wait for its answer, as on one Redis connection.

        When one of its slots moves while the command waits, the proxy wakes it (CLIENT
        UNBLOCK: it answers as if timed out) and sends it again where the slots' keys now
        are, so a BLPOP does not wait on a server its list has left. A command on several
        slots (`cross_slot: group`) is sent again once they have all settled."""
        command, db, protocol = resp.encode_command(argv), self.db, self.protocol
        router = self.fe.router

        def route(fill: Callable[[bytes], None]) -> None:
            if len(slots) == 1:
                router.via(slots[0], db, keys, lambda a: go(a, fill), fill)
            else:
                router.via_slots(slots, lambda a: go(a, fill), fill)

        def go(address: str, fill: Callable[[bytes], None]) -> None:
            conn = self.private_conns.get((address, db, protocol))
            if conn is None or conn.closed:
                conn = self.fe.backends.private(address, db, protocol)
                self.private_conns[(address, db, protocol)] = conn
                conn.blocking = True
                for gone in [c for c in self.blocked if c.closed]:
                    del self.blocked[gone]
                self.blocked[conn] = deque()
            waits = self.blocked[conn]
            wait = Blocked(slots)
            waits.append(wait)

            def answered(raw: bytes) -> None:
                if waits and waits[0] is wait:
                    waits.popleft()
                if wait.moved and raw in TIMED_OUT and not conn.closed:
                    route(fill)
                    self.fe.backends.flush()
                else:
                    fill(raw)
                    self.release_held()
                self.unblock(conn)

            conn.send(command, answered)

        fill = self.reserve()
        if len(slots) == 1:
            route(fill)
        else:
            self.hold(slots, lambda: route(fill))
        # As on one Redis connection, the client's next commands run once it has its answer
        # (a pipelined LPUSH must not feed the BLPOP before it).
        if fill.data is None:
            self.hold_next()

    def slots_locked(self, source: str, slots: set[int]) -> None:
        """Slots of `source` are about to move: wake the commands blocked on them there."""
        for conn, waits in self.blocked.items():
            if conn.address == source:
                for wait in waits:
                    if not slots.isdisjoint(wait.slots):
                        wait.moved = True
                self.unblock(conn)

    def unblock(self, conn: BackendConn) -> None:
        waits = self.blocked.get(conn)
        if not waits or not waits[0].moved or waits[0].waking or conn.closed:
            return
        head = waits[0]
        if conn.client_id < 0:
            self.loop.call_later(0.02, self.unblock, conn)  # its id is on its way
            return
        head.waking = True

        def woken(raw: bytes) -> None:
            head.waking = False
            if raw == b":0\r\n" and waits and waits[0] is head:
                # Not blocked yet (still on its way to the server): try again shortly.
                self.loop.call_later(0.02, self.unblock, conn)

        command = resp.encode_command([b"CLIENT", b"UNBLOCK", str(conn.client_id).encode()])
        self.fe.backends.get(conn.address, 0).send(command, woken)
        self.fe.backends.flush()

    def split(self, argv: list[bytes], decision: Decision) -> None:
        """One request per server holding some of the keys, merged when all have answered.

        Codis sends one request per key; grouping by server sends as few as the keys' owners
        allow (a 10-key MGET over two groups is two requests, as twemproxy does).
        """
        name = decision.name
        step = 2 if name == "mset" else 1
        positions = range(1, len(argv), 2) if name == "mset" else decision.keys
        route, moving = self.route, self.moving
        # key positions in argv, in order, per server (or per moving slot: its keys move first)
        groups: dict[str | int, list[int]] = {}
        readers: dict[str, str] | None = {} if self.read_replicas and not decision.write else None
        for i in positions:
            key = argv[i]
            start = key.find(b"{")
            if start >= 0:
                end = key.find(b"}", start + 1)
                if end >= 0:
                    key = key[start + 1 : end]
            slot = crc32(key) & SLOT_MASK  # slot_of(argv[i]), inline: a split names many keys
            part: str | int = route[slot] if moving[slot] is None else slot
            if readers is not None and isinstance(part, str):
                # one replica per master for the whole command, so it stays one request each
                part = readers.get(part) or readers.setdefault(part, self.reader(part))
            groups.setdefault(part, []).append(i)
        sends = []
        db, backends, router, protocol = self.db, self.fe.backends, self.fe.router, self.protocol
        for part, pos in groups.items():
            command = [argv[0]]
            for i in pos:
                command += argv[i : i + step]
            raw = resp.encode_command(command)
            if isinstance(part, str):
                sends.append(self.to(part, raw))
            else:
                keys = [argv[i] for i in pos]

                def send(fill: Callable[[bytes], None], s: int = part, k: list[bytes] = keys,
                         raw: bytes = raw) -> None:  # fmt: skip
                    router.via(
                        s, db, k, lambda a: backends.get(a, db, protocol).send(raw, fill), fill
                    )

                sends.append(send)
        self.gather(
            sends, lambda results: merge_split(name, list(groups.values()), results, protocol)
        )

    def to(self, address: str, command: bytes) -> Callable[[Callable[[bytes], None]], None]:
        """A part of a gathered request: `command` to `address` on the shared connection."""
        conn = self.fe.backends.get(address, self.db, self.protocol)
        return lambda fill: conn.send(command, fill)

    def local(self, argv: list[bytes], decision: Decision) -> None:
        name = decision.name
        if name == "ping" and self.subs is not None and self.subs.active and self.protocol == 2:
            # In RESP2 subscriber mode Redis answers PING with a push-shaped array.
            message = argv[1] if len(argv) > 1 else b""
            self.answer(resp.array([resp.bulk(b"pong"), resp.bulk(message)]))
        elif name == "ping":
            self.answer(resp.PONG if len(argv) == 1 else resp.bulk(argv[1]))
        elif name == "echo":
            self.answer(resp.bulk(argv[1]))
        elif name == "quit":
            self.answer(resp.OK)
            self.closing = True
        elif name == "select":
            try:
                db = int(argv[1])
            except ValueError:
                self.answer(resp.error("ERR value is not an integer or out of range"))
                return
            if not 0 <= db < self.fe.redis.databases:
                self.answer(resp.error("ERR DB index is out of range"))
                return
            self.db = db
            self.conns = {}
            self.answer(resp.OK)
        elif name == "auth":
            self.auth(argv)
        elif name == "dbsize":
            self.fanout(argv, merge_sum)
        elif name == "scan":
            self.scan(argv)
        elif name == "info":
            self.info(argv)
        elif name == "hello":
            self.hello(argv)
        elif name in ("client|setname", "client|setinfo"):
            if name == "client|setname":
                self.name = argv[2]
            self.answer(resp.OK)
        elif name == "client|getname":
            self.answer(resp.bulk(self.name) if self.name else resp.null(self.protocol))
        elif name == "client|id":
            self.answer(resp.integer(id(self) & 0x7FFFFFFF))
        elif name == "reset":
            self.reset()
        elif name == "time" or name.startswith("command"):
            # Every master runs the same Redis: any one answers for the proxy.
            masters = sorted(set(self.fe.masters.values()))
            if masters:
                self.to(masters[0], resp.encode_command(argv))(self.reserve())
            else:
                self.answer(resp.error("ERR no group has a master"))
        else:
            self.answer(resp.error(not_supported(name) + " yet"))

    def reset(self) -> None:
        """RESET as Redis 7: the transaction, watches and subscriptions dropped, database 0,
        RESP2, no name, and (with `auth`) not authenticated any more."""
        self.tx = None
        self.drop_watch()
        if self.subs is not None:
            self.subs.close()
            self.subs = None
        self.db = 0
        self.protocol = 2
        self.conns = {}
        self.name = b""
        self.authed = self.fe.cfg.auth is None
        self.answer(b"+RESET\r\n")

    name = b""

    def fanout(self, argv: list[bytes], merge_fn: Callable[[list[bytes]], bytes]) -> None:
        """Send to the master of every group; one merged reply."""
        command = resp.encode_command(argv)
        self.gather([self.to(m, command) for m in sorted(set(self.fe.masters.values()))], merge_fn)

    def gather(
        self,
        sends: list[Callable[[Callable[[bytes], None]], None]],
        merge_fn: Callable[[list[bytes]], bytes],
    ) -> None:
        """Call each send with its callback; once all have answered, one reply in the FIFO:
        the first error, or `merge_fn` of the answers in the order sent."""
        fill = self.reserve()
        results: list[bytes] = [b""] * len(sends)
        left = [len(sends)]

        def part_done(index: int) -> Callable[[bytes], None]:
            def done(raw: bytes) -> None:
                results[index] = raw
                left[0] -= 1
                if left[0] == 0:
                    errors = [r for r in results if r.startswith(b"-")]
                    fill(errors[0] if errors else merge_fn(results))

            return done

        for i, send in enumerate(sends):
            send(part_done(i))

    def scan(self, argv: list[bytes]) -> None:
        """SCAN over every group with one cursor: the group's index in its low bits."""
        masters = sorted(set(self.fe.masters.values()))
        try:
            cursor = int(argv[1])
        except ValueError:
            self.answer(resp.error("ERR invalid cursor"))
            return
        index, backend_cursor = cursor & SCAN_GROUP_MASK, cursor >> SCAN_GROUP_BITS
        if cursor < 0 or index >= len(masters):
            self.answer(resp.error("ERR invalid cursor"))
            return
        fill = self.reserve()
        command = resp.encode_command([b"SCAN", str(backend_cursor).encode(), *argv[2:]])

        def done(raw: bytes) -> None:
            if raw.startswith(b"-"):
                fill(raw)
            else:
                parsed = resp.parse(raw)
                assert isinstance(parsed, list)
                nxt = int(parsed[0])
                if nxt:
                    composite = (nxt << SCAN_GROUP_BITS) | index
                elif index + 1 < len(masters):
                    composite = index + 1  # next group, from its start
                else:
                    composite = 0
                keys = raw[_second_element(raw) :]  # the keys array as the server wrote it
                fill(resp.array([resp.bulk(str(composite).encode()), keys]))

        self.fe.backends.get(masters[index], self.db, self.protocol).send(command, done)

    def info(self, argv: list[bytes]) -> None:
        """A proxy section and the keyspace summed over the groups."""
        masters = sorted(set(self.fe.masters.values()))

        def merge(parts: list[bytes]) -> bytes:
            totals: dict[str, list[int]] = {}
            for raw in parts:
                text = resp.parse(raw)
                assert isinstance(text, bytes)
                for line in text.decode().splitlines():
                    if line.startswith("db") and ":" in line:
                        db, _, fields = line.partition(":")
                        values = dict(f.split("=", 1) for f in fields.split(","))
                        t = totals.setdefault(db, [0, 0])
                        t[0] += int(values.get("keys", 0))
                        t[1] += int(values.get("expires", 0))
            lines = [
                "# Proxy",
                "proxy:steelyard",
                f"groups:{len(self.fe.masters)}",
                f"servers:{len(masters)}",
                f"sessions:{len(self.fe.sessions)}",
                "",
                "# Keyspace",
            ]
            lines += [f"{db}:keys={k},expires={e}" for db, (k, e) in sorted(totals.items())]
            return resp.text(("\r\n".join(lines) + "\r\n").encode(), protocol)

        protocol = self.protocol  # of this request: a HELLO after it does not change it

        self.fanout([b"INFO", b"keyspace"], merge)

    def hello(self, argv: list[bytes]) -> None:
        """HELLO [2|3 [AUTH user pass] [SETNAME name]]: the session speaks the protocol asked
        for from the next reply on (the backend connections it uses follow, see backend.py);
        the answer is Redis 7's, a map in RESP3 and a flat array in RESP2. As Redis 7.0, the
        version is checked first, then the options in turn, each taking effect as read."""
        args = argv[1:]
        protocol = self.protocol
        if args:
            try:
                protocol = int(args[0])
            except ValueError:
                self.answer(resp.error("ERR Protocol version is not an integer or out of range"))
                return
            if protocol not in (2, 3):
                self.answer(b"-NOPROTO unsupported protocol version\r\n")
                return
            args = args[1:]
        # Each option takes effect as it is read (Redis 7.0's order): a bad option after a
        # good AUTH or SETNAME leaves those done, and the protocol unchanged.
        i = 0
        while i < len(args):
            option = args[i].upper()
            if option == b"AUTH" and len(args) >= i + 3:
                if not self.hello_credentials_ok(args[i + 1], args[i + 2]):
                    self.answer(
                        resp.error("WRONGPASS invalid username-password pair or user is disabled.")
                    )
                    return
                self.authed = True
                i += 3
            elif option == b"SETNAME" and i + 1 < len(args):
                name = args[i + 1]
                if any(c < 0x21 or c > 0x7E for c in name):
                    self.answer(resp.error(BAD_CLIENT_NAME))
                    return
                self.name = name
                i += 2
            else:
                self.answer(resp.error(f"ERR Syntax error in HELLO option '{args[i].decode()}'"))
                return
        if not self.authed:
            self.answer(
                b"-NOAUTH HELLO must be called with the client already authenticated, otherwise "
                b"the HELLO AUTH <user> <pass> option can be used to authenticate the client and "
                b"select the RESP protocol version at the same time\r\n"
            )
            return
        if protocol != self.protocol:
            self.protocol = protocol
            self.conns = {}  # the shared connections of the other protocol from now on
            if self.subs is not None:
                self.subs.protocol = protocol
        fields = [
            resp.bulk(b"server"), resp.bulk(b"redis"),
            resp.bulk(b"version"), resp.bulk(b"7.0.0"),
            resp.bulk(b"proto"), resp.integer(protocol),
            resp.bulk(b"id"), resp.integer(id(self) & 0x7FFFFFFF),
            resp.bulk(b"mode"), resp.bulk(b"standalone"),
            resp.bulk(b"role"), resp.bulk(b"master"),
            resp.bulk(b"modules"), resp.array([]),
        ]  # fmt: skip
        self.answer(resp.mapping(fields, protocol))

    protocol = 2  # RESP2 until HELLO 3

    def hello_credentials_ok(self, user: bytes, password: bytes) -> bool:
        """HELLO's AUTH: without `auth` the proxy's one user, `default`, takes any password,
        as Redis's passwordless default user does (redis-py sends one when it has it)."""
        if self.fe.cfg.auth is None:
            return user == b"default"
        return self.credentials_ok(user, password)

    def auth(self, argv: list[bytes]) -> None:
        if len(argv) > 3:
            self.answer(resp.error("ERR syntax error"))
        elif self.fe.cfg.auth is None and len(argv) == 3:
            # Redis's default user without a password takes any password; no other user exists.
            if argv[1] == b"default":
                self.answer(resp.OK)
            else:
                self.answer(
                    resp.error("WRONGPASS invalid username-password pair or user is disabled.")
                )
        elif self.fe.cfg.auth is None:
            self.answer(
                resp.error(
                    "ERR AUTH <password> called without any password configured for the default "
                    "user. Are you sure your configuration is correct?"
                )
            )
        elif self.credentials_ok(argv[1] if len(argv) == 3 else b"default", argv[-1]):
            self.authed = True
            self.answer(resp.OK)
        else:
            self.answer(resp.error("WRONGPASS invalid username-password pair or user is disabled."))

    def credentials_ok(self, user: bytes, password: bytes) -> bool:
        """The proxy has one user, `default`, with the listener's `auth` as its password.
        Both are compared in full, in constant time, so that the time of an answer does not
        tell how much of a guess was right."""
        want = self.fe.cfg.auth
        if want is None:
            return False
        user_ok = hmac.compare_digest(user, b"default")
        password_ok = hmac.compare_digest(password, want.encode())
        return user_ok & password_ok

    # replies ----------------------------------------------------------------------------------

    streaming: ReplySlot | None = None  # the reply whose head was written before its end came

    def stream(self, slot: ReplySlot, framer: resp.ReplyFramer) -> None:
        """The head of a long reply, read so far, goes out now if `slot` is the next reply
        this client is owed (earlier ones all written): the reply flows through the proxy
        instead of piling up in it, and the client starts reading it sooner."""
        transport = self.transport
        if transport is None or not self.replies or self.replies[0] is not slot:
            return
        self.streaming = slot
        head = framer.take_head()
        self.stream_bytes += len(head)  # counts as one reply for the hard limit
        self.sent += len(head)
        transport.write(head)
        if self.write_blocked:
            self.check_output()

    def broken_stream(self, cause: str) -> None:
        """The backend failed in the middle of a reply whose head this client has: nothing
        can follow that it would read right, so it is cut off, as a server that dies would."""
        log("redis_reply_cut", "warn", peer=self.peer, cause=cause)
        self.streaming = None
        self.cut()

    def ready(self) -> None:
        """A reply arrived: write what is ready at the end of this loop turn (one write per
        session per turn, however many of its replies came in)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.fe.want_write(self)

    def write_ready(self) -> None:
        self._flush_scheduled = False
        replies = self.replies
        out: list[bytes] = []
        while replies and replies[0].data is not None:
            out.append(replies.popleft().data)  # type: ignore[arg-type]
        streamed = 0
        if self.streaming is not None and (not replies or replies[0] is not self.streaming):
            self.streaming = None  # its end is out[0]
            streamed, self.stream_bytes = self.stream_bytes, 0
        transport = self.transport
        if out and transport is not None:
            data = out[0] if len(out) == 1 else b"".join(out)
            if len(data) + streamed > PAUSE_READING_AT:
                # Before the write: a write that fills the buffer checks the limits in it.
                # (Not write-blocked: what was buffered before is under 1 MiB, so an earlier
                # big reply is all but read and no longer counts.)
                big = max(len(out[0]) + streamed, max(map(len, out)))
                if big > self.big_reply or not self.write_blocked:
                    self.big_reply = big
            self.sent += len(data)
            transport.write(data)
            if self.write_blocked:
                self.check_output()
                transport = self.transport
            if self.paused and len(replies) <= self.fe.cfg.max_pipeline // 2:
                self.paused = False
                if not self.write_blocked and transport is not None:
                    transport.resume_reading()
        if self.closing and not replies and transport is not None:
            transport.close()


class Blocked:
    """A blocking command sent on a session's own connection, until it is answered."""

    __slots__ = ("moved", "slots", "waking")

    def __init__(self, slots: list[int]) -> None:
        self.slots = slots  # of its keys
        self.moved = False  # one of its slots started moving while it waited
        self.waking = False  # a CLIENT UNBLOCK for it is on its way


# What a blocking command answers when woken by CLIENT UNBLOCK (as on a timeout): RESP2's null
# array or null bulk, RESP3's null.
TIMED_OUT = (b"*-1\r\n", b"$-1\r\n", b"_\r\n")

# A replica's answers that mean "ask the master": our own connection errors, a replica still
# loading its data, or one that lost its master with replica-serve-stale-data off.
REPLICA_UNFIT = (b"-ERR backend ", b"-LOADING", b"-MASTERDOWN")

BAD_CLIENT_NAME = "ERR Client names cannot contain spaces, newlines or special characters."

# Unsent replies past which the client's input is paused until they drain to a quarter.
PAUSE_READING_AT = 1024 * 1024

# A closing client (after QUIT or a protocol error) that reads none of its replies for this
# long (or idle_timeout, if shorter) is cut off rather than waited for.
CLOSE_STALL_SECONDS = 10.0

SCAN_GROUP_BITS = 14  # enough for the 9999 groups a config may name
SCAN_GROUP_MASK = (1 << SCAN_GROUP_BITS) - 1


def _second_element(raw: bytes) -> int:
    """Offset of the second element of a two-element array reply (SCAN: after the cursor)."""
    first_end = raw.index(b"\r\n") + 2  # after "*2"
    size_end = raw.index(b"\r\n", first_end)  # "$N" of the cursor
    size = int(raw[first_end + 1 : size_end])
    return size_end + 2 + size + 2


def merge_unique(parts: list[bytes]) -> bytes:
    """Arrays of names from every server: each name once, in the order first seen."""
    seen: dict[bytes, None] = {}
    for raw in parts:
        for item in resp.elements(raw):  # bulk strings: equal names, equal bytes
            seen.setdefault(item, None)
    return resp.array(list(seen))


def merge_numsub(parts: list[bytes]) -> bytes:
    """[channel, count, ...] from every server: counts summed per channel, in order."""
    totals: dict[bytes, int] = {}
    for raw in parts:
        items = resp.parse(raw)
        assert isinstance(items, list)
        for name, count in zip(items[::2], items[1::2], strict=True):
            totals[name] = totals.get(name, 0) + int(count)
    out: list[bytes] = []
    for name, count in totals.items():
        out += [resp.bulk(name), resp.integer(count)]
    return resp.array(out)


def merge_split(
    name: str, groups: list[list[int]], results: list[bytes], protocol: int = 2
) -> bytes:
    """The answers of a split command, one per server (`groups[i]`: its key positions)."""
    if name == "mset":
        return resp.OK
    if name != "mget":
        return merge_sum(results)
    if len(results) == 1:
        return results[0]  # one server had every key: its answer is already in key order
    # MGET: each server's array holds its keys' values in the order they were sent.
    value_at: dict[int, bytes] = {}
    null = resp.null(protocol)  # a missing key's value: `$-1` in RESP2, `_` in RESP3
    for pos, raw in zip(groups, results, strict=True):
        values = resp.parse(raw)
        assert isinstance(values, list)
        for i, value in zip(pos, values, strict=True):
            value_at[i] = null if value is None else b"$%d\r\n%b\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value_at) + b"".join([value_at[i] for i in sorted(value_at)])


def merge_sum(parts: list[bytes]) -> bytes:
    return resp.integer(sum(int(raw[1:-2]) for raw in parts))


def merge_ok(parts: list[bytes]) -> bytes:
    return resp.OK


def merge_arrays(parts: list[bytes]) -> bytes:
    items: list[bytes] = []
    for raw in parts:
        count_end = raw.index(b"\r\n")
        if int(raw[1:count_end]) > 0:
            items.append(raw[count_end + 2 :])
    count = sum(int(raw[1 : raw.index(b"\r\n")]) for raw in parts)
    return b"*%d\r\n" % count + b"".join(items)
