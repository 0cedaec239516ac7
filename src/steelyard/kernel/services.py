"""The kernel virtual services at run time, in the supervisor: which servers each service sends
new connections to (the pool's usable servers, as health checks, admin state and weights leave
them; the sorry server when their live weight is under the quorum), rendered (render.py) and
applied (nft.py) at start, again after every change, and removed on stop.

Changes are coalesced: a burst of health flips costs one `nft` run, and runs never overlap.
The table is installed on every node, master or backup, as keepalived installs its IPVS
services everywhere: packets for a VIP reach only the node that holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from steelyard.config.kernel_model import VirtualServiceConfig
from steelyard.core.backend import Pool, split_address
from steelyard.core.programs import run_program
from steelyard.kernel import nft
from steelyard.kernel.render import (
    SCHEDULERS,
    TABLE,
    Service,
    Target,
    counter_names,
    removal,
    render,
)
from steelyard.log import log

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# seconds between two reads of the counters (for /metrics), which also notice a table that
# someone else removed or emptied (a firewall reload's `flush ruleset`) and put it back
COUNTERS_EVERY = 2.0


class KernelError(Exception):
    """A node that cannot run its virtual services; the message names what is missing."""


class KernelServices:
    def __init__(
        self, configs: list[VirtualServiceConfig], pools: Callable[[], Mapping[str, Pool]]
    ) -> None:
        self.configs = configs
        self.pools = pools  # the supervisor's current pools (replaced on reload)
        self.objects: frozenset[str] = frozenset()
        self.services: list[Service] = []
        self.quorum_lost: set[str] = set()  # addresses of services on their sorry server
        self.applies = 0
        self.errors = 0
        self._dirty = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._scripts: set[asyncio.Task[None]] = set()  # quorum_up / quorum_down running
        # quorum changes decided but not yet in the kernel: announced once the table says them
        self._quorum_changes: list[tuple[VirtualServiceConfig, bool, int]] = []
        self._installed = False
        self.counts: dict[str, tuple[int, int]] = {}  # counter -> (packets, bytes), last read
        self.rules = 0  # how many rules the table was given

    # life -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Install the table; KernelError naming what is missing (nft, privileges, forwarding)."""
        try:
            nft.path()
        except nft.NftError as exc:
            raise KernelError(str(exc)) from None
        if IP_FORWARD.read_text().strip() != "1":
            raise KernelError(
                "net.ipv4.ip_forward is 0: virtual services forward packets to their servers "
                "(sysctl -w net.ipv4.ip_forward=1)"
            )
        try:
            await self._apply(fresh=True)
        except nft.NftError as exc:
            raise KernelError(f"nft refused the table: {exc}") from None
        self._installed = True
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        """Read the counters now and then (/metrics is answered from them without waiting), and
        put the table back when they are gone: `nft flush ruleset` in a firewall reload removes
        it, and nothing else would tell us."""
        while True:
            await asyncio.sleep(COUNTERS_EVERY)
            try:
                counts, rules = await nft.listing(TABLE)
            except nft.NftError as exc:
                await self._restore(f"cannot read the table: {exc}")
                continue
            wanted = {o.split(" ", 1)[1] for o in self.objects if o.startswith("counter ")}
            if rules != self.rules or not wanted <= counts.keys():
                await self._restore(f"the table has {rules} rules, not {self.rules}")
                continue
            self.counts = counts

    async def _restore(self, cause: str) -> None:
        try:
            await self._apply(fresh=True)
        except nft.NftError as exc:
            self.errors += 1
            log("kernel_error", "error", action="restore table", cause=f"{cause}; {exc}")
            return
        log("kernel_table_restored", "warn", cause=cause)

    async def stop(self) -> None:
        """Remove the table."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._scripts:
            await asyncio.gather(*self._scripts, return_exceptions=True)
        if not self._installed:
            return
        async with self._lock:
            try:
                await nft.apply(removal())
            except nft.NftError as exc:
                log("kernel_error", "error", action="remove table", cause=str(exc))
            self._installed = False

    async def reload(self, configs: list[VirtualServiceConfig]) -> None:
        """New services: applied before this returns (a reload is logged once in force)."""
        self.configs = configs
        self.changed()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def changed(self) -> None:
        """A server's state or a weight changed: re-apply soon (once per burst), if the table
        would say anything new (a slow-start step often leaves every weight as it was)."""
        if not self._installed:
            return
        if not self._dirty and self.desired() == self.services and not self._quorum_changes:
            return
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                await self._apply()
            except nft.NftError as exc:
                # the table may have changed under us (objects we delete are gone): from scratch
                await self._restore(f"update refused: {exc}")

    async def _apply(self, fresh: bool = False) -> None:
        async with self._lock:
            services = self.desired()
            script, objects = render(services, self.objects, fresh=fresh)
            await nft.apply(script)
            self.objects, self.services = objects, services
            self.rules = script.count("\nadd rule ")
            self.applies += 1
            log("kernel_applied", "info" if fresh else "debug", services=len(services),
                servers=sum(len(s.targets) for s in services))  # fmt: skip
            self.announce_quorum_changes()

    # what the table should say ----------------------------------------------------------------

    def desired(self) -> list[Service]:
        pools = self.pools()
        out = []
        for cfg in self.configs:
            pool = pools.get(cfg.pool)
            live = pool.candidates() if pool is not None else []
            targets = tuple(Target(s.host, s.port, s.effective_weight) for s in live)
            lost = self._quorum(cfg, sum(t.weight for t in targets))
            if lost and cfg.sorry_server is not None:
                targets = (Target(*split_address(cfg.sorry_server)),)
            scheduler = SCHEDULERS[pool.balance] if pool is not None else "rr"
            counted = [Target(s.host, s.port) for s in (pool.servers if pool is not None else [])]
            if cfg.sorry_server is not None:
                sorry = Target(*split_address(cfg.sorry_server))
                if sorry not in counted:
                    counted.append(sorry)
            out.append(Service(cfg.vip, cfg.port, cfg.protocol, targets, scheduler,
                               cfg.persistence_timeout, cfg.method == "masquerade",
                               tuple(counted)))  # fmt: skip
        return out

    def _quorum(self, cfg: VirtualServiceConfig, weight: int) -> bool:
        """Whether the service's quorum is lost with this live weight (lost below quorum -
        hysteresis, back at quorum + hysteresis); a change is logged and its program run once
        the table that carries it is in the kernel, so neither runs ahead of the packets."""
        was = cfg.address in self.quorum_lost
        edge = cfg.quorum + cfg.hysteresis if was else cfg.quorum - cfg.hysteresis
        lost = weight < edge
        if lost == was:
            return lost
        if lost:
            self.quorum_lost.add(cfg.address)
        else:
            self.quorum_lost.discard(cfg.address)
        self._quorum_changes.append((cfg, lost, weight))
        return lost

    def announce_quorum_changes(self) -> None:
        """Log the quorum changes the table now in the kernel carries, and run their programs."""
        changes, self._quorum_changes = self._quorum_changes, []
        for cfg, lost, weight in changes:
            self._announce_quorum(cfg, lost, weight)

    def _announce_quorum(self, cfg: VirtualServiceConfig, lost: bool, weight: int) -> None:
        log("kernel_quorum", "warn" if lost else "info", service=cfg.address,
            state="lost" if lost else "up", live_weight=weight, quorum=cfg.quorum,
            sorry_server=cfg.sorry_server if lost else None)  # fmt: skip
        program = cfg.quorum_down if lost else cfg.quorum_up
        if program:
            run = run_program(program, "kernel_script_failed", cfg.script_timeout,
                              {"STEELYARD_SERVICE": cfg.address}, service=cfg.address)  # fmt: skip
            task = asyncio.get_running_loop().create_task(run)
            self._scripts.add(task)
            task.add_done_callback(self._scripts.discard)

    # reading ----------------------------------------------------------------------------------

    async def view(self) -> dict[str, Any]:
        """Each service with its servers (weight, whether they get new connections, counters)
        and the live ruleset, for GET /api/kernel and `steelyard kernel show`."""
        if self._installed:
            self.counts, _ = await nft.listing(TABLE)
        ruleset = await nft.run("list", "table", "ip", TABLE) if self._installed else ""
        services = []
        for cfg, svc in zip(self.configs, self.services, strict=False):
            services.append({
                "address": cfg.address, "protocol": cfg.protocol, "pool": cfg.pool,
                "scheduler": svc.scheduler, "persistence_timeout": cfg.persistence_timeout,
                "method": cfg.method, "quorum": cfg.quorum,
                "quorum_lost": cfg.address in self.quorum_lost,
                "servers": self._servers(cfg, svc),
            })  # fmt: skip
        return {"table": f"ip {TABLE}", "applies": self.applies, "errors": self.errors,
                "services": services, "ruleset": ruleset}  # fmt: skip

    def rows(self) -> list[dict[str, Any]]:
        """One row per service and server from the counters last read (for /metrics)."""
        return [
            {"service": cfg.address, "protocol": cfg.protocol, **server}
            for cfg, svc in zip(self.configs, self.services, strict=False)
            for server in self._servers(cfg, svc)
        ]

    def _servers(self, cfg: VirtualServiceConfig, svc: Service) -> list[dict[str, Any]]:
        """The servers the table counts (the pool's and the sorry server), with counters."""
        pool = self.pools().get(cfg.pool)
        live = {t.address for t in svc.targets}
        out = []
        for target in svc.counted:
            server = pool.server(target.address) if pool is not None else None
            conns, traffic = counter_names(svc, target)
            packets, size = self.counts.get(traffic, (0, 0))
            out.append({"address": target.address,
                        "weight": server.effective_weight if server is not None else 1,
                        "active": target.address in live,
                        "sorry": target.address == cfg.sorry_server,
                        "connections": self.counts.get(conns, (0, 0))[0],
                        "packets": packets, "bytes": size})  # fmt: skip
        return out
