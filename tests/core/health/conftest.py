"""Fixtures for the health tests: real servers, a refusing port, captured log lines."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from fixtures.health_servers import CannedServer, response
from steelyard import log as logmod


@pytest.fixture
async def canned() -> AsyncIterator[Callable[..., Awaitable[CannedServer]]]:
    started: list[CannedServer] = []

    async def start(resp: bytes = response(200, "OK"), mode: str = "respond") -> CannedServer:
        s = await CannedServer(resp, mode).start()
        started.append(s)
        return s

    yield start
    for s in started:
        await s.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it) but not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def log_lines() -> Iterator[Callable[[str], list[str]]]:
    """Capture steelyard's log; call the result with an event name to get its lines."""
    buf = io.StringIO()
    logmod.setup(stream=buf, level="debug")

    def lines(event: str) -> list[str]:
        return [ln for ln in buf.getvalue().splitlines() if f" event={event} " in ln + " "]

    yield lines
    logmod.setup()
