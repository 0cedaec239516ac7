"""Prometheus metrics for /metrics, collected from the live pools at scrape time.

A custom collector reads the `Server` objects when Prometheus scrapes instead of mirroring every
counter into prometheus_client metric objects on the data path: the counters already exist (the
supervisor sums the workers' reports into them), so a scrape costs a walk over the servers and
the proxy pays nothing per connection.

Each `MetricsRegistry` has its own `CollectorRegistry`, never the process-global one, so tests
and reloads can build as many as they like without "duplicated timeseries" errors. Other parts
(listeners, later tiers) add their own collectors with `add_collector`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from steelyard.core.backend import AdminState, Pool
from steelyard.http.stats import CLASSES, HttpStats

# generate_latest writes the 0.0.4 text format; say so, whatever the library's newest type is.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

SERVER_LABELS = ["pool", "server"]


class PoolCollector(Collector):
    """Per-server and per-pool metrics of the pools `get_pools()` returns at scrape time.

    `get_pools` is called on every scrape so a reload (which replaces the pools dict) needs no
    re-registration.
    """

    def __init__(self, get_pools: Callable[[], dict[str, Pool]]) -> None:
        self.get_pools = get_pools

    def describe(self) -> list[Metric]:
        # Without describe() the registry would call collect() at registration; the names are
        # fixed, so an empty family list is enough for it and avoids touching the pools early.
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "steelyard_server_up",
            "1 when the server passes its health checks and is not passively ejected.",
            labels=SERVER_LABELS,
        )
        admin = GaugeMetricFamily(
            "steelyard_server_admin_state",
            "Operator-set admin state: 1 for the current state (ready, drain, maint), else 0.",
            labels=[*SERVER_LABELS, "state"],
        )
        weight = GaugeMetricFamily(
            "steelyard_server_weight",
            "Effective weight: runtime override or configured weight, times the slow-start ramp.",
            labels=SERVER_LABELS,
        )
        active = GaugeMetricFamily(
            "steelyard_server_active_connections",
            "Connections to the server open now.",
            labels=SERVER_LABELS,
        )
        total = CounterMetricFamily(
            "steelyard_server_connections",
            "Connections sent to the server.",
            labels=SERVER_LABELS,
        )
        failures = CounterMetricFamily(
            "steelyard_server_connect_failures",
            "Failed connection attempts to the server.",
            labels=SERVER_LABELS,
        )
        bytes_in = CounterMetricFamily(
            "steelyard_server_bytes_in",
            "Bytes relayed from clients to the server.",
            labels=SERVER_LABELS,
        )
        bytes_out = CounterMetricFamily(
            "steelyard_server_bytes_out",
            "Bytes relayed from the server to clients.",
            labels=SERVER_LABELS,
        )
        flips = CounterMetricFamily(
            "steelyard_server_health_flips",
            "Health state changes (up to down or down to up) decided by the checks.",
            labels=SERVER_LABELS,
        )
        ejected = GaugeMetricFamily(
            "steelyard_server_ejected",
            "1 while the server is passively ejected after consecutive failures.",
            labels=SERVER_LABELS,
        )
        pool_servers = GaugeMetricFamily(
            "steelyard_pool_servers",
            "Servers configured in the pool.",
            labels=["pool"],
        )
        pool_usable = GaugeMetricFamily(
            "steelyard_pool_servers_usable",
            "Servers that may take new connections: ready, up and with a weight above 0.",
            labels=["pool"],
        )
        # list(): the supervisor may swap pools between scrapes; take one consistent view.
        for name, pool in list(self.get_pools().items()):
            servers = list(pool.servers)
            for s in servers:
                labels = [name, s.address]
                up.add_metric(labels, 1.0 if s.up else 0.0)
                for state in AdminState:
                    admin.add_metric([*labels, state.value], 1.0 if s.admin is state else 0.0)
                weight.add_metric(labels, s.effective_weight)
                active.add_metric(labels, s.active)
                total.add_metric(labels, s.total)
                failures.add_metric(labels, s.failures)
                bytes_in.add_metric(labels, s.bytes_in)
                bytes_out.add_metric(labels, s.bytes_out)
                flips.add_metric(labels, s.health_flips)
                ejected.add_metric(labels, 1.0 if s.ejected else 0.0)
            pool_servers.add_metric([name], len(servers))
            pool_usable.add_metric([name], sum(1 for s in servers if s.usable))
        yield from (
            up,
            admin,
            weight,
            active,
            total,
            failures,
            bytes_in,
            bytes_out,
            flips,
            ejected,
            pool_servers,
            pool_usable,
        )


class HttpCollector(Collector):
    """HTTP requests per listener, route and server, from the supervisor's merged counters."""

    def __init__(self, stats: HttpStats) -> None:
        self.stats = stats

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["listener", "route", "pool", "server"]
        requests = CounterMetricFamily(
            "steelyard_http_requests",
            "HTTP requests answered, by status class (the proxy's own answers have server -).",
            labels=[*labels, "code"],
        )
        retries = CounterMetricFamily(
            "steelyard_http_retries",
            "Requests tried again on another server after this server failed them.",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "steelyard_http_request_duration_seconds",
            "Time from a request's head to the end of its answer.",
            labels=labels,
        )
        for key, row in list(self.stats.rows.items()):
            values = list(key)
            for name, n in zip(CLASSES, row.classes, strict=True):
                if n:
                    requests.add_metric([*values, name], n)
            retries.add_metric(values, row.retries)
            latency.add_metric(values, row.cumulative(), row.sum)
        yield from (requests, retries, latency)


