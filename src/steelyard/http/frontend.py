"""One `http:` listener in a worker: the listening socket, its routes, pools and shared state.

What the connections of a listener share lives here: compiled routes, the keep-alive pool of
server connections, TLS contexts, request ids, and the hooks that report to the supervisor
(passive health) and count for metrics and the access log.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from steelyard.config.http_model import HttpListenerConfig, Sticky
from steelyard.core.backend import Pool, Server
from steelyard.http.accesslog import AccessLog
from steelyard.http.codec import RequestReader
from steelyard.http.headers import RequestIds, header_value
from steelyard.http.limits import ConnLimiter, RateLimiter, retry_after
from steelyard.http.routing import CompiledRoute, compile_routes
from steelyard.http.stats import HttpStats
from steelyard.http.upstream import KeepalivePool
from steelyard.log import log
from steelyard.tcp.frontend import ProtocolListener

if TYPE_CHECKING:
    from steelyard.http.client import ClientConn
    from steelyard.http.exchange import Exchange

# Report a result to the supervisor (passive health): (pool, server, ok, reason, kind).
Reporter = Callable[[str, Server, bool, str, str], None]


HTTP_ALPN = ["http/1.1"]  # what TLS clients and upstreams are offered


class HttpFrontend:
    def __init__(
        self,
        cfg: HttpListenerConfig,
        pools: dict[str, Pool],
        loop: asyncio.AbstractEventLoop,
        report: Reporter,
    ) -> None:
        self.cfg = cfg
        self.pools = pools
        self.loop = loop
        self._report = report
        self.routes: list[CompiledRoute] = compile_routes(cfg)
        self.keepalive = KeepalivePool(
            loop, cfg.upstream_keepalive, cfg.upstream_keepalive_timeout,
            cfg.upstream_keepalive_requests,
        )  # fmt: skip
        self.request_ids = RequestIds()
        self.conns: set[ClientConn] = set()
        self.stopping = False
        self.scheme = "https" if cfg.tls else "http"
        # Servers whose last result here was a failure: only a change is news to the supervisor.
        self.failing: set[Server] = set()
        self.failing_5xx: set[Server] = set()
        self._listener: ProtocolListener | None = None
        self._drained: asyncio.Future[None] | None = None
        self._sticky: dict[str, dict[bytes, Server]] = {}
        self._tls_upstream: dict[tuple[bool, str | None], ssl.SSLContext] = {}
        # limiters by owner: -1 for the listener, else the route's index
        self._rate: dict[int, RateLimiter] = {}
        self._conns: dict[int, ConnLimiter] = {}
        self._build_limiters()
        self.stats = HttpStats()
        self.access: AccessLog | None = None
        self._open_access_log()

    # lifecycle -----------------------------------------------------------------------------

    @property
    def sessions(self) -> set[ClientConn]:
        return self.conns

    def start(self) -> None:
        """Bind now (errors are the caller's), start serving on the next loop turn."""
        from steelyard.http.client import ClientConn

        tls = None
        if self.cfg.tls is not None:
            from steelyard.core.tls import server_context

            tls = server_context(self.cfg.tls, HTTP_ALPN)
        self._listener = ProtocolListener(
            self.loop, self.cfg.listen, self.cfg.backlog, lambda: ClientConn(self), tls
        )

    def update(self, cfg: HttpListenerConfig, pools: dict[str, Pool]) -> None:
        """Reload: new routes and settings for new requests; connections in flight go on."""
        self.cfg = cfg
        self.pools = pools
        self.routes = compile_routes(cfg)
        self.keepalive.configure(
            cfg.upstream_keepalive, cfg.upstream_keepalive_timeout, cfg.upstream_keepalive_requests
        )
        self._sticky.clear()
        self._build_limiters()
        self._open_access_log()

    def _open_access_log(self) -> None:
        want = self.cfg.access_log
        have = self.access
        if (
            have is not None
            and want is not None
            and (have.path, have.format)
            == (
                want.path,
                want.format,
            )
        ):
            return
        if have is not None:
            have.close()
            self.access = None
        if want is not None:
            try:
                self.access = AccessLog(want.path, want.format, self.loop.call_later)
            except OSError as exc:
                log("access_log_error", "error", listener=self.cfg.name, path=want.path,
                    cause=exc.strerror or str(exc))  # fmt: skip

    def _build_limiters(self) -> None:
        """Limiters for the listener and each route; kept across a reload when unchanged."""
        old_rate, old_conns = self._rate, self._conns
        self._rate, self._conns = {}, {}
        owners = [(-1, self.cfg.limit_req, self.cfg.limit_conn)]
        owners += [(r.index, r.cfg.limit_req, r.cfg.limit_conn) for r in self.routes]
        for owner, req, conn in owners:
            if req is not None:
                prev = old_rate.get(owner)
                same = prev is not None and (prev.rate, prev.burst) == (req.rate, req.burst)
                self._rate[owner] = prev if same else RateLimiter(req.rate, req.burst)
            if conn is not None:
                prev_c = old_conns.get(owner)
                same = prev_c is not None and prev_c.limit == conn.max
                self._conns[owner] = prev_c if same else ConnLimiter(conn.max)

    def admit(self, ex: Exchange, route: CompiledRoute) -> bool:
        """Apply limit_req and limit_conn (listener's, then route's); answer when refused."""
        if not self._rate and not self._conns:
            return True
        for owner, spec in ((-1, self.cfg), (route.index, route.cfg)):
            limiter = self._rate.get(owner)
            if limiter is not None and spec.limit_req is not None:
                key = self._limit_key(ex, spec.limit_req.key)
                if key:
                    wait = limiter.check(key, self.loop.time())
                    if wait:
                        log("limit_req", "warn", listener=self.cfg.name, peer=ex.conn.peer,
                            key=key.decode("latin-1"), retry_after=f"{wait:.3f}s")  # fmt: skip
                        ex.finish_local(429, headers=[(b"Retry-After", retry_after(wait))])
                        return False
            counter = self._conns.get(owner)
            if counter is not None and spec.limit_conn is not None:
                key = self._limit_key(ex, spec.limit_conn.key)
                if key:
                    if not counter.acquire(key):
                        log("limit_conn", "warn", listener=self.cfg.name, peer=ex.conn.peer,
                            key=key.decode("latin-1"), max=counter.limit)  # fmt: skip
                        ex.finish_local(503)
                        return False
                    ex.held = (*ex.held, (counter, key))
        return True

    def _limit_key(self, ex: Exchange, spec: str) -> bytes:
        if spec == "source":
            return ex.conn.peer_ip.encode()
        name = spec.partition(":")[2].lower().encode()
        return header_value(ex.head.headers, name) or b""  # no value: not limited, as nginx

    def stop_accepting(self, close_idle: bool = True) -> None:
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if not close_idle:
            return  # each answers its next request, with Connection: close, or times out
        # Idle client connections go now; busy ones close after their current response.
        for conn in list(self.conns):
            if conn.exchange is None and conn.tunnel is None:
                conn.close()

    async def drain(self, timeout: float) -> int:
        if self.conns:
            self._drained = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            except TimeoutError:
                pass
        cut = len(self.conns)
        for conn in list(self.conns):
            conn.close()
        self.close()
        return cut

    def close(self) -> None:
        self.stop_accepting()
        self.keepalive.close()
        if self.access is not None:
            self.access.close()
            self.access = None

    def conn_closed(self, conn: ClientConn) -> None:
        if self._drained is not None and not self.conns and not self._drained.done():
            self._drained.set_result(None)

    def account(self) -> None:
        """Byte counters are kept as requests end; nothing to flush."""

    # helpers for connections ---------------------------------------------------------------

    def new_reader(self) -> RequestReader:
        return RequestReader(self.cfg.max_header_bytes, self.cfg.max_uri_bytes)

    def upstream_tls(self, route: CompiledRoute | None) -> ssl.SSLContext | None:
        if route is None or not route.settings["upstream_tls"]:
            return None
        key = (bool(route.settings["verify"]), route.settings["ca"])
        ctx = self._tls_upstream.get(key)
        if ctx is None:
            from steelyard.core.tls import client_context

            ctx = self._tls_upstream[key] = client_context(*key, alpn=HTTP_ALPN)
        return ctx

    def sticky_value(self, server: Server) -> bytes:
        return hashlib.md5(server.address.encode(), usedforsecurity=False).hexdigest().encode()

    def sticky_server(self, pool: Pool, value: bytes) -> Server | None:
        table = self._sticky.get(pool.name)
        if table is None or len(table) != len(pool.servers):
            table = self._sticky[pool.name] = {self.sticky_value(s): s for s in pool.servers}
        return table.get(value)

    def sticky_cookie(self, sticky: Sticky, value: bytes) -> bytes:
        parts = [sticky.cookie.encode() + b"=" + value, b"Path=" + sticky.path.encode()]
        if sticky.max_age is not None:
            parts.append(b"Max-Age=%d" % int(sticky.max_age))
        if sticky.http_only:
            parts.append(b"HttpOnly")
        if sticky.secure:
            parts.append(b"Secure")
        return b"; ".join(parts)

    # reports -------------------------------------------------------------------------------

    def report(self, route: CompiledRoute | None, server: Server, ok: bool, cause: str) -> None:
        pool = route.cfg.pool if route is not None else None
        if pool is None:
            return
        if ok:
            if server in self.failing:
                self.failing.discard(server)
                self._report(pool, server, True, "", "connect")
            return
        server.failures += 1
        self.failing.add(server)
        self._report(pool, server, False, cause, "connect")

    def report_status(self, route: CompiledRoute, server: Server, status: int) -> None:
        """A server answered: the connection worked, and a 5xx counts for outlier ejection."""
        if status < 500 and server not in self.failing and server not in self.failing_5xx:
            return  # nothing new for the supervisor: the common case, once per request
        self.report(route, server, True, "")
        pool = route.cfg.pool
        if pool is None:
            return
        if status >= 500:
            self.failing_5xx.add(server)
            self._report(pool, server, False, f"status {status}", "5xx")
        elif server in self.failing_5xx:
            self.failing_5xx.discard(server)
            self._report(pool, server, True, "", "5xx")

    def count_status(self, route: CompiledRoute | None, status: int) -> None:
        """Requests answered without an exchange (bad requests, timeouts before a request)."""
        self.stats.observe((self.cfg.name, "-", "-", "-"), status, 0.0)

    def count_retry(self, route: CompiledRoute | None, server: Server) -> None:
        if route is not None:
            self.stats.retried((self.cfg.name, route.name, route.cfg.pool or "-", server.address))

    def log_access(self, ex: Exchange) -> None:
        """One finished request: metrics, the access log, and an error line for a 5xx."""
        route = ex.route
        server = ex.last_server
        elapsed = time.monotonic() - ex.started
        key = (
            self.cfg.name,
            route.name if route is not None else "-",
            (route.cfg.pool or "-") if route is not None else "-",
            server.address if server is not None else "-",
        )
        self.stats.observe(key, ex.status, elapsed)
        if ex.status >= 500 and ex.cause:
            log(
                "http_error",
                "warn",
                listener=self.cfg.name,
                status=ex.status,
                server=server.address if server else None,
                peer=ex.conn.peer,
                cause=ex.cause,
                request_id=ex.request_id.decode() if ex.request_id else None,
            )
        access = self.access
        if access is None:
            return
        head = ex.head
        access.write(
            {
                "remote_addr": ex.conn.peer_ip,
                "request": f"{head.method} {head.target.decode('latin-1')} HTTP/{head.version}",
                "status": ex.status,
                "body_bytes_sent": ex.bytes_sent,
                "referer": _text(header_value(head.headers, b"referer")),
                "user_agent": _text(header_value(head.headers, b"user-agent")),
                "request_time": round(elapsed, 6),
                "upstream_addr": ", ".join(a for a, _ in ex.attempts) or None,
                "upstream_status": ", ".join(s for _, s in ex.attempts) or None,
                "upstream_connect_time": None if ex.t_connect < 0 else round(ex.t_connect, 6),
                "upstream_header_time": None if ex.t_header < 0 else round(ex.t_header, 6),
                "request_id": _text(ex.request_id),
                "route": route.name if route is not None else None,
                "listener": self.cfg.name,
            }
        )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
