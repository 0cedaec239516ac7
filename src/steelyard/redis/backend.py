"""Connections from the proxy to Redis servers: requests pipelined, replies matched in order.

One connection per server and database per worker carries the requests of every client session
(as Codis's backend_primary_parallel = 1): Redis answers in order, so each reply goes to the
oldest waiting callback. Writes are gathered and sent once per loop turn, so a batch of client
commands costs one send per server. A connection that fails answers every waiting request with
an error, in order, and the next request reconnects; but a client that already has the head of
its reply (streamed, see below) gets no error after it, which it would read as part of that
reply: it is cut off, as by a server that dies.

A long reply (STREAM_FROM bytes read and not complete) flows on to its client in pieces as it
arrives, when it is the next reply that client is owed, instead of being held whole.

Connections speak the protocol of the clients they serve: the pool keeps them by (address, db,
protocol), and a protocol-3 one opens with `HELLO 3` (its AUTH inside), so the replies a RESP3
client gets are the server's own RESP3 bytes, forwarded as they are. A RESP3 push frame is
never the answer to a request: it goes to the connection's push callback (Pub/Sub), or, on a
connection without one, is dropped with a log line.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from steelyard.log import log
from steelyard.redis import resp

ReplyCallback = Callable[[bytes], None]

# A reply still incomplete with this many bytes read flows on to its client in pieces (when it
# is the next reply that client is owed) rather than being held whole.
STREAM_FROM = 256 * 1024


class ReplySlot:
    """A client's place in its reply FIFO (see session.py), and the callback that fills it.

    Most requests are answered through one of these, so the backend fills them directly
    rather than through a closure per request."""

    __slots__ = ("data", "session")

    def __init__(self, session: Any, data: bytes | None = None) -> None:
        self.session = session
        self.data = data

    def __call__(self, raw: bytes) -> None:
        self.data = raw
        self.session.ready()


class BackendConn(asyncio.Protocol):
    def __init__(
        self, pool: BackendPool, address: str, db: int, private: bool = False, protocol: int = 2
    ) -> None:
        self.pool = pool
        self.protocol = protocol  # 2 or 3: what its clients speak, set up by HELLO 3
        self.private = private  # one session's own connection (blocking commands), not shared
        self.blocking = False  # carries blocking commands: may wait for a long time
        self.client_id = -1  # the server's id for this connection (blocking ones ask for it)
        self.address = address
        self.db = db
        self.transport: asyncio.Transport | None = None
        self.framer = resp.ReplyFramer()
        self.waiting: deque[ReplyCallback] = deque()
        self.out: list[bytes] = []
        self.dirty = False  # in the pool's list of connections to flush this turn
        self.closed = False
        self.connecting = True
        # Push mode (Pub/Sub): replies nobody waits for are messages, handed to this callback.
        self.push: ReplyCallback | None = None

    # use ------------------------------------------------------------------------------------

    def send_push(self, command: bytes) -> None:
        """A command whose answers come as pushes (SUBSCRIBE and the like)."""
        if self.closed:
            return
        self.out.append(command)
        if not self.dirty and self.transport is not None:
            self.dirty = True
            self.pool.want_flush(self)

    def send(self, command: bytes, callback: ReplyCallback) -> None:
        """Queue a request; `callback` gets its raw reply (or an error reply)."""
        if self.closed:
            callback(resp.error(f"ERR backend {self.address} is down"))
            return
        self.waiting.append(callback)
        self.out.append(command)
        if not self.dirty and self.transport is not None:
            self.dirty = True
            self.pool.want_flush(self)

    def flush(self) -> None:
        self.dirty = False
        if self.out and self.transport is not None and not self.closed:
            data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
            self.out = []
            self.transport.write(data)

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connecting = False
        # AUTH and SELECT go first; their replies are checked like any other.
        setup: list[bytes] = []
        checks: list[ReplyCallback] = []
        if self.protocol == 3:
            hello = [b"HELLO", b"3"]
            if self.pool.auth:
                hello += [b"AUTH", b"default", self.pool.auth.encode()]
            setup.append(resp.encode_command(hello))
            checks.append(self._check_hello)
        elif self.pool.auth:
            setup.append(resp.encode_command([b"AUTH", self.pool.auth.encode()]))
            checks.append(self._check_setup)
        if self.db:
            setup.append(resp.encode_command([b"SELECT", str(self.db).encode()]))
            checks.append(self._check_setup)
        if self.blocking:
            # Its id lets the proxy wake a command blocked on a slot that moves away.
            setup.append(resp.encode_command([b"CLIENT", b"ID"]))
            checks.append(self._got_id)
        for command, check in zip(reversed(setup), reversed(checks), strict=True):
            self.waiting.appendleft(check)
            self.out.insert(0, command)
        self.flush()

    def _got_id(self, reply: bytes) -> None:
        if reply.startswith(b":"):
            self.client_id = int(reply[1:-2])

    def _check_setup(self, reply: bytes) -> None:
        if not reply.startswith(b"+OK"):
            self.fail(f"backend {self.address} refused the connection setup: {reply[:100]!r}")

    def _check_hello(self, reply: bytes) -> None:
        """HELLO 3 answers with a map of the server's details (an error for a Redis before 6,
        or a wrong password): without it the replies would not be the RESP3 its clients
        expect."""
        if not reply.startswith(b"%"):
            self.fail(f"backend {self.address} refused the connection setup: {reply[:100]!r}")

    def data_received(self, data: bytes) -> None:
        try:
            replies = self.framer.feed(data)
        except resp.ProtocolError as exc:
            self.fail(f"backend {self.address}: {exc}")
            return
        if self.framer.pushes:
            self._with_pushes(replies)
            return
        waiting = self.waiting
        for reply in replies:
            if waiting:
                callback = waiting.popleft()
                if callback.__class__ is ReplySlot:
                    callback.data = reply  # type: ignore[attr-defined]
                    session = callback.session  # type: ignore[attr-defined]
                    if not session._flush_scheduled:
                        session._flush_scheduled = True
                        session.fe.want_write(session)
                else:
                    callback(reply)
            elif self.push is not None:
                self.push(reply)
            else:
                self.fail(f"backend {self.address} sent a reply nobody asked for")
                return
        if waiting and self.framer.under_way >= STREAM_FROM:
            # A long reply on its way: the client it is for may take its head now, if it is
            # the next reply that client is owed, instead of the proxy holding it all.
            head = waiting[0]
            if head.__class__ is ReplySlot:
                head.session.stream(head, self.framer)  # type: ignore[attr-defined]

    def _with_pushes(self, replies: list[bytes]) -> None:
        """data_received when push frames (RESP3) came: each reply looked at on its own, so
        that a push is never taken for the answer a request waits for."""
        framer = self.framer
        for reply in replies:
            if reply[0] == 0x3E:  # '>'
                framer.pushes -= 1
                if self.push is not None:
                    self.push(reply)
                else:
                    log("redis_backend_push_dropped", "warn", backend=self.address,
                        reply=reply[:100])  # fmt: skip
            elif self.waiting:
                self.waiting.popleft()(reply)
            elif self.push is not None:
                self.push(reply)
            else:
                self.fail(f"backend {self.address} sent a reply nobody asked for")
                return
        # No streaming while a push may be under way: its head is nobody's reply.

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(f"backend {self.address} closed the connection")

    def fail(self, message: str) -> None:
        """Answer everything in flight with an error, in order; the pool forgets this conn."""
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()
        error = resp.error(f"ERR {message}")
        waiting, self.waiting = self.waiting, deque()
        self.out = []
        for callback in waiting:
            if callback.__class__ is ReplySlot:
                session = callback.session  # type: ignore[attr-defined]
                if session.streaming is callback:
                    # Its client has the head of this reply already: the rest will not come,
                    # and an error now would read as the reply's next element.
                    session.broken_stream(message)
                    continue
            if callback not in (self._check_setup, self._check_hello, self._got_id):
                callback(error)
        # A fail from inside data_received (a refused setup) leaves that loop holding this
        # deque: emptied, the replies still to come (NOAUTH for each request) answer no one
        # a second time.
        waiting.clear()


class BackendPool:
    """The shared backend connections of one worker, by (address, db, protocol)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, auth: str | None = None) -> None:
        self.loop = loop
        self.auth = auth
        self.conns: dict[tuple[str, int, int], BackendConn] = {}
        self.privates: set[BackendConn] = set()
        self._dirty: list[BackendConn] = []
        self._flush_scheduled = False

    def private(self, address: str, db: int, protocol: int = 2) -> BackendConn:
        """A connection of one session's own: blocking commands must not stall the others."""
        conn = BackendConn(self, address, db, private=True, protocol=protocol)
        self.privates.add(conn)
        self.loop.create_task(self._connect(conn))
        return conn

    def all(self) -> list[BackendConn]:
        return [*self.conns.values(), *self.privates]

    def get(self, address: str, db: int, protocol: int = 2) -> BackendConn:
        """The shared connection for clients of `protocol` (2 or 3) on `db` of `address`."""
        conn = self.conns.get((address, db, protocol))
        if conn is None:
            conn = BackendConn(self, address, db, protocol=protocol)
            self.conns[(address, db, protocol)] = conn
            self.loop.create_task(self._connect(conn))
        return conn

    async def _connect(self, conn: BackendConn) -> None:
        host, _, port = conn.address.rpartition(":")
        try:
            await self.loop.create_connection(lambda: conn, host.strip("[]"), int(port))
        except OSError as exc:
            conn.fail(f"backend {conn.address} is unreachable: {exc.strerror or exc}")

    def want_flush(self, conn: BackendConn) -> None:
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    def forget(self, conn: BackendConn) -> None:
        self.privates.discard(conn)
        key = (conn.address, conn.db, conn.protocol)
        if not conn.private and self.conns.get(key) is conn:
            del self.conns[key]
        if conn in self._dirty:
            self._dirty.remove(conn)

    def close(self) -> None:
        for conn in self.all():
            conn.fail("the proxy is stopping")
        self.conns.clear()
        self.privates.clear()
