"""Build `Pool`s from the config, carrying runtime state over a reload.

Both the supervisor and the workers hold pools. On reload, a server whose address is still in
its pool keeps its `Server` object (runtime state, counters, and the sessions that point at it);
its configured attributes are refreshed from the new config.
"""

from __future__ import annotations

from steelyard.config.model import Config, PoolConfig
from steelyard.core.backend import Pool, Server


def build_pool(name: str, pc: PoolConfig, old: Pool | None = None) -> Pool:
    servers: list[Server] = []
    for sc in pc.servers:
        server = old.server(sc.address) if old is not None else None
        if server is None:
            server = Server(sc.address)
        server.weight = sc.weight
        server.zone = sc.zone
        server.backup = sc.backup
        server.max_conns = sc.max_conns
        servers.append(server)
    return Pool(name, servers, balance=pc.balance, protect_threshold=pc.protect_threshold)


def build_pools(cfg: Config, old: dict[str, Pool] | None = None) -> dict[str, Pool]:
    old = old or {}
    return {name: build_pool(name, pc, old.get(name)) for name, pc in cfg.pools.items()}
