"""Fixtures for the MySQL tier: a real MariaDB server, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.mariadb import MariaDB, topology


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    server = MariaDB(Path(tmp_path_factory.mktemp("mariadb")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def replication(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[MariaDB]]:
    """A MariaDB primary and two GTID replicas, shared by the tests that need them: each test
    works in a database of its own."""
    servers = topology(Path(tmp_path_factory.mktemp("replication")))
    yield servers
    for s in servers:
        s.stop()
