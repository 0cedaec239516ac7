"""When a dropped advert is worth a log line: once per source and reason a minute, with a bounded
memory of who was logged.

Anyone on the link can send VRRP packets with forged source addresses; a table keyed by source
that grew with every one of them would let a flood of spoofed sources grow the supervisor
without end. At most `capacity` (source, reason) pairs are remembered; past that the one logged
longest ago is forgotten (it may then be logged again sooner than a minute, which costs a line,
not memory). Sans-IO: the caller passes the clock.
"""

from __future__ import annotations

LOG_EVERY = 60.0  # seconds between two logs of one drop reason from one source
CAPACITY = 256  # (source, reason) pairs remembered


class DropLog:
    __slots__ = ("capacity", "every", "logged")

    def __init__(self, every: float = LOG_EVERY, capacity: int = CAPACITY) -> None:
        self.every = every
        self.capacity = capacity
        # insertion order is the order of the last log: the first entry is the oldest
        self.logged: dict[tuple[str, str], float] = {}

    def due(self, source: str, reason: str, now: float) -> bool:
        """True when this drop should be logged (and remember that it was)."""
        key = (source, reason)
        last = self.logged.get(key)
        if last is not None and now - last < self.every:
            return False
        if last is not None:
            del self.logged[key]  # re-inserted at the end: now the newest
        self.logged[key] = now
        while len(self.logged) > self.capacity:
            del self.logged[next(iter(self.logged))]
        return True
