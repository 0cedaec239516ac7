"""nginx's smooth weighted round robin, bit-exact (ngx_http_upstream_get_peer).

Each pick adds every eligible server's weight to its `current`, chooses the largest (first wins
ties) and subtracts the total from the winner. Weights 5/1/1 give `a a b a c a a`, repeating,
so a heavy server's turns are spread out instead of bunched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from steelyard.core.balance.base import Balancer, Skip

if TYPE_CHECKING:
    from steelyard.core.backend import Server


class RoundRobin(Balancer):
    name = "round_robin"

    def __init__(self, servers: Sequence[Server]) -> None:
        super().__init__(servers)
        self._weights = [s.effective_weight for s in self.servers]
        self._current = [0] * len(self.servers)

    def pick(self, key: bytes | None = None, skip: Skip = None) -> Server | None:
        best = -1
        total = 0
        current = self._current
        servers = self.servers
        for i, weight in enumerate(self._weights):
            if weight <= 0 or (skip is not None and skip(servers[i])):
                continue
            current[i] += weight
            total += weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return servers[best]
