"""Connections to servers: one asyncio protocol per connection, and the keep-alive pool.

Idle connections are pooled by server *and* by how they were made (plain, or TLS with given
verification and SNI): a route that wants a verified TLS connection must never be handed one
that another route opened without verification, or a plain one.

A connection belongs to one exchange while a request is in flight, and to the pool while idle.
Idle connections are kept per server, newest first (warm ones are reused, old ones age out),
up to `upstream_keepalive` per server, for `upstream_keepalive_timeout`, for at most
`upstream_keepalive_requests` requests.

The cap is applied with a short grace (`EXCESS_GRACE`) rather than at once: when more requests
are in flight than the cap, a batch of answers releases more connections than it allows, and
the next batch of requests would have to open new ones. Closing the excess only once it has
stayed idle for the grace keeps those bursts on warm connections (nginx closes at once and
pays a connect per request under such load; HAProxy keeps idle connections and purges them
slowly). A hard bound of `EXCESS_FACTOR` times the cap still holds at every moment.

An idle connection that receives bytes or a close is dropped: the server may not speak first
on HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Protocol

from steelyard.core.backend import Server
from steelyard.http.codec import ResponseReader

if TYPE_CHECKING:
    from collections.abc import Callable


class RawPeer(Protocol):
    """The client side of a tunnel (after 101 Switching Protocols)."""

    def write(self, data: bytes) -> None: ...
    def tunnel_activity(self) -> None: ...
    def tunnel_eof(self) -> None: ...
    def close(self) -> None: ...


class UpstreamOwner(Protocol):
    """What an upstream connection reports to the exchange that uses it."""

    def on_upstream_events(self, conn: UpstreamConn) -> None: ...
    def on_upstream_lost(self, conn: UpstreamConn, exc: BaseException | None) -> None: ...
    def on_upstream_pause(self, paused: bool) -> None: ...


class UpstreamConn(asyncio.Protocol):
    __slots__ = (
        "closed",
        "idle_since",
        "keepalive",
        "key",
        "owner",
        "paused",
        "raw",
        "reader",
        "requests",
        "reused",
        "server",
        "transport",
    )

    def __init__(self, server: Server, keepalive: KeepalivePool, key: Hashable = None) -> None:
        self.server = server
        self.key = (server, key)  # the pool key: server and connection kind
        self.keepalive = keepalive
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.owner: UpstreamOwner | None = None
        self.requests = 0
        self.idle_since = 0.0
        self.closed = False
        self.paused = False  # our writes to it are paused (its buffer is full)
        self.reused = False  # taken from the pool rather than freshly connected
        self.raw: RawPeer | None = None  # tunnel mode: bytes go straight to this peer

    # asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        raw = self.raw
        if raw is not None:
            raw.write(data)
            raw.tunnel_activity()
            return
        owner = self.owner
        if owner is None:
            self.close()  # an idle connection must stay silent
            return
        self.reader.feed(data)
        owner.on_upstream_events(self)

    def eof_received(self) -> bool:
        if self.raw is not None:
            self.raw.tunnel_eof()
            return True
        self.reader.feed_eof()
        owner = self.owner
        if owner is not None and self.reader.events:
            owner.on_upstream_events(self)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keepalive.forget(self)
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.close()
            return
        owner, self.owner = self.owner, None
        if owner is not None:
            if not self.reader.failed:
                self.reader.feed_eof()
                if self.reader.events:
                    owner.on_upstream_events(self)
            owner.on_upstream_lost(self, exc)
        self.reader.close()

    def pause_writing(self) -> None:
        self.paused = True
        if self.owner is not None:
            self.owner.on_upstream_pause(True)

    def resume_writing(self) -> None:
        self.paused = False
        if self.owner is not None:
            self.owner.on_upstream_pause(False)

    # use ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def write_eof(self) -> None:
        t = self.transport
        if t is not None and not self.closed and t.can_write_eof():
            t.write_eof()

    def pause_reading(self, paused: bool) -> None:
        t = self.transport
        if t is not None and not self.closed:
            if paused:
                t.pause_reading()
            else:
                t.resume_reading()

    def close(self) -> None:
        """Close now; owners learn of it through connection_lost unless they let go first."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def release(self, reusable: bool) -> None:
        """The exchange is done with it: back to the pool, or closed."""
        self.owner = None
        if reusable and not self.closed:
            self.keepalive.put(self)
        else:
            self.close()


EXCESS_GRACE = 1.0  # seconds an idle connection beyond the cap may wait for a request
EXCESS_FACTOR = 4  # idle connections never exceed this many times the cap


class KeepalivePool:
    """Idle server connections of one listener in one worker."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        per_server: int,
        timeout: float,
        max_requests: int,
    ) -> None:
        self.loop = loop
        self.per_server = per_server
        self.timeout = timeout
        self.max_requests = max_requests
        self.idle: dict[tuple[Server, Hashable], deque[UpstreamConn]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def configure(self, per_server: int, timeout: float, max_requests: int) -> None:
        self.per_server, self.timeout, self.max_requests = per_server, timeout, max_requests

    def get(self, server: Server, kind: Hashable = None) -> UpstreamConn | None:
        conns = self.idle.get((server, kind))
        while conns:
            conn = conns.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def put(self, conn: UpstreamConn) -> None:
        if (
            self.per_server <= 0
            or conn.requests >= self.max_requests
            or self.timeout <= 0
            or conn.reader.busy
        ):
            conn.close()
            return
        conns = self.idle.get(conn.key)
        if conns is None:
            conns = self.idle[conn.key] = deque()
        if len(conns) >= self.per_server * EXCESS_FACTOR:
            conns.popleft().close()  # the oldest goes: it is the likeliest to be timed out
        conn.idle_since = self.loop.time()
        conns.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._tick(), self._sweep)

    def forget(self, conn: UpstreamConn) -> None:
        conns = self.idle.get(conn.key)
        if conns:
            try:
                conns.remove(conn)
            except ValueError:
                pass

    def _tick(self) -> float:
        return min(EXCESS_GRACE / 2, max(self.timeout / 4, 0.05))

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        limit = now - self.timeout
        excess_limit = now - EXCESS_GRACE
        cap = self.per_server
        left = False
        for conns in self.idle.values():
            while conns and conns[0].idle_since <= limit:
                conns.popleft().close()
            while len(conns) > cap and conns[0].idle_since <= excess_limit:
                conns.popleft().close()
            left = left or bool(conns)
        if left:
            self._sweeper = self.loop.call_later(self._tick(), self._sweep)

    def close(self) -> None:
        for conns in self.idle.values():
            while conns:
                conns.pop().close()
        self.idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    server: Server,
    keepalive: KeepalivePool,
    timeout: float,
    tls: ssl.SSLContext | None = None,
    sni: str | None = None,
    kind: Hashable = None,
) -> UpstreamConn:
    """Connect to `server` within `timeout`; raises OSError or TimeoutError.

    `kind` tells apart connections made differently (TLS settings) in the keep-alive pool.
    """
    factory: Callable[[], UpstreamConn] = lambda: UpstreamConn(server, keepalive, kind)  # noqa: E731
    async with asyncio.timeout(timeout):
        if tls is None:
            _, conn = await loop.create_connection(factory, server.host, server.port)
        else:
            _, conn = await loop.create_connection(
                factory, server.host, server.port, ssl=tls, server_hostname=sni or server.host
            )
    return conn
