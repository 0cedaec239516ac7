"""Fixtures for the admin tests: a store, a controller over real pools, running admin APIs."""

from __future__ import annotations

import io
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.admin_scaffold import PoolsController, make_pools
from steelyard.admin.api import AdminServer, start_admin
from steelyard.core.store import EmbeddedStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def controller(store: EmbeddedStore) -> PoolsController:
    return PoolsController(make_pools(), store)


@pytest.fixture
async def admin_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[AdminServer] = []

    async def start(ctl: Any, token: str | None = None, listen: str = "127.0.0.1:0") -> AdminServer:
        server = await start_admin(ctl, listen, token)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def admin(admin_factory: Callable[..., Any], controller: PoolsController) -> AdminServer:
    return await admin_factory(controller)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """steelyard's log lines, captured whatever the process-wide log setup is."""
    from steelyard.log import _Formatter

    logger = logging.getLogger("steelyard")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Real redis-server processes (as in tests/redis), for the dashboard's admin routes."""
    from fixtures.redis_server import RedisServer

    started: list[RedisServer] = []

    def start(*args: str) -> RedisServer:
        server = RedisServer(tmp_path, 0, *args)
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


class Recorder:
    """A TCP listener that accepts anything and keeps every byte it is sent: the "server"
    a hostile request points the dashboard at, to see whether a password reaches it."""

    def __init__(self, host: str = "127.0.0.2") -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.received = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.settimeout(2.0)
            with conn:
                # Answer like a Redis that wants a password, so a client sends its AUTH.
                conn.sendall(b"-NOAUTH Authentication required.\r\n")
                try:
                    while chunk := conn.recv(65536):
                        self.received += chunk
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()
