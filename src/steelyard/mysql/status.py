"""The MySQL listeners' traffic as the supervisor sees it: the workers' reports, summed.

Once a second each worker reports, per MySQL listener, `[listen, sessions, counters since it
started, {server: [open, idle, logins]}]` (`MysqlFrontend.stats_row`). `MysqlStats` keeps the
latest row per (listen, worker) with the (monotonic) time it came and the per-second rate of
each counter since that worker's previous row, and sums a listener's rows on demand:

* gauges (sessions, backend connections open and idle) and rates count live workers only: a
  worker that has not reported for `STALE` seconds (stuck, killed, stopped) counts no more.
* counters (commands by route, errors, refusals, waits, logins per server) are totals since the
  supervisor started. A worker that goes away, or whose counters start again from zero (a
  restart under the same index), leaves what it had counted in a base: a total never goes down,
  which Prometheus would read as a counter reset.

Plain data and no asyncio, like the Redis dashboard's proxy rows: the supervisor feeds it from
its worker channels; the admin view and /metrics read it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

STALE = 5.0  # seconds without a report after which a worker counts no more
COUNTERS = ("primary", "replica", "server_errors", "proxy_errors", "refused", "waits")


@dataclass
class _Row:
    """One worker's latest report for one listener."""

    sessions: int
    counters: dict[str, int]
    servers: dict[str, list[int]]  # address -> [open, idle, logins]
    at: float  # monotonic time it came
    rates: dict[str, float]  # per second, since the worker's previous report


@dataclass
class Totals:
    """One listener, summed over the workers."""

    workers: int = 0  # workers reporting (live)
    sessions: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    rates: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    servers: dict[str, list[int]] = field(default_factory=dict)  # address -> [open, idle, logins]


class MysqlStats:
    def __init__(self, stale: float = STALE) -> None:
        self.stale = stale
        self._rows: dict[tuple[str, int], _Row] = {}
        # What workers gone or restarted had counted: listen -> counter -> n, and logins per
        # (listen, server).
        self._base: dict[str, dict[str, int]] = {}
        self._logins: dict[tuple[str, str], int] = {}

    def update(self, worker: int, rows: list[list[Any]], now: float | None = None) -> None:
        """A worker's report: its rows, one per MySQL listener."""
        now = time.monotonic() if now is None else now
        for listen, sessions, counters, servers in rows:
            counters = {k: int(counters.get(k, 0)) for k in COUNTERS}
            prev = self._rows.get((listen, worker))
            rates = dict.fromkeys(COUNTERS, 0.0)
            if prev is not None:
                # A counter below its last value started again (a new frontend or process):
                # what it had counted moves to the base.
                self._fold(listen, prev, counters, servers)
                if now > prev.at:
                    for k in COUNTERS:
                        rates[k] = max(0, counters[k] - prev.counters[k]) / (now - prev.at)
            self._rows[(listen, worker)] = _Row(sessions, counters, servers, now, rates)

    def worker_gone(self, worker: int) -> None:
        """A worker exited: its counts stay in the totals, its gauges leave them at once."""
        for key in [k for k in self._rows if k[1] == worker]:
            self._fold(key[0], self._rows.pop(key))

    def _fold(
        self,
        listen: str,
        old: _Row,
        counters: dict[str, int] | None = None,
        servers: dict[str, list[int]] | None = None,
    ) -> None:
        """Add to the base what `old` counted that its successor (None: nothing) lacks."""
        base = self._base.setdefault(listen, dict.fromkeys(COUNTERS, 0))
        for k in COUNTERS:
            if counters is None or counters[k] < old.counters[k]:
                base[k] += old.counters[k]
        for address, (_, _, logins) in old.servers.items():
            after = servers.get(address) if servers is not None else None
            if after is None or after[2] < logins:
                key = (listen, address)
                self._logins[key] = self._logins.get(key, 0) + logins

    def listener(self, listen: str, now: float | None = None) -> Totals:
        """A listener's sums (see the module docstring for what counts which workers)."""
        now = time.monotonic() if now is None else now
        out = Totals(counters=dict(self._base.get(listen, dict.fromkeys(COUNTERS, 0))))
        for (address_listen, address), logins in self._logins.items():
            if address_listen == listen:
                out.servers[address] = [0, 0, logins]
        for (row_listen, _), row in self._rows.items():
            if row_listen != listen:
                continue
            live = now - row.at <= self.stale
            for k in COUNTERS:
                out.counters[k] += row.counters[k]
            for address, (opened, idle, logins) in row.servers.items():
                acc = out.servers.setdefault(address, [0, 0, 0])
                acc[2] += logins
                if live:
                    acc[0] += opened
                    acc[1] += idle
            if live:
                out.workers += 1
                out.sessions += row.sessions
                for k in COUNTERS:
                    out.rates[k] += row.rates[k]
        return out


__all__ = ["COUNTERS", "STALE", "MysqlStats", "Totals"]
