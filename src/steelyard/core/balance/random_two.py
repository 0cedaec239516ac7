"""Power of two choices: draw two distinct servers by weight, keep the less loaded one.

Like nginx `random two least_conn`, HAProxy `random(2)` and Envoy's P2C least-request. Comparing
just two random servers avoids herding (every balancer in every worker sending to the same
"least loaded" server, whose count is stale) while still steering away from busy servers; the
load is exponentially better balanced than one random draw. Load is active connections per unit
of weight, compared by cross-multiplication (exact integers). On a tie the first draw wins, so
an idle pool is spread by weight.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import TYPE_CHECKING

from steelyard.core.balance.base import Balancer, Skip

if TYPE_CHECKING:
    from steelyard.core.backend import Server

_RNG = random.Random()


class RandomTwo(Balancer):
    name = "random_two"

    def __init__(self, servers: Sequence[Server], rng: random.Random | None = None) -> None:
        super().__init__(servers)
        self._rng = rng if rng is not None else _RNG
        members = [(s, s.effective_weight) for s in self.servers]
        self._members = tuple((s, w) for s, w in members if w > 0)

    def pick(self, key: bytes | None = None, skip: Skip = None) -> Server | None:
        if skip is None:
            members = self._members
        else:
            members = tuple((s, w) for s, w in self._members if not skip(s))
        if len(members) < 2:
            return members[0][0] if members else None
        first, second = self._draw_two([w for _, w in members])
        a, wa = members[first]
        b, wb = members[second]
        return b if b.load * wa < a.load * wb else a

    def _draw_two(self, weights: list[int]) -> tuple[int, int]:
        """Two distinct indexes; the second is drawn by weight from the rest."""
        cumulative = list(accumulate(weights))
        total = cumulative[-1]
        random_int = self._rng.randrange
        first = bisect_right(cumulative, random_int(total))
        # Draw over the total without the first server's span, then step over that span: exact
        # weighted sampling without replacement, with no rejection loop.
        start = cumulative[first] - weights[first]
        r = random_int(total - weights[first])
        if r >= start:
            r += weights[first]
        return first, bisect_right(cumulative, r)
