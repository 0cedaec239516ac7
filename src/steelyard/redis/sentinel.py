"""Following Redis Sentinel: its master switches become the cluster model's, and every proxy's.

Each group is a Sentinel master named `{prefix}-{group id}` (as Codis names them). With
`monitor: true` the dashboard registers groups the sentinels do not know yet (SENTINEL MONITOR,
then SET for down-after, failover-timeout and parallel-syncs). It listens to `+switch-master` on
every sentinel and, every few seconds and after each reconnect, asks them where each master is
(`SENTINEL get-master-addr-by-name`), so a switch made while it was not listening is caught up
as soon as a majority of the sentinels that answer agree on it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from steelyard.config.redis_model import SentinelConfig
from steelyard.log import log
from steelyard.redis.client import connect
from steelyard.redis.mover import describe

if TYPE_CHECKING:
    import redis.asyncio as aredis

    from steelyard.redis.dashboard import Dashboard

RESYNC = 5.0  # seconds between polls of the sentinels' view
TIMEOUT = 2.0


class SentinelFollower:
    def __init__(self, dashboard: Dashboard, cfg: SentinelConfig) -> None:
        self.dashboard = dashboard
        self.cfg = cfg
        self._tasks: list[asyncio.Task[None]] = []
        self._poke = asyncio.Event()

    def name(self, gid: int) -> str:
        return f"{self.cfg.prefix}-{gid}"

    def group(self, name: str) -> int | None:
        prefix = self.cfg.prefix + "-"
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            gid = int(name[len(prefix) :])
            return gid if gid in self.dashboard.topo.groups else None
        return None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(a)) for a in self.cfg.addresses]
        self._tasks.append(loop.create_task(self._poll()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # events ------------------------------------------------------------------------------------

    async def _listen(self, address: str) -> None:
        delay = 0.5
        while True:
            client = connect(address, self.cfg.password, TIMEOUT)
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe("+switch-master")
                self._poke.set()  # we may have missed events while not subscribed
                delay = 0.5
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None:
                        await self._event(address, msg["data"].decode())
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log("redis_sentinel_lost", "warn", sentinel=address, cause=describe(exc))
            finally:
                await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _event(self, sentinel: str, data: str) -> None:
        parts = data.split()
        if len(parts) != 5:
            return
        gid = self.group(parts[0])
        if gid is None:
            return
        new = f"{parts[3]}:{parts[4]}"
        await self.dashboard.follow(gid, new, f"sentinel {sentinel} +switch-master")

    # polling -----------------------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next poll tries again
                log("redis_sentinel_error", "error", cause=describe(exc))
            try:
                await asyncio.wait_for(self._poke.wait(), RESYNC)
            except TimeoutError:
                pass
            self._poke.clear()

    async def sync(self) -> None:
        """Register unknown groups, then follow what a majority of the sentinels say."""
        seen: dict[int, Counter[str]] = {}
        for address in self.cfg.addresses:
            client = connect(address, self.cfg.password, TIMEOUT)
            try:
                for gid in list(self.dashboard.topo.groups):
                    where = await self._master_of(client, address, gid)
                    if where is not None:
                        seen.setdefault(gid, Counter())[where] += 1
            except (RedisError, OSError) as exc:
                log("redis_sentinel_unreachable", "warn", sentinel=address, cause=describe(exc))
            finally:
                await client.aclose()
        for gid, votes in seen.items():
            group = self.dashboard.topo.groups.get(gid)
            where, count = votes.most_common(1)[0]
            if group is not None and where != group.master and count * 2 > sum(votes.values()):
                await self.dashboard.follow(gid, where, "sentinel view")

    async def _master_of(self, client: aredis.Redis, sentinel: str, gid: int) -> str | None:
        name = self.name(gid)
        reply = await client.execute_command("SENTINEL", "get-master-addr-by-name", name)
        if reply:
            host, port = (x.decode() if isinstance(x, bytes) else str(x) for x in reply)
            return f"{host}:{port}"
        if not self.cfg.monitor:
            return None
        group = self.dashboard.topo.groups[gid]
        host, _, port = group.master.rpartition(":")
        quorum = self.cfg.quorum or len(self.cfg.addresses) // 2 + 1
        await client.execute_command("SENTINEL", "MONITOR", name, host.strip("[]"), port, quorum)
        settings: list[str | int] = [
            "down-after-milliseconds", int(self.cfg.down_after * 1000),
            "failover-timeout", int(self.cfg.failover_timeout * 1000),
            "parallel-syncs", self.cfg.parallel_syncs,
        ]  # fmt: skip
        auth = self.dashboard.backend_auth()
        if auth:
            settings += ["auth-pass", auth]
        await client.execute_command("SENTINEL", "SET", name, *settings)
        log("redis_sentinel_monitor", sentinel=sentinel, name=name, master=group.master,
            quorum=quorum)  # fmt: skip
        return None
