"""One `tcp:` listener in a worker: accept, pick a server, connect with retries, relay.

Like the relay, this is written against raw sockets and loop callbacks rather than coroutines:
the connection rate of a proxy is the cost of its per-connection setup, and callbacks keep that
to the syscalls themselves. Each accepted client becomes a `Session`, which walks through
(optional PROXY header) -> pick -> connect (retry on another server) or queue -> relay.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import ipaddress
import os
import select
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from steelyard.core.backend import Pool, Server, split_address
from steelyard.core.netaddr import IPNetwork, in_networks
from steelyard.log import log
from steelyard.tcp.poller import HANGUP, OUT, Poller
from steelyard.tcp.proxy_protocol import (
    ProxyHeaderParser,
    ProxyProtocolError,
    encode_v1,
    encode_v2,
)
from steelyard.tcp.relay import PipePool, Relay

if TYPE_CHECKING:
    from steelyard.config.model import TcpListenerConfig


# Report a connect result to the supervisor (passive health): (pool, server, ok, reason).
Reporter = Callable[[str, Server, bool, str], None]

_ACCEPT_BATCH = 64
QUEUE_POLL = 0.05  # seconds between looks at the queues while clients wait
ACCEPT_PAUSE = 1.0  # seconds without accepting after EMFILE/ENFILE/ENOBUFS
_GONE = select.EPOLLHUP | select.EPOLLERR
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC


def describe(exc: BaseException | None) -> str:
    """A short cause for log lines: 'connection reset', 'timeout', ..."""
    if exc is None:
        return "closed"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def make_listener(address: str, backlog: int) -> socket.socket:
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Every worker binds its own socket; the kernel spreads new connections among them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Accepted sockets inherit it: one syscall per listener instead of one per client.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ProtocolListener:
    """A listening socket served by asyncio protocols (the HTTP and Redis tiers).

    `start` binds at once, so an address in use is the caller's error to report, and serving
    begins on the next loop turn (`create_server` is a coroutine; workers apply configs
    synchronously).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listen: str,
        backlog: int,
        factory: Callable[[], asyncio.Protocol],
        ssl: Any = None,
    ) -> None:
        self.loop = loop
        self.sock: socket.socket | None = make_listener(listen, backlog)
        self._server: asyncio.AbstractServer | None = None
        sock = self.sock

        async def serve() -> None:
            if self.sock is sock:  # not closed before this turn came
                self._server = await loop.create_server(
                    factory, sock=sock, ssl=ssl, backlog=backlog
                )

        loop.create_task(serve())

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        elif self.sock is not None:
            self.sock.close()
        self.sock = None


