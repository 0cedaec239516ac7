"""Admin test scaffolding: a small controller over real Pools and a real EmbeddedStore.

It does what the supervisor's controller does for the API (apply, persist, render), minus the
workers, so the HTTP layer is tested against real state rather than canned answers.
"""

from __future__ import annotations

from typing import Any

from steelyard.admin.api import pool_view, server_view
from steelyard.admin.metrics import MetricsRegistry, PoolCollector
from steelyard.core.backend import AdminState, Pool, Server
from steelyard.core.store import EmbeddedStore
from steelyard.core.store.server_state import save_server


def make_pools() -> dict[str, Pool]:
    return {
        "web": Pool(
            "web",
            [
                Server("127.0.0.1:8081", weight=5, zone="a"),
                Server("127.0.0.1:8082", weight=1, backup=True),
                Server("[::1]:80", weight=2, max_conns=10),
            ],
        ),
        "db": Pool("db", [Server("10.0.0.1:3306")], balance="round_robin", protect_threshold=0.5),
    }


class PoolsController:
    def __init__(self, pools: dict[str, Pool], store: EmbeddedStore) -> None:
        self.pools = pools
        self.store = store
        self.registry = MetricsRegistry(process=False)
        self.registry.add_collector(PoolCollector(lambda: self.pools))

    def pools_view(self) -> dict[str, Any]:
        return {"pools": [pool_view(p) for p in self.pools.values()]}

    async def set_server(
        self, pool: str, address: str, state: str | None, weight: int | None
    ) -> dict[str, Any]:
        p = self.pools.get(pool)
        if p is None:
            raise LookupError(f"unknown pool {pool!r}")
        server = p.server(address)
        if server is None:
            raise LookupError(f"unknown server {address!r} in pool {pool!r}")
        if state is not None:
            server.admin = AdminState(state)
        if weight is not None:
            server.weight_override = weight
        save_server(self.store, pool, server)
        p.refresh()
        return server_view(server)

    def metrics(self) -> tuple[bytes, str]:
        return self.registry.render()
