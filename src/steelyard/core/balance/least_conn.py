"""Weighted least connections, as nginx `least_conn` (ngx_http_upstream_get_least_conn_peer).

The server with the fewest active connections per unit of weight wins, so long-lived connections
(WebSockets, database sessions) do not pile up on one server the way they can with round robin.
Ratios are compared by cross-multiplication (`a.active * b.w < b.active * a.w`): exact integers,
no float rounding deciding close calls. When several servers tie (always the case on an idle
pool), smooth weighted round robin runs among the tied ones only, so an idle pool spreads by
weight instead of always choosing the first server. `server.load` counts every worker's connections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from steelyard.core.balance.base import Balancer, Skip

if TYPE_CHECKING:
    from steelyard.core.backend import Server


class LeastConn(Balancer):
    name = "least_conn"

    def __init__(self, servers: Sequence[Server]) -> None:
        super().__init__(servers)
        weighted = [(s, s.effective_weight) for s in self.servers]
        # A weight-0 server must get nothing; keeping it out also avoids 0 * x == 0 ties.
        self._members = tuple((s, w) for s, w in weighted if w > 0)
        self._current = [0] * len(self._members)

    def pick(self, key: bytes | None = None, skip: Skip = None) -> Server | None:
        members = self._members
        best = -1
        best_active = best_weight = 0
        many = False
        for i, (server, weight) in enumerate(members):
            if skip is not None and skip(server):
                continue
            active = server.load
            if best < 0 or active * best_weight < best_active * weight:
                best, best_active, best_weight, many = i, active, weight, False
            elif active * best_weight == best_active * weight:
                many = True
        if best < 0:
            return None
        if many:
            best = self._round_robin_among_ties(best, best_active, best_weight, skip)
        return members[best][0]

    def _round_robin_among_ties(self, first: int, active: int, weight: int, skip: Skip) -> int:
        # nginx starts at the first least-loaded server: only ties from there on compete, and
        # only their current weights move, which keeps the sequence bit-exact with nginx.
        members = self._members
        current = self._current
        best = first
        total = 0
        for i in range(first, len(members)):
            server, w = members[i]
            if skip is not None and i != first and skip(server):
                continue
            if server.load * weight != active * w:
                continue
            current[i] += w
            total += w
            if current[i] > current[best]:
                best = i
        current[best] -= total
        return best
