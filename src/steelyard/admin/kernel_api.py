"""The kernel view's shape (served by admin/views.py) and its metrics: the nftables virtual
services on this node.

  GET /api/kernel -> {"table", "applies", "errors", "ruleset",
                      "services": [{address, protocol, pool, scheduler, persistence_timeout,
                                    method, quorum, quorum_lost,
                                    servers: [{address, weight, active, sorry,
                                               connections, packets, bytes}]}]}

`connections` counts the connections scheduled to a server, `packets` and `bytes` what it
forwarded both ways (the table's counters; they survive updates, not a restart). 404 without
`virtual_services:`.

Metrics (the counters as last read, every few seconds): `steelyard_kernel_server_active`,
`steelyard_kernel_connections_total`, `_packets_total`, `_bytes_total`, by service, protocol
and server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class KernelCollector(Collector):
    def __init__(self, get_rows: Callable[[], list[dict[str, Any]]]) -> None:
        self.get_rows = get_rows

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["service", "protocol", "server"]
        active = GaugeMetricFamily(
            "steelyard_kernel_server_active",
            "1 while the server gets new connections of the virtual service.", labels=labels,
        )  # fmt: skip
        conns = CounterMetricFamily(
            "steelyard_kernel_connections", "Connections scheduled to the server.", labels=labels
        )
        packets = CounterMetricFamily(
            "steelyard_kernel_packets", "Packets forwarded, both ways.", labels=labels
        )
        size = CounterMetricFamily(
            "steelyard_kernel_bytes", "Bytes forwarded, both ways.", labels=labels
        )
        for row in self.get_rows():
            key = [row["service"], row["protocol"], row["address"]]
            active.add_metric(key, 1.0 if row["active"] else 0.0)
            conns.add_metric(key, row["connections"])
            packets.add_metric(key, row["packets"])
            size.add_metric(key, row["bytes"])
        yield from (active, conns, packets, size)
