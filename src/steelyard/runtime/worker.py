"""A data-plane worker process: owns listeners (SO_REUSEPORT) and moves bytes.

It decides nothing about health or admin state: it applies what the supervisor pushes and
reports what it sees (connect failures, counters); requests about its MySQL sessions from other
workers come relayed by the supervisor, and go back the same way. Started as
`python -m steelyard.runtime.worker FD COUNTERS_FD INDEX`, where FD is its end of a Unix socket
pair and INDEX its place among the workers.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
import time
from typing import Any

from steelyard import log as logmod
from steelyard.config.http_model import HttpListenerConfig
from steelyard.config.model import Config, TcpListenerConfig
from steelyard.config.mysql_model import MysqlListenerConfig
from steelyard.config.redis_model import RedisProxyConfig
from steelyard.core.backend import Pool, Server, find_server, require_server
from steelyard.core.counters import SharedCounters
from steelyard.http.frontend import HttpFrontend
from steelyard.log import log
from steelyard.mysql import processlist
from steelyard.mysql.frontend import MysqlFrontend
from steelyard.redis.frontend import RedisFrontend
from steelyard.runtime.ipc import RELAY_TIMEOUT, Channel
from steelyard.runtime.names import listener_name
from steelyard.runtime.pools import build_pools
from steelyard.tcp.frontend import TcpFrontend, WorkerContext, describe

Frontend = TcpFrontend | HttpFrontend | RedisFrontend | MysqlFrontend
# The frontend class that serves each kind of listener section.
FRONTENDS: dict[type, type] = {
    TcpListenerConfig: TcpFrontend,
    HttpListenerConfig: HttpFrontend,
    RedisProxyConfig: RedisFrontend,
    MysqlListenerConfig: MysqlFrontend,
}

STATS_INTERVAL = 1.0


class Worker:
    def __init__(
        self, channel: Channel, counters: SharedCounters | None = None, index: int = 0
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.channel = channel
        self.index = index  # among the supervisor's workers (MySQL session ids carry it)
        self._asks: dict[int, asyncio.Future[list[Any]]] = {}  # relays awaiting an answer
        self._ask_seq = 0
        self.ctx = WorkerContext(self.loop, self._report)
        self.counters = counters
        self.pools: dict[str, Pool] = {}
        self.frontends: dict[str, Frontend] = {}  # by listen address
        self.retired: set[Frontend] = set()  # removed by a reload, draining
        self.cfg: Config | None = None
        # Counters last reported, per (pool, address): stats carry deltas.
        # (total, failures, bytes_in, bytes_out, active) last sent per server
        self._sent: dict[tuple[str, str], tuple[int, int, int, int, int]] = {}
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    # supervisor messages ----------------------------------------------------------------

    async def run(self) -> int:
        stats = self.loop.call_later(STATS_INTERVAL, self._send_stats)
        try:
            while True:
                msg = await self.channel.recv()
                if msg is None:
                    await self.orphaned()
                    return 1
                kind = msg.get("t")
                if kind == "config":
                    cfg = Config.model_validate(msg["config"])
                    if self.counters is not None:
                        self.counters.rows = int(msg.get("rows", 1))
                    ok = self.apply_config(
                        cfg, msg.get("states", []), msg.get("first"), msg.get("redis")
                    )
                    if msg.get("first"):
                        if not ok:
                            await self.channel.drain()
                            return 1
                        # Start-up objects live forever: keep the GC from rescanning them.
                        gc.freeze()
                        self.channel.send({"t": "ready", "pid": os.getpid()})
                    else:
                        self.channel.send({"t": "applied", "seq": msg.get("seq")})
                elif kind == "state":
                    self.apply_state(msg)
                elif kind == "redis":
                    self.apply_redis(msg)
                elif kind == "answer":
                    ask = self._asks.pop(msg.get("n", -1), None)
                    if ask is not None and not ask.done():
                        ask.set_result(msg.get("a") or [])
                elif kind == "query":
                    self._background(self.answer(msg))
                elif kind == "stop":
                    await self.stop(float(msg.get("timeout", 0)))
                    self._send_stats()
                    await self.channel.drain()
                    return 0
        finally:
            stats.cancel()

    def apply_config(
        self,
        cfg: Config,
        states: list[list[Any]],
        first: bool = False,
        redis_view: dict[str, Any] | None = None,
    ) -> bool:
        """Apply a config and the server states that go with it, then (re)open listeners.

        False when a listener could not be bound at first start.
        """
        logmod.setup(cfg.log_format, cfg.log_level)
        self.cfg = cfg
        self.pools = build_pools(cfg, self.pools)
        for pool_name, address, state, slot in states:
            server = find_server(self.pools, pool_name, address)
            if server is not None:
                server.apply_state(state)
                server.slot = slot
                server.shared = self.counters if slot >= 0 else None
        for pool in self.pools.values():
            pool.refresh()
        live = {(name, s.address) for name, pool in self.pools.items() for s in pool.servers}
        self._sent = {key: v for key, v in self._sent.items() if key in live}
        wanted: dict[str, Any] = {lst.listen: lst for lst in cfg.listeners()}
        for listen, fe in list(self.frontends.items()):
            lst = wanted.get(listen)
            if lst is None or not isinstance(fe, FRONTENDS[type(lst)]):
                fe.stop_accepting()
                del self.frontends[listen]
                self._retire(fe)
        ok = True
        for listen, lst in wanted.items():
            fe = self.frontends.get(listen)
            if isinstance(fe, HttpFrontend):
                fe.update(lst, self.pools)
                continue
            if isinstance(fe, TcpFrontend):
                fe.update(lst, self.pools[lst.pool])
                continue
            if isinstance(fe, RedisFrontend):
                assert cfg.redis is not None
                fe.update(lst, cfg.redis, redis_view)
                continue
            if isinstance(fe, MysqlFrontend):
                fe.update(lst, self.pools)
                continue
            if isinstance(lst, HttpListenerConfig):
                fe = HttpFrontend(lst, self.pools, self.loop, self._report)
            elif isinstance(lst, RedisProxyConfig):
                assert cfg.redis is not None
                fe = RedisFrontend(lst, cfg.redis, self.loop, redis_view)
                fe.report = self.channel.send  # scripts loaded, for the dashboard's record
            elif isinstance(lst, MysqlListenerConfig):
                fe = MysqlFrontend(lst, self.pools, self.loop, self._report)
                fe.worker, fe.relay = self.index, self.relay
            else:
                fe = TcpFrontend(lst, self.pools[lst.pool], self.ctx)
            try:
                fe.start()
            except OSError as exc:
                ok = False
                message = f"cannot listen on {listen}: {describe(exc)}"
                log("listen_error", "error", listener=listener_name(lst), cause=message)
                self.channel.send({"t": "error", "message": message})
                continue
            self.frontends[listen] = fe
        for fe in self.frontends.values():
            # Sessions already running keep their pool object; new ones use the new pool.
            if isinstance(fe, TcpFrontend):
                fe.pool = self.pools[fe.cfg.pool]
            elif isinstance(fe, MysqlFrontend):
                fe.pools = self.pools
        return ok

    def _retire(self, fe: Frontend) -> None:
        if not fe.sessions:
            fe.close()
            return
        self.retired.add(fe)
        timeout = self.cfg.shutdown_timeout if self.cfg else 30.0

        async def drain() -> None:
            await fe.drain(timeout)
            self.retired.discard(fe)

        self.loop.create_task(drain())

    def apply_redis(self, msg: dict[str, Any]) -> None:
        """A new Redis cluster view: applied now, acknowledged once it has taken hold (the
        commands it must wait for have been answered), which the dashboard's barrier awaits."""
        waits: list[asyncio.Future[None]] = []
        for fe in self.frontends.values():
            if isinstance(fe, RedisFrontend):
                waits += fe.apply_view(msg["view"])
        seq = msg.get("seq")

        async def ack() -> None:
            await asyncio.gather(*waits)
            self.channel.send({"t": "applied", "seq": seq})

        self._background(ack())

    def _background(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    # requests between workers (MySQL SHOW PROCESSLIST and KILL) -------------------------

    async def relay(self, query: dict[str, Any]) -> list[Any]:
        """Ask the other workers (through the supervisor): their answers, [] when none came
        in time."""
        if self.channel.writer.is_closing():
            return []  # orphaned: nobody relays
        self._ask_seq += 1
        n = self._ask_seq
        ask = self._asks[n] = self.loop.create_future()
        self.channel.send({"t": "ask", "n": n, "q": query})
        try:
            return await asyncio.wait_for(ask, RELAY_TIMEOUT + 1.0)
        except TimeoutError:
            log("relay_timeout", "warn", pid=os.getpid(), what=query.get("k"))
            return []
        finally:
            self._asks.pop(n, None)

    async def answer(self, msg: dict[str, Any]) -> None:
        """Another worker's request about this worker's sessions of a MySQL listener."""
        q = msg.get("q") or {}
        if time.monotonic() > msg.get("until", 0.0):
            log("relay_late", "warn", pid=os.getpid(), what=q.get("k"))
            return  # the asker was told it came to nothing: it must not happen now
        fe = self.frontends.get(q.get("listen", ""))
        a: dict[str, Any] = {}
        if isinstance(fe, MysqlFrontend):
            try:
                a = await processlist.serve(fe, q)
            except (KeyError, TypeError, ValueError) as exc:
                log("relay_bad_request", "error", pid=os.getpid(), cause=repr(exc))
        self.channel.send({"t": "answer", "n": msg.get("n"), "a": a})

    def apply_state(self, msg: dict[str, Any]) -> None:
        try:
            pool, server = require_server(self.pools, msg["pool"], msg["server"])
        except LookupError:
            if "seq" in msg:
                self.channel.send({"t": "applied", "seq": msg["seq"]})
            return  # a push racing a reload; the next config carries the state
        server.apply_state(msg["state"])
        pool.refresh()
        self.ctx.queue(pool).wake()
        if "seq" in msg:  # an operator's change: the API answers once every worker has it
            self.channel.send({"t": "applied", "seq": msg["seq"]})

    # reports ----------------------------------------------------------------------------

    def _report(
        self, pool: str, server: Server, ok: bool, reason: str, kind: str = "connect"
    ) -> None:
        msg = {"t": "result", "pool": pool, "server": server.address, "ok": ok, "reason": reason}
        if kind != "connect":
            msg["kind"] = kind
        self.channel.send(msg)

    def _send_stats(self) -> None:
        rows = []
        for fe in [*self.frontends.values(), *self.retired]:
            fe.account()
        for name, pool in self.pools.items():
            for s in pool.servers:
                key = (name, s.address)
                prev = self._sent.get(key, (0, 0, 0, 0, 0))
                now = (s.total, s.failures, s.bytes_in, s.bytes_out, s.active)
                # A drop of `active` to 0 is news too, even when nothing else moved.
                if now != prev or s.active:
                    deltas = [a - b for a, b in zip(now[:4], prev[:4], strict=True)]
                    rows.append([name, s.address, s.active, *deltas])
                    self._sent[key] = now
        http: list[list[Any]] = []
        for fe in [*self.frontends.values(), *self.retired]:
            if isinstance(fe, HttpFrontend):
                http += fe.stats.drain()
        redis = [
            [fe.cfg.listen, len(fe.sessions), fe.commands]
            for fe in self.frontends.values()
            if isinstance(fe, RedisFrontend)
        ]
        # Sent every second while a listener exists, even idle: the supervisor computes
        # rates from consecutive rows and drops a worker that stops reporting.
        mysql = [fe.stats_row() for fe in self.frontends.values() if isinstance(fe, MysqlFrontend)]
        if rows or http or redis or mysql:
            msg: dict[str, Any] = {"t": "stats", "servers": rows}
            if http:
                msg["http"] = http
            if redis:
                msg["redis"] = redis
            if mysql:
                msg["mysql"] = mysql
            self.channel.send(msg)
        if not self._stopping:
            self.loop.call_later(STATS_INTERVAL, self._send_stats)

    # stop -------------------------------------------------------------------------------

    async def orphaned(self) -> None:
        """The supervisor is gone (killed, crashed): nobody pushes health, views or primaries
        any more, and a new supervisor's workers may bind our ports. Stop accepting, and let
        established TCP relays and HTTP connections (idle keep-alive ones included: a
        client may be sending on them) finish, up to shutdown_timeout, as a SIGTERM drain
        would. Redis and MySQL sessions are cut at once, as in any drain: their routing (slot
        owners, the primary) is the supervisor's to decide and could go stale meanwhile."""
        timeout = self.cfg.shutdown_timeout if self.cfg is not None else 0.0
        busy = sum(len(fe.sessions) for fe in [*self.frontends.values(), *self.retired])
        log(
            "supervisor_lost",
            "error",
            pid=os.getpid(),
            connections=busy,
            shutdown_timeout=f"{timeout:g}s",
        )
        self.channel.close()  # reports and stats have no reader now
        await self.stop(timeout, close_idle=False)
        log("worker_exit", pid=os.getpid(), cause="supervisor lost")

    async def stop(self, timeout: float, close_idle: bool = True) -> None:
        self._stopping = True
        frontends = [*self.frontends.values(), *self.retired]
        for fe in frontends:
            if isinstance(fe, HttpFrontend):
                fe.stop_accepting(close_idle)
            else:
                fe.stop_accepting()
        cut = await asyncio.gather(*(fe.drain(timeout) for fe in frontends))
        if sum(cut):
            log("shutdown_cut", "warn", pid=os.getpid(), connections=sum(cut))
        self.ctx.pipes.close()
        self.ctx.poller.close()


async def _main(fd: int, counters_fd: int, row: int) -> int:
    sock = socket.socket(fileno=fd)
    channel = await Channel.open(sock)
    worker = Worker(channel, SharedCounters(counters_fd, row), row)
    loop = asyncio.get_running_loop()
    # Signals go to the supervisor; a worker only obeys its channel. Ctrl-C in a terminal
    # reaches the whole process group, so ignore it here and let the supervisor drain us.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_signal_handler(signal.SIGTERM, lambda: None)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    code = await worker.run()
    channel.close()
    return code


def main() -> None:
    import uvloop

    logmod.setup()
    if os.environ.get("STEELYARD_LOOP") == "asyncio":
        sys.exit(asyncio.run(_main(*map(int, sys.argv[1:4]))))
    sys.exit(uvloop.run(_main(*map(int, sys.argv[1:4]))))


if __name__ == "__main__":
    main()
