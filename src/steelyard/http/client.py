"""The client side of the HTTP proxy: one protocol per client connection.

A `ClientConn` turns bytes into requests (codec.RequestReader) and runs them one at a time, in
order: pipelined requests wait in the reader's event queue, with reading paused, until the one
before them has been answered (exchange.py runs each request). It also owns the connection's
timeouts, with one lazy deadline: moving a deadline later only stores a number, and the timer
re-arms itself when it fires early, which keeps timer calls off the per-request path.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from steelyard.http.codec import DATA, END, ERROR, HEAD, UPGRADE, HttpError, RequestHead
from steelyard.http.exchange import Exchange
from steelyard.http.pages import local_response
from steelyard.http.upstream import UpstreamConn
from steelyard.log import log

if TYPE_CHECKING:
    from steelyard.http.frontend import HttpFrontend

_WRITE_HIGH = 256 * 1024
# Lingering close, as nginx's lingering_time / lingering_timeout: after answering a client that
# may still be sending (a refused upload, a bad request), read and drop what it sends for a
# while instead of closing at once. Closing a socket with unread data makes the kernel send a
# reset, which can destroy the answer before the client has read it.
LINGER_TIME = 30.0
LINGER_TIMEOUT = 5.0


class ClientConn(asyncio.Protocol):
    def __init__(self, fe: HttpFrontend) -> None:
        self.fe = fe
        self.loop = fe.loop
        self.transport: asyncio.Transport | None = None
        self.reader = fe.new_reader()
        self.exchange: Exchange | None = None
        self.peer_ip = "-"
        self.peer = "-"
        self.requests = 0
        self.closing = False
        self.read_paused = False  # paused by us (pipelining or a slow server)
        self.tunnel: UpstreamConn | None = None
        self.deadline = 0.0
        self.deadline_kind = ""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._idle = True  # between requests: no byte of the next one yet

    # asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=_WRITE_HIGH)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0]
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        fe = self.fe
        fe.conns.add(self)
        if fe.cfg.max_conns and len(fe.conns) > fe.cfg.max_conns:
            log("max_conns", "warn", listener=fe.cfg.name, peer=self.peer, max=fe.cfg.max_conns)
            self.fe.count_status(None, 503)
            self.write(local_response(503, close=True))
            self.linger_close()  # its request may be on the way: let it read the answer
            return
        self.set_deadline(fe.cfg.client_header_timeout, "header")

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            if self.loop.time() > self.linger_until:
                self.close()
            else:
                self.set_deadline(LINGER_TIMEOUT, "linger")
            return
        if self.tunnel is not None:
            self.tunnel.write(data)
            self.set_deadline(self.tunnel_timeout, "tunnel")
            return
        ex = self.exchange
        if ex is not None and self.reader.failed and ex.head.upgrade is not None:
            ex.early_tunnel_bytes(data)  # the client speaks the new protocol before the 101
            return
        if self._idle and ex is None:
            self._idle = False
            self.set_deadline(self.fe.cfg.client_header_timeout, "header")
        self.reader.feed(data)
        self.process()

    def eof_received(self) -> bool:
        if self.lingering:
            return False  # the client is done sending: close now
        ex = self.exchange
        if self.tunnel is not None:
            # Half-close through the tunnel: the server may still answer. Once both sides
            # have ended, the tunnel is over.
            self._client_eof = True
            if self._server_eof:
                self.end_tunnel()
                return False
            self.tunnel.write_eof()
            return True
        if ex is not None and not ex.body_done:
            ex.client_gone("client closed the connection while sending the body")
        elif ex is None:
            self.close()
            return False
        # The request is in; keep the socket open for the answer, then close.
        self.closing_after = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.fe.conns.discard(self)
        self._cancel_timer()
        self.reader.close()
        ex = self.exchange
        if ex is not None:
            ex.client_gone("client closed the connection")
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        self.fe.conn_closed(self)

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading(True)
        if self.tunnel is not None:
            self.tunnel.pause_reading(True)

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading(False)
        if self.tunnel is not None:
            self.tunnel.pause_reading(False)

    # requests ------------------------------------------------------------------------------

    closing_after = False

    def process(self) -> None:
        """Run what the reader has queued, in order, as far as the current exchange allows."""
        events = self.reader.events
        while events and not self.closing:
            ex = self.exchange
            kind = events[0][0]
            if ex is None:
                kind, payload = events.popleft()
                if kind == HEAD:
                    assert isinstance(payload, RequestHead)
                    self.requests += 1
                    self.exchange = Exchange(self, payload)
                    self.exchange.start()
                elif kind == ERROR:
                    assert isinstance(payload, HttpError)
                    self.refuse(payload)
                # else: the END of a request answered before it was read to its end
                continue
            if ex.request_ended:
                if kind == UPGRADE:
                    payload = events.popleft()[1]
                    assert isinstance(payload, bytes)
                    ex.early_tunnel_bytes(payload)
                    continue
                # A pipelined request: it waits, and so does reading, until this one is answered.
                self.pause_reading(True)
                return
            kind, payload = events.popleft()
            if kind == DATA:
                assert isinstance(payload, bytes)
                ex.on_body(payload)
            elif kind == END:
                ex.request_ended = True
                ex.on_body_end()
            elif kind == ERROR:
                assert isinstance(payload, HttpError)
                ex.on_client_error(payload)
            elif kind == UPGRADE:
                assert isinstance(payload, bytes)
                ex.on_body_end()
                ex.early_tunnel_bytes(payload)

    def refuse(self, error: HttpError) -> None:
        """A request we could not parse: answer and close, as nothing after it can be trusted."""
        log(
            "bad_request",
            "warn",
            listener=self.fe.cfg.name,
            peer=self.peer,
            status=error.status,
            cause=error.reason,
        )
        self.fe.count_status(None, error.status)
        self.write(local_response(error.status, close=True))
        self.linger_close()

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        self.exchange = None
        if self.closing:
            return
        if not keep_alive or self.closing_after:
            if ex.body_done:
                self.close_after_write()
            else:
                self.linger_close()  # the client may still be sending the body we refused
            return
        self._idle = True
        self.set_deadline(self.fe.cfg.keepalive_timeout, "keepalive")
        events = self.reader.events
        while events and events[0][0] in (DATA, END):
            events.popleft()  # the end of the request just answered
        if events:
            self._idle = False
            self.set_deadline(self.fe.cfg.client_header_timeout, "header")
            self.process()
        if self.exchange is None and self.read_paused:
            self.pause_reading(False)

    def keep_alive_allowed(self, head: RequestHead) -> bool:
        cfg = self.fe.cfg
        return (
            head.keep_alive
            and self.requests < cfg.keepalive_requests
            and cfg.keepalive_timeout > 0
            and not self.fe.stopping
            and not self.closing_after
        )

    # output ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            held.append(data)
        elif self.transport is not None and not self.closing:
            self.transport.write(data)

    # While a batch of server events is handled, writes are gathered and sent as one: a
    # response head and its body then cost one send, not two.
    held: list[bytes] | None = None

    def hold(self) -> None:
        if self.held is None:
            self.held = []

    def flush(self) -> None:
        held, self.held = self.held, None
        if held and self.transport is not None and not self.closing:
            self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def send_error(self, status: int, close: bool = False, head_only: bool = False) -> None:
        self.write(local_response(status, close=close, head_only=head_only))
        if close:
            self.close_after_write()

    def close_after_write(self) -> None:
        """Close once what is written has been sent (asyncio flushes before closing)."""
        if self.transport is not None and not self.closing:
            self.flush()
            self.closing = True
            self._cancel_timer()
            self.transport.close()

    lingering = False
    linger_until = 0.0

    def linger_close(self) -> None:
        """Send what is written and half-close; drop what the client still sends, then close."""
        transport = self.transport
        if transport is None or self.closing:
            return
        self.flush()
        self.closing = True
        self.lingering = True
        self.linger_until = self.loop.time() + LINGER_TIME
        if transport.can_write_eof():
            transport.write_eof()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        self.set_deadline(LINGER_TIMEOUT, "linger")

    def close(self) -> None:
        if self.transport is not None:
            self.closing = True
            self.transport.abort()

    def pause_reading(self, paused: bool) -> None:
        if paused == self.read_paused or self.transport is None or self.closing:
            return
        self.read_paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # tunnel (after 101 Switching Protocols) ----------------------------------------------

    tunnel_timeout = 3600.0
    _client_eof = False
    _server_eof = False

    def tunnel_activity(self) -> None:
        self.set_deadline(self.tunnel_timeout, "tunnel")

    def tunnel_eof(self) -> None:
        self._server_eof = True
        if self._client_eof:
            self.end_tunnel()
        elif self.transport is not None and not self.closing and self.transport.can_write_eof():
            self.transport.write_eof()

    def end_tunnel(self) -> None:
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:
            tunnel.raw = None
            tunnel.close()
        self.close_after_write()

    # deadlines ---------------------------------------------------------------------------

    def set_deadline(self, seconds: float, kind: str) -> None:
        if seconds <= 0:
            self.deadline = 0.0
            return
        when = self.loop.time() + seconds
        self.deadline = when
        self.deadline_kind = kind
        if self._timer is None or when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(when, self._on_timer)
            self._timer_at = when

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if not self.deadline or (self.closing and not self.lingering):
            return
        now = self.loop.time()
        if now < self.deadline:
            self._timer = self.loop.call_at(self.deadline, self._on_timer)
            self._timer_at = self.deadline
            return
        kind = self.deadline_kind
        self.deadline = 0.0
        self.on_deadline(kind)

    def on_deadline(self, kind: str) -> None:
        cfg = self.fe.cfg
        if kind in ("keepalive", "linger"):
            self.close()
        elif kind == "header":
            log(
                "client_timeout",
                "warn",
                listener=cfg.name,
                peer=self.peer,
                phase="header",
                timeout=f"{cfg.client_header_timeout:g}s",
            )
            self.fe.count_status(None, 408)
            self.send_error(408, close=True)
        elif kind == "tunnel":
            log("tunnel_timeout", listener=cfg.name, peer=self.peer)
            if self.tunnel is not None:
                self.tunnel.close()
            self.close()
        elif self.exchange is not None:
            self.exchange.on_timeout(kind)
