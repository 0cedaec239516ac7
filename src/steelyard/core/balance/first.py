"""Fill servers in order, as HAProxy `balance first`.

The first server in config order with a free connection slot (`active < max_conns`) takes the
connection; the next one is used only when it is full. The point is to keep as few servers busy
as possible, so the idle ones can be powered down or scaled in. Without `max_conns` (0 =
unlimited) the first server takes everything. Weights only matter as on/off: a weight-0 server
gets nothing, like everywhere else.

The pool already skips full servers, but the capacity check is repeated here so the algorithm is
correct on its own (it is the whole algorithm, not an optimisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from steelyard.core.balance.base import Balancer, Skip

if TYPE_CHECKING:
    from steelyard.core.backend import Server


class First(Balancer):
    name = "first"

    def __init__(self, servers: Sequence[Server]) -> None:
        super().__init__(servers)
        self._members = tuple(s for s in self.servers if s.effective_weight > 0)

    def pick(self, key: bytes | None = None, skip: Skip = None) -> Server | None:
        for server in self._members:
            if server.max_conns > 0 and server.load >= server.max_conns:
                continue
            if skip is not None and skip(server):
                continue
            return server
        return None
