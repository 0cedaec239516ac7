"""The VRRP view's shape (served by admin/views.py) and its metrics: each virtual router's
state on this node.

  GET /api/vrrp -> {"instances": [{name, interface, vrid, state, priority, address, master,
                                   virtual_ips, sent, received, send_errors, dropped}, ...]}

`dropped` counts adverts by the reason they were dropped (ttl, checksum, length, version, vrid,
peer, ...). 404 without a `vrrp:` section.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

STATES = ("INIT", "BACKUP", "MASTER", "FAULT")


class VrrpCollector(Collector):
    """The instances, from the same view as GET /api/vrrp."""

    def __init__(self, get_instances: Callable[[], list[dict[str, Any]]]) -> None:
        self.get_instances = get_instances

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["instance", "vrid"]
        state = GaugeMetricFamily(
            "steelyard_vrrp_state", "1 for the instance's current state, else 0.",
            labels=[*labels, "state"],
        )  # fmt: skip
        priority = GaugeMetricFamily(
            "steelyard_vrrp_priority", "Effective priority (tracking included).", labels=labels
        )
        sent = CounterMetricFamily("steelyard_vrrp_adverts_sent", "Adverts sent.", labels=labels)
        received = CounterMetricFamily(
            "steelyard_vrrp_adverts_received", "Adverts accepted for this VRID.", labels=labels
        )
        dropped = CounterMetricFamily(
            "steelyard_vrrp_adverts_dropped", "Packets dropped, by reason.",
            labels=[*labels, "reason"],
        )  # fmt: skip
        for inst in self.get_instances():
            key = [inst["name"], str(inst["vrid"])]
            for s in STATES:
                state.add_metric([*key, s], 1.0 if inst["state"] == s else 0.0)
            priority.add_metric(key, inst["priority"])
            sent.add_metric(key, inst["sent"])
            received.add_metric(key, inst["received"])
            for reason, n in sorted(inst["dropped"].items()):
                dropped.add_metric([*key, reason], n)
        yield from (state, priority, sent, received, dropped)
