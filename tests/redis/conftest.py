"""Fixtures for the Redis tier: real redis-server processes, always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fixtures.redis_server import RedisServer


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def start(*args: str, sentinel: bool = False) -> RedisServer:
        server = RedisServer(tmp_path, 0, *args, sentinel=sentinel)
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()
