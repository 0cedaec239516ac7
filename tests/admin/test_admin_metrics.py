"""Prometheus metrics: every per-server and per-pool sample with its labels and value."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from steelyard.admin.metrics import MetricsRegistry, PoolCollector
from steelyard.core.backend import AdminState, Pool, Server


def scrape(reg: MetricsRegistry) -> dict[tuple[str, frozenset], float]:
    body, content_type = reg.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def types(reg: MetricsRegistry) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(reg.render()[0].decode())}


def lab(**labels: str) -> frozenset:
    return frozenset(labels.items())


def make_pool() -> Pool:
    a = Server("127.0.0.1:8081", weight=5)
    b = Server("[::1]:80", weight=2)
    a.active, a.total, a.failures = 3, 40, 2
    a.bytes_in, a.bytes_out, a.health_flips = 1000, 250000, 4
    b.healthy = False
    b.admin = AdminState.DRAIN
    b.ejected = True
    b.weight_override = 7
    return Pool("web", [a, b])


def test_server_and_pool_samples() -> None:
    pool = make_pool()
    reg = MetricsRegistry(process=False)
    reg.add_collector(PoolCollector(lambda: {"web": pool}))
    got = scrape(reg)
    a = lab(pool="web", server="127.0.0.1:8081")
    b = lab(pool="web", server="[::1]:80")
    assert got[("steelyard_server_up", a)] == 1
    assert got[("steelyard_server_up", b)] == 0
    assert got[("steelyard_server_weight", a)] == 5
    assert got[("steelyard_server_weight", b)] == 7
    assert got[("steelyard_server_active_connections", a)] == 3
    assert got[("steelyard_server_connections_total", a)] == 40
    assert got[("steelyard_server_connect_failures_total", a)] == 2
    assert got[("steelyard_server_bytes_in_total", a)] == 1000
    assert got[("steelyard_server_bytes_out_total", a)] == 250000
    assert got[("steelyard_server_health_flips_total", a)] == 4
    assert got[("steelyard_server_ejected", a)] == 0
    assert got[("steelyard_server_ejected", b)] == 1
    for state, want_a, want_b in (("ready", 1, 0), ("drain", 0, 1), ("maint", 0, 0)):
        assert got[("steelyard_server_admin_state", a | {("state", state)})] == want_a
        assert got[("steelyard_server_admin_state", b | {("state", state)})] == want_b
    assert got[("steelyard_pool_servers", lab(pool="web"))] == 2
    assert got[("steelyard_pool_servers_usable", lab(pool="web"))] == 1

    t = types(reg)
    for name in ("connections", "connect_failures", "bytes_in", "bytes_out", "health_flips"):
        assert t[f"steelyard_server_{name}"] == "counter"
    for name in ("up", "weight", "active_connections", "ejected", "admin_state"):
        assert t[f"steelyard_server_{name}"] == "gauge"


def test_scrape_reads_live_state_and_swapped_pools() -> None:
    pools = {"web": make_pool()}
    reg = MetricsRegistry(process=False)
    reg.add_collector(PoolCollector(lambda: pools))
    a = lab(pool="web", server="127.0.0.1:8081")
    assert scrape(reg)[("steelyard_server_connections_total", a)] == 40
    pools["web"].servers[0].total += 1
    assert scrape(reg)[("steelyard_server_connections_total", a)] == 41
    # a reload replaces the dict's contents; nothing re-registers
    pools.clear()
    pools["api"] = Pool("api", [Server("127.0.0.1:9000")])
    got = scrape(reg)
    assert ("steelyard_server_up", a) not in got
    assert got[("steelyard_server_up", lab(pool="api", server="127.0.0.1:9000"))] == 1


def test_extra_collectors_and_private_registries() -> None:
    class Listeners:
        def collect(self):
            g = GaugeMetricFamily("steelyard_listener_queue", "queued clients", labels=["name"])
            g.add_metric(["front"], 3)
            yield g

    pool = make_pool()
    # Two registries side by side: neither touches the global one, so no duplicate errors.
    regs = [MetricsRegistry(), MetricsRegistry()]
    for reg in regs:
        reg.add_collector(PoolCollector(lambda: {"web": pool}))
        reg.add_collector(Listeners())
    got = scrape(regs[1])
    assert got[("steelyard_listener_queue", lab(name="front"))] == 3
    assert ("steelyard_pool_servers", lab(pool="web")) in got
    assert any(name == "process_cpu_seconds_total" for name, _ in got)


def test_empty_pools_render() -> None:
    reg = MetricsRegistry(process=False)
    reg.add_collector(PoolCollector(dict))
    body, _ = reg.render()
    assert b"# TYPE steelyard_server_up gauge" in body
    assert b"steelyard_server_up{" not in body
