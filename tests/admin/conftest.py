"""Fixtures for the admin tests: a store, a controller over real pools, running admin APIs."""

from __future__ import annotations

import io
import logging
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
