"""One Redis proxy listener in a worker: its sessions, the slot map and the backend pool."""

from __future__ import annotations

import asyncio

from steelyard.config.redis_model import RedisConfig, RedisProxyConfig
from steelyard.redis.backend import BackendPool
from steelyard.redis.commands import CommandTable
from steelyard.redis.session import ClientSession
from steelyard.redis.topology import SlotMap, spread
from steelyard.tcp.frontend import ProtocolListener


class RedisFrontend:
    def __init__(
        self,
        cfg: RedisProxyConfig,
        redis: RedisConfig,
        loop: asyncio.AbstractEventLoop,
        slot_map: SlotMap | None = None,
    ) -> None:
        self.cfg = cfg
        self.redis = redis
        self.loop = loop
        self.table = CommandTable.snapshot()
        self.backends = BackendPool(loop, cfg.backend_auth)
        self.sessions: set[ClientSession] = set()
        self.masters = {g.id: g.master for g in redis.groups}
        self.slot_map = slot_map or spread({g.id: g.weight for g in redis.groups})
        self._listener: ProtocolListener | None = None
        self.stopping = False

    def update(self, cfg: RedisProxyConfig, redis: RedisConfig, slot_map: SlotMap | None) -> None:
        """Reload: new groups and slot owners apply to the next commands."""
        if cfg.backend_auth != self.cfg.backend_auth:
            self.backends.close()
            self.backends = BackendPool(self.loop, cfg.backend_auth)
        self.cfg = cfg
        self.redis = redis
        self.masters = {g.id: g.master for g in redis.groups}
        self.slot_map = slot_map or spread({g.id: g.weight for g in redis.groups})

    def owner(self, slot: int) -> str:
        """The master that serves `slot` now."""
        return self.masters[self.slot_map[slot]]

    def start(self) -> None:
        self._listener = ProtocolListener(
            self.loop, self.cfg.listen, 1024, lambda: ClientSession(self)
        )

    def stop_accepting(self) -> None:
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def drain(self, timeout: float) -> int:
        cut = 0
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
                cut += 1
        self.close()
        return cut

    def close(self) -> None:
        self.stop_accepting()
        self.backends.close()

    def account(self) -> None:
        """Counters are kept as commands end; nothing to flush."""
