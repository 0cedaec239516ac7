"""The admin API's HTTP plumbing: timeouts, a connection cap and the unix socket.

aiohttp keeps an idle connection for an hour by default and gives a client all the time it
wants to finish its headers, so a few thousand half-sent requests used to take every file
descriptor of the supervisor, whose health probes then failed with "too many open files".
Here a connection gets `header_timeout` from the first byte of a request to the end of its
headers (then a 408 and the close, like nginx's client_header_timeout), `keepalive_timeout`
idle before its first request and between requests (then the close), both timed by
AdminHandler itself, not by aiohttp (whose versions differ: 3.9, which pyproject allows, never
closes a connection that sends no byte), and beyond `max_connections` a new connection is answered
503 and closed at once, so the admin API never holds more than its share of descriptors.

A unix socket (`admin.listen: unix:/path`) is created with mode 0600 before it is bound, so
there is no moment where another local user can connect (as HAProxy's stats socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from steelyard.log import log

SOCKET_MODE = 0o600
BACKLOG = 128


def _canned(status: str, message: str) -> bytes:
    """A whole JSON error response, written straight to a connection that gets no other."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_TIMEOUT = _canned("408 Request Timeout", "request headers not received in time")
_FULL = _canned("503 Service Unavailable", "too many admin connections, try again")


class Limits:
    """The admin server's timeouts and cap (admin: header_timeout, keepalive_timeout, ...)."""

    __slots__ = ("body_timeout", "header_timeout", "keepalive_timeout", "max_connections")

    def __init__(
        self,
        header_timeout: float = 10.0,
        body_timeout: float = 10.0,
        keepalive_timeout: float = 15.0,
        max_connections: int = 256,
    ) -> None:
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections


