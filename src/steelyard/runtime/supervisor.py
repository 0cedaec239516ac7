"""The supervisor: owns the config, the store, the probes, the admin API and the workers.

It is the one place that decides runtime state (health verdicts, passive ejections, slow-start
ramps, operator changes) and pushes every change to each worker as a small message. Workers
report connect failures and counters back, and ask each other through it (a MySQL listener's
SHOW PROCESSLIST and KILL span its workers). SIGHUP reloads (a bad config is refused and the old
one keeps serving), SIGTERM/SIGINT drain and stop, and a worker that dies is restarted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from steelyard import log as logmod
from steelyard.admin.api import pool_view, start_admin
from steelyard.admin.kernel_api import KernelCollector
from steelyard.admin.metrics import HttpCollector, MetricsRegistry, MysqlCollector, PoolCollector
from steelyard.admin.vrrp_api import VrrpCollector
from steelyard.config.load import ConfigError, load_config
from steelyard.config.model import Config
from steelyard.config.vrrp_model import VrrpConfig
from steelyard.core.backend import (
    AdminState,
    Pool,
    Server,
    find_server,
    require_server,
    split_address,
)
from steelyard.core.counters import SLOTS, SharedCounters
from steelyard.core.health.monitor import HealthMonitor
from steelyard.core.health.passive import PassiveEjector
from steelyard.core.health.slowstart import SlowStart
from steelyard.core.health.state import CheckResult
from steelyard.core.store import open_store
from steelyard.core.store.server_state import restore, save_server
from steelyard.http.stats import HttpStats
from steelyard.kernel.services import KernelError, KernelServices
from steelyard.log import log
from steelyard.mysql.status import MysqlStats
from steelyard.redis.dashboard import Dashboard
from steelyard.runtime.fds import admin_connection_cap, raise_fd_limit
from steelyard.runtime.ipc import RELAY_TIMEOUT, Channel
from steelyard.runtime.names import listener_name
from steelyard.runtime.pools import build_pools
from steelyard.vrrp.group import SyncGroup
from steelyard.vrrp.instance import Instance, reconfigurable

TICK = 0.1  # passive-ejection expiry and slow-start ramp granularity
# A worker that has not acknowledged a Redis cluster change by then is fenced (killed and
# restarted with the current view): it must not go on routing by the old one.
BARRIER_TIMEOUT = 10.0


@dataclass
class WorkerHandle:
    index: int
    proc: asyncio.subprocess.Process
    channel: Channel
    ready: asyncio.Future[str | None]
    task: asyncio.Task[None] | None = None
    active: dict[tuple[str, str], int] = field(default_factory=dict)
    acks: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    # requests relayed to it for another worker, awaiting its answer
    answers: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(self, cfg: Config, config_path: str | None, config_text: str | None = None):
        self.cfg = cfg
        self.config_path = config_path
        self.loop = asyncio.get_running_loop()
        self.pools: dict[str, Pool] = {}
        self.workers: dict[int, WorkerHandle] = {}
        self.store = open_store(cfg.store)
        self.registry = MetricsRegistry()
        self.registry.add_collector(PoolCollector(lambda: self.pools))
        self.http_stats = HttpStats()
        self.registry.add_collector(HttpCollector(self.http_stats))
        self.mysql_stats = MysqlStats()
        self.registry.add_collector(MysqlCollector(self._mysql_listeners))
        self.registry.add_collector(VrrpCollector(self._vrrp_instances))
        self.registry.add_collector(
            KernelCollector(lambda: self.kernel.rows() if self.kernel is not None else [])
        )
        self.monitor: HealthMonitor | None = None
        self.passive = PassiveEjector()
        self.slowstart = SlowStart()
        self.admin: Any = None
        self.redis: Dashboard | None = None
        self.vrrp: list[Instance] = []  # the virtual routers running (started after workers)
        self.kernel: KernelServices | None = None  # nftables virtual services
        self.stopping = False
        self._stopped = asyncio.Event()
        self._ticker: asyncio.TimerHandle | None = None
        self._seq = 0  # messages the workers acknowledge (configs, cluster views, operator changes)
        self._reload_lock = asyncio.Lock()  # SIGHUPs in a burst apply one after another
        self._crashes: dict[int, int] = {}  # worker index -> crashes in a row (backoff)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Connection counts shared by the workers; one column per (pool, address), never reused.
        self.counters = SharedCounters.create()
        self._slots: dict[tuple[str, str], int] = {}
        self._rows = 1  # the highest worker index ever started + 1
        self.started = time.time()
        self.fd_limit = raise_fd_limit()

    # start / stop -----------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        self.pools = build_pools(cfg)
        applied = restore(self.store, self.pools)
        for pool in self.pools.values():
            pool.refresh()
        self.monitor = HealthMonitor(
            self._monitored(), on_change=self._on_health, on_check=self._on_check
        )
        self.monitor.start()
        if cfg.redis is not None:
            self.redis = Dashboard(cfg.redis, self.store, self.broadcast_redis)
        if cfg.admin.listen:
            try:
                self.admin = await self._start_admin(cfg)
            except OSError as exc:
                log("admin_listen_error", "error", listen=cfg.admin.listen, cause=str(exc))
                await self.stop()
                raise SystemExit(1) from None
        taken = probe_listeners([t.listen for t in listeners_of(cfg)])
        if taken:
            for problem in taken:
                log("listen_error", "error", cause=problem)
            await self.stop()
            raise SystemExit(1)
        self._rows = cfg.workers  # every worker must sum every row from its first config
        for i in range(cfg.workers):
            await self._spawn(i, first=True)
        errors = [await w.ready for w in self.workers.values()]
        if any(errors):
            await self.stop()
            raise SystemExit(1)
        for sig, handler in (
            (signal.SIGHUP, self.reload),
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
        ):
            self.loop.add_signal_handler(sig, handler)
        self._ticker = self.loop.call_later(TICK, self._tick)
        if self.redis is not None:
            self.redis.start()
        # the services first: a node that becomes master serves its VIPs at once
        if cfg.virtual_services and not await self._start_kernel(cfg):
            await self.stop()
            raise SystemExit(1)
        if cfg.vrrp is not None and not self._start_vrrp(cfg.vrrp):
            await self.stop()
            raise SystemExit(1)
        log(
            "ready",
            pid=os.getpid(),
            workers=cfg.workers,
            listeners=",".join(f"{name}@{listen}" for name, listen in named_listeners(cfg)) or None,
            admin=cfg.admin.listen,
            restored=applied or None,
        )

    def _start_vrrp(self, vrrp: VrrpConfig, only: set[str] | None = None) -> bool:
        """Start every instance (those named in `only`, with their whole sync groups); False
        (each failure logged, naming what is missing) when one cannot run: a node that cannot
        take part in VRRP must not pretend it does."""
        instances = {c.name: Instance(c, self.loop, self._pool_up) for c in vrrp.instances
                     if only is None or c.name in only}  # fmt: skip
        for group_cfg in vrrp.sync_groups:
            if not set(group_cfg.instances) <= instances.keys():
                continue  # a group left running as it was (reload)
            members = {name: instances[name] for name in group_cfg.instances}
            machines = {n: i.machine for n, i in members.items()}
            group = SyncGroup(group_cfg.name, machines, group_cfg.notify)
            for inst in members.values():
                inst.join(group, members)
        for inst in instances.values():
            inst_cfg = inst.cfg
            try:
                inst.start()
            except PermissionError as exc:
                log("vrrp_start_error", "error", instance=inst_cfg.name,
                    missing="CAP_NET_RAW and CAP_NET_ADMIN (run as root, or grant them)",
                    cause=str(exc))  # fmt: skip
                return False
            except OSError as exc:
                log("vrrp_start_error", "error", instance=inst_cfg.name,
                    interface=inst_cfg.interface, cause=str(exc))  # fmt: skip
                return False
            self.vrrp.append(inst)
        return True

    async def _reload_vrrp(self, old: VrrpConfig | None, new: VrrpConfig | None) -> None:
        """Instances whose config is the same keep running (and their state); changes of
        priority, preemption, notify, gratuitous ARP or tracking are applied in place; any other
        change restarts the instance (a master resigns first), and with it every instance of its
        sync group."""
        old_by = {c.name: c for c in old.instances} if old else {}
        new_by = {c.name: c for c in new.instances} if new else {}
        running = {inst.cfg.name: inst for inst in self.vrrp}
        differ = {n for n in old_by.keys() | new_by.keys() if old_by.get(n) != new_by.get(n)}
        changed = {n for n in differ if n not in running or n not in new_by or n not in old_by
                   or not reconfigurable(old_by[n], new_by[n])}  # fmt: skip
        if (old.sync_groups if old else []) != (new.sync_groups if new else []):
            changed = set(old_by) | set(new_by)
        for cfg in (old, new):
            for group in cfg.sync_groups if cfg else []:
                if changed & set(group.instances):
                    changed |= set(group.instances)
        in_place = differ - changed  # decided after the groups: a restarted one is not retuned
        if not changed and not in_place:
            return
        for name in in_place:
            await running[name].reconfigure(new_by[name])
        for name in changed & running.keys():
            await running[name].stop()
            self.vrrp.remove(running[name])
        if new is not None and changed & new_by.keys():
            self._start_vrrp(new, only=changed & new_by.keys())  # a refusal is logged

        def names(found: set[str]) -> str | None:
            return ",".join(sorted(found)) or None

        added, removed = new_by.keys() - old_by.keys(), old_by.keys() - new_by.keys()
        log("vrrp_reload", restarted=names(changed & old_by.keys() & new_by.keys()),
            added=names(added), removed=names(removed), in_place=names(in_place))  # fmt: skip

    async def _start_kernel(self, cfg: Config) -> bool:
        """Install the virtual services; False (logged, naming what is missing) when this node
        cannot."""
        self.kernel = KernelServices(cfg.virtual_services, lambda: self.pools)
        try:
            await self.kernel.start()
        except KernelError as exc:
            log("kernel_start_error", "error", cause=str(exc))
            self.kernel = None
            return False
        return True

    def _pool_up(self, name: str) -> bool:
        """A pool VRRP tracks is up while one of its servers is usable (health, admin state)."""
        pool = self.pools.get(name)
        return pool is not None and any(s.usable for s in pool.servers)

    def _monitored(self) -> dict[str, tuple[Pool, Any]]:
        return {name: (pool, self.cfg.pools[name]) for name, pool in self.pools.items()}

    def _background(self, coro: Any) -> None:
        # Keep a reference: the loop only holds weak ones, and a lost task is a lost reload.
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request_stop(self) -> None:
        if not self.stopping:
            self._background(self.stop())

    async def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        log("stopping", pid=os.getpid(), timeout=self.cfg.shutdown_timeout)
        for inst in self.vrrp:  # resign first: a backup takes the addresses after its skew time
            await inst.stop()
        self.vrrp.clear()
        if self.kernel is not None:
            await self.kernel.stop()
            self.kernel = None
        if self._ticker is not None:
            self._ticker.cancel()
        for w in self.workers.values():
            w.channel.send({"t": "stop", "timeout": self.cfg.shutdown_timeout})
        grace = self.cfg.shutdown_timeout + 5.0
        for w in list(self.workers.values()):
            try:
                await asyncio.wait_for(w.proc.wait(), grace)
            except TimeoutError:
                w.proc.kill()
                await w.proc.wait()
            if w.task is not None:
                await asyncio.gather(w.task, return_exceptions=True)
        if self.monitor is not None:
            await self.monitor.stop()
        if self.redis is not None:
            await self.redis.stop()
        if self.admin is not None:
            await self.admin.stop()
        self.store.close()
        self.counters.close()
        log("stopped", pid=os.getpid())
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    # workers ----------------------------------------------------------------------------

    async def _spawn(self, index: int, first: bool = False) -> WorkerHandle:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._rows = max(self._rows, index + 1)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "steelyard.runtime.worker",
            str(child.fileno()),
            str(self.counters.fd),
            str(index),
            pass_fds=(child.fileno(), self.counters.fd),
        )
        child.close()
        channel = await Channel.open(parent)
        handle = WorkerHandle(index, proc, channel, self.loop.create_future())
        self.workers[index] = handle
        channel.send(self._config_msg(first=True))
        handle.task = self.loop.create_task(self._serve_worker(handle, first))
        log("worker_start", index=index, pid=proc.pid)
        return handle

    def _config_msg(self, **extra: Any) -> dict[str, Any]:
        """The config with every server's state: a worker applies both before it listens."""
        states = [
            [name, s.address, s.state(), self._slot(name, s.address)]
            for name, pool in self.pools.items()
            for s in pool.servers
        ]
        extra.setdefault("rows", self._rows)
        if self.redis is not None:
            extra.setdefault("redis", self.redis.view())
        return {
            "t": "config",
            "config": self.cfg.model_dump(mode="json"),
            "states": states,
            **extra,
        }

    def _slot(self, pool: str, address: str) -> int:
        slot = self._slots.get((pool, address))
        if slot is None:
            slot = len(self._slots) if len(self._slots) < SLOTS else -1
            self._slots[(pool, address)] = slot
            if slot < 0:
                log("counters_full", "warn", pool=pool, server=address, counted="per worker")
        return slot

    @staticmethod
    def _state_msg(pool: str, server: Server) -> dict[str, Any]:
        return {"t": "state", "pool": pool, "server": server.address, "state": server.state()}

    async def _serve_worker(self, handle: WorkerHandle, first: bool) -> None:
        error: str | None = None
        while True:
            msg = await handle.channel.recv()
            if msg is None:
                break
            kind = msg.get("t")
            if kind == "stats":
                self._on_stats(handle, msg["servers"])
                if "http" in msg:
                    self.http_stats.merge(msg["http"])
                if "redis" in msg and self.redis is not None:
                    self.redis.proxy_stats(handle.index, msg["redis"])
                if "mysql" in msg:
                    self.mysql_stats.update(handle.index, msg["mysql"])
            elif kind == "result":
                self._on_result(msg)
            elif kind == "redis_script" and self.redis is not None:
                self.redis.scripts.reported(msg)
            elif kind == "applied":
                ack = handle.acks.pop(msg.get("seq"), None)
                if ack is not None and not ack.done():
                    ack.set_result(None)
            elif kind == "ask":
                self._background(self._relay(handle, msg))
            elif kind == "answer":
                answer = handle.answers.pop(msg.get("n", -1), None)
                if answer is not None and not answer.done():
                    answer.set_result(msg.get("a"))
            elif kind == "ready":
                if not handle.ready.done():
                    handle.ready.set_result(None)
            elif kind == "error":
                error = msg.get("message", "error")
                log("worker_error", "error", index=handle.index, cause=error)
        code = await handle.proc.wait()
        handle.channel.close()
        for ack in handle.acks.values():
            if not ack.done():
                ack.set_result(None)  # gone: its successor starts from the current state
        for answer in handle.answers.values():
            if not answer.done():
                answer.set_result(None)  # gone with the sessions it was asked about
        # Its connections are gone with it: stop counting them against max_conns.
        self.counters.clear_row(handle.index)
        self.mysql_stats.worker_gone(handle.index)
        if not handle.ready.done():
            handle.ready.set_result(error or f"worker exited with code {code}")
        for key in handle.active:
            handle.active[key] = 0
        self._recount_active()
        if self.stopping or self.workers.get(handle.index) is not handle:
            return
        log("worker_exit", "error", index=handle.index, pid=handle.proc.pid, code=code)
        if first and handle.ready.result() is not None:
            return
        # Back off on a crash loop (0.2 s doubling to 10 s); a worker that ran a while is forgiven.
        lived = time.monotonic() - handle.started
        crashes = 0 if lived > 30 else self._crashes.get(handle.index, 0)
        self._crashes[handle.index] = crashes + 1
        await asyncio.sleep(min(0.2 * 2**crashes, 10.0))
        if not self.stopping and self.workers.get(handle.index) is handle:
            await self._spawn(handle.index)

    def _on_stats(self, handle: WorkerHandle, rows: list[list[Any]]) -> None:
        for pool_name, address, active, total, failures, bytes_in, bytes_out in rows:
            server = find_server(self.pools, pool_name, address)
            if server is None:
                continue
            handle.active[(pool_name, address)] = active
            server.total += total
            server.failures += failures
            server.bytes_in += bytes_in
            server.bytes_out += bytes_out
        self._recount_active()

    def _recount_active(self) -> None:
        totals: dict[tuple[str, str], int] = {}
        for w in self.workers.values():
            for key, n in w.active.items():
                totals[key] = totals.get(key, 0) + n
        for name, pool in self.pools.items():
            for s in pool.servers:
                s.active = totals.get((name, s.address), 0)

    # state changes ----------------------------------------------------------------------

    def push(self, pool_name: str, server: Server) -> None:
        """Send a server's new state to every worker and rebuild our own tables."""
        self._refresh(pool_name)
        msg = self._state_msg(pool_name, server)
        for w in self.workers.values():
            w.channel.send(msg)

    async def push_confirmed(self, pool_name: str, server: Server) -> None:
        """`push`, returning once every worker has the state in force: an operator's change
        is in force for new connections when the API answers. A worker that does not confirm
        within BARRIER_TIMEOUT is logged, not waited for longer (a restarted one gets every
        state with its config)."""
        self._refresh(pool_name)
        for w, ack in self._send_acked(self._state_msg(pool_name, server)):
            try:
                await asyncio.wait_for(asyncio.shield(ack), BARRIER_TIMEOUT)
            except TimeoutError:
                cause = f"no acknowledgement of a state change in {BARRIER_TIMEOUT}s"
                log("worker_slow", "warn", index=w.index, pid=w.proc.pid, cause=cause)

    async def _relay(self, asker: WorkerHandle, msg: dict[str, Any]) -> None:
        """A worker's request to the others (the one q["worker"] names, else all of them):
        the answers that come within RELAY_TIMEOUT go back to it; a worker that does not answer
        in time is left out and logged."""
        q = msg.get("q") or {}
        index = q.get("worker")
        if index is not None:
            targets = [w for w in self.workers.values() if w.index == index and w is not asker]
        else:
            targets = [w for w in self.workers.values() if w is not asker]
        waits = []
        for w in targets:
            self._seq += 1
            answer = w.answers[self._seq] = self.loop.create_future()
            # past the deadline the worker drops it: a kill reported failed must not happen
            deadline = time.monotonic() + RELAY_TIMEOUT  # (one clock for every process)
            w.channel.send({"t": "query", "n": self._seq, "q": q, "until": deadline})
            waits.append((w, self._seq, answer))
        if waits:
            await asyncio.wait([answer for _, _, answer in waits], timeout=RELAY_TIMEOUT)
        answers = []
        for w, seq, answer in waits:
            if not answer.done():
                w.answers.pop(seq, None)
                log("worker_slow", "warn", index=w.index, pid=w.proc.pid,
                    cause=f"no answer to a {q.get('k')} request in {RELAY_TIMEOUT}s")  # fmt: skip
            elif answer.result() is not None:
                answers.append(answer.result())
        asker.channel.send({"t": "answer", "n": msg.get("n"), "a": answers})

    def _refresh(self, pool_name: str) -> None:
        self.pools[pool_name].refresh()
        if self.kernel is not None:
            self.kernel.changed()

    def _send_acked(self, msg: dict[str, Any]) -> list[tuple[WorkerHandle, asyncio.Future[None]]]:
        """Send `msg` to every worker with a sequence number each answers with "applied"."""
        waits = []
        for w in list(self.workers.values()):
            self._seq += 1
            ack = w.acks[self._seq] = self.loop.create_future()
            w.channel.send({**msg, "seq": self._seq})
            waits.append((w, ack))
        return waits

    def _on_health(self, pool_name: str, server: Server) -> None:
        server.health_flips += 1
        if server.up:
            self._begin_slow_start(pool_name, server)
        self.push(pool_name, server)

    def _on_check(self, pool_name: str, server: Server, result: CheckResult) -> None:
        """A `misc_dynamic` check's exit code sets the server's weight (keepalived's
        misc_dynamic); like a weight set with the admin API, it is a runtime override."""
        weight = (result.facts or {}).get("weight") if result.ok else None
        hc = self.cfg.pools[pool_name].health if pool_name in self.cfg.pools else None
        if weight is None or hc is None or not hc.misc_dynamic:
            return
        if server.weight_override != weight:
            log("health_weight", pool=pool_name, server=server.address, weight=weight,
                was=server.base_weight)  # fmt: skip
            server.weight_override = weight
            self.push(pool_name, server)

    def _begin_slow_start(self, pool_name: str, server: Server) -> None:
        duration = self.cfg.pools[pool_name].slow_start
        if duration > 0:
            self.slowstart.begin(pool_name, server, duration, time.monotonic())

    def _on_result(self, msg: dict[str, Any]) -> None:
        pc = self.cfg.pools.get(msg["pool"])
        if pc is None or pc.passive is None:
            return
        try:
            pool, server = require_server(self.pools, msg["pool"], msg["server"])
        except LookupError:
            return  # a report racing a reload that removed the server
        kind = msg.get("kind", "connect")
        now = time.monotonic()
        if self.passive.record(pool, pc.passive, server, bool(msg["ok"]), now, kind):
            self.push(pool.name, server)

    def _tick(self) -> None:
        now = time.monotonic()
        for pool_name, server in self.passive.expire(now):
            self._begin_slow_start(pool_name, server)
            self.push(pool_name, server)
        for pool_name, server in self.slowstart.tick(now):
            self.push(pool_name, server)
        self._ticker = self.loop.call_later(TICK, self._tick)

    # admin controller -------------------------------------------------------------------

    async def broadcast_redis(self, view: dict[str, Any]) -> None:
        """Push a Redis cluster view to every worker and wait until each has it in force."""
        for w, ack in self._send_acked({"t": "redis", "view": view}):
            try:
                await asyncio.wait_for(asyncio.shield(ack), BARRIER_TIMEOUT)
            except TimeoutError:
                log(
                    "redis_worker_fenced",
                    "error",
                    index=w.index,
                    pid=w.proc.pid,
                    cause=f"no acknowledgement of a cluster change in {BARRIER_TIMEOUT}s",
                )
                if w.proc.returncode is None:
                    w.proc.kill()

    def pools_view(self) -> dict[str, Any]:
        """Pools with each server's last check and passive record, for GET /api/pools."""
        checks = self.monitor.status() if self.monitor is not None else {}
        passive = self.passive.status(time.monotonic())
        http = self.http_stats.by_server()
        pools = []
        for pool in self.pools.values():
            view = pool_view(pool)
            for server in view["servers"]:
                server["check"] = checks.get(pool.name, {}).get(server["address"])
                server["passive"] = passive.get(pool.name, {}).get(server["address"])
                server["http"] = http.get((pool.name, server["address"]))
            pools.append(view)
        return {"pools": pools}

    async def set_server(
        self, pool_name: str, address: str, state: str | None, weight: int | None
    ) -> dict[str, Any]:
        pool, server = require_server(self.pools, pool_name, address)
        if state is not None:
            try:
                new_state = AdminState(state)
            except ValueError:
                raise ValueError(f"state must be ready, drain or maint, not {state!r}") from None
            was = server.admin
            server.admin = new_state
            if was is not AdminState.READY and new_state is AdminState.READY:
                self._begin_slow_start(pool_name, server)
        if weight is not None:
            server.weight_override = weight
        save_server(self.store, pool_name, server)
        await self.push_confirmed(pool_name, server)
        view = pool_view(pool)
        return next(s for s in view["servers"] if s["address"] == address)

    def vrrp_view(self) -> dict[str, Any]:
        """The virtual routers for GET /api/vrrp; LookupError without a vrrp: section."""
        if self.cfg.vrrp is None:
            raise LookupError("no vrrp: section in the config")
        return {"instances": self._vrrp_instances()}

    async def kernel_view(self) -> dict[str, Any]:
        """The virtual services for GET /api/kernel; LookupError without any."""
        if self.kernel is None:
            raise LookupError("no virtual_services: in the config")
        return await self.kernel.view()

    def _vrrp_instances(self) -> list[dict[str, Any]]:
        return [inst.view() for inst in self.vrrp]

    def mysql_view(self) -> dict[str, Any]:
        """The MySQL listeners for GET /api/mysql; LookupError without a mysql: section."""
        if self.cfg.mysql is None:
            raise LookupError("no mysql: section in the config")
        return {"listeners": self._mysql_listeners()}

    def _mysql_listeners(self) -> list[dict[str, Any]]:
        """Per listener: its pools, traffic summed over the workers, and each server of its
        primary and replicas pools with what the health checks learnt of it."""
        if self.cfg.mysql is None:
            return []
        checks = self.monitor.status() if self.monitor is not None else {}
        out = []
        for lst in self.cfg.mysql.listeners:
            totals = self.mysql_stats.listener(lst.listen)
            servers = []
            for pool_name, role in ((lst.primary, "primary"), (lst.replicas, "replica")):
                pool = self.pools.get(pool_name) if pool_name else None
                for s in pool.servers if pool is not None else ():
                    check = checks.get(pool_name, {}).get(s.address) or {}
                    facts = check.get("last_facts") or {}
                    opened, idle, logins = totals.servers.get(s.address, (0, 0, 0))
                    servers.append({
                        "address": s.address, "pool": pool_name, "role": role,
                        "read_only": facts.get("read_only"), "version": facts.get("version"),
                        "health": "up" if s.healthy else "down", "ejected": s.ejected,
                        "state": s.admin.value, "detail": check.get("last_detail"),
                        "lag": facts.get("lag"), "io_running": facts.get("io_running"),
                        "sql_running": facts.get("sql_running"),
                        "open": opened, "idle": idle, "busy": max(0, opened - idle),
                        "logins": logins,
                    })  # fmt: skip
            rates = {k: round(v, 2) for k, v in totals.rates.items()}
            rates["commands"] = round(totals.rates["primary"] + totals.rates["replica"], 2)
            out.append({
                "listen": lst.listen, "primary": lst.primary, "replicas": lst.replicas,
                "sessions": totals.sessions, "workers": totals.workers,
                "counters": totals.counters, "rates": rates, "servers": servers,
            })  # fmt: skip
        return out

    async def set_mysql_server(self, address: str, state: str) -> dict[str, Any]:
        """Take a server out of (offline: admin state drain) or back into (online: ready) every
        MySQL pool that holds it: no new command or connection goes to a drained server, and a
        session holding a connection there keeps it until its transaction ends."""
        admin = {"offline": "drain", "online": "ready"}.get(state)
        if admin is None:
            raise ValueError(f"state must be offline or online, not {state!r}")
        listeners = self.cfg.mysql.listeners if self.cfg.mysql is not None else []
        names = dict.fromkeys(
            name
            for lst in listeners
            for name in (lst.primary, lst.replicas)
            if name and name in self.pools and self.pools[name].server(address) is not None
        )
        if not names:
            raise LookupError(f"{address!r} is not a server of a mysql listener's pools")
        for name in names:
            await self.set_server(name, address, admin, None)
        rows = [
            {"listen": lst["listen"], **row}
            for lst in self._mysql_listeners()
            for row in lst["servers"]
            if row["address"] == address
        ]
        return {"address": address, "state": state, "servers": rows}

    def metrics(self) -> tuple[bytes, str]:
        return self.registry.render()

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "uptime": time.time() - self.started,
            "workers": [{"index": w.index, "pid": w.proc.pid} for w in self.workers.values()],
            "config": self.config_path,
        }

    # reload -----------------------------------------------------------------------------

    def reload(self) -> None:
        self._background(self._reload())

    async def _reload(self) -> None:
        async with self._reload_lock:
            await self._reload_locked()

    async def _reload_locked(self) -> None:
        if self.stopping:
            return
        if self.config_path is None:
            log("reload_skipped", cause="no config file (demo)")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for issue in exc.issues:
                log("reload_refused", "error", error=issue.format(exc.filename))
            log("reload_failed", "error", errors=len(exc.issues), kept="previous config")
            return
        old = self.cfg
        held = {t.listen for t in listeners_of(old)}
        taken = probe_listeners([t.listen for t in listeners_of(new) if t.listen not in held])
        if taken:
            for problem in taken:
                log("reload_refused", "error", error=problem)
            log("reload_failed", "error", errors=len(taken), kept="previous config")
            return
        if not await self._swap_admin(old, new):
            return
        changes = _describe_changes(old, new)
        self.cfg = new
        logmod.setup(new.log_format, new.log_level)
        self.pools = build_pools(new, self.pools)
        restore(self.store, self.pools)
        for pool in self.pools.values():
            pool.refresh()
        self.passive.prune(self.pools)
        self.slowstart.prune(self.pools)
        assert self.monitor is not None
        self.monitor.update(self._monitored())
        self._reload_redis(new)
        await self._reload_kernel(new)
        await self._reload_vrrp(old.vrrp, new.vrrp)
        self._rows = max(self._rows, new.workers)
        acks = [ack for _, ack in self._send_acked(self._config_msg())]
        await self._resize_workers(new.workers)
        # "reload" is logged once every worker runs the new config, so it means "done".
        _, late = await asyncio.wait(acks, timeout=10) if acks else (set(), set())
        log(
            "reload",
            config=self.config_path,
            changes=changes or "none",
            workers_late=len(late) or None,
        )

    async def _reload_kernel(self, new: Config) -> None:
        if self.kernel is None:
            if new.virtual_services:
                await self._start_kernel(new)  # a refusal is logged; the rest still reloads
        elif not new.virtual_services:
            await self.kernel.stop()
            self.kernel = None
        else:
            await self.kernel.reload(new.virtual_services)

    def _reload_redis(self, new: Config) -> None:
        if new.redis is None:
            if self.redis is not None:
                self._background(self.redis.stop())
                self.redis = None
        elif self.redis is None:
            self.redis = Dashboard(new.redis, self.store, self.broadcast_redis)
            self.redis.start()
        else:
            self.redis.reload(new.redis)

    async def _start_admin(self, cfg: Config) -> Any:
        """The admin API of `cfg`, its connections capped to a share of the descriptors."""
        admin = cfg.admin
        assert admin.listen is not None
        cap = admin_connection_cap(admin.max_connections, self.fd_limit)
        return await start_admin(self, admin.listen, admin.token, admin, cap)

    async def _swap_admin(self, old: Config, new: Config) -> bool:
        """Move the admin API to the new settings; False (reload refused) if it can't listen."""
        if old.admin == new.admin:
            return True
        same_port = old.admin.listen == new.admin.listen
        if same_port and self.admin is not None:
            await self.admin.stop()  # the new one needs the port
            self.admin = None
        try:
            fresh = None
            if new.admin.listen:
                fresh = await self._start_admin(new)
        except OSError as exc:
            log("reload_refused", "error", error=f"admin.listen {new.admin.listen}: {exc}")
            log("reload_failed", "error", errors=1, kept="previous config")
            if self.admin is None and old.admin.listen:
                self.admin = await self._start_admin(old)
            return False
        if self.admin is not None:
            await self.admin.stop()
        self.admin = fresh
        return True

    async def _resize_workers(self, n: int) -> None:
        for i in range(n):
            if i not in self.workers:
                await self._spawn(i)
        for i in [i for i in self.workers if i >= n]:
            w = self.workers.pop(i)
            w.channel.send({"t": "stop", "timeout": self.cfg.shutdown_timeout})


