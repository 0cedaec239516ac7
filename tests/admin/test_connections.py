"""The admin API's connections in process, over raw sockets: no body is read before the token
is checked, a 408 never lands inside a response still being written, and a silent connection
is closed by the admin server's own timer."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from fixtures.admin_scaffold import PoolsController
from steelyard.admin.api import AdminServer, limits_of, make_app, start_admin
from steelyard.admin.server import AdminRunner
from steelyard.config.model import AdminConfig

DEADLINE = 60.0  # generous: what is asserted is the answer, not how fast it came
TOKEN = "s3cret-token"


@pytest.fixture
async def servers() -> AsyncIterator[list[AdminServer]]:
    started: list[AdminServer] = []
    yield started
    for server in started:
        await server.stop()


async def serve(started: list[AdminServer], ctl: Any, token: str | None, **settings: Any):
    server = await start_admin(ctl, "127.0.0.1:0", token, AdminConfig(**settings))
    started.append(server)
    return server


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection."""
    out = b""
    async with asyncio.timeout(DEADLINE):
        while chunk := await reader.read(1 << 16):
            out += chunk
    return out


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One whole response (head and Content-Length body)."""
    async with asyncio.timeout(DEADLINE):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )  # fmt: skip
        return head + await reader.readexactly(length)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def put_head(port: int, host: str | None = None, token: str | None = None) -> bytes:
    head = (
        "PUT /api/pools/web/servers/127.0.0.1:8081 HTTP/1.1\r\n"
        f"Host: {host or f'127.0.0.1:{port}'}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {64 * 1024}\r\n"
    )
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    return (head + "\r\n").encode()


@pytest.mark.parametrize(
    ("host", "token", "status"),
    [
        (None, None, 401),  # no token: refused before a byte of the body is read
        (None, "wrong", 401),
        ("evil.example", None, 403),  # the guard's Host check still comes first
        ("evil.example", TOKEN, 403),
    ],
)
async def test_a_body_is_not_read_before_the_token(
    servers, controller: PoolsController, host: str | None, token: str | None, status: int
) -> None:
    """A 64 KiB PUT whose body never comes: without the right token (or with a foreign
    Host) it is answered at once, not after body_timeout (10 minutes here), and the
    connection is to be closed (aiohttp discards what still comes for a while, then closes)."""
    server = await serve(servers, controller, TOKEN, body_timeout="10m", header_timeout="10m")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        part = b'{"state": "drain", "x": "' + b"a" * 1000  # of 64 KiB, the rest never sent
        writer.write(put_head(server.port, host, token) + part)
        await writer.drain()
        answer = await read_response(reader)
    finally:
        writer.close()
    assert status_of(answer) == status, answer
    assert b"Connection: close" in answer
    assert controller.pools["web"].servers[0].admin.value == "ready"


async def test_with_the_token_the_body_is_read(servers, controller: PoolsController) -> None:
    server = await serve(servers, controller, TOKEN)
    body = b'{"state": "drain"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"PUT /api/pools/web/servers/127.0.0.1:8081 HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        answer = await read_all(reader)
    finally:
        writer.close()
    assert status_of(answer) == 200, answer
    assert controller.pools["web"].servers[0].admin.value == "drain"


CHUNK = b"x" * (1 << 20)
CHUNKS = 32  # far more than the socket buffers hold: writing waits for the client


async def streamed(request: web.Request) -> web.StreamResponse:
    """A response written in pieces, each waiting for the client to make room."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = len(CHUNK) * CHUNKS
    await response.prepare(request)
    for _ in range(CHUNKS):
        await response.write(CHUNK)
    return response


async def test_a_408_never_lands_inside_a_response(controller, log_lines) -> None:
    """A client asks for a big response, sends the start of a next request once the answer
    has begun, and reads slowly: that request's header timeout starts when the response is
    written, so its 408 comes after the whole response, never inside it."""
    settings = AdminConfig(header_timeout="200ms", keepalive_timeout="1m")
    app = make_app(controller, None, False, settings)
    app.router.add_get("/stream", streamed)
    runner = AdminRunner(app, limits_of(settings), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            async with asyncio.timeout(DEADLINE):
                first = await reader.readexactly(1)  # the response is being written
            writer.write(b"GET /api/pools HTTP/1.1\r\n")  # and a next request begins
            await writer.drain()
            # Read nothing for several header timeouts: the old code wrote its 408 meanwhile.
            await asyncio.sleep(1.0)
            answer = first + await read_all(reader)
        finally:
            writer.close()
    finally:
        await runner.cleanup()
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert status_of(head) == 200, head[:200]
    length = len(CHUNK) * CHUNKS
    assert rest[:length] == CHUNK * CHUNKS  # whole, nothing written into it
    assert status_of(rest[length:]) == 408, rest[length : length + 200]
    assert "admin_header_timeout" in log_lines.getvalue()


async def test_a_silent_connection_is_closed_by_our_own_timer(
    servers, controller: PoolsController, log_lines: io.StringIO
) -> None:
    """A connection that never sends a byte is closed at keepalive_timeout by the admin
    server's own timer (logged admin_idle_timeout), whatever aiohttp's version does."""
    server = await serve(servers, controller, None, keepalive_timeout="300ms", header_timeout="1m")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await read_all(reader) == b""
    finally:
        writer.close()
    assert "admin_idle_timeout" in log_lines.getvalue()
    assert "admin_header_timeout" not in log_lines.getvalue()
