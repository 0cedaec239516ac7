"""One request and its response: route, pick a server, send, stream the answer back, retry.

An `Exchange` routes a request, picks a server, sends the request on a pooled or new server
connection, and streams the response back. Bodies are streamed both ways and never held whole:
reading from one side pauses while the other side's write buffer is full. Up to `retry_buffer`
bytes of a request body are kept so the request can be replayed on another server; a request
whose body outgrew it is not retried, and nothing is retried once a response byte has reached
the client.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from typing import TYPE_CHECKING

from steelyard.config.http_model import IDEMPOTENT
from steelyard.core.backend import Server
from steelyard.http.codec import (
    DATA,
    END,
    ERROR,
    HEAD,
    UPGRADE,
    HttpError,
    RequestHead,
    ResponseHead,
)
from steelyard.http.headers import (
    cookie_value,
    encode_head,
    header_value,
    request_headers,
    response_headers,
)
from steelyard.http.pages import local_response, status_line
from steelyard.http.routing import CompiledRoute, match
from steelyard.http.upstream import UpstreamConn, open_connection
from steelyard.log import log

if TYPE_CHECKING:
    from steelyard.http.client import ClientConn
    from steelyard.http.limits import ConnLimiter

_CHUNK_END = b"0\r\n\r\n"
# Body bytes held for a server connection that is not ready yet, before reading pauses.
_PENDING_MAX = 256 * 1024


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Exchange:
    """One request and its response."""

    # Defaults for what most requests never change: set on the class, so creating an
    # Exchange (once per request) assigns only what differs.
    route: CompiledRoute | None = None
    settings: dict = {}  # read only; replaced by the route's
    request_ended = False  # the reader's END for this request was taken
    body_size = 0
    kept_size = 0
    pending_size = 0
    upstream: UpstreamConn | None = None
    server: Server | None = None
    tried: frozenset[Server] = frozenset()  # servers that failed this request
    tries = 0
    connecting: asyncio.Task | None = None
    responded = False  # any byte of a response went to the client
    resp_chunked = False
    status = 0
    bytes_sent = 0
    done = False
    request_id: bytes | None = None
    sent_head = b""
    sticky_set: bytes | None = None
    t_connect = -1.0
    t_header = -1.0
    cause = ""
    resp_keep = True
    got_head = False  # the current attempt has a response head
    last_server: Server | None = None
    early = b""
    held: tuple[tuple[ConnLimiter, bytes], ...] = ()  # limit_conn slots to give back

    def __init__(self, conn: ClientConn, head: RequestHead) -> None:
        self.conn = conn
        self.fe = conn.fe
        self.head = head
        self.started = time.monotonic()
        has_body = head.chunked or bool(head.content_length)
        self.body_done = not has_body
        self.kept: list[bytes] | None = [] if has_body else None  # for a replay
        self.pending: list[bytes] = []  # body bytes waiting for a server connection
        self.attempts: list[list[str]] = []  # [server address, its status], for the log
        self.keep_alive = conn.keep_alive_allowed(head)

    # start -------------------------------------------------------------------------------

    def start(self) -> None:
        head = self.head
        fe = self.fe
        route = match(fe.routes, head)
        if route is None:
            self.finish_local(404, b"404 Not Found: no route for this request\n")
            return
        self.route = route
        self.settings = route.settings
        if not fe.admit(self, route):
            return
        max_body = fe.cfg.max_body_bytes
        if max_body and head.content_length is not None and head.content_length > max_body:
            self.keep_alive = False
            self.finish_local(413)
            return
        cfg = route.cfg
        if cfg.return_ is not None:
            self.finish_local(
                cfg.return_.status,
                cfg.return_.body.encode(),
                content_type=cfg.return_.content_type.encode(),
            )
            return
        if cfg.redirect is not None:
            self.finish_local(
                cfg.redirect.status,
                b"",
                headers=[(b"Location", self.expand(cfg.redirect.location).encode())],
            )
            return
        if cfg.redirect_https:
            host = (head.host or b"").decode("latin-1")
            self.finish_local(
                301, b"", headers=[(b"Location", f"https://{host}".encode() + head.target)]
            )
            return
        if head.upgrade is not None and head.has_body:
            self.keep_alive = False
        if head.expect_continue and head.has_body:
            self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.try_next()

    def expand(self, template: str) -> str:
        head = self.head
        return (
            template.replace("$host", (head.host or b"").decode("latin-1"))
            .replace("$request_uri", head.target.decode("latin-1"))
            .replace("$scheme", self.fe.scheme)
        )

    # choosing a server -------------------------------------------------------------------

    def balance_key(self) -> bytes | None:
        key = self.route.cfg.hash_key if self.route else None
        if key is None or key == "source":
            return self.conn.peer_ip.encode()
        if key == "uri":
            return self.head.target
        kind, _, name = key.partition(":")
        if kind == "header":
            return header_value(self.head.headers, name.lower().encode()) or b""
        return cookie_value(self.head.headers, name.encode()) or b""

    def choose(self) -> Server | None:
        assert self.route is not None
        pool = self.fe.pools[self.route.cfg.pool or ""]
        sticky = self.route.cfg.sticky
        tried = self.tried
        if sticky is not None:
            value = cookie_value(self.head.headers, sticky.cookie.encode())
            if value is not None:
                server = self.fe.sticky_server(pool, value)
                usable = server is not None and server not in tried and server.usable
                if usable and pool.try_acquire(server):
                    return server
        key = self.balance_key() if pool.balancer.keyed else None
        skip = tried.__contains__ if tried else None
        while True:
            server = pool.pick(key, skip)
            if server is None or pool.try_acquire(server):
                break
            lost = {server, *tried}
            skip = lost.__contains__
        if server is not None and sticky is not None:
            self.sticky_set = self.fe.sticky_value(server)
        return server

    def try_next(self) -> None:
        route = self.route
        assert route is not None
        server = self.choose()
        if server is None:
            reason = "no server available" if not self.tried else "no server left to try"
            self.fail(503 if not self.tried else 502, reason)
            return
        self.tries += 1
        self.server = server
        self.attempts.append([server.address, "-"])
        conn = self.fe.keepalive.get(server, self.route.conn_kind)
        if conn is not None:
            self.attach(conn)
            return
        self.connect(server)

    def connect(self, server: Server) -> None:
        t0 = time.monotonic()

        async def run() -> None:
            try:
                conn = await open_connection(
                    self.fe.loop,
                    server,
                    self.fe.keepalive,
                    self.settings["connect_timeout"],
                    self.fe.upstream_tls(self.route),
                    self.settings["sni"],
                    self.route.conn_kind if self.route else None,
                )
            except TimeoutError:
                self.connecting = None
                self.upstream_failed(
                    server,
                    f"connect timeout after {self.settings['connect_timeout']:g}s",
                    status=504,
                )
                return
            except OSError as exc:
                self.connecting = None
                self.upstream_failed(server, f"connect failed: {_describe(exc)}")
                return
            self.connecting = None
            self.t_connect = time.monotonic() - t0
            if self.done:
                conn.release(True)
                return
            self.attach(conn)

        self.connecting = self.fe.loop.create_task(run())

    def attach(self, conn: UpstreamConn) -> None:
        """Send the request on `conn`: head, the body so far, and the rest as it comes."""
        self.upstream = conn
        self.got_head = False
        self.last_server = conn.server
        conn.owner = self
        conn.requests += 1
        if self.t_connect < 0:
            self.t_connect = 0.0
        head = self.head
        conn.reader.expect(head.method)
        if not self.sent_head:
            self.sent_head = self.build_request_head()
        out = [self.sent_head]
        if self.kept:
            out.extend(self.frame(b) for b in self.kept)
        elif self.pending:
            out.extend(self.frame(b) for b in self.pending)
        self.pending = []
        self.pending_size = 0
        if self.body_done and head.chunked:
            out.append(_CHUNK_END)
        conn.write(b"".join(out))
        if self.body_done:
            self.conn.set_deadline(self.settings["read_timeout"], "read")
        else:
            self.conn.set_deadline(self.fe.cfg.client_body_timeout, "body")
        if self.conn.read_paused and not self.body_done and not conn.paused:
            self.conn.pause_reading(False)

    def build_request_head(self) -> bytes:
        head = self.head
        route = self.route
        assert route is not None
        fe = self.fe
        headers, rid = request_headers(
            head.headers,
            head.lnames,
            head.connection,
            client_ip=self.conn.peer_ip,
            scheme=fe.scheme,
            host=head.host,
            request_id=fe.request_ids.next() if fe.cfg.request_id else None,
            via=fe.cfg.via,
            forwarded=fe.cfg.forwarded,
            upgrade=head.upgrade,
            remove=route.remove_request,
            set_=route.set_request,
        )
        self.request_id = rid
        if head.host is None:
            headers.insert(0, (b"Host", (self.server.address if self.server else "").encode()))
        if head.chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        elif head.content_length is not None:
            headers.append((b"Content-Length", str(head.content_length).encode()))
        target = route.rewrite(head.target)
        return encode_head(head.method.encode() + b" " + target + b" HTTP/1.1", headers)

    def frame(self, data: bytes) -> bytes:
        return _chunk(data) if self.head.chunked else data

    # request body --------------------------------------------------------------------------

    def on_body(self, data: bytes) -> None:
        if self.done:
            return
        self.body_size += len(data)
        max_body = self.fe.cfg.max_body_bytes
        if max_body and self.body_size > max_body:
            self.keep_alive = False
            self.abort_upstream()
            if not self.responded:
                self.finish_local(413)
            else:
                self.conn.close()
            return
        conn = self.upstream
        if self.kept is not None:
            self.kept_size += len(data)
            if self.kept_size <= self.settings.get("retry_buffer", 0):
                self.kept.append(data)
            else:
                # Too big to replay: this request is not retried. What was kept and not sent
                # yet waits for the server connection like the rest.
                if conn is None:
                    self.pending.extend(self.kept)
                    self.pending_size += self.kept_size - len(data)
                self.kept = None
        if conn is not None:
            conn.write(self.frame(data))
            if not conn.paused:  # while the server is not reading, its send deadline runs
                self.conn.set_deadline(self.fe.cfg.client_body_timeout, "body")
            return
        if self.kept is None:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > _PENDING_MAX:
                self.conn.pause_reading(True)

    def on_body_end(self) -> None:
        if self.body_done:
            return
        self.body_done = True
        if self.done:
            return
        conn = self.upstream
        if conn is not None:
            if self.head.chunked:
                conn.write(_CHUNK_END)
            self.conn.set_deadline(self.settings["read_timeout"], "read")

    def on_client_error(self, error: HttpError) -> None:
        """The body turned out malformed: the server must not take it as a whole request."""
        self.keep_alive = False
        self.abort_upstream()
        log(
            "bad_request",
            "warn",
            listener=self.fe.cfg.name,
            peer=self.conn.peer,
            status=error.status,
            cause=error.reason,
        )
        if not self.responded:
            self.finish_local(error.status)
        else:
            self.end(cut=True)

    def client_gone(self, cause: str) -> None:
        if self.done:
            return
        self.cause = cause
        self.abort_upstream()
        self.status = self.status or 499
        self.end(cut=True)

    # server side ---------------------------------------------------------------------------

    def can_retry(self) -> bool:
        if self.responded or self.done:
            return False
        s = self.settings
        if self.tries >= s["tries"]:
            return False
        if s["tries_timeout"] and time.monotonic() - self.started > s["tries_timeout"]:
            return False
        if self.head.method not in IDEMPOTENT and not s["retry_non_idempotent"]:
            return False
        # A body must have been kept whole, and have arrived whole, to be sent again.
        return not self.head.has_body or (self.kept is not None and self.body_done)

    def upstream_failed(
        self,
        server: Server,
        cause: str,
        status: int = 502,
        answered: bool = False,
        retry: bool = True,
    ) -> None:
        """A server did not give a usable answer: next server, or an error to the client.

        `answered`: it did answer, with a status in `retry_on` (already reported as a status,
        not as a connection failure).
        """
        if self.done:
            self.release_server(ok=False)
            return
        self.upstream = None
        if self.attempts and self.attempts[-1][1] == "-":
            self.attempts[-1][1] = str(status)
        self.last_server = server
        if not answered:
            self.fe.report(self.route, server, False, cause)
        log(
            "upstream_error",
            "warn",
            listener=self.fe.cfg.name,
            route=self.route.name if self.route else None,
            server=server.address,
            peer=self.conn.peer,
            cause=cause,
            request_id=self.request_id.decode() if self.request_id else None,
            attempt=self.tries,
        )
        self.release_server(ok=False)
        self.tried = self.tried | {server}
        if retry and self.can_retry():
            self.fe.count_retry(self.route, server)
            self.try_next()
            return
        if self.responded:
            self.end(cut=True)
        else:
            self.fail(status, cause)

    def release_server(self, ok: bool) -> None:
        server = self.server
        if server is None or self.route is None:
            return
        self.server = None
        pool = self.fe.pools.get(self.route.cfg.pool or "")
        if pool is not None:
            pool.release(server)
            pool.on_result(server, ok)

    def on_upstream_events(self, conn: UpstreamConn) -> None:
        client = self.conn
        client.hold()
        try:
            self._upstream_events(conn)
        finally:
            client.flush()

    def _upstream_events(self, conn: UpstreamConn) -> None:
        events = conn.reader.events
        data_seen = False
        while events:
            if conn is not self.upstream:
                events.clear()
                return
            kind, payload = events.popleft()
            if kind == DATA:
                assert isinstance(payload, bytes)
                self.bytes_sent += len(payload)
                self.conn.write(_chunk(payload) if self.resp_chunked else payload)
                data_seen = True
            elif kind == HEAD:
                self.on_response_head(conn, payload)
            elif kind == END:
                self.on_response_end(conn)
            elif kind == ERROR:
                assert isinstance(payload, HttpError)
                server = conn.server
                conn.release(False)
                self.upstream = None
                # Not retried: a server that answers garbage has seen the request.
                self.upstream_failed(server, payload.reason, retry=False)
                return
            elif kind == UPGRADE:
                assert isinstance(payload, bytes)
                self.start_tunnel(conn, payload)
                return
        if data_seen and self.upstream is conn:
            # Once per batch of reads, not per piece of body: read_timeout runs between reads.
            self.conn.set_deadline(self.settings["read_timeout"], "read")

    def on_response_head(self, conn: UpstreamConn, head: object) -> None:
        assert isinstance(head, ResponseHead)
        self.t_header = time.monotonic() - self.started
        self.got_head = True
        status = head.status
        if self.attempts:
            self.attempts[-1][1] = str(status)
        route = self.route
        assert route is not None
        if status in route.retry_on and self.can_retry():
            server = conn.server
            conn.release(False)
            self.upstream = None
            self.fe.report_status(route, server, status)
            self.upstream_failed(server, f"status {status}", answered=True)
            return
        req = self.head
        upgrade = status == 101 and req.upgrade is not None
        headers = response_headers(
            head.headers,
            head.lnames,
            head.connection,
            remove=route.remove_response,
            set_=route.set_response,
            upgrade=upgrade,
        )
        if self.sticky_set is not None and route.cfg.sticky is not None:
            cookie = self.fe.sticky_cookie(route.cfg.sticky, self.sticky_set)
            headers.append((b"Set-Cookie", cookie))
        no_body = req.method == "HEAD" or status in (204, 304) or status < 200
        if upgrade:
            headers.append((b"Connection", b"upgrade"))
        elif no_body:
            if head.content_length is not None and req.method == "HEAD":
                headers.append((b"Content-Length", str(head.content_length).encode()))
        elif head.content_length is not None:
            headers.append((b"Content-Length", str(head.content_length).encode()))
        elif req.version == "1.1":
            headers.append((b"Transfer-Encoding", b"chunked"))
            self.resp_chunked = True
        else:
            self.keep_alive = False  # HTTP/1.0 client: the end of the body is our close
        if self.fe.stopping:
            self.keep_alive = False  # shutting down: this connection ends with this answer
        if not self.body_done or (req.upgrade is not None and not upgrade):
            # The server answered before the whole body, or declined an upgrade after which the
            # client may already speak another protocol: this connection ends with the response.
            self.keep_alive = False
        if not upgrade:
            if not self.keep_alive:
                headers.append((b"Connection", b"close"))
            elif req.version == "1.0":
                headers.append((b"Connection", b"keep-alive"))
        self.status = status
        self.resp_keep = head.keep_alive
        self.last_server = conn.server
        self.responded = True
        self.conn.write(encode_head(status_line(status, head.reason or None), headers))
        if self.server is not None:
            self.fe.report_status(route, self.server, status)

    def on_response_end(self, conn: UpstreamConn) -> None:
        reusable = (
            self.body_done
            and conn.reader.busy is False
            and self.upstream_keepalive(conn)
            and not conn.reader.head_leftover
        )
        if self.resp_chunked:
            self.conn.write(_CHUNK_END)
        self.upstream = None
        conn.release(reusable)
        self.release_server(ok=True)
        self.end()

    def upstream_keepalive(self, conn: UpstreamConn) -> bool:
        # The last response head decides: Connection: close or HTTP/1.0 without keep-alive.
        return self.status != 101 and not conn.reader.until_close and self.resp_keep

    def on_upstream_lost(self, conn: UpstreamConn, exc: BaseException | None) -> None:
        if conn is not self.upstream or self.done:
            return
        self.upstream = None
        server = conn.server
        replayable = not self.head.has_body or (self.kept is not None and self.body_done)
        if conn.reused and not self.got_head and not self.responded and replayable:
            # A kept-alive connection the server closed as we reused it: not the server's
            # fault, and not one of the tries. Replay on a fresh connection.
            self.release_server(ok=True)
            self.tries -= 1
            self.tried = self.tried - {server}
            if self.choose_again(server):
                return
        cause = _describe(exc) if exc else "server closed the connection"
        self.upstream_failed(server, cause if self.status == 0 else f"{cause} mid-response")

    def choose_again(self, server: Server) -> bool:
        """Reconnect to the same server after a stale keep-alive connection."""
        pool = self.fe.pools[self.route.cfg.pool or ""] if self.route else None
        if pool is None or not pool.try_acquire(server):
            return False
        self.tries += 1
        self.server = server
        self.connect(server)
        return True

    def on_upstream_pause(self, paused: bool) -> None:
        if not self.body_done:
            self.conn.pause_reading(paused)
            if paused:
                self.conn.set_deadline(self.settings["send_timeout"], "send")
            else:
                self.conn.set_deadline(self.fe.cfg.client_body_timeout, "body")

    def on_timeout(self, kind: str) -> None:
        if self.done:
            return
        server = self.upstream.server if self.upstream else None
        if kind == "body":
            log(
                "client_timeout",
                "warn",
                listener=self.fe.cfg.name,
                peer=self.conn.peer,
                phase="body",
                timeout=f"{self.fe.cfg.client_body_timeout:g}s",
            )
            self.keep_alive = False
            self.abort_upstream()
            if not self.responded:
                self.finish_local(408)
            else:
                self.end(cut=True)
            return
        if server is None:
            return
        timeout = self.settings["read_timeout" if kind == "read" else "send_timeout"]
        conn = self.upstream
        assert conn is not None
        conn.release(False)
        self.upstream = None
        # A timed-out server is not retried: the request may be running there (nginx's
        # default proxy_next_upstream retries timeouts only before sending).
        self.tries = self.settings["tries"]
        self.upstream_failed(server, f"{kind} timeout after {timeout:g}s", status=504)

    # tunnel --------------------------------------------------------------------------------

    def start_tunnel(self, conn: UpstreamConn, first: bytes) -> None:
        client = self.conn
        self.upstream = None
        client.tunnel = conn
        client.exchange = None
        conn.owner = None
        conn.raw = client
        self.release_server(ok=True)
        self.done = True
        self.release_held()  # limit_conn counts requests; a tunnel is not one
        if first:
            client.write(first)
        if self.early:
            conn.write(self.early)
        client.tunnel_timeout = self.settings["tunnel_timeout"]
        client.set_deadline(client.tunnel_timeout, "tunnel")
        client.pause_reading(False)
        self.fe.log_access(self)

    def early_tunnel_bytes(self, data: bytes) -> None:
        """Bytes the client sent after an upgrade request: the tunnel's, held until the 101."""
        self.early += data

    # endings -------------------------------------------------------------------------------

    def release_held(self) -> None:
        for counter, key in self.held:
            counter.release(key)
        self.held = ()

    def abort_upstream(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.release(False)
        self.release_server(ok=True)

    def fail(self, status: int, cause: str) -> None:
        """No response from any server: answer with `status` (502, 503, 504)."""
        self.cause = cause
        self.finish_local(status)

    def finish_local(
        self,
        status: int,
        body: bytes | None = None,
        content_type: bytes = b"text/plain; charset=utf-8",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if not self.body_done or self.fe.stopping:
            self.keep_alive = False  # the rest of the body is not read, or we are stopping
        self.status = status
        self.responded = True
        data = local_response(
            status,
            body,
            content_type=content_type,
            headers=headers,
            close=not self.keep_alive,
            keep_alive_10=self.head.version == "1.0",
            head_only=self.head.method == "HEAD",
        )
        if self.head.method != "HEAD" and status not in (204, 304):
            self.bytes_sent += len(data) - data.index(b"\r\n\r\n") - 4
        self.conn.write(data)
        self.end()

    def end(self, cut: bool = False) -> None:
        if self.done:
            return
        self.done = True
        self.release_held()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.upstream is not None:
            self.upstream.release(False)
            self.upstream = None
        self.release_server(ok=True)
        self.fe.log_access(self)
        if cut:
            self.conn.close()
            self.conn.exchange = None
            return
        self.conn.exchange_done(self, self.keep_alive and self.body_done)


def _describe(exc: BaseException) -> str:
    # TLS errors are OSErrors whose errno says nothing useful ("operation not permitted").
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls: certificate verify failed ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"tls: {(exc.reason or str(exc)).lower().replace('_', ' ')}"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__
