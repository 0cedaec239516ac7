"""HealthMonitor end to end: real servers, real probes, flips acted on exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

from fixtures.health_servers import CannedServer, response
from steelyard.config.model import PoolConfig
from steelyard.core.backend import AdminState, Pool, Server
from steelyard.core.health.monitor import HealthMonitor

FAST = {"interval": "50ms", "timeout": "1s"}


def pool_of(name: str, addresses: list[str], **health: Any) -> tuple[Pool, PoolConfig]:
    pc = PoolConfig(
        servers=[{"address": a} for a in addresses],
        health=health or None,
    )
    return Pool(name, [Server(a) for a in addresses]), pc


class Flips:
    """on_change recorder: every call, and an event per (server, verdict) to wait on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        self.hooks: dict[tuple[str, bool], Any] = {}
        self._events: dict[tuple[str, bool], asyncio.Event] = {}

    def event(self, address: str, up: bool) -> asyncio.Event:
        return self._events.setdefault((address, up), asyncio.Event())

    def __call__(self, pool: str, server: Server) -> None:
        self.calls.append((pool, server.address, server.healthy))
        hook = self.hooks.get((server.address, server.healthy))
        if hook is not None:
            hook()
        self.event(server.address, server.healthy).set()

    async def wait(self, address: str, up: bool, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.event(address, up).wait(), timeout)


async def test_flips_down_after_fall_and_up_after_rise(canned, log_lines) -> None:
    srv: CannedServer = await canned(response(200))
    pools = {"web": pool_of("web", [srv.address], kind="http", rise=2, fall=3, **FAST)}
    server = pools["web"][0].servers[0]
    flips = Flips()
    seen: dict[str, dict[int, int]] = {}

    def on_down() -> None:
        # Runs right after the probe that caused the flip and before the next one starts,
        # so the server-side counts are exactly the probes that led to it.
        seen["down"] = dict(srv.by_status)
        srv.response = response(200)

    def on_up() -> None:
        seen["up"] = dict(srv.by_status)

    flips.hooks = {(srv.address, False): on_down, (srv.address, True): on_up}
    monitor = HealthMonitor(pools, on_change=flips)
    monitor.start()
    try:
        await srv.wait_for(lambda: srv.by_status.get(200, 0) >= 2)
        assert server.healthy and flips.calls == []
        ok_before = srv.by_status[200]
        srv.response = response(503)
        await flips.wait(srv.address, up=False)
        assert not server.healthy
        assert seen["down"] == {200: ok_before, 503: 3}
        [line] = log_lines("health_flip")
        assert "pool=web" in line and f"server={srv.address}" in line
        assert "state=down" in line and "checks=3" in line
        assert 'reason="status 503 not in 200-399"' in line
        assert "level=warn" in line

        await flips.wait(srv.address, up=True)
        assert server.healthy
        assert seen["up"] == {200: ok_before + 2, 503: 3}
        _, up = log_lines("health_flip")
        assert "state=up" in up and "checks=2" in up and 'reason="status 200"' in up
        assert flips.calls == [("web", srv.address, False), ("web", srv.address, True)]
    finally:
        await monitor.stop()


async def test_tcp_probe_marks_a_refusing_server_down(closed_port: int, log_lines) -> None:
    address = f"127.0.0.1:{closed_port}"
    pools = {"db": pool_of("db", [address], kind="tcp", rise=1, fall=2, **FAST)}
    flips = Flips()
    monitor = HealthMonitor(pools, on_change=flips)
    monitor.start()
    try:
        await flips.wait(address, up=False)
        [line] = log_lines("health_flip")
        assert 'reason="connection refused"' in line and "checks=2" in line
        st = monitor.status()["db"][address]
        assert st["up"] is False and st["check"] == "tcp"
        assert st["last_detail"] == "connection refused" and st["consecutive_fail"] >= 2
    finally:
        await monitor.stop()