class MysqlCollector(Collector):
    """The MySQL listeners, from the same view as GET /api/mysql (`get_listeners()` returns its
    `listeners`), so the API and /metrics never disagree."""

    def __init__(self, get_listeners: Callable[[], list[dict[str, Any]]]) -> None:
        self.get_listeners = get_listeners

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily(
            "steelyard_mysql_sessions", "Client sessions open now.", labels=["listener"]
        )
        commands = CounterMetricFamily(
            "steelyard_mysql_commands",
            "Commands run on a server, by where they were routed (primary or replica).",
            labels=["listener", "route"],
        )
        errors = CounterMetricFamily(
            "steelyard_mysql_errors",
            "Errors answered: a server's ERR (server) or the proxy's own (proxy).",
            labels=["listener", "source"],
        )
        refused = CounterMetricFamily(
            "steelyard_mysql_refused",
            "Logins refused and connections closed for bad input.",
            labels=["listener"],
        )
        waits = CounterMetricFamily(
            "steelyard_mysql_pool_waits",
            "Commands that waited for a backend connection (a login, a sync, a causal read).",
            labels=["listener"],
        )
        backend = GaugeMetricFamily(
            "steelyard_mysql_backend_connections",
            "Connections to a server in the listener's pools: idle, or lent to a session.",
            labels=["listener", "server", "state"],
        )
        lag = GaugeMetricFamily(
            "steelyard_mysql_replication_lag_seconds",
            "Seconds_Behind_Master at the last health check (where the check reads it).",
            labels=["pool", "server"],
        )
        lags: dict[tuple[str, str], int] = {}
        for lst in self.get_listeners():
            name, c = lst["listen"], lst["counters"]
            sessions.add_metric([name], lst["sessions"])
            for route in ("primary", "replica"):
                commands.add_metric([name, route], c[route])
            errors.add_metric([name, "server"], c["server_errors"])
            errors.add_metric([name, "proxy"], c["proxy_errors"])
            refused.add_metric([name], c["refused"])
            waits.add_metric([name], c["waits"])
            seen: set[str] = set()  # a server in both pools of a listener is counted once
            for s in lst["servers"]:
                if s["address"] not in seen:
                    seen.add(s["address"])
                    backend.add_metric([name, s["address"], "idle"], s["idle"])
                    backend.add_metric([name, s["address"], "busy"], s["busy"])
                if s["lag"] is not None:
                    lags[(s["pool"], s["address"])] = s["lag"]
        for (pool, server), seconds in lags.items():
            lag.add_metric([pool, server], seconds)
        yield from (sessions, commands, errors, refused, waits, backend, lag)


class MetricsRegistry:
    """A private CollectorRegistry plus rendering for the /metrics endpoint."""

    def __init__(self, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process:
            # process_cpu_seconds_total, process_resident_memory_bytes, ...: what every
            # Prometheus exporter offers, here for the supervisor process.
            ProcessCollector(registry=self.registry)

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def remove_collector(self, collector: Collector) -> None:
        self.registry.unregister(collector)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE


__all__ = ["CONTENT_TYPE", "HttpCollector", "MetricsRegistry", "MysqlCollector", "PoolCollector"]
