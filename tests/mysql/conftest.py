"""Fixtures for the MySQL tier: real MariaDB servers, always stopped, and the proxy over them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.mariadb import PASSWORD, USER, MariaDB, topology
from fixtures.procs import base_config, free_port


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


@pytest.fixture
def make_proxy(tmp_path, replication, steelyard):
    """Starts `steelyard run` with a MySQL listener over the replication topology (clients log
    in as app / proxy-secret); keyword arguments are more settings of the listener."""

    def make(**extra):
        primary, *replicas = replication
        port = free_port()
        health = {"kind": "mysql", "interval": "500ms"}
        cfg = base_config(
            tmp_path,
            pools={
                "primary": {"health": health, "servers": [{"address": primary.address}]},
                "replicas": {"health": health,
                             "servers": [{"address": r.address} for r in replicas]},
            },
            mysql={"listeners": [{
                "listen": f"127.0.0.1:{port}",
                "users": [{"name": "app", "password": "proxy-secret"}],
                "backend_user": USER, "backend_password": PASSWORD,
                "primary": "primary", "replicas": "replicas", **extra,
            }]},
        )  # fmt: skip
        sy = steelyard(cfg)
        return port, primary, replicas, sy

    return make


@pytest.fixture
def proxy(make_proxy, request):
    """The proxy over the replication topology; `request.param` adds listener settings."""
    return make_proxy(**getattr(request, "param", {}))
