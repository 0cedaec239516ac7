"""One MySQL proxy listener in a worker: its sessions, users, and backend connection pools."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from steelyard.config.mysql_model import MysqlListenerConfig, MysqlUserConfig
from steelyard.core.backend import Pool, Server, find_server
from steelyard.core.netaddr import in_networks
from steelyard.core.tls import server_context
from steelyard.log import log
from steelyard.mysql.backend import ServerPool
from steelyard.mysql.classify import Route
from steelyard.mysql.client import MySQLError, backend_context
from steelyard.mysql.protocol.constants import Status
from steelyard.mysql.session import BACKEND_BASE, SHAPING, MysqlSession
from steelyard.mysql.sessionid import LOCAL_MASK, compose
from steelyard.tcp.frontend import ProtocolFrontend

FALLBACK_VERSION = "8.0.36-steelyard"  # when the primary cannot be asked


@dataclass
class ListenerStats:
    """Counters of one listener in one worker, since it started."""

    primary: int = 0  # commands run on the primary
    replica: int = 0  # ... on a replica
    server_errors: int = 0  # answers that were a server's ERR
    proxy_errors: int = 0  # errors the proxy answered itself (no server, bad input, ...)
    refused: int = 0  # logins refused (and connections closed for bad input)
    waits: int = 0  # commands that waited for a connection (a login, a sync, causal reads)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


Report = Callable[[str, Server, bool, str], None]
# A request to the other workers' listeners, through the supervisor: their answers.
Relay = Callable[[dict[str, Any]], Awaitable[list[Any]]]


class NoServer(ConnectionError):
    """No server of the pool is usable."""


class MysqlFrontend(ProtocolFrontend):
    def __init__(
        self, cfg: MysqlListenerConfig, pools: dict[str, Pool], loop: asyncio.AbstractEventLoop,
        report: Report | None = None,
    ) -> None:  # fmt: skip
        self.loop = loop
        # passive results to the supervisor: (pool, server, ok, cause)
        self.report: Report = report or (lambda pool, server, ok, cause: None)
        self.sessions: set[MysqlSession] = set()
        self.by_id: dict[int, MysqlSession] = {}  # the sessions by their id (sessionid.py)
        self.worker = 0  # this worker process's index: the top bits of the session ids
        self.relay: Relay | None = None  # to the other workers (SHOW PROCESSLIST, KILL)
        self.now = time.monotonic()  # the clock of the last sweep (processlist times)
        self.backend_pools: dict[tuple[str, int], ServerPool] = {}
        self._ids = itertools.count(1)
        self.user_counts: dict[str, int] = {}
        self.stats = ListenerStats()
        # collation id -> (character set, collation) names, as the primary knows them
        self.collations: dict[int, tuple[bytes, bytes]] = {}
        self.update(cfg, pools)

    def update(self, cfg: MysqlListenerConfig, pools: dict[str, Pool]) -> None:
        self.cfg = cfg
        self.pools = pools
        self.users: dict[str, MysqlUserConfig] = {u.name: u for u in cfg.users}
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cfg.allow]
        self.tls_context = server_context(cfg.tls) if cfg.tls is not None else None
        self.tls_required = cfg.tls is not None and cfg.tls.required
        self.backend_tls = backend_context(cfg.backend_tls)

    async def server_version(self) -> str:
        """`server_version` from the config, else the primary's own (learnt from its greeting
        when the first client comes, on a connection that then joins the pool)."""
        if self.cfg.server_version:
            return self.cfg.server_version
        if self._version is None:
            try:
                pool = self.server_pool(Route.PRIMARY, BACKEND_BASE)
                conn = await pool.acquire()
            except (OSError, ConnectionError, TimeoutError, MySQLError) as exc:
                log("mysql_version_unknown", "warn", cause=str(exc), using=FALLBACK_VERSION)
                return FALLBACK_VERSION
            self._version = conn.server_version or FALLBACK_VERSION
            pool.release(conn, Status.AUTOCOMMIT)
        return self._version

    _version: str | None = None

    def allowed(self, host: str) -> bool:
        """Whether `host` may connect (the `allow` list; empty: everyone)."""
        return not self.networks or in_networks(host, self.networks)

    def next_id(self) -> int:
        """A session id no session of this listener in this worker has (sessionid.py)."""
        while True:
            n = next(self._ids) & LOCAL_MASK
            if n and compose(self.worker, n) not in self.by_id:
                return compose(self.worker, n)

    def users_take(self, name: str, limit: int) -> bool:
        n = self.user_counts.get(name, 0)
        if limit and n >= limit:
            return False
        self.user_counts[name] = n + 1
        return True

    def users_left(self, name: str) -> None:
        self.user_counts[name] = max(0, self.user_counts.get(name, 1) - 1)

    def server_pool(self, route: Route, caps: int) -> ServerPool:
        """The idle connections of the server chosen for `route` (a replica for reads when one
        is usable, else the primary)."""
        server = None
        replica = False
        pool_name = self.cfg.primary
        if route is Route.REPLICA and self.cfg.replicas:
            server = self.pools[self.cfg.replicas].pick()
            replica = server is not None
            if replica:
                pool_name = self.cfg.replicas
        if server is None:
            server = self.pools[self.cfg.primary].pick()
        if server is None:
            raise NoServer(f"no server of pool {self.cfg.primary!r} is usable")
        shaping = caps & SHAPING  # plain ints
        key = (server.address, shaping)
        pool = self.backend_pools.get(key)
        if pool is None:
            pool = self.backend_pools[key] = ServerPool(
                server.address,
                self.cfg.backend_user,
                self.cfg.backend_password,
                self.cfg.backend_pool_size,
                BACKEND_BASE | shaping,
            )
            pool.replica = replica
            pool.pool_name = pool_name
            pool.tls = self.backend_tls
            if self.cfg.backend_tls is not None:
                pool.server_name = self.cfg.backend_tls.server_name
            pool.on_result = self._reporter(pool_name, server)
        return pool

    def _reporter(self, pool_name: str, server: Server) -> Callable[[bool, str], None]:
        address = server.address

        def on_result(ok: bool, cause: str) -> None:
            pool = self.pools.get(pool_name)
            now = find_server(self.pools, pool_name, address)  # the pools may be reloaded
            if pool is not None and now is not None:
                pool.on_result(now, ok)  # counts the failure, tells the balancer
                self.report(pool_name, now, ok, cause)

        return on_result

    def session(self) -> MysqlSession:
        return MysqlSession(self)

    def close_backends(self) -> None:
        for pool in self.backend_pools.values():
            pool.close()  # connections lent out now are closed when they come back
        self.backend_pools.clear()

    def account(self) -> None:
        """Called every second by the worker: counters are kept as commands end, and idle
        connections to servers taken out of service (drain, maint, ejected, down) are closed,
        so the server sees them go; clients past their login or idle timeout are closed."""
        self.now = now = time.monotonic()
        for session in list(self.sessions):  # (time_out removes it from the set)
            which = session.expired(now)
            if which is not None:
                session.time_out(which)
        for pool in self.backend_pools.values():
            if not pool.idle:
                continue
            server = find_server(self.pools, pool.pool_name, pool.address)  # after reloads too
            if server is None or not server.usable:
                pool.close_idle()

    def stats_row(self) -> list[Any]:
        """What the worker reports of this listener: [listen, sessions, counters since start,
        {server: [open, idle, logins]}] (the supervisor sums the workers' rows)."""
        servers: dict[str, list[int]] = {}
        for (address, _), pool in self.backend_pools.items():
            row = servers.setdefault(address, [0, 0, 0])
            row[0] += pool.open
            row[1] += len(pool.idle)
            row[2] += pool.connects
        return [self.cfg.listen, len(self.sessions), self.stats.as_dict(), servers]
