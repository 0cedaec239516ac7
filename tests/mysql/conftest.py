"""Fixtures for the MySQL tier: a real MariaDB server, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.mariadb import MariaDB


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    server = MariaDB(Path(tmp_path_factory.mktemp("mariadb")))
    yield server
    server.stop()
