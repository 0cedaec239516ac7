"""What an instance tracks: interfaces (their operational state), scripts (their exit status,
with rise/fall) and pools (up while one of their servers is usable, by the shared health
checks), each either forcing FAULT while down (weight 0) or moving the priority by its weight,
as keepalived's `track_interface` and `track_script` do.

`Tracker.verdict()` is the pure part: from the current states, the faults and the priority
change. `run()` polls them on the event loop and calls back when the verdict changes.

A script runs in a process group of its own and is killed with every child it started when it
runs past its `timeout` (a failed run) or when the tracker stops: a script whose child holds
its output or sleeps on does not keep running beside the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from steelyard.config.units import format_duration
from steelyard.config.vrrp_model import TrackConfig, TrackScript
from steelyard.core.programs import wait_or_kill
from steelyard.log import log

OnChange = Callable[[set[str], int], None]  # faults, priority change
PoolUp = Callable[[str], bool]  # whether a pool has a usable server (the supervisor knows)


def interface_up(name: str) -> bool:
    """Administratively up and not reported down (dummy and tun devices say "unknown")."""
    base = Path("/sys/class/net") / name
    try:
        flags = int((base / "flags").read_text(), 16)
        state = (base / "operstate").read_text().strip()
    except (OSError, ValueError):
        return False  # gone
    return bool(flags & 0x1) and state in ("up", "unknown")


def effect(weight: int, up: bool) -> tuple[bool, int]:
    """(forces FAULT, priority change) of one tracked object."""
    if weight == 0:
        return (not up, 0)
    if weight > 0:
        return (False, weight if up else 0)
    return (False, weight if not up else 0)


class ScriptState:
    def __init__(self, cfg: TrackScript) -> None:
        self.cfg = cfg
        self.up = True  # until the first runs say otherwise (fall failures in a row)
        self.ok_streak = 0
        self.fail_streak = 0
        self.timed_out = False  # the last run was killed at the timeout (logged once a streak)

    def result(self, ok: bool) -> None:
        if ok:
            self.ok_streak += 1
            self.fail_streak = 0
            if not self.up and self.ok_streak >= self.cfg.rise:
                self.up = True
        else:
            self.fail_streak += 1
            self.ok_streak = 0
            if self.up and self.fail_streak >= self.cfg.fall:
                self.up = False


class Tracker:
    def __init__(
        self, cfg: TrackConfig, instance: str, on_change: OnChange,
        pool_up: PoolUp = lambda name: True,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.instance = instance
        self.on_change = on_change
        self.pool_up = pool_up
        self.interfaces = {i.name: interface_up(i.name) for i in cfg.interfaces}
        self.pools = {p.name: pool_up(p.name) for p in cfg.pools}
        self.scripts = {s.name: ScriptState(s) for s in cfg.scripts}
        self.tasks: list[asyncio.Task[None]] = []
        self.last: tuple[frozenset[str], int] | None = None

    @property
    def empty(self) -> bool:
        return not self.cfg.interfaces and not self.cfg.scripts and not self.cfg.pools

    def verdict(self) -> tuple[set[str], int]:
        faults: set[str] = set()
        change = 0
        for i in self.cfg.interfaces:
            fault, delta = effect(i.weight, self.interfaces[i.name])
            if fault:
                faults.add(f"interface {i.name}")
            change += delta
        for s in self.cfg.scripts:
            fault, delta = effect(s.weight, self.scripts[s.name].up)
            if fault:
                faults.add(f"script {s.name}")
            change += delta
        for p in self.cfg.pools:
            fault, delta = effect(p.weight, self.pools[p.name])
            if fault:
                faults.add(f"pool {p.name}")
            change += delta
        return faults, change

    def changed(self) -> None:
        faults, change = self.verdict()
        key = (frozenset(faults), change)
        if key != self.last:
            self.last = key
            self.on_change(faults, change)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.cfg.interfaces or self.cfg.pools:
            self.tasks.append(loop.create_task(self._interfaces()))
        for state in self.scripts.values():
            self.tasks.append(loop.create_task(self._script(state)))

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _interfaces(self) -> None:
        while True:
            for name in self.interfaces:
                up = interface_up(name)
                if up != self.interfaces[name]:
                    log("vrrp_track", instance=self.instance, interface=name,
                        up=up)  # fmt: skip
                    self.interfaces[name] = up
            for name in self.pools:
                up = self.pool_up(name)
                if up != self.pools[name]:
                    log("vrrp_track", instance=self.instance, pool=name, up=up)
                    self.pools[name] = up
            self.changed()
            await asyncio.sleep(self.cfg.interval)

    async def _script(self, state: ScriptState) -> None:
        cfg = state.cfg
        while True:
            code = await run_script(cfg.command, cfg.timeout)
            if code is None and not state.timed_out:
                log("vrrp_track_timeout", "warn", instance=self.instance, script=cfg.name,
                    timeout=format_duration(cfg.timeout),
                    action="killed with its process group")  # fmt: skip
            state.timed_out = code is None
            was = state.up
            state.result(code == 0)
            if state.up != was:
                log("vrrp_track", instance=self.instance, script=cfg.name, up=state.up)
            self.changed()
            await asyncio.sleep(cfg.interval)


async def run_script(command: list[str], timeout: float) -> int | None:
    """The script's exit status (0: up), 127 when it cannot be started (as a shell says), None
    when it ran past `timeout` and was killed with its process group."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return 127
    return await wait_or_kill(proc, timeout)
