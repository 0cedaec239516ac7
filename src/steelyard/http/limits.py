"""Per-client limits, sans-IO: request rate (leaky bucket, as nginx limit_req) and concurrency.

`RateLimiter` follows nginx's accounting: each key has an excess (requests beyond the rate) that
drains at `rate` per second; a request adds one, and is refused when the excess would pass
`burst`. Requests within the burst are served at once (nginx's `nodelay`): a proxy that delays
them instead ties up a connection per waiting request. A refusal says when to come back
(Retry-After). `ConnLimiter` counts requests in flight per key.

State is per worker process. Keys that have drained are dropped, so memory follows the number
of clients active within the last `burst / rate` seconds.
"""

from __future__ import annotations

import math

_PRUNE_EVERY = 4096  # decisions between sweeps of drained keys


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._state: dict[bytes, tuple[float, float]] = {}  # key -> (excess, updated at)
        self._since_prune = 0

    def check(self, key: bytes, now: float) -> float:
        """0.0 when the request may go; else seconds until it would be allowed."""
        excess, at = self._state.get(key, (0.0, now))
        excess = max(excess - (now - at) * self.rate, 0.0) + 1.0
        if excess > self.burst + 1.0:
            # Not counted: a refused request does not push the client further back.
            return (excess - self.burst - 1.0) / self.rate
        self._state[key] = (excess, now)
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self.prune(now)
        return 0.0

    def prune(self, now: float) -> None:
        self._since_prune = 0
        rate = self.rate
        self._state = {k: (e, t) for k, (e, t) in self._state.items() if e - (now - t) * rate > 0.0}

    def __len__(self) -> int:
        return len(self._state)


def retry_after(seconds: float) -> bytes:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds))).encode()


class ConnLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._active: dict[bytes, int] = {}

    def acquire(self, key: bytes) -> bool:
        n = self._active.get(key, 0)
        if n >= self.limit:
            return False
        self._active[key] = n + 1
        return True

    def release(self, key: bytes) -> None:
        n = self._active.get(key, 0) - 1
        if n > 0:
            self._active[key] = n
        else:
            self._active.pop(key, None)

    def active(self, key: bytes) -> int:
        return self._active.get(key, 0)
