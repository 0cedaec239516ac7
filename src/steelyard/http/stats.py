"""Per route and server request counters, sans-IO: status classes, retries, a latency histogram.

Workers count into an `HttpStats` and send what changed once a second (`drain`); the supervisor
merges the deltas into its own `HttpStats` (`merge`), which /metrics and /api/pools read. A row
is keyed by (listener, route, pool, server); requests answered by the proxy itself (no route,
bad requests, local answers) have pool and server "-".
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# Seconds; Prometheus' default buckets, which suit request latencies from a millisecond up.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

Key = tuple[str, str, str, str]  # listener, route, pool, server


class Row:
    __slots__ = ("buckets", "classes", "count", "retries", "sum")

    def __init__(self) -> None:
        self.classes = [0, 0, 0, 0, 0]
        self.retries = 0
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def to_list(self) -> list[Any]:
        return [self.classes, self.retries, self.buckets, self.sum, self.count]

    def add_list(self, data: list[Any]) -> None:
        classes, retries, buckets, total, count = data
        self.classes = [a + b for a, b in zip(self.classes, classes, strict=True)]
        self.retries += retries
        self.buckets = [a + b for a, b in zip(self.buckets, buckets, strict=True)]
        self.sum += total
        self.count += count

    def cumulative(self) -> list[tuple[str, int]]:
        """Histogram buckets as Prometheus wants them: (upper bound, count at or below)."""
        out, running = [], 0
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], self.buckets, strict=True):
            running += n
            out.append((bound, running))
        return out


class HttpStats:
    def __init__(self) -> None:
        self.rows: dict[Key, Row] = {}

    def _row(self, key: Key) -> Row:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row()
        return row

    def observe(self, key: Key, status: int, seconds: float) -> None:
        row = self._row(key)
        cls = status // 100 - 1
        if 0 <= cls < 5:
            row.classes[cls] += 1
        row.buckets[bisect_left(BUCKETS, seconds)] += 1
        row.sum += seconds
        row.count += 1

    def retried(self, key: Key) -> None:
        self._row(key).retries += 1

    def drain(self) -> list[list[Any]]:
        """Rows counted since the last drain, as JSON-ready lists; the counters restart."""
        out = [[*key, row.to_list()] for key, row in self.rows.items()]
        self.rows = {}
        return out

    def merge(self, rows: list[list[Any]]) -> None:
        for listener, route, pool, server, data in rows:
            self._row((listener, route, pool, server)).add_list(data)

    def by_server(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(pool, server) -> requests by class, retries, count and mean latency: /api/pools."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for (_, _, pool, server), row in self.rows.items():
            if pool == "-":
                continue
            view = out.setdefault(
                (pool, server),
                {"requests": dict.fromkeys(CLASSES, 0), "retries": 0, "count": 0, "sum": 0.0},
            )
            for name, n in zip(CLASSES, row.classes, strict=True):
                view["requests"][name] += n
            view["retries"] += row.retries
            view["count"] += row.count
            view["sum"] += row.sum
        for view in out.values():
            count = view.pop("count")
            total = view.pop("sum")
            view["mean_latency"] = round(total / count, 6) if count else None
        return out
