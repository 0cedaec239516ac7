"""The one interface every balancing algorithm implements.

An algorithm is built from the candidate servers (their `effective_weight` read once, at build
time) and answers `pick(key, skip)`. Tables (rings, Maglev) are computed in the constructor and
never mutated: when membership or weights change, the pool builds a new instance and swaps it.
Per-pick state that must move (round-robin counters) lives in the instance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from steelyard.core.backend import Server

Skip = Callable[["Server"], bool] | None


class Balancer(ABC):
    name: ClassVar[str]
    #: True when the algorithm needs a key (hash family); the caller then passes one.
    keyed: ClassVar[bool] = False

    def __init__(self, servers: Sequence[Server]) -> None:
        self.servers: tuple[Server, ...] = tuple(servers)

    @abstractmethod
    def pick(self, key: bytes | None = None, skip: Skip = None) -> Server | None:
        """Return a server, or None when every server is skipped or there is none.

        `skip(server)` is true for servers that must not be chosen this time (already tried,
        at max_conns). Keyed algorithms fall over to the next server in their own order, so
        that a key keeps landing on the same fallback.
        """

    def on_result(self, server: Server, ok: bool) -> None:  # noqa: B027 - optional hook
        """Feedback after a connection attempt; most algorithms ignore it."""
