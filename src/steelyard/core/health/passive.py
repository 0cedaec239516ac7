"""Passive outlier ejection: take a server out after N consecutive failed real connections.

Active probes catch a dead server within `fall * interval`; real traffic often knows sooner. The
workers report each connection attempt's outcome to the supervisor, which feeds them here. After
`consecutive_failures` failures in a row a server is ejected for `eject_for`, multiplied by the
number of times it was ejected in a row (capped at 10x), as Envoy's outlier detection does with
`base_ejection_time`. HTTP listeners also report response statuses: `consecutive_5xx` answers
with a 5xx status in a row eject a server the same way (its own streak, apart from connection
failures). "In a row" means: ejected again before it has stayed in for as long as its
last ejection lasted, so a server that keeps failing backs off further and further while one
that recovered starts from 1x again.

Ejection is refused when it would push the pool's ejected fraction above `max_ejected` (Envoy's
`max_ejection_percent`): when most of a pool fails at once, the fault is more likely in the
network or in the clients, and ejecting everything would turn a partial outage into a full one.

Sans-IO: the caller passes `now` (monotonic seconds) to every method and calls `expire(now)`
periodically; changes come back as return values for the supervisor to push to the workers.
Ejection is kept apart from the active verdict (`server.ejected` vs `server.healthy`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steelyard.config.model import PassiveConfig
from steelyard.core.backend import Pool, Server
from steelyard.log import log

MAX_MULTIPLIER = 10


@dataclass(eq=False, slots=True)
class _Record:
    pool: str
    server: Server
    failures: int = 0  # consecutive, since the last success or return
    failures_5xx: int = 0  # consecutive 5xx answers (HTTP), since the last other answer
    until: float | None = None  # set while ejected
    ejected_at: float = 0.0
    last_duration: float = 0.0
    returned_at: float | None = None
    times: int = 0  # ejections in a row
    eject_failures: int = 0  # the streak that caused the current/last ejection
    refused: bool = False  # the cap refused this streak's ejection (logged once per streak)


def _wall(at: float, now: float) -> str:
    """A monotonic instant -> UTC wall clock, for log lines only."""
    t = time.time() + (at - now)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class PassiveEjector:
    """Consecutive-failure ejection for every pool; see the module docstring."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], _Record] = {}
        self._ejected: dict[tuple[str, str], _Record] = {}

    def record(
        self,
        pool: Pool,
        config: PassiveConfig,
        server: Server,
        ok: bool,
        now: float,
        kind: str = "connect",
    ) -> bool:
        """Count one outcome (`kind` connect, or 5xx for an HTTP answer's status).

        True when this ejected the server (push it).
        """
        field = "failures_5xx" if kind == "5xx" else "failures"
        threshold = config.consecutive_5xx if kind == "5xx" else config.consecutive_failures
        if threshold <= 0:
            return False
        key = (pool.name, server.address)
        rec = self._records.get(key)
        if rec is None:
            if ok:
                return False  # the common case costs one dict lookup
            rec = self._records[key] = _Record(pool.name, server)
        rec.server = server
        if rec.until is not None:
            if server.ejected:
                # Outcomes of connections opened before the ejection say nothing new.
                return False
            self._ejected.pop(key, None)  # un-ejected by someone else: count afresh
            rec.until = None
            rec.failures = rec.failures_5xx = 0
        if ok:
            setattr(rec, field, 0)
            rec.refused = False
            return False
        streak = getattr(rec, field) + 1
        setattr(rec, field, streak)
        if streak < threshold:
            return False
        total = len(pool.servers)
        ejected = sum(1 for s in pool.servers if s.ejected)
        # A small tolerance so that max_ejected 0.5 with 2 servers allows exactly one.
        if total == 0 or ejected + 1 > config.max_ejected * total + 1e-9:
            if not rec.refused:
                rec.refused = True
                log(
                    "passive_eject_refused",
                    "warn",
                    pool=pool.name,
                    server=server.address,
                    failures=streak,
                    kind=kind,
                    ejected=ejected,
                    servers=total,
                    max_ejected=config.max_ejected,
                )
            return False
        in_a_row = rec.returned_at is not None and now - rec.returned_at < rec.last_duration
        rec.times = rec.times + 1 if in_a_row else 1
        duration = config.eject_for * min(rec.times, MAX_MULTIPLIER)
        rec.until = now + duration
        rec.ejected_at = now
        rec.last_duration = duration
        rec.refused = False
        rec.eject_failures = streak
        server.ejected = True
        self._ejected[key] = rec
        log(
            "passive_eject",
            "warn",
            pool=pool.name,
            server=server.address,
            failures=streak,
            kind=kind,
            until=_wall(rec.until, now),
            duration=round(duration, 3),
            times=rec.times,
        )
        return True

    def expire(self, now: float) -> list[tuple[str, Server]]:
        """Return servers whose ejection ended by `now` to service; lists them (push them)."""
        if not self._ejected:
            return []
        back: list[tuple[str, Server]] = []
        for key, rec in list(self._ejected.items()):
            until = rec.until
            assert until is not None
            if until > now:
                continue
            del self._ejected[key]
            rec.until = None
            rec.failures = rec.failures_5xx = 0
            rec.returned_at = now
            rec.server.ejected = False
            log(
                "passive_return",
                pool=rec.pool,
                server=rec.server.address,
                # The same failures/until as the passive_eject line, so the two pair up.
                failures=rec.eject_failures,
                until=_wall(until, now),
                ejected_for=round(now - rec.ejected_at, 3),
                times=rec.times,
            )
            back.append((rec.pool, rec.server))
        return back

    def next_expiry(self) -> float | None:
        """The earliest instant an ejection ends, or None when nothing is ejected."""
        return min((r.until for r in self._ejected.values() if r.until is not None), default=None)

    def prune(self, pools: Mapping[str, Pool]) -> None:
        """Forget servers that left their pool (reload), so `expire` never names them."""
        for key, rec in list(self._records.items()):
            pool = pools.get(key[0])
            if pool is None or pool.server(key[1]) is not rec.server:
                del self._records[key]
                self._ejected.pop(key, None)

    def status(self, now: float) -> dict[str, dict[str, dict[str, Any]]]:
        """pool -> address -> failure streak and ejection, for servers with any history."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (pool, address), rec in self._records.items():
            out.setdefault(pool, {})[address] = {
                "failures": rec.failures,
                "ejected": rec.until is not None,
                "remaining": None if rec.until is None else round(max(0.0, rec.until - now), 3),
                "times": rec.times,
            }
        return out