class AdminHandler(RequestHandler):
    """aiohttp's connection handler with its own idle and header timers and the server's
    connection count.

    One timer, whatever aiohttp's version arms: from the connection's start and from the end
    of each response, `keepalive_timeout` until a byte comes (then the connection is closed
    without a word: no request to answer); from a request's first byte, `header_timeout` to
    the end of its headers (then a 408 and the close). While a request is handled and its
    response written there is no timer: the body timeout is the guard's, and no 408 can land
    inside a response still being sent."""

    __slots__ = (
        "_admin_server", "_busy", "_counted", "_done", "_for_headers", "_pending",
        "_request_body", "_timer",
    )  # fmt: skip

    def __init__(self, manager: AdminHttpServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._admin_server = manager
        self._timer: asyncio.TimerHandle | None = None
        self._for_headers = False  # the timer runs for a request's headers, not an idle wait
        self._busy = False  # a request is handled or its response written
        self._request_body: Any = None  # the handled request's body stream
        self._pending = False  # bytes of a next request came while busy
        self._done = False  # the last response closes the connection: no further request
        self._counted = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.transport is not None:  # not closed at once
            self._arm(for_headers=False)

    def data_received(self, data: bytes) -> None:
        if data and not self._done:
            if self._busy:
                body = self._request_body
                if body is None or body.is_eof():
                    self._pending = True  # past the body: the next request has begun
            elif not self._for_headers:
                # The first byte of a request: its headers must be complete in time.
                self._arm(for_headers=True)
        super().data_received(data)

    def request_started(self, body: Any = None) -> None:
        """The headers are in (the guard middleware calls this first); `body` is the
        request's body stream (`request.content`)."""
        self._busy = True
        self._pending = False
        self._request_body = body
        self._cancel()

    def response_finished(self, keep_alive: bool) -> None:
        """The response is written (to the transport): the connection is idle again, or, if
        bytes of the next request came meanwhile, waits for its headers."""
        self._busy = False
        self._request_body = None
        self._cancel()
        if not keep_alive:
            self._done = True  # aiohttp closes it
        elif self.transport is not None:
            self._arm(for_headers=self._pending)
        self._pending = False

    async def finish_response(self, request: Any, resp: Any, start_time: Any) -> Any:
        # aiohttp prepares and writes the response here, after the middlewares returned.
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self.response_finished(bool(getattr(resp, "keep_alive", False)))

    def _arm(self, for_headers: bool) -> None:
        self._cancel()
        limits = self._admin_server.limits
        delay = limits.header_timeout if for_headers else limits.keepalive_timeout
        self._for_headers = for_headers
        self._timer = self._loop.call_later(delay, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._for_headers = False

    def _expired(self) -> None:
        self._timer = None
        transport = self.transport
        if self._busy or transport is None:
            return
        if self._for_headers:
            log("admin_header_timeout", "debug", peer=_peer(transport))
            transport.write(_TIMEOUT)
        else:
            log("admin_idle_timeout", "debug", peer=_peer(transport))
        self._for_headers = False
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel()
        if self._counted:
            self._counted = False
            self._admin_server.live -= 1
        super().connection_lost(exc)


class _Full(asyncio.Protocol):
    """A connection over the cap: told so and closed before it can hold anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here.
        cast(asyncio.WriteTransport, transport).write(_FULL)
        transport.close()


class AdminHttpServer(web.Server):
    """aiohttp's server (the protocol factory) with a cap on live connections."""

    def __init__(self, base: web.Server, limits: Limits) -> None:
        # The server aiohttp built for the app, remade as this class with the same settings.
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
        self.limits = limits
        self.live = 0
        self.refused = 0

    def __call__(self) -> Any:
        # Counted here, when the connection is accepted, not in connection_made (called later):
        # a burst of accepts in one loop turn cannot go past the cap.
        if self.live >= self.limits.max_connections:
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # 1, 2, 4, 8...: a flood logs little
                log("admin_full", "warn", connections=self.live, refused=self.refused)
            return _Full()
        self.live += 1
        return AdminHandler(self, loop=self._loop, **self._kwargs)


class AdminRunner(web.AppRunner):
    """An AppRunner whose server is an AdminHttpServer."""

    def __init__(self, app: web.Application, limits: Limits, **kwargs: Any) -> None:
        # AdminHandler closes idle connections itself (aiohttp 3.9 leaves a connection that
        # never sends a byte open): aiohttp's own keep-alive is only a late backstop.
        backstop = 2 * limits.keepalive_timeout + limits.header_timeout
        super().__init__(app, keepalive_timeout=backstop, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        return AdminHttpServer(await super()._make_server(), self.limits)


class UnixSite(web.BaseSite):
    """A site on a unix socket made by `unix_socket` (mode 0600, stale file replaced), its
    file removed at stop."""

    __slots__ = ("_identity", "_path")

    def __init__(self, runner: web.BaseRunner, path: str) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._path = path
        self._identity: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        return f"unix:{self._path}"

    async def start(self) -> None:
        await super().start()
        sock = unix_socket(self._path)
        st = os.lstat(self._path)
        self._identity = (st.st_dev, st.st_ino)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_unix_server(server, sock=sock, backlog=BACKLOG)
        except BaseException:
            sock.close()
            self._remove()
            raise

    async def stop(self) -> None:
        await super().stop()
        self._remove()

    def _remove(self) -> None:
        """Remove the socket file, unless another process has put its own there since."""
        with contextlib.suppress(OSError):
            st = os.lstat(self._path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self._path)
        self._identity = None


def unix_socket(path: str) -> socket.socket:
    """A bound unix socket at `path`, readable and writable by its owner only.

    The mode is set on the socket before bind (Linux gives the file the socket's mode), so the
    file never exists with looser permissions. A stale file (nobody accepts on it) is replaced;
    a live one, or anything that is not a socket, is an error and left alone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            raise OSError(f"{path} is in use by another process")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), SOCKET_MODE)
        sock.bind(path)
        os.chmod(path, SOCKET_MODE)  # in case a filesystem ignored the first
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _peer(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None