def probe_listeners(addresses: list[str]) -> list[str]:
    """Bind each address once without SO_REUSEPORT; list those something else already holds.

    Workers bind with SO_REUSEPORT, which would silently share a port with another process
    that also set it (a second steelyard, say) and split its traffic. Probing first turns that
    into the "address in use" an operator expects.
    """
    problems = []
    for address in addresses:
        host, port = split_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                problems.append(
                    f"cannot listen on {address}: {os.strerror(exc.errno or 0).lower()}"
                )
    return problems


def listeners_of(cfg: Config) -> list[Any]:
    return list(cfg.listeners())


def named_listeners(cfg: Config) -> list[tuple[str, str]]:
    return [(listener_name(t), t.listen) for t in cfg.listeners()]


def _describe_changes(old: Config, new: Config) -> str:
    parts = []
    for kind, a, b in (
        ("pool", set(old.pools), set(new.pools)),
        ("tcp", {t.name for t in old.tcp}, {t.name for t in new.tcp}),
        ("http", {t.name for t in old.http}, {t.name for t in new.http}),
    ):
        parts += [f"+{kind}:{x}" for x in sorted(b - a)]
        parts += [f"-{kind}:{x}" for x in sorted(a - b)]
    for name in sorted(set(old.pools) & set(new.pools)):
        if old.pools[name] != new.pools[name]:
            parts.append(f"~pool:{name}")
    for kind, before, after in (("tcp", old.tcp, new.tcp), ("http", old.http, new.http)):
        previous = {t.name: t for t in before}
        for t in after:
            if t.name in previous and previous[t.name] != t:
                parts.append(f"~{kind}:{t.name}")
    if old.workers != new.workers:
        parts.append(f"workers:{old.workers}->{new.workers}")
    return " ".join(parts)


async def run_supervisor(cfg: Config, config_path: str | None) -> int:
    logmod.setup(cfg.log_format, cfg.log_level)
    sup = Supervisor(cfg, config_path)
    try:
        await sup.start()
    except SystemExit as exc:
        return int(exc.code or 1)
    await sup.wait()
    return 0
