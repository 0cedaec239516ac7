"""Slow start: a server that comes back takes its full share of traffic gradually.

A server returning from a health failure, an ejection or maintenance often has cold caches, an
empty connection pool or a JIT still warming up; giving it its whole weight at once is how it
falls over again. As HAProxy's `slowstart` does, its weight grows linearly from almost nothing
to 100% over `slow_start` seconds: `server.ramp` goes from `min_ramp` to 1.0 and
`Server.effective_weight` applies it (never below 1). It is not applied at process start (the
caller only calls `begin` on a return), and not at all when `slow_start` is 0.

Sans-IO: `now` is passed in. `tick(now)` moves `server.ramp` only in steps of at least `step`
(and to exactly 1.0 at the end), and lists the servers it moved, so the caller rebuilds tables
and pushes to workers a bounded number of times per ramp (about 1/step), whatever its tick rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steelyard.core.backend import Pool, Server
from steelyard.log import log


@dataclass(eq=False, slots=True)
class _Ramp:
    pool: str
    server: Server
    start: float
    duration: float


class SlowStart:
    """Linear weight ramps for servers coming back; see the module docstring."""

    def __init__(self, step: float = 0.05, min_ramp: float = 0.01) -> None:
        if not 0.0 < min_ramp <= 1.0 or not 0.0 < step <= 1.0:
            raise ValueError("step and min_ramp must be in (0, 1]")
        self.step = step
        self.min_ramp = min_ramp
        self._ramps: dict[tuple[str, str], _Ramp] = {}

    def begin(self, pool_name: str, server: Server, duration: float, now: float) -> bool:
        """Start (or restart) the ramp of a server that just came back; True if it ramps.

        Sets `server.ramp` to its first value at once, so the caller's push carries it.
        """
        key = (pool_name, server.address)
        if duration <= 0:
            # Slow start is off (maybe by a reload mid-ramp): full weight now.
            if self._ramps.pop(key, None) is not None:
                server.ramp = 1.0
            return False
        self._ramps[key] = _Ramp(pool_name, server, now, duration)
        server.ramp = self.min_ramp
        log("slow_start", "debug", pool=pool_name, server=server.address, duration=duration)
        return True

    def cancel(self, pool_name: str, server: Server) -> bool:
        """Stop a ramp and give the server its full weight; True if it was ramping."""
        if self._ramps.pop((pool_name, server.address), None) is None:
            return False
        server.ramp = 1.0
        return True

    def ramp_at(self, ramp: _Ramp, now: float) -> float:
        return max(self.min_ramp, min(1.0, (now - ramp.start) / ramp.duration))

    def tick(self, now: float) -> list[tuple[str, Server]]:
        """Advance every ramp to `now`; list the servers whose `ramp` moved (push them)."""
        if not self._ramps:
            return []
        moved: list[tuple[str, Server]] = []
        for key, ramp in list(self._ramps.items()):
            value = self.ramp_at(ramp, now)
            server = ramp.server
            if value >= 1.0:
                del self._ramps[key]
                server.ramp = 1.0
                moved.append((ramp.pool, server))
            elif value - server.ramp >= self.step - 1e-9:
                server.ramp = value
                moved.append((ramp.pool, server))
        return moved

    def ramping(self, pool_name: str, server: Server) -> bool:
        return (pool_name, server.address) in self._ramps

    def __len__(self) -> int:
        return len(self._ramps)

    def prune(self, pools: Mapping[str, Pool]) -> None:
        """Forget ramps of servers that left their pool (reload), so `tick` never names them."""
        for key, ramp in list(self._ramps.items()):
            pool = pools.get(key[0])
            if pool is None or pool.server(key[1]) is not ramp.server:
                del self._ramps[key]

    def status(self, now: float) -> dict[str, dict[str, dict[str, Any]]]:
        """pool -> address -> ramp progress, for servers ramping now."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (pool, address), ramp in self._ramps.items():
            out.setdefault(pool, {})[address] = {
                "ramp": ramp.server.ramp,
                "remaining": round(max(0.0, ramp.start + ramp.duration - now), 3),
            }
        return out
