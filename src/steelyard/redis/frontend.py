"""One Redis proxy listener in a worker: its sessions, its router and the backend pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from steelyard.config.redis_model import RedisConfig, RedisProxyConfig
from steelyard.log import log
from steelyard.redis.backend import BackendPool
from steelyard.redis.commands import CommandTable
from steelyard.redis.dispatch import fast_table
from steelyard.redis.router import Router
from steelyard.redis.session import CLOSE_STALL_SECONDS, ClientSession
from steelyard.redis.slotstore import from_config
from steelyard.tcp.frontend import ProtocolFrontend


class RedisFrontend(ProtocolFrontend):
    # A message for the supervisor (the worker's channel): scripts loaded through the proxy.
    report: Callable[[dict[str, Any]], None] | None = None

    def __init__(
        self,
        cfg: RedisProxyConfig,
        redis: RedisConfig,
        loop: asyncio.AbstractEventLoop,
        view: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.redis = redis
        self.loop = loop
        self.table = CommandTable.snapshot()
        self.fast = fast_table(self.table)
        self.backends = BackendPool(loop, cfg.backend_auth)
        self.sessions: set[ClientSession] = set()
        self.commands = 0  # commands read, for the dashboard's proxy table
        self._writers: list[ClientSession] = []
        self._write_scheduled = False
        self.router = Router(self.backends, cfg.backend_auth, redis.migrate_timeout)
        self.router.on_lock = self._slots_locked
        self.router.apply(view or config_view(redis))
        self._sweeper: asyncio.TimerHandle | None = None

    # The router's tables, read by sessions on every command.
    @property
    def route(self) -> list[str]:
        return self.router.route

    @property
    def moving(self) -> list[Any]:
        return self.router.moving

    @property
    def masters(self) -> dict[int, str]:
        return self.router.masters

    def want_write(self, session: ClientSession) -> None:
        """`session` has replies to write: all such sessions are written once, at the end of
        the loop turn (one scheduled callback for all of them rather than one each)."""
        self._writers.append(session)
        if not self._write_scheduled:
            self._write_scheduled = True
            self.loop.call_soon(self._write_all)

    def _write_all(self) -> None:
        self._write_scheduled = False
        writers, self._writers = self._writers, []
        for session in writers:
            session.write_ready()

    def update(
        self, cfg: RedisProxyConfig, redis: RedisConfig, view: dict[str, Any] | None
    ) -> list[asyncio.Future[None]]:
        """Reload: new groups and slot owners apply to the next commands."""
        if cfg.backend_auth != self.cfg.backend_auth:
            self.backends.close()
            self.backends = BackendPool(self.loop, cfg.backend_auth)
            self.router.backends = self.backends
        self.router.auth = cfg.backend_auth
        self.cfg = cfg
        self.redis = redis
        return self.apply_view(view or config_view(redis))

    def apply_view(self, view: dict[str, Any]) -> list[asyncio.Future[None]]:
        """A new cluster view from the dashboard; the futures say when it has taken hold."""
        waits = self.router.apply(view)
        for session in self.sessions:
            if session.subs is not None and session.subs.active:
                session.subs.rehome()
        self.backends.flush()
        return waits

    def _slots_locked(self, source: str, slots: set[int]) -> None:
        for session in self.sessions:
            if session.blocked:
                session.slots_locked(source, slots)

    def owner(self, slot: int) -> str:
        """The master that serves `slot` now ("" when no group owns it)."""
        return self.router.route[slot]

    def session(self) -> ClientSession:
        return ClientSession(self)

    def start(self) -> None:
        super().start()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _sweep(self) -> None:
        """Close clients idle for `idle_timeout` (Redis's `timeout`): not those waiting in a
        blocking command or subscribed, whom Redis spares too; and, with `auth` set, those
        not authenticated `auth_timeout` after connecting (they hold a client slot each).
        Output limits apply to every client, closing ones too; a closing client that has
        read none of its replies for CLOSE_STALL_SECONDS (idle_timeout if shorter) is cut."""
        now = self.loop.time()
        idle, unauthenticated = self.cfg.idle_timeout, self.cfg.auth_timeout
        idle_since = now - idle if idle > 0 else -1.0
        auth_since = now - unauthenticated if unauthenticated > 0 and self.cfg.auth else -1.0
        stall = min(idle, CLOSE_STALL_SECONDS) if idle > 0 else CLOSE_STALL_SECONDS
        closed = {"idle": 0, "auth": 0}
        for session in list(self.sessions):
            if session.write_blocked:
                session.check_output()  # over the soft limit for long enough?
            if session.closing:
                session.close_stalled(now, stall)
                continue
            if not session.authed and session.connected < auth_since:
                reason = "auth"
            elif session.last_read < idle_since and session.idle():
                reason = "idle"
            else:
                continue
            closed[reason] += 1
            session.closing = True
            transport = session.transport
            if transport is not None:
                # What it has not read is dropped: a close would wait for it forever.
                if transport.get_write_buffer_size():
                    transport.abort()
                else:
                    transport.close()
        for reason, count in closed.items():
            if count:
                # One line per sweep, not per client: thousands may go at once.
                log("redis_clients_timed_out", "info", listen=self.cfg.listen, reason=reason,
                    clients=count)  # fmt: skip
        if not self.stopping:
            self._sweeper = self.loop.call_later(1.0, self._sweep)

    def stop_accepting(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        super().stop_accepting()

    def close_backends(self) -> None:
        self.backends.close()

    def account(self) -> None:
        """Counters are kept as commands end; nothing to flush."""


def config_view(redis: RedisConfig) -> dict[str, Any]:
    """The view of a cluster seeded from the config alone (no dashboard to ask)."""
    return from_config(redis).proxy_view()
