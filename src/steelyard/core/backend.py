"""Servers and pools: the one model that every tier balances over.

A `Server` carries its configured attributes (address, weight, zone, backup, max_conns) and its
runtime state, which comes from three independent sources kept apart on purpose:
  * admin state (`ready | drain | maint`) set by an operator,
  * health (`healthy`) from active checks, and `ejected` from passive outlier ejection,
  * weight: a runtime override and a slow-start ramp on top of the configured weight.

A `Pool` answers `pick(key)`: it chooses which servers are candidates (primaries, else backups,
with the protect threshold), builds the balancing algorithm over them, and rebuilds it only when
membership or weights change. The algorithm's tables are immutable; the pool swaps the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from steelyard.core.balance import Balancer, make_balancer

if TYPE_CHECKING:
    from steelyard.core.counters import SharedCounters


class AdminState(StrEnum):
    READY = "ready"  # takes new connections
    DRAIN = "drain"  # no new connections; established ones finish
    MAINT = "maint"  # no new connections, not health-checked as a candidate


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port). Raises ValueError with a reason."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {address!r} must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {address!r}: write an IPv6 address in brackets, [::1]:80")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} has a bad port")
    return host, int(port)


@dataclass(eq=False, slots=True)
class Server:
    address: str
    weight: int = 1
    zone: str | None = None
    backup: bool = False
    max_conns: int = 0  # 0 = unlimited
    host: str = ""
    port: int = 0
    # runtime state (the supervisor decides it, workers mirror it)
    admin: AdminState = AdminState.READY
    healthy: bool = True
    ejected: bool = False
    weight_override: int | None = None
    ramp: float = 1.0  # slow-start factor in (0, 1]
    # counters of this process
    active: int = 0
    total: int = 0
    failures: int = 0  # failed connection attempts
    health_flips: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    # the workers' shared count (core/counters.py): slot -1 means this process counts alone
    shared: SharedCounters | None = None
    slot: int = -1

    def __post_init__(self) -> None:
        if not self.host:
            self.host, self.port = split_address(self.address)

    @property
    def base_weight(self) -> int:
        return self.weight if self.weight_override is None else self.weight_override

    @property
    def effective_weight(self) -> int:
        """Weight the algorithms use: runtime override, then the slow-start ramp."""
        base = self.base_weight
        if base <= 0:
            return 0
        if self.ramp >= 1.0:
            return base
        return max(1, math.ceil(base * self.ramp))

    @property
    def up(self) -> bool:
        """Health as the pool sees it: active checks and passive ejection together."""
        return self.healthy and not self.ejected

    @property
    def usable(self) -> bool:
        return self.admin is AdminState.READY and self.up and self.effective_weight > 0

    @property
    def load(self) -> int:
        """Active connections over all workers (this process's when nothing is shared)."""
        shared = self.shared
        return self.active if shared is None else shared.total(self.slot)

    @property
    def has_capacity(self) -> bool:
        return self.max_conns <= 0 or self.load < self.max_conns

    def state(self) -> dict[str, Any]:
        """The runtime state the supervisor pushes to workers."""
        return {
            "admin": self.admin.value,
            "healthy": self.healthy,
            "ejected": self.ejected,
            "weight": self.weight_override,
            "ramp": self.ramp,
        }

    def apply_state(self, state: dict[str, Any]) -> None:
        if "admin" in state:
            self.admin = AdminState(state["admin"])
        if "healthy" in state:
            self.healthy = bool(state["healthy"])
        if "ejected" in state:
            self.ejected = bool(state["ejected"])
        if "weight" in state:
            self.weight_override = state["weight"]
        if "ramp" in state:
            self.ramp = float(state["ramp"])


def find_server(pools: Mapping[str, Pool], pool_name: str, address: str) -> Server | None:
    """The server `address` of pool `pool_name`, or None when either is unknown."""
    pool = pools.get(pool_name)
    return pool.server(address) if pool is not None else None


def require_server(pools: Mapping[str, Pool], pool_name: str, address: str) -> tuple[Pool, Server]:
    """Like `find_server`, for requests: raises LookupError saying which name is unknown."""
    pool = pools.get(pool_name)
    if pool is None:
        raise LookupError(f"unknown pool {pool_name!r}")
    server = pool.server(address)
    if server is None:
        raise LookupError(f"unknown server {address!r} in pool {pool_name!r}")
    return pool, server


def _full(server: Server) -> bool:
    return not server.has_capacity


class Pool:
    """A named set of servers with one balancing algorithm."""

    def __init__(
        self,
        name: str,
        servers: Iterable[Server],
        balance: str = "round_robin",
        protect_threshold: float = 0.0,
    ) -> None:
        self.name = name
        self.servers: list[Server] = list(servers)
        self.balance = balance
        self.protect_threshold = protect_threshold
        self._by_address = {s.address: s for s in self.servers}
        self._built: Balancer | None = None
        self._capped = False
        self._members: tuple[tuple[Server, int], ...] | None = None
        self.refresh()

    def server(self, address: str) -> Server | None:
        return self._by_address.get(address)

    def candidates(self) -> list[Server]:
        """Servers that may get new connections now, in config order.

        Primaries that are usable; when none is, usable backups; when the healthy fraction of
        the ready primaries is at or below `protect_threshold`, every ready primary (the pool
        would rather spread load over possibly-bad servers than crush the few good ones).
        """
        ready = [s for s in self.servers if not s.backup and s.admin is AdminState.READY]
        usable = [s for s in ready if s.usable]
        if not usable:
            backups = [s for s in self.servers if s.backup and s.usable]
            if backups:
                return backups
        if (
            self.protect_threshold > 0
            and ready
            and len(usable) / len(ready) <= self.protect_threshold
        ):
            return [s for s in ready if s.effective_weight > 0]
        return usable

    def refresh(self) -> None:
        """Note a change of membership or weights; call after any state change.

        The table itself is built at the next pick: a process that never picks (the
        supervisor) never pays for ring or Maglev builds, and a burst of changes costs one build.
        """
        members = tuple((s, s.effective_weight) for s in self.candidates())
        if members != self._members:
            self._members = members
            self._built = None
            self._capped = any(s.max_conns > 0 for s, _ in members)

    @property
    def balancer(self) -> Balancer:
        if self._built is None:
            self._built = make_balancer(self.balance, [s for s, _ in self._members])
        return self._built

    def pick(
        self, key: bytes | None = None, skip: Callable[[Server], bool] | None = None
    ) -> Server | None:
        """Choose a server for a new connection, skipping full servers and `skip(server)`."""
        balancer = self._built or self.balancer
        if skip is None:
            # Without max_conns nobody is ever full: the algorithms' skip-free paths are faster.
            return balancer.pick(key, _full if self._capped else None)
        if not self._capped:
            return balancer.pick(key, skip)

        def skipped(s: Server) -> bool:
            return not s.has_capacity or skip(s)

        return balancer.pick(key, skipped)

    def acquire(self, server: Server) -> None:
        server.active += 1
        server.total += 1
        if server.shared is not None:
            server.shared.add(server.slot, 1)

    def try_acquire(self, server: Server) -> bool:
        """Claim a connection slot; False if that overran `max_conns` (slot given back).

        Claim first, then check: two workers that both saw one free slot can't both keep it.
        """
        self.acquire(server)
        if server.max_conns > 0 and server.load > server.max_conns:
            self.release(server)
            server.total -= 1
            return False
        return True

    def release(self, server: Server) -> None:
        server.active -= 1
        if server.shared is not None:
            server.shared.add(server.slot, -1)

    def on_result(self, server: Server, ok: bool) -> None:
        if not ok:
            server.failures += 1
        if self._built is not None:
            self._built.on_result(server, ok)
