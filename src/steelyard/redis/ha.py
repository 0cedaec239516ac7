"""Health of every Redis server in the cluster, and failover of a dead master.

The supervisor probes each server once per `health_interval` with INFO: one round trip says
whether it answers, its role, how far its replication has got, and the numbers the dashboard
shows (memory, keys, ops/s). Verdicts go through the same rise/fall state machine as every other
tier (`core.health.state`), so one lost probe never triggers a failover.

With `auto_failover: true`, a group whose master is down gets its most up-to-date live replica
(the highest replication offset) promoted: `REPLICAOF NO ONE` on it, the others repointed, every
proxy switched through the dashboard's barrier. A server the model calls a replica but that says
it is a master (an old master back from the dead, with stale data) is pointed at its group's
master again, so it cannot take writes by mistake.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from steelyard.core.health.state import HealthState
from steelyard.log import log
from steelyard.redis.client import connect
from steelyard.redis.model import ModelError
from steelyard.redis.mover import describe

if TYPE_CHECKING:
    from steelyard.redis.dashboard import Dashboard

RISE, FALL = 2, 3


@dataclass
class Watch:
    address: str
    state: HealthState = field(default_factory=lambda: HealthState(RISE, FALL))
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    client: aredis.Redis | None = None

    def view(self) -> dict[str, Any]:
        info = self.info
        keys = sum(
            v.get("keys", 0) for k, v in info.items() if k.startswith("db") and isinstance(v, dict)
        )
        return {
            "up": self.state.up,
            "error": self.error,
            "role": info.get("role"),
            "memory": info.get("used_memory"),
            "keys": keys,
            "ops": info.get("instantaneous_ops_per_sec"),
            "offset": offset(info),
            "link": info.get("master_link_status"),
        }


def offset(info: dict[str, Any]) -> int:
    """How much of the replication stream a server has (a replica's own processed offset)."""
    if info.get("role") == "slave":
        return int(info.get("slave_repl_offset", 0))
    return int(info.get("master_repl_offset", 0))


class HealthWatcher:
    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.watches: dict[str, Watch] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for w in self.watches.values():
            if w.client is not None:
                await w.client.aclose()
        self.watches.clear()

    def status(self, address: str) -> dict[str, Any] | None:
        w = self.watches.get(address)
        return w.view() if w is not None else None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not stop the probes
                log("redis_health_error", "error", cause=describe(exc))
            interval = self.dashboard.cfg.health_interval
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def round(self) -> None:
        topo = self.dashboard.topo
        wanted = {a for g in topo.groups.values() for a in g.servers()}
        for gone in set(self.watches) - wanted:
            w = self.watches.pop(gone)
            if w.client is not None:
                await w.client.aclose()
        for address in wanted - set(self.watches):
            self.watches[address] = Watch(address)
        await asyncio.gather(*(self.probe(w) for w in self.watches.values()))
        await self.act()

    async def probe(self, w: Watch) -> None:
        cfg = self.dashboard.cfg
        timeout = max(0.2, min(1.0, cfg.health_interval))
        if w.client is None:
            w.client = connect(w.address, self.dashboard.backend_auth(), timeout)
        try:
            w.info = await asyncio.wait_for(w.client.info(), timeout * 2)
            ok, detail = True, "ok"
            w.error = None
        except (RedisError, OSError, TimeoutError) as exc:
            ok, detail = False, describe(exc)
            w.error = detail
        if w.state.record(ok, None if ok else detail):
            log(
                "redis_health_flip",
                "info" if ok else "warn",
                server=w.address,
                state="up" if ok else "down",
                reason=detail,
                checks=w.state.streak,
            )

    def readers(self) -> dict[int, list[str]]:
        """Replicas that may serve reads: up, replicating, and with their link to the master up."""
        out: dict[int, list[str]] = {}
        for g in self.dashboard.topo.groups.values():
            fit = []
            for r in g.replicas:
                w = self.watches.get(r)
                if (
                    w is not None
                    and w.state.up
                    and w.info.get("role") == "slave"
                    and (
                        w.info.get("master_link_status") == "up"
                        and f"{w.info.get('master_host')}:{w.info.get('master_port')}" == g.master
                    )
                ):
                    fit.append(r)
            if fit:
                out[g.id] = fit
        return out

    async def act(self) -> None:
        dashboard = self.dashboard
        await dashboard.set_readers(self.readers())
        for g in list(dashboard.topo.groups.values()):
            master = self.watches.get(g.master)
            if master is None:
                continue
            if not master.state.up:
                if dashboard.cfg.auto_failover:
                    await self.failover(g.id)
                continue
            if dashboard.cfg.sentinel is not None:
                continue  # Sentinel repoints replicas; doing it here too would fight it
            for r in g.replicas:
                w = self.watches.get(r)
                if w is not None and w.state.up and w.info.get("role") == "master":
                    await self.repoint(r, g.master)

    async def failover(self, gid: int) -> None:
        g = self.dashboard.topo.groups[gid]
        live = [
            self.watches[r]
            for r in g.replicas
            if r in self.watches and self.watches[r].state.up and self.watches[r].info
        ]
        if not live:
            log(
                "redis_failover_impossible",
                "error",
                group=gid,
                master=g.master,
                cause="no replica is up",
            )
            return
        best = max(live, key=lambda w: offset(w.info))
        try:
            await self.dashboard.promote(gid, best.address, reason="auto_failover", force=True)
        except ModelError as exc:
            log("redis_failover_failed", "error", group=gid, cause=str(exc))
            return
        best.info["role"] = "master"  # until the next probe says so itself

    async def repoint(self, address: str, master: str) -> None:
        try:
            await self.dashboard.replicaof(address, master)
        except (RedisError, OSError) as exc:
            log("redis_repoint_failed", "warn", server=address, cause=describe(exc))
            return
        self.watches[address].info["role"] = "slave"
        log(
            "redis_replica_repointed",
            server=address,
            master=master,
            cause="it claimed to be a master",
        )
