"""Active health checking for every pool, run once per process group by the supervisor.

One asyncio task per checked server probes it every `interval` (measured start to start, like
HAProxy's `inter`), feeds the result to the server's `HealthState`, and acts only on a flip:
it sets `server.healthy`, logs one `health_flip` line, and calls `on_change(pool, server)` so the
supervisor can rebuild its tables, push the verdict to the workers and record it. Workers never
probe, so N workers cost one probe per server per interval.

What is checked and when:
  * pools whose `health` is missing or `kind: none` get no task; their servers stay healthy.
  * the first probe of each task is delayed by a random fraction of the interval, as HAProxy's
    `spread-checks` does, so a reload or a start does not hit every server in the same instant.
  * servers in admin state `maint` are not probed (HAProxy stops checks in maintenance); their
    last verdict is kept and probing resumes when they leave maintenance.

`update(pools)` applies a reload: a server still in its pool at the same address keeps its
verdict and streaks; added servers get a task, removed ones lose theirs, and a server whose pool
stopped checking is marked healthy again (nothing else would ever bring it back).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from steelyard.config.model import HealthConfig, PoolConfig, parse_status_ranges
from steelyard.core.backend import AdminState, Pool, Server
from steelyard.core.health.http import check_http
from steelyard.core.health.misc import check_misc
from steelyard.core.health.mysql import check_mysql
from steelyard.core.health.state import CheckResult, HealthState
from steelyard.core.health.tcp import check_tcp
from steelyard.log import log
from steelyard.mysql.client import backend_context

OnChange = Callable[[str, Server], None]
OnCheck = Callable[[str, Server, CheckResult], None]
Checker = Callable[[], Awaitable[CheckResult]]
Pools = Mapping[str, tuple[Pool, PoolConfig]]


def active(hc: HealthConfig | None) -> bool:
    """True when this health config asks for active probes."""
    return hc is not None and hc.kind != "none"


def make_checker(server: Server, hc: HealthConfig) -> Checker:
    """The probe for one server under one health config, as a no-argument coroutine function."""
    host, port, timeout = server.host, server.port, hc.timeout
    if hc.kind == "http":
        expect = parse_status_ranges(hc.expect_status)
        path, method, header = hc.path, hc.method, hc.host

        def probe() -> Awaitable[CheckResult]:
            return check_http(host, port, timeout, path, method, header, expect)

        return probe
    if hc.kind == "tcp":

        def probe_tcp() -> Awaitable[CheckResult]:
            return check_tcp(host, port, timeout)

        return probe_tcp
    if hc.kind == "mysql":
        user, password, max_lag = hc.user or "", hc.password, hc.max_replication_lag
        tls = backend_context(hc.tls)  # built once, not per probe
        name = hc.tls.server_name if hc.tls is not None else None

        def probe_mysql() -> Awaitable[CheckResult]:
            return check_mysql(host, port, timeout, user, password, max_lag, tls, name)

        return probe_mysql
    if hc.kind == "misc":
        command, dynamic = list(hc.command or []), hc.misc_dynamic

        def probe_misc() -> Awaitable[CheckResult]:
            return check_misc(command, timeout, dynamic, host, port)

        return probe_misc
    raise ValueError(f"no active checker for health kind {hc.kind!r}")


@dataclass(eq=False)
class _Entry:
    pool: str
    server: Server
    config: HealthConfig
    state: HealthState
    checker: Checker
    last: CheckResult | None = None
    checks: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class HealthMonitor:
    """Active probes for all pools; see the module docstring."""

    def __init__(
        self,
        pools: Pools,
        on_change: OnChange | None = None,
        *,
        on_check: OnCheck | None = None,
        spread: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        """`on_check(pool, server, result)` is called after every probe (metrics, tests);
        `spread=False` starts every first probe at once (tests)."""
        self.on_change = on_change
        self.on_check = on_check
        self.spread = spread
        self._rng = rng or random.Random()
        self._pools: dict[str, Pool] = {}
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._started = False
        self._load(pools)

    # lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start one probe task per checked server (needs a running loop)."""
        if self._started:
            return
        self._started = True
        for entry in self._entries.values():
            self._spawn(entry)

    async def stop(self) -> None:
        """Cancel every probe and wait for the tasks to finish (sockets closed)."""
        self._started = False
        for entry in self._entries.values():
            self._retire(entry)
        tasks = list(self._retired)
        self._retired.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def update(self, pools: Pools) -> None:
        """Apply a reloaded config; see the module docstring for what is kept."""
        old = self._entries
        self._entries = {}
        self._load(pools, old)
        for key, entry in old.items():
            if self._entries.get(key) is entry:
                continue
            self._retire(entry)
            pool = self._pools.get(entry.pool)
            server = pool.server(entry.server.address) if pool is not None else None
            if server is not None and key not in self._entries and not server.healthy:
                # The pool stopped checking: without probes nothing would bring it back.
                server.healthy = True
                self._announce(entry.pool, server, "up", "active checks disabled", 0)

    # probes -------------------------------------------------------------------------------

    def _load(self, pools: Pools, old: dict[tuple[str, str], _Entry] | None = None) -> None:
        self._pools = {name: pool for name, (pool, _) in pools.items()}
        for name, (pool, pc) in pools.items():
            hc = pc.health
            if hc is None or not active(hc):
                continue
            for server in pool.servers:
                key = (name, server.address)
                prev = old.get(key) if old else None
                if prev is None:
                    entry = _Entry(
                        name,
                        server,
                        hc,
                        HealthState(hc.rise, hc.fall, initially_up=server.healthy),
                        make_checker(server, hc),
                    )
                    self._entries[key] = entry
                    if self._started:
                        self._spawn(entry)
                    continue
                # Same pool, same address: the verdict and streaks carry over.
                prev.state.reconfigure(hc.rise, hc.fall)
                if prev.server is not server:
                    server.healthy = prev.state.up
                    prev.server = server
                if prev.config != hc:
                    prev.config = hc
                    prev.checker = make_checker(server, hc)
                    self._retire(prev)
                    if self._started:
                        self._spawn(prev)
                self._entries[key] = prev

    def _spawn(self, entry: _Entry) -> None:
        entry.task = asyncio.get_running_loop().create_task(
            self._run(entry), name=f"health:{entry.pool}:{entry.server.address}"
        )

    def _retire(self, entry: _Entry) -> None:
        task, entry.task = entry.task, None
        if task is not None and not task.done():
            task.cancel()
            # Kept until stop() so a cancelled probe's socket is closed before we return.
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def _run(self, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()
        if self.spread:
            await asyncio.sleep(self._rng.uniform(0.0, entry.config.interval))
        while True:
            started = loop.time()
            if entry.server.admin is not AdminState.MAINT:
                try:
                    result = await entry.checker()
                except Exception as exc:  # checkers never raise; a bug must not stop probing
                    result = CheckResult(False, f"checker error: {exc!r}", loop.time() - started)
                self._apply(entry, result)
            delay = entry.config.interval - (loop.time() - started)
            await asyncio.sleep(max(0.0, delay))

    def _apply(self, entry: _Entry, result: CheckResult) -> None:
        entry.last = result
        entry.checks += 1
        state = entry.state
        flipped = state.record(result.ok, None if result.ok else result.detail)
        if self.on_check is not None:
            self._call(self.on_check, entry.pool, entry.server, result)
        if flipped:
            entry.server.healthy = state.up
            self._announce(
                entry.pool,
                entry.server,
                "up" if state.up else "down",
                result.detail,
                state.streak,
            )

    def _announce(self, pool: str, server: Server, verdict: str, reason: str, checks: int) -> None:
        log(
            "health_flip",
            "info" if verdict == "up" else "warn",
            pool=pool,
            server=server.address,
            state=verdict,
            reason=reason,
            checks=checks,
        )
        if self.on_change is not None:
            self._call(self.on_change, pool, server)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            # The verdict stands; one failing consumer must not stop the probes.
            log("health_callback_error", "error", callback=getattr(fn, "__name__", fn), cause=exc)

    # admin view ---------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, dict[str, Any]]]:
        """pool -> server address -> verdict, last probe and streaks, for the admin API.

        Servers of pools without active checks are listed with `check: "none"`.
        """
        now = time.monotonic()
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name, pool in self._pools.items():
            servers: dict[str, dict[str, Any]] = {}
            for server in pool.servers:
                entry = self._entries.get((name, server.address))
                if entry is None:
                    servers[server.address] = {"check": "none", "up": server.healthy}
                    continue
                state, last = entry.state, entry.last
                servers[server.address] = {
                    "check": entry.config.kind,
                    "up": state.up,
                    "paused": server.admin is AdminState.MAINT,
                    "checks": entry.checks,
                    "last_ok": None if last is None else last.ok,
                    "last_detail": None if last is None else last.detail,
                    "last_duration": None if last is None else round(last.duration, 6),
                    # what the last probe learnt (read_only, lag, ...); None if nothing
                    "last_facts": None if last is None else last.facts,
                    "last_error": state.last_error,
                    "consecutive_ok": state.consecutive_ok,
                    "consecutive_fail": state.consecutive_fail,
                    "rise": state.rise,
                    "fall": state.fall,
                    "flips": state.flips,
                    "since": round(now - state.last_change, 3),
                }
            out[name] = servers
        return out

    def state_of(self, pool: str, address: str) -> HealthState | None:
        """The state machine behind one server, or None when it is not actively checked."""
        entry = self._entries.get((pool, address))
        return None if entry is None else entry.state
