"""The admin REST API: pool state, runtime changes, Prometheus metrics.

It runs in the supervisor (the one process that decides), which owns runtime state: the API only
validates requests and hands them to a `Controller`, the supervisor's narrow face for it. That
keeps the HTTP layer testable over real pools without the process machinery.

Routes (the paths are part of the public contract):
  GET  /healthz                                   -> 200 "ok"
  GET  /metrics                                   -> Prometheus text format
  GET  /api/pools                                 -> {"pools": [pool view, ...]}
  GET  /api/pools/{pool}                          -> pool view
  GET  /api/pools/{pool}/servers/{address}        -> server view
  PUT  /api/pools/{pool}/servers/{address}        <- {"state": "ready|drain|maint", "weight": N}
  GET  /api/status                                -> the controller's status(), when it has one
  GET  /api/mysql                                 -> MySQL listeners, servers, traffic
  PUT  /api/mysql/servers/{address}               <- {"state": "offline|online"}
                                                     (admin/mysql_api.py)
  /api/redis/...                                  -> the Redis dashboard (admin/redis_api.py)
  GET  /api/vrrp                                  -> the virtual routers (admin/views.py)
  GET  /api/kernel                                -> the virtual services (admin/views.py)

Addresses contain ':' (and '[', ']' for IPv6); they may be sent raw or percent-encoded.
Every error is `{"error": message}` with its status (principle 6), and every failed request
is logged with its peer. Before anything else, admin/guard.py refuses what a web page could
have forged (a foreign Host, a cross-origin change, a change not sent as JSON). When a token is
configured, every request, /healthz and /metrics included, must carry
`Authorization: Bearer <token>` (static pages excepted: they hold no data); off loopback (and
off a unix socket) a token is mandatory. No body is read before the token is checked: a
request refused is answered at once and its connection closed. admin/server.py holds the
timeouts and the cap.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from steelyard.admin.body import json_object, message
from steelyard.admin.guard import Guard, Refusal, any_port
from steelyard.admin.mysql_api import MysqlRoutes
from steelyard.admin.redis_api import RedisRoutes
from steelyard.admin.server import AdminHandler, AdminRunner, Limits, UnixSite
from steelyard.admin.views import add_view
from steelyard.config.model import UNIX_PREFIX, AdminConfig, is_local, is_unix
from steelyard.core.backend import AdminState, Pool, Server, split_address
from steelyard.log import log

MAX_WEIGHT = 1000  # same bound as the config's server weight
MAX_BODY = 64 * 1024  # a runtime change is a few bytes; refuse anything resembling an upload
SHUTDOWN_TIMEOUT = 2.0  # how long stop() waits for requests in flight
STATES = tuple(s.value for s in AdminState)
PUT_KEYS = frozenset({"state", "weight"})
# Static pages hold no data and a browser cannot put a header on a page request: they load
# without a token, ask for it in a form, and send it as a header on every API call they make.
PUBLIC_PAGES = frozenset({"/ui/redis"})


class Controller(Protocol):
    """What the API needs from the process that owns the pools (the supervisor)."""

    def pools_view(self) -> dict[str, Any]:
        """The body of GET /api/pools: `{"pools": [pool_view(pool), ...]}`."""
        ...

    async def set_server(
        self, pool: str, address: str, state: str | None, weight: int | None
    ) -> dict[str, Any]:
        """Apply a runtime change and return the server's new view.

        Raises LookupError for an unknown pool or server, ValueError for a value it refuses.
        """
        ...

    def metrics(self) -> tuple[bytes, str]:
        """The /metrics body and its content type."""
        ...

    # The MySQL tier (admin/mysql_api.py); a controller without one may leave these out, and
    # its /api/mysql routes answer 404.

    def mysql_view(self) -> dict[str, Any]:
        """The body of GET /api/mysql: `{"listeners": [...]}`; LookupError without MySQL."""
        ...

    async def set_mysql_server(self, address: str, state: str) -> dict[str, Any]:
        """Take `address` offline or bring it online in every MySQL pool that holds it; the
        server's rows after the change. LookupError for an unknown address."""
        ...


# views ---------------------------------------------------------------------------------------


def server_view(server: Server) -> dict[str, Any]:
    return {
        "address": server.address,
        "weight": server.weight,
        "weight_override": server.weight_override,
        "effective_weight": server.effective_weight,
        "zone": server.zone,
        "backup": server.backup,
        "max_conns": server.max_conns,
        # Active-check health; passive ejection is its own field so an operator can tell a
        # server that fails its checks from one that failed real traffic.
        "health": "up" if server.healthy else "down",
        "ejected": server.ejected,
        "state": server.admin.value,
        "usable": server.usable,
        "active": server.active,
        "total": server.total,
        "failures": server.failures,
        "bytes_in": server.bytes_in,
        "bytes_out": server.bytes_out,
        "health_flips": server.health_flips,
        "ramp": server.ramp,  # slow start: share of the weight in use, 1.0 when done
    }


