"""The Redis tier's control plane, in the supervisor (Codis's dashboard): the one writer of the
cluster model, and the runner of slot migrations.

Every change is made on the model, saved in the store, then pushed to every proxy and awaited
(`broadcast` returns once each worker has acknowledged that the change has taken hold, or has
been fenced). Changes go one at a time. Migrations run in batches: the queued slots of one
source group move together, so one SCAN pass over the source serves them all:

  pending -> survey (count keys, find big ones) -> locked (barrier) -> migrating (barrier)
          -> mover passes until a pass finds no key -> owner changed (barrier) -> done.

A batch found locked or migrating at start (the supervisor stopped mid-way) resumes from the
progress saved in the store.

A group about to take its first slots gets the libraries and scripts loaded through the proxy
first, as does a replica about to become a master or to serve reads (see `library`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from steelyard.config.redis_model import RedisConfig
from steelyard.core.backend import split_address
from steelyard.core.netaddr import in_networks
from steelyard.core.store.base import Store
from steelyard.log import log
from steelyard.redis import slotstore
from steelyard.redis.client import connect
from steelyard.redis.ha import HealthWatcher
from steelyard.redis.library import ScriptRecord, copy_functions, load_scripts
from steelyard.redis.model import ModelError, Topology, check_address
from steelyard.redis.mover import Mover, Progress, Servers, describe, saved_holds
from steelyard.redis.sentinel import SentinelFollower
from steelyard.redis.topology import ranges

PROGRESS_KEY = "redis/mover"
RETRY_MAX = 10.0

Broadcast = Callable[[dict[str, Any]], Awaitable[None]]


class Dashboard:
    def __init__(self, cfg: RedisConfig, store: Store, broadcast: Broadcast) -> None:
        self.cfg = cfg
        self.store = store
        self.broadcast = broadcast
        self.topo = slotstore.load(store, cfg)
        self.held: dict[int, list[str]] = {}  # slot -> keys (latin-1) proxies hold
        self.readers: dict[int, list[str]] = {}  # group -> replicas up and in sync
        self.lock = asyncio.Lock()
        self.progress: Progress | None = None
        data = store.get(PROGRESS_KEY)
        if data is not None:
            try:
                self.progress = Progress.from_json(data)
                self.held = saved_holds(data)  # every proxy holds them again from the start
            except (KeyError, TypeError, ValueError):
                store.delete(PROGRESS_KEY)
        self.scripts = ScriptRecord(store)  # bodies of the scripts loaded through proxies
        self.history: list[dict[str, Any]] = []  # finished batches, newest last
        self.error: str | None = None  # the last mover failure, until a batch finishes
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.health = HealthWatcher(self)
        # (listen, worker) -> (sessions, commands, when, commands/s over the last report)
        self._proxy_rows: dict[tuple[str, int], tuple[int, int, float, float]] = {}
        self.sentinel = SentinelFollower(self, cfg.sentinel) if cfg.sentinel else None
        self._stopping: asyncio.Task[None] | None = None  # an old follower closing

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        if self.topo.moves:
            self._wake.set()
        self.health.start()
        if self.sentinel is not None:
            self.sentinel.start()

    async def stop(self) -> None:
        await self.health.stop()
        if self.sentinel is not None:
            await self.sentinel.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def reload(self, cfg: RedisConfig) -> None:
        old, self.cfg = self.cfg, cfg
        # In place: a running batch holds this object.
        _replace(self.topo, slotstore.load(self.store, cfg))
        if cfg.sentinel != old.sentinel:
            if self.sentinel is not None:
                self._stopping = asyncio.get_running_loop().create_task(self.sentinel.stop())
            self.sentinel = SentinelFollower(self, cfg.sentinel) if cfg.sentinel else None
            if self.sentinel is not None:
                self.sentinel.start()

    def view(self) -> dict[str, Any]:
        """What proxies route by (sent with every config and on every change)."""
        return self.topo.proxy_view(self.held, self.readers)

    async def set_readers(self, readers: dict[int, list[str]]) -> None:
        """The replicas fit for reads changed (health): every proxy learns it."""
        if readers != self.readers:
            for gid, fit in readers.items():
                for address in set(fit) - set(self.readers.get(gid, [])):
                    await self.give_scripts(address, "reader")  # EVALSHA_RO may run there
            async with self.lock:
                self.readers = readers
                await self.broadcast(self.view())

    async def publish(self) -> None:
        slotstore.save(self.store, self.topo)
        await self.broadcast(self.view())

    async def change(self, fn: Callable[[Topology], Any]) -> Any:
        """Run an operator change on the model; refused (ModelError) changes leave no trace."""
        async with self.lock:
            before = self.topo.to_json()
            try:
                result = fn(self.topo)
            except ModelError:
                _replace(self.topo, Topology.from_json(before))
                raise
            await self.publish()
        if self.topo.moves:
            self._wake.set()
        return result

    # operator actions (the admin API and redis-admin) --------------------------------------

    async def create_group(self, gid: int, master: str, replicas: list[str], weight: int) -> None:
        self._check(lambda t: t.create_group(gid, master, replicas, weight))
        for r in replicas:
            await self.replicaof(r, master)
        await self.change(lambda t: t.create_group(gid, master, replicas, weight))
        log("redis_group_created", group=gid, master=master, replicas=",".join(replicas) or None)

    async def remove_group(self, gid: int) -> None:
        await self.change(lambda t: t.remove_group(gid))
        log("redis_group_removed", group=gid)

    async def set_weight(self, gid: int, weight: int) -> None:
        await self.change(lambda t: t.set_weight(gid, weight))

    async def add_server(self, gid: int, address: str) -> None:
        self._check(lambda t: t.add_server(gid, address))
        await self.replicaof(address, self.topo.groups[gid].master)
        await self.change(lambda t: t.add_server(gid, address))
        log("redis_server_added", group=gid, server=address)

    async def remove_server(self, gid: int, address: str) -> None:
        await self.change(lambda t: t.remove_server(gid, address))
        log("redis_server_removed", group=gid, server=address)

    async def promote(
        self, gid: int, address: str, reason: str = "operator", force: bool = False
    ) -> None:
        """`address` stops replicating and becomes the master; the group's other servers
        (the old master too, when it answers) replicate from it. An operator's promotion is
        refused while the group takes part in a migration; a failover (`force`, the master is
        dead) is not: the mover, stuck on the dead master, resumes from the new one."""

        def change(t: Topology) -> str:
            return t.switch_master(gid, address) if force else t.promote(gid, address)

        self._check(change)
        await self.replicaof(address, None)
        await self.give_scripts(address, reason)  # it has the functions: they replicate
        group = self.topo.groups[gid]
        for other in group.servers():
            if other != address:
                try:
                    await self.replicaof(other, address)
                except (RedisError, OSError) as exc:
                    log("redis_repoint_failed", "warn", server=other, cause=describe(exc))
        old = await self.change(change)
        log("redis_promoted", group=gid, master=address, old=old, reason=reason)

    async def follow(self, gid: int, address: str, reason: str) -> None:
        """A master switch made by someone else (Sentinel): the model and proxies follow.
        Sentinel writes an IPv6 host without brackets; a name (announce-hostnames) is not
        followed: servers are IP literals, and the refusal is logged, not raised into the
        sentinel's listener."""
        host, _, port = address.rpartition(":")
        if ":" in host and not host.startswith("["):
            address = f"[{host}]:{port}"
        try:
            check_address(address)
        except ModelError as exc:
            log("redis_master_refused", "error", group=gid, master=address, reason=reason,
                cause=str(exc))  # fmt: skip
            return
        group = self.topo.groups.get(gid)
        if group is None or group.master == address:
            return
        await self.give_scripts(address, reason)
        old = await self.change(lambda t: t.switch_master(gid, address))
        log("redis_master_switched", group=gid, master=address, old=old, reason=reason)

    async def assign(self, slots: list[int], gid: int) -> None:
        await self.equip([gid])
        await self.change(lambda t: t.assign(slots, gid))
        log("redis_slots_assigned", slots=ranges(slots), group=gid)

    async def migrate(self, slots: list[int], to: int) -> list[int]:
        await self.equip([to])
        queued: list[int] = await self.change(lambda t: t.migrate(slots, to))
        log("redis_move_queued", slots=ranges(queued) or None, to=to)
        return queued

    async def rebalance(self) -> list[int]:
        await self.equip(list(self.topo.groups))
        queued: list[int] = await self.change(lambda t: t.rebalance())
        log("redis_rebalance", slots=ranges(queued) or None, moves=len(queued))
        return queued

    def unknown_host(self, address: str, networks: list[str]) -> str | None:
        """Why a server new to the cluster must not be used (None when it may): its address
        is not an IP:port literal, or its host is neither one the cluster's servers (config
        and runtime) already use nor in `networks`. The dashboard, its health probes and every
        proxy log in to a server with backend_auth."""
        try:
            check_address(address)
        except ModelError as exc:
            return str(exc)
        ip = ipaddress.ip_address(split_address(address)[0])
        known = [a for g in self.topo.groups.values() for a in g.servers()]
        known += [a for g in self.cfg.groups for a in (g.master, *g.replicas)]
        if ip in {_ip(a) for a in known}:
            return None
        if in_networks(str(ip), (ipaddress.ip_network(n) for n in networks)):
            return None
        return (
            f"{address}: {ip} is not a host of this cluster's servers: add its network to "
            "admin.server_networks to let the dashboard log in to it with backend_auth"
        )

    async def equip(self, gids: list[int]) -> None:
        """Groups about to take their first slots get an exact copy of a serving master's
        libraries and every recorded script first (a failure refuses the change: their FCALLs
        and EVALSHAs would fail)."""
        topo = self.topo
        serving = [g for g in topo.groups.values() if topo.owned(g.id)]
        incoming = {m.to for m in topo.moves.values()}
        auth = self.backend_auth()
        for gid in gids:
            group = topo.groups.get(gid)
            if group is None or topo.owned(gid) or gid in incoming:
                continue  # unknown (the model refuses it), serving already, or equipped
            source = next((g.master for g in serving if g.id != gid), None)
            functions = "none"
            if source is not None:
                functions = await copy_functions(source, group.master, auth)
            await load_scripts(group.master, list(self.scripts.bodies.values()), auth)
            log("redis_group_equipped", group=gid, master=group.master, functions=functions,
                source=source, scripts=len(self.scripts.bodies))  # fmt: skip

    async def give_scripts(self, address: str, reason: str) -> None:
        """Load every recorded script on a server about to serve (a failure is logged: a
        failover must go on, and a client that gets NOSCRIPT loads the script again)."""
        try:
            await load_scripts(address, list(self.scripts.bodies.values()), self.backend_auth())
        except (RedisError, OSError) as exc:
            log("redis_scripts_not_loaded", "warn", server=address, reason=reason,
                scripts=len(self.scripts.bodies), cause=describe(exc))  # fmt: skip

    def _check(self, fn: Callable[[Topology], Any]) -> None:
        """Raise the model's refusal before touching any server."""
        fn(Topology.from_json(self.topo.to_json()))

    async def replicaof(self, address: str, master: str | None) -> None:
        client = connect(address, self.backend_auth(), 5.0)
        try:
            if master is None:
                await client.execute_command("REPLICAOF", "NO", "ONE")
            else:
                mhost, _, mport = master.rpartition(":")
                await client.execute_command("REPLICAOF", mhost.strip("[]"), mport)
        finally:
            await client.aclose()

    def backend_auth(self) -> str | None:
        return self.cfg.proxies[0].backend_auth if self.cfg.proxies else None

    # the mover -------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.5
        while True:
            if not self.topo.moves:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._batch()
                delay = 0.5
                self.error = None
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError, ModelError) as exc:
                self.error = describe(exc)
                log("redis_move_error", "error", cause=self.error, retry=f"{delay}s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _next_batch(self) -> tuple[int, list[int]]:
        """The source group of the most advanced move, and the slots leaving it: the batch
        already under way (resumed), else every slot queued to leave it."""
        moves = self.topo.moves
        rank = {"migrating": 0, "locked": 1, "pending": 2}
        first = min(moves, key=lambda s: (rank[moves[s].state], s))
        source = moves[first].source
        started = moves[first].state != "pending"
        return source, sorted(
            s for s, m in moves.items() if m.source == source and (m.state != "pending") == started
        )

    async def _batch(self) -> None:
        source, slots = self._next_batch()
        topo = self.topo
        src_master = topo.groups[source].master
        targets = {s: topo.groups[topo.moves[s].to].master for s in slots}
        servers = Servers(self.backend_auth(), self.cfg.migrate_timeout)
        mover = Mover(
            src_master,
            targets,
            self.cfg.databases,
            servers,
            self.cfg.migrate_batch,
            self.cfg.big_key_bytes,
            self.cfg.migrate_timeout,
            self._save_progress,
        )
        try:
            progress = self.progress
            if progress is None or progress.source != source or progress.slots != slots:
                if any(topo.moves[s].state != "pending" for s in slots):
                    # Resumed without usable progress: a fresh pass over the source is safe.
                    log("redis_move_restart", slots=ranges(slots), cause="no saved progress")
                progress = Progress(source, slots)
            if all(topo.moves[s].state == "pending" for s in slots):
                started = time.monotonic()
                progress.total, big = await mover.survey()
                progress.big = sum(len(v) for v in big.values())
                self.held = {s: [k.decode("latin-1") for k in keys] for s, keys in big.items()}
                self._save_progress(progress)  # the holds are durable before any proxy has them
                log(
                    "redis_move_start",
                    slots=ranges(slots),
                    source=source,
                    targets=",".join(map(str, sorted({topo.moves[s].to for s in slots}))),
                    keys=progress.total,
                    big=progress.big or None,
                    survey_ms=int((time.monotonic() - started) * 1000),
                )
                await self._set_state(slots, "locked")
            if any(topo.moves[s].state == "locked" for s in slots):
                await self._set_state(slots, "migrating")
            self.progress = progress
            self._save_progress(progress)
            held = {k.encode("latin-1") for keys in self.held.values() for k in keys}
            started = time.monotonic()
            await mover.run(progress, held, self._hold, self._release)
            async with self.lock:
                topo.finish(slots)
                self.held = {}
                await self.publish()
            self.store.delete(PROGRESS_KEY)
            self.progress = None
            done = {"slots": ranges(slots), "source": source, "moved": progress.moved,
                    "big": progress.big, "passes": progress.passes,
                    "seconds": round(time.monotonic() - started, 3), "at": time.time()}  # fmt: skip
            self.history = [*self.history[-49:], done]
            log("redis_move_done", **{k: v for k, v in done.items() if k != "at"})
        finally:
            await servers.close()

    async def _set_state(self, slots: list[int], state: str) -> None:
        async with self.lock:
            for s in slots:
                self.topo.moves[s].state = state
            await self.publish()

    def _save_progress(self, progress: Progress) -> None:
        self.store.put(PROGRESS_KEY, {**progress.to_json(), "held": self.held})

    async def _hold(self, slot: int, keys: list[bytes]) -> None:
        async with self.lock:
            have = self.held.setdefault(slot, [])
            have += [k.decode("latin-1") for k in keys if k.decode("latin-1") not in have]
            if self.progress is not None:
                self._save_progress(self.progress)
            await self.broadcast(self.view())

    async def _release(self, slot: int, keys: list[bytes]) -> None:
        async with self.lock:
            gone = {k.decode("latin-1") for k in keys}
            left = [k for k in self.held.get(slot, []) if k not in gone]
            if left:
                self.held[slot] = left
            else:
                self.held.pop(slot, None)
            if self.progress is not None:
                self._save_progress(self.progress)
            await self.broadcast(self.view())

    # reading ---------------------------------------------------------------------------------

    def proxy_stats(self, worker: int, rows: list[list[Any]]) -> None:
        """A worker's Redis listeners: [listen, sessions, commands read since it started]."""
        now = time.monotonic()
        for listen, sessions, commands in rows:
            prev = self._proxy_rows.get((listen, worker))
            rate = 0.0
            if prev is not None and now > prev[2] and commands >= prev[1]:
                rate = (commands - prev[1]) / (now - prev[2])
            self._proxy_rows[(listen, worker)] = (sessions, commands, now, rate)

    def proxies(self) -> list[dict[str, Any]]:
        stale = time.monotonic() - 5.0  # a worker that stopped reporting counts no more
        out = []
        for p in self.cfg.proxies:
            rows = [v for (listen, _), v in self._proxy_rows.items() if listen == p.listen]
            live = [r for r in rows if r[2] >= stale]
            out.append({
                "listen": p.listen,
                "workers": len(live),
                "sessions": sum(r[0] for r in live),
                "commands": sum(r[1] for r in rows),
                "ops": round(sum(r[3] for r in live), 1),
            })  # fmt: skip
        return out

    def status(self) -> dict[str, Any]:
        topo = self.topo
        groups = []
        for g in sorted(topo.groups.values(), key=lambda g: g.id):
            owned = topo.owned(g.id)
            groups.append(
                {
                    "id": g.id,
                    "master": g.master,
                    "replicas": list(g.replicas),
                    "weight": g.weight,
                    "slots": len(owned),
                    "ranges": ranges(owned),
                    "servers": {a: self.health.status(a) for a in g.servers()},
                    "readers": self.readers.get(g.id, []),
                }
            )
        moves = [
            {"slot": s, "from": m.source, "to": m.to, "state": m.state}
            for s, m in sorted(topo.moves.items())
        ]
        progress = None
        if self.progress is not None:
            p = self.progress
            progress = {**p.to_json(), "slots": ranges(p.slots)}
        return {
            "version": topo.version,
            "groups": groups,
            "proxies": self.proxies(),
            "unassigned": sum(1 for owner in topo.slots if owner == 0),
            "slots": list(topo.slots),
            "moves": moves,
            "progress": progress,
            "history": self.history,
            "error": self.error,
            # scripts loaded through the proxies, kept for masters that join later
            "scripts": {
                "kept": len(self.scripts.bodies),
                "bytes": self.scripts.size,
                "dropped": self.scripts.dropped,
            },
        }


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(split_address(address)[0])
    except ValueError:  # a name stored before addresses were checked: it admits nothing
        return None


def _replace(topo: Topology, new: Topology) -> None:
    topo.groups, topo.slots, topo.moves = new.groups, new.slots, new.moves
    topo.removed, topo.version = new.removed, new.version