class ProtocolFrontend:
    """What the Redis and MySQL listeners share: a ProtocolListener and its sessions, closed
    at a drain. Subclasses set `cfg` (with `listen`), `loop` and `sessions`, make sessions in
    `session()`, and release their backends in `close_backends()`."""

    loop: asyncio.AbstractEventLoop
    cfg: Any
    sessions: set[Any]
    _listener: ProtocolListener | None = None
    stopping = False

    def session(self) -> asyncio.Protocol:
        raise NotImplementedError

    def close_backends(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._listener = ProtocolListener(self.loop, self.cfg.listen, 1024, self.session)

    def stop_accepting(self) -> None:
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def drain(self, timeout: float) -> int:
        """Close every client connection (these tiers have no graceful drain yet)."""
        cut = 0
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
                cut += 1
        self.close()
        return cut

    def close(self) -> None:
        self.stop_accepting()
        self.close_backends()


class PoolQueue:
    """Sessions waiting for a server slot of one pool (every server at max_conns)."""

    def __init__(self) -> None:
        self.waiting: deque[Session] = deque()

    def wake(self) -> None:
        """Serve waiters in order while slots are free; stop at the first that finds none.

        A waiter that still finds no slot goes back to the front with its original deadline.
        """
        while self.waiting:
            session = self.waiting.popleft()
            session.dequeue()
            if session.queued:
                return


class WorkerContext:
    """What the frontends of one worker share: pipes, pool queues, the passive-health reporter."""

    def __init__(self, loop: asyncio.AbstractEventLoop, report: Reporter) -> None:
        self.loop = loop
        self.pipes = PipePool()
        self.poller = Poller(loop)
        self.report = report
        self.queues: dict[str, PoolQueue] = {}
        self.failing: set[Server] = set()  # servers whose last connect failed here
        self._poll: asyncio.TimerHandle | None = None

    def watch_queues(self) -> None:
        """Look at waiting clients every QUEUE_POLL while any wait.

        A slot freed here wakes a waiter at once; one freed by another worker (max_conns counts
        all workers) or a server coming back is only seen by looking.
        """
        if self._poll is None:
            self._poll = self.loop.call_later(QUEUE_POLL, self._poll_queues)

    def _poll_queues(self) -> None:
        self._poll = None
        for q in self.queues.values():
            if q.waiting:
                q.wake()
        if any(q.waiting for q in self.queues.values()):
            self.watch_queues()

    def queue(self, pool: Pool) -> PoolQueue:
        q = self.queues.get(pool.name)
        if q is None:
            q = self.queues[pool.name] = PoolQueue()
        return q


class Session:
    """One client connection from accept until its relay (or its failure) ends.

    Both sockets are registered with the worker's poller once; the session handles their
    events until the relay takes them over.
    """

    __slots__ = (
        "attempts",
        "client",
        "client_hup",
        "dst",
        "fe",
        "flushed",
        "initial",
        "parser",
        "peer",
        "pool",
        "queued",
        "relay",
        "server",
        "server_hup",
        "src",
        "ssock",
        "timer",
        "tried",
    )

    def __init__(self, fe: TcpFrontend, client: _socket.socket, peer: tuple) -> None:
        self.fe = fe
        self.pool = fe.pool
        self.client = client
        self.peer = peer
        self.src: tuple[str, int] = (peer[0], peer[1])
        self.dst: tuple[str, int] | None = None  # from a received PROXY header
        self.client_hup = self.server_hup = False  # hang-ups seen before the relay starts
        self.parser: ProxyHeaderParser | None = None
        self.initial = b""
        self.tried: set[Server] | None = None  # servers that failed this session's connects
        self.attempts = 0
        self.server: Server | None = None
        self.ssock: _socket.socket | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.relay: Relay | None = None
        self.queued = False
        self.flushed = (0, 0)

    def start(self) -> None:
        fe = self.fe
        if fe.cfg.accept_proxy_protocol and fe.proxy_from and not fe.proxy_trusted(self.src[0]):
            # Its header could name any address: refused before a byte is read (HAProxy
            # refuses accept-proxy clients outside the ACL, nginx outside set_real_ip_from).
            self._drop("proxy_protocol_refused", cause="source not in accept_proxy_protocol.from")
            return
        self.fe.ctx.poller.register(self.client.fileno(), self._on_client_event)
        if self.fe.cfg.accept_proxy_protocol:
            self.parser = ProxyHeaderParser()
            self.timer = self.fe.loop.call_later(
                self.fe.cfg.proxy_protocol_timeout, self._header_timeout
            )
            self._read_header()
        else:
            self.choose()

    def _on_client_event(self, events: int) -> None:
        if events & HANGUP:
            self.client_hup = True
        if self.parser is not None:
            self._read_header()
        elif events & _GONE and (self.queued or self.ssock is not None):
            # Reset or hung up while waiting for a server: stop waiting for it.
            self.abort("client_gone")

    # PROXY header from the client ------------------------------------------------------

    def _read_header(self) -> None:
        parser = self.parser
        assert parser is not None
        while True:
            try:
                data = self.client.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._drop("client_error", cause=describe(exc))
                return
            if not data:
                self._drop("proxy_protocol_error", cause="client closed before the PROXY header")
                return
            try:
                info = parser.feed(data)
            except ProxyProtocolError as exc:
                self._drop("proxy_protocol_error", cause=str(exc))
                return
            if info is not None:
                break
        self._cancel_timer()
        if info.src is not None:
            self.src = info.src
            self.dst = info.dst
        self.initial = parser.rest
        self.parser = None
        self.choose()

    def _header_timeout(self) -> None:
        self.timer = None
        self._drop("proxy_protocol_error", cause="no PROXY header before the timeout")

    # choosing and connecting -------------------------------------------------------------

    def choose(self) -> None:
        # The listener's current pool: a session that waited across a reload uses the new one.
        pool = self.pool = self.fe.pool
        key = self.src[0].encode() if pool.balancer.keyed else None
        tried = self.tried
        skip = tried.__contains__ if tried else None
        while True:
            server = pool.pick(key, skip)
            if server is None or pool.try_acquire(server):
                break
            # Another worker took the last slot between our look and our claim: skip it.
            lost = {server, *(tried or ())}
            skip = lost.__contains__
        if server is not None:
            self._cancel_timer()  # a queue deadline, if the session waited
            self.connect(server)
            return
        waiting_is_useful = any(tried is None or s not in tried for s in pool.candidates())
        if waiting_is_useful and self.fe.cfg.max_queue > 0:
            q = self.fe.ctx.queue(pool)
            if self.timer is not None:
                # Woken but beaten to the slot: back to the front, same deadline.
                self.queued = True
                q.waiting.appendleft(self)
                return
            if len(q.waiting) < self.fe.cfg.max_queue:
                self.queued = True
                q.waiting.append(self)
                self.timer = self.fe.loop.call_later(self.fe.cfg.queue_timeout, self._queue_timeout)
                self.fe.ctx.watch_queues()
                return
            self._drop("queue_full", pool=pool.name, queued=len(q.waiting))
            return
        if tried:
            self._drop("no_server_left", pool=pool.name, attempts=self.attempts)
        else:
            self._drop("no_server", pool=pool.name)

    def dequeue(self) -> None:
        self.queued = False
        self.choose()

    def _queue_timeout(self) -> None:
        self.timer = None
        self._leave_queue()
        self._drop("queue_timeout", pool=self.pool.name)

    def _leave_queue(self) -> None:
        if self.queued:
            self.queued = False
            # Bounded by max_queue; a stale entry would count against it until a slot frees.
            self.fe.ctx.queue(self.pool).waiting.remove(self)

    def connect(self, server: Server) -> None:
        """Connect to `server`, whose slot `choose` has already claimed."""
        self.server = server
        self.attempts += 1
        family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
        try:
            # The C-level socket type, created non-blocking: no Python __init__, no extra ioctl.
            sock = _socket.socket(family, _STREAM_NONBLOCK)
        except OSError as exc:  # out of fds or memory: this attempt fails, the session goes on
            self.server = None
            self.pool.release(server)
            self._drop("connect_error", server=server.address, cause=describe(exc))
            return
        self.ssock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex((server.host, server.port))
        except OSError as exc:
            code = exc.errno or errno.EINVAL
        if code not in (0, errno.EINPROGRESS):
            self._connect_failed(os.strerror(code).lower())
            return
        self.fe.ctx.poller.register(sock.fileno(), self._on_server_event)
        self.timer = self.fe.loop.call_later(self.fe.cfg.connect_timeout, self._connect_timeout)

    def _on_server_event(self, events: int) -> None:
        sock = self.ssock
        if sock is None or self.server is None:
            return
        # A failed connect always carries EPOLLERR: only then is SO_ERROR worth a syscall.
        if events & _GONE:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._cancel_timer()
                self._connect_failed(os.strerror(code).lower())
                return
        if not events & OUT:
            return  # not connected yet
        self.server_hup = bool(events & HANGUP)
        self._cancel_timer()
        server = self.server
        failing = self.fe.ctx.failing
        if server in failing:
            # Only a recovery is news to the supervisor: successes are not sent one by one.
            failing.discard(server)
            self.fe.ctx.report(self.pool.name, server, True, "")
        self.start_relay(sock)

    def _connect_timeout(self) -> None:
        self.timer = None
        self._connect_failed(f"connect timeout after {self.fe.cfg.connect_timeout:g}s")

    def _connect_failed(self, reason: str) -> None:
        server, sock = self.server, self.ssock
        assert server is not None and sock is not None
        self.fe.ctx.poller.close_socket(sock)
        self.ssock = None
        self.server = None
        self.pool.release(server)
        self.pool.on_result(server, False)
        self.fe.ctx.failing.add(server)
        self.fe.ctx.report(self.pool.name, server, False, reason)
        log(
            "connect_failed",
            "warn",
            listener=self.fe.cfg.name,
            pool=self.pool.name,
            server=server.address,
            peer=_fmt(self.peer),
            cause=reason,
            attempt=self.attempts,
        )
        if self.tried is None:
            self.tried = set()
        self.tried.add(server)
        self.fe.ctx.queue(self.pool).wake()
        if self.fe.stopping:
            self._drop("shutting_down")
        elif self.attempts <= self.fe.cfg.retries:
            self.choose()
        else:
            self._drop("no_server_left", pool=self.pool.name, attempts=self.attempts)

    # relaying ----------------------------------------------------------------------------

    def start_relay(self, sock: _socket.socket) -> None:
        fe = self.fe
        header = b""
        if fe.cfg.proxy_protocol:
            # The original destination when a PROXY header told us, else our own address.
            dst = self.dst or self._local()
            encode = encode_v1 if fe.cfg.proxy_protocol == "v1" else encode_v2
            header = encode(self.src, dst)
        relay = Relay(fe.ctx.poller, self.client, sock, fe.ctx.pipes, self._on_relay_close)
        self.relay = relay
        self.ssock = None
        relay.start(header + self.initial, self.client_hup, self.server_hup)
        if header:
            relay.c2s.nbytes -= len(header)  # the header is ours, not the client's bytes

    def _local(self) -> tuple[str, int] | None:
        try:
            addr = self.client.getsockname()
        except OSError:
            return None
        return (addr[0], addr[1])

    def account(self) -> None:
        """Add the bytes moved since the last call to the server's counters."""
        relay, server = self.relay, self.server
        if relay is None or server is None:
            return
        bin_, bout = relay.bytes_in, relay.bytes_out
        server.bytes_in += bin_ - self.flushed[0]
        server.bytes_out += bout - self.flushed[1]
        self.flushed = (bin_, bout)

    def _on_relay_close(self, relay: Relay, exc: BaseException | None) -> None:
        self.account()
        self.relay = None  # no cycle left for the GC: the session is freed when dropped
        server = self.server
        assert server is not None
        self.pool.release(server)
        self.fe.sessions.discard(self)
        if exc is not None:
            log(
                "conn_error",
                listener=self.fe.cfg.name,
                pool=self.pool.name,
                server=server.address,
                peer=_fmt(self.peer),
                cause=describe(exc),
                bytes_in=relay.bytes_in,
                bytes_out=relay.bytes_out,
            )
        q = self.fe.ctx.queues.get(self.pool.name)
        if q is not None and q.waiting:
            q.wake()
        self.fe.session_ended()

    # teardown ----------------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _drop(self, event: str, **fields: object) -> None:
        """Close a client that never reached a relay, with one log line saying why."""
        self._cancel_timer()
        self.parser = None
        log(event, "warn", listener=self.fe.cfg.name, peer=_fmt(self.peer), **fields)
        self.fe.ctx.poller.close_socket(self.client)
        self.fe.sessions.discard(self)
        self.fe.session_ended()

    def abort(self, event: str) -> None:
        """End the session wherever it is (shutdown timeout, idle timeout, client gone)."""
        if self.relay is not None:
            log(
                event,
                listener=self.fe.cfg.name,
                peer=_fmt(self.peer),
                server=self.server.address if self.server else None,
            )
            self.relay.close(None)
            return
        self._leave_queue()
        if self.ssock is not None and self.server is not None:
            self.fe.ctx.poller.close_socket(self.ssock)
            self.ssock = None
            self.pool.release(self.server)
            self.server = None
        self._drop(event)


def _fmt(addr: tuple) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _networks(cfg: TcpListenerConfig) -> tuple[IPNetwork, ...]:
    """The networks PROXY headers are taken from; empty: from anywhere (or not at all)."""
    accept = cfg.accept_proxy_protocol
    if isinstance(accept, bool):
        return ()
    return tuple(ipaddress.ip_network(net) for net in accept.from_)


def _idle_tick(idle_timeout: float) -> float:
    """Sweep often enough to cut idle relays within a quarter of their timeout."""
    return min(1.0, max(idle_timeout / 4, 0.05)) if idle_timeout else 1.0


class TcpFrontend:
    """A listening socket of one `tcp:` entry, in one worker."""

    def __init__(self, cfg: TcpListenerConfig, pool: Pool, ctx: WorkerContext) -> None:
        self.cfg = cfg
        self.pool = pool
        self.ctx = ctx
        self.loop = ctx.loop
        self.sock: socket.socket | None = None
        self.sessions: set[Session] = set()
        self.stopping = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._idle_tick = _idle_tick(cfg.idle_timeout)
        self._drained: asyncio.Future[None] | None = None
        self._family = socket.AF_INET
        self.proxy_from = _networks(cfg)

    def proxy_trusted(self, ip: str) -> bool:
        """The client at `ip` may send a PROXY header (it is in accept_proxy_protocol.from)."""
        return in_networks(ip, self.proxy_from)

    def start(self) -> None:
        self.sock = make_listener(self.cfg.listen, self.cfg.backlog)
        self._family = self.sock.family
        self.loop.add_reader(self.sock.fileno(), self._on_accept)
        self._sweeper = self.loop.call_later(self._idle_tick, self._sweep)

    def update(self, cfg: TcpListenerConfig, pool: Pool) -> None:
        """Reload: new settings and pool apply to new connections; established ones go on."""
        self.cfg = cfg
        self.pool = pool
        self._idle_tick = _idle_tick(cfg.idle_timeout)
        self.proxy_from = _networks(cfg)

    def stop_accepting(self) -> None:
        self.stopping = True
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    async def drain(self, timeout: float) -> int:
        """Wait for sessions to end, up to `timeout`; then cut the rest. Returns how many cut."""
        if self.sessions:
            self._drained = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            except TimeoutError:
                pass
        cut = len(self.sessions)
        for session in list(self.sessions):
            session.abort("shutdown_cut")
        self.close()
        return cut

    def close(self) -> None:
        self.stop_accepting()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def account(self) -> None:
        """Add the bytes relays moved since the last call to their servers' counters."""
        for session in self.sessions:
            session.account()

    def session_ended(self) -> None:
        if self._drained is not None and not self.sessions and not self._drained.done():
            self._drained.set_result(None)

    def _on_accept(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(_ACCEPT_BATCH):
            try:
                fd, peer = sock._accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued in the backlog
            except OSError as exc:
                self._pause_accepting(exc)
                return
            client = _socket.socket(self._family, socket.SOCK_STREAM, 0, fd)
            client.setblocking(False)  # TCP_NODELAY is inherited from the listener
            session = Session(self, client, peer)
            self.sessions.add(session)
            session.start()

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of fds or memory: stop accepting for a moment instead of spinning on the error.

        The listener is level-triggered, so returning would call us again at once; the backlog
        holds new clients meanwhile (asyncio's own servers do the same).
        """
        sock = self.sock
        if sock is None:
            return
        log("accept_paused", "error", listener=self.cfg.name, cause=describe(exc), pause="1s")
        self.loop.remove_reader(sock.fileno())

        def resume() -> None:
            if self.sock is sock:
                self.loop.add_reader(sock.fileno(), self._on_accept)

        self.loop.call_later(ACCEPT_PAUSE, resume)

    def _sweep(self) -> None:
        """Once a tick: account bytes, and close relays idle for `idle_timeout`."""
        # idle_timeout 0 means never: the sweep still accounts bytes.
        limit = self.cfg.idle_timeout / self._idle_tick if self.cfg.idle_timeout else float("inf")
        for session in list(self.sessions):
            relay = session.relay
            if relay is None:
                continue
            session.account()
            relay.idle += 1
            if relay.idle >= limit:
                session.abort("idle_timeout")
        self._sweeper = self.loop.call_later(self._idle_tick, self._sweep)
