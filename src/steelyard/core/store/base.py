"""The runtime-state store interface: one home for state that outlives a process.

Operator changes (admin states, weight overrides), and later slot maps, registrations and
failover decisions, are written here by the supervisor and read back on start and reload
(state has one home). Values are JSON objects under '/'-separated keys such as
`pools/web/servers/127.0.0.1:8081`, so the same keys map one-to-one onto an etcd keyspace.

The API is synchronous on purpose: the embedded SQLite store answers in well under a
millisecond, and callers on the event loop should not have to await a local file. A networked
store (etcd) will keep this interface and do its I/O behind it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any


def check_key(key: str) -> str:
    """Return `key` if it is a non-empty '/'-separated path without empty segments."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"store key must be a non-empty string, not {key!r}")
    if any(part == "" for part in key.split("/")):
        raise ValueError(f"store key {key!r} has an empty segment (leading, trailing or //)")
    return key


class Store(ABC):
    """Key/value store of JSON objects."""

    @abstractmethod
    def get(self, key: str) -> dict[str, Any] | None:
        """The value at `key`, or None when there is none."""

    @abstractmethod
    def put(self, key: str, value: dict[str, Any]) -> None:
        """Set `key` to `value` (a JSON-serialisable dict), replacing any previous value."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error."""

    @abstractmethod
    def items(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every key starting with `prefix` (a plain string prefix) and its value, key-sorted."""

    @abstractmethod
    def close(self) -> None:
        """Release the store; calling it twice is harmless."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