async def test_maint_servers_are_not_probed_and_keep_their_verdict(canned) -> None:
    probed: CannedServer = await canned()
    resting: CannedServer = await canned()
    pools = {"web": pool_of("web", [probed.address, resting.address], kind="tcp", rise=2, **FAST)}
    maint = pools["web"][0].servers[1]
    maint.admin = AdminState.MAINT
    maint.healthy = False  # its last verdict, e.g. restored from the store
    flips = Flips()
    seen: list[int] = []
    flips.hooks = {(resting.address, True): lambda: seen.append(resting.connections)}
    monitor = HealthMonitor(pools, on_change=flips)
    monitor.start()
    try:
        # Five intervals of the other server: the maint server's first slot has long passed.
        await probed.wait_for(lambda: probed.connections >= 5)
        assert resting.connections == 0
        assert not maint.healthy and flips.calls == []
        assert monitor.status()["web"][resting.address]["paused"] is True

        maint.admin = AdminState.READY
        await flips.wait(resting.address, up=True)
        assert seen == [2]  # rise=2 from the kept DOWN verdict
        assert flips.calls == [("web", resting.address, True)]
    finally:
        await monitor.stop()


async def test_pools_without_active_checks_get_no_probes(canned) -> None:
    a: CannedServer = await canned()
    b: CannedServer = await canned()
    checked: CannedServer = await canned()
    pools = {
        "plain": pool_of("plain", [a.address]),
        "off": pool_of("off", [b.address], kind="none"),
        "on": pool_of("on", [checked.address], kind="tcp", **FAST),
    }
    monitor = HealthMonitor(pools, on_change=Flips())
    monitor.start()
    try:
        await checked.wait_for(lambda: checked.connections >= 3)
        assert a.connections == b.connections == 0
        status = monitor.status()
        assert status["plain"][a.address] == {"check": "none", "up": True}
        assert status["off"][b.address] == {"check": "none", "up": True}
        # The server counts a connection before the monitor has recorded that probe.
        assert status["on"][checked.address]["checks"] >= 2
    finally:
        await monitor.stop()


async def test_update_keeps_state_and_follows_membership(canned, log_lines) -> None:
    kept: CannedServer = await canned(response(503))
    added: CannedServer = await canned()
    web, web_cfg = pool_of("web", [kept.address], kind="http", rise=3, fall=1, **FAST)
    flips = Flips()
    monitor = HealthMonitor({"web": (web, web_cfg)}, on_change=flips)
    monitor.start()
    try:
        await flips.wait(kept.address, up=False)
        server = web.servers[0]

        # Reload: same server (same object, as runtime/pools.py keeps it), new interval, and a
        # new server. The DOWN verdict carries over; the new server gets probed.
        _, cfg2 = pool_of(
            "web", [kept.address, added.address], kind="http", rise=3, fall=1, interval="60ms"
        )
        monitor.update({"web": (Pool("web", [server, Server(added.address)]), cfg2)})
        assert not server.healthy
        assert monitor.state_of("web", kept.address).up is False
        await added.wait_for(lambda: added.connections >= 1)

        # Reload that turns checks off: the DOWN server must be marked healthy again.
        _, cfg3 = pool_of("web", [kept.address])
        monitor.update({"web": (Pool("web", [server]), cfg3)})
        assert server.healthy
        assert monitor.state_of("web", kept.address) is None
        assert flips.calls[-1] == ("web", kept.address, True)
        assert 'reason="active checks disabled"' in log_lines("health_flip")[-1]
    finally:
        await monitor.stop()


async def test_stop_ends_every_probe(canned) -> None:
    srv: CannedServer = await canned(mode="silent")
    pools = {"web": pool_of("web", [srv.address], kind="http", interval="50ms", timeout="10s")}
    monitor = HealthMonitor(pools, spread=False)
    monitor.start()
    await srv.wait_for(lambda: srv.connections == 1)  # a probe is in flight, waiting
    tasks = [e.task for e in monitor._entries.values()]
    await monitor.stop()
    assert all(t is not None and t.done() for t in tasks)


async def test_a_failing_callback_does_not_stop_probing(closed_port: int, log_lines) -> None:
    address = f"127.0.0.1:{closed_port}"
    pools = {"web": pool_of("web", [address], kind="tcp", rise=1, fall=1, **FAST)}
    checks = asyncio.Queue()

    def broken(pool: str, server: Server) -> None:
        raise RuntimeError("push failed")

    monitor = HealthMonitor(
        pools, on_change=broken, on_check=lambda p, s, r: checks.put_nowait(r), spread=False
    )
    monitor.start()
    try:
        for _ in range(3):
            r = await asyncio.wait_for(checks.get(), 5)
            assert not r.ok
        assert len(log_lines("health_callback_error")) == 1
        assert not pools["web"][0].servers[0].healthy
    finally:
        await monitor.stop()