def pool_view(pool: Pool) -> dict[str, Any]:
    """A pool as GET /api/pools shows it."""
    return {
        "name": pool.name,
        "balance": pool.balance,
        "protect_threshold": pool.protect_threshold,
        "servers": [server_view(s) for s in pool.servers],
    }


# errors and auth -----------------------------------------------------------------------------


class ApiError(Exception):
    """An answer with an error status; the middleware turns it into `{"error": message}`."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close = close  # the connection cannot carry another request (a body cut short)


def _error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _http_error_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {request.path}"
    if exc.status == 405:
        return f"method {request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"request body too large (limit {MAX_BODY} bytes)"
    return exc.reason.lower()


def _guard(guard: Guard) -> Any:
    """The first middleware: the headers are in (the header timeout stops) and forged
    requests are refused, on the headers alone: the body is not read yet."""

    @web.middleware
    async def guarded(request: web.Request, handler: Any) -> web.StreamResponse:
        protocol = request.protocol
        if isinstance(protocol, AdminHandler):
            protocol.request_started(request.content)
        headers = request.headers
        try:
            guard.check_host(headers.get("Host"))
            if request.match_info.http_exception is None:  # else 404/405 say it better
                guard.check_change(
                    request.method, headers.get("Host"), headers.get("Origin"),
                    request.content_type if "Content-Type" in headers else "",
                    request.body_exists,
                )  # fmt: skip
        except Refusal as exc:
            raise ApiError(exc.status, exc.message) from None
        return await handler(request)

    return guarded


def _body(limits: Limits) -> Any:
    """The last middleware, once the token is checked: the body must arrive within the body
    timeout (MAX_BODY at most). A client without the token never gets a body read."""

    @web.middleware
    async def read_body(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(limits.body_timeout):
                    await request.read()  # kept by aiohttp: the route reads it again
            except TimeoutError:
                raise ApiError(408, "request body not received in time", close=True) from None
        return await handler(request)

    return read_body


# Every answer: never cached, never sniffed into a script, never framed, no Referer out.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# The dashboard page: its own inline script and style, requests to this API only, and no form
# that could ever submit (the login form is handled by the script, never sent).
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.content_type == "text/html":
        response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    close = False
    try:
        return await handler(request)
    except ApiError as exc:
        status, message, headers, close = exc.status, exc.message, exc.headers, exc.close
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        status, message = exc.status, _http_error_message(request, exc)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
    except Exception as exc:
        # The API must keep answering; the cause goes to the log, not to the client.
        log(
            "admin_error",
            "error",
            method=request.method,
            path=request.path,
            cause=f"{type(exc).__name__}: {exc}",
            peer=request.remote,
        )
        return _error_response(500, "internal error, see the steelyard log")
    log(
        "admin_refused",
        "warn",
        method=request.method,
        path=request.path,
        status=status,
        error=message,
        peer=request.remote,
    )
    response = _error_response(status, message, headers)
    if close or (request.body_exists and not request.content.is_eof()):
        # A body refused unread (no token, a forged request) is not waited for: the
        # connection ends with this answer.
        response.force_close()
    return response


def _auth(token: str) -> Any:
    expected = token.encode("utf-8", "surrogatepass")

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "GET" and request.path in PUBLIC_PAGES and not request.body_exists:
            return await handler(request)  # a page GET with a body is no browser's: token
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="steelyard"'}
        if scheme.lower() != "bearer" or not credential.strip():
            raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)", challenge)
        # surrogatepass: any header text encodes, and never to the same bytes as other text.
        given = credential.strip().encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "invalid token", challenge)
        return await handler(request)

    return auth


# handlers ------------------------------------------------------------------------------------


class _Handlers:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.controller.metrics()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def status(self, request: web.Request) -> web.Response:
        status = getattr(self.controller, "status", None)
        if status is None:
            raise ApiError(404, "this controller has no status")
        return web.json_response(status())

    async def pools(self, request: web.Request) -> web.Response:
        return web.json_response(self.controller.pools_view())

    def _pool(self, name: str) -> dict[str, Any]:
        for pool in self.controller.pools_view().get("pools", []):
            if pool.get("name") == name:
                return pool
        raise ApiError(404, f"unknown pool {name!r}")

    async def pool(self, request: web.Request) -> web.Response:
        return web.json_response(self._pool(request.match_info["pool"]))

    async def server(self, request: web.Request) -> web.Response:
        name, address = request.match_info["pool"], request.match_info["address"]
        for server in self._pool(name)["servers"]:
            if server.get("address") == address:
                return web.json_response(server)
        raise ApiError(404, f"unknown server {address!r} in pool {name!r}")

    async def set_server(self, request: web.Request) -> web.Response:
        name, address = request.match_info["pool"], request.match_info["address"]
        state, weight = parse_change(await request.read())
        try:
            view = await self.controller.set_server(name, address, state, weight)
        except LookupError as exc:
            raise ApiError(404, message(exc)) from None
        except ValueError as exc:
            raise ApiError(400, message(exc)) from None
        log(
            "admin_change",
            pool=name,
            server=address,
            state=state,
            weight=weight,
            peer=request.remote,
        )
        return web.json_response(view)


def parse_change(body: bytes) -> tuple[str | None, int | None]:
    """A PUT body -> (state, weight), at least one set; ApiError(400) with the reason otherwise."""
    usage = 'expected a JSON object like {"state": "drain"} or {"weight": 5}'
    data = json_object(body, PUT_KEYS, usage, ApiError)
    if not data:
        raise ApiError(400, f"nothing to change: {usage}")
    state = data.get("state")
    if "state" in data and state not in STATES:
        raise ApiError(400, f"state must be one of {', '.join(STATES)}, not {state!r}")
    weight = data.get("weight")
    if "weight" in data and (
        isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT
    ):
        raise ApiError(400, f"weight must be an integer from 0 to {MAX_WEIGHT}, not {weight!r}")
    return state, weight


# application and server ----------------------------------------------------------------------


def make_app(
    controller: Controller,
    token: str | None,
    require_token: bool,
    settings: AdminConfig | None = None,
    listen: str = "127.0.0.1:0",
) -> web.Application:
    """The admin application. `require_token` refuses to build one without a token;
    `settings` gives allowed_hosts, server_networks and the body timeout (defaults otherwise),
    `listen` the address whose name the Host check accepts."""
    if require_token and not token:
        # The config refuses this too; this guards callers that build the app themselves.
        raise ValueError("admin.token is required when admin.listen is not a loopback address")
    settings = settings or AdminConfig()
    guard = Guard(listen, settings.allowed_hosts)
    # The guard (headers only), then the token, and only then is a body read.
    middlewares = [_errors, _guard(guard)]
    if token:
        middlewares.append(_auth(token))
    middlewares.append(_body(limits_of(settings)))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app.on_response_prepare.append(_security_headers)
    h = _Handlers(controller)
    server_path = "/api/pools/{pool}/servers/{address}"
    app.router.add_get("/healthz", h.healthz)
    app.router.add_get("/metrics", h.metrics)
    app.router.add_get("/api/status", h.status)
    app.router.add_get("/api/pools", h.pools)
    RedisRoutes(controller, ApiError, settings.server_networks).add(app)
    MysqlRoutes(controller, ApiError).add(app)
    add_view(app, "/api/vrrp", controller, "vrrp_view", "vrrp", ApiError)
    add_view(app, "/api/kernel", controller, "kernel_view", "kernel", ApiError)
    app.router.add_get("/api/pools/{pool}", h.pool)
    app.router.add_get(server_path, h.server)
    app.router.add_put(server_path, h.set_server)
    return app


def limits_of(settings: AdminConfig, max_connections: int | None = None) -> Limits:
    return Limits(
        settings.header_timeout,
        settings.body_timeout,
        settings.keepalive_timeout,
        max_connections or settings.max_connections,
    )


@dataclass
class AdminServer:
    """A listening admin API; `stop()` closes it (and removes its unix socket file)."""

    runner: web.AppRunner
    listen: str

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); 0 on a unix socket."""
        address = self.runner.addresses[0]
        return int(address[1]) if isinstance(address, tuple) else 0

    @property
    def url(self) -> str:
        if is_unix(self.listen):
            return "http://localhost"  # what a client of the socket names it
        host = self.runner.addresses[0][0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections open now (the cap counts these)."""
        server = self.runner.server
        return int(getattr(server, "live", 0))

    async def stop(self) -> None:
        await self.runner.cleanup()
        log("admin_stop", listen=self.listen)


def _split_listen(listen: str) -> tuple[str, int]:
    """Like split_address, but port 0 (any free port) is allowed: tests and tools use it."""
    host, sep, port = listen.rpartition(":")
    if sep and port == "0":
        return split_address(f"{host}:1")[0], 0
    return split_address(listen)


async def start_admin(
    controller: Controller,
    listen: str,
    token: str | None,
    settings: AdminConfig | None = None,
    max_connections: int | None = None,
) -> AdminServer:
    """Serve the admin API on `listen`: `host:port` (port 0 picks a free one) or
    `unix:/path` (a socket file of mode 0600). `max_connections` lowers the configured cap
    (the supervisor keeps it well below its file descriptor limit)."""
    settings = settings or AdminConfig()
    limits = limits_of(settings, max_connections)
    local = is_local(listen) if is_unix(listen) else is_local(any_port(listen))
    app = make_app(controller, token, not local, settings, listen)
    runner = AdminRunner(app, limits, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site: web.BaseSite
    if is_unix(listen):
        site = UnixSite(runner, listen[len(UNIX_PREFIX) :])
    else:
        host, port = _split_listen(listen)
        site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = AdminServer(runner, listen)
    log(
        "admin_listen",
        listen=listen,
        port=server.port or None,
        token="set" if token else None,
        max_connections=limits.max_connections,
    )
    if not token and not is_unix(listen):  # a socket of mode 0600 admits its owner only
        log("admin_no_token", "warn", listen=listen,
            risk="any local user can control this node: set admin.token")  # fmt: skip
    return server


__all__ = [
    "AdminServer",
    "ApiError",
    "Controller",
    "limits_of",
    "make_app",
    "parse_change",
    "pool_view",
    "server_view",
    "start_admin",
]
