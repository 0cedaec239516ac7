"""The background half of a slot migration: find a batch of slots' keys on the source group and
move them to their targets, on unmodified Redis.

Vanilla Redis keeps no per-slot index, so the mover walks the source's keyspace with SCAN (one
pass serves every slot of the batch) and keeps the keys of the moving slots. Ordinary keys go
in `MIGRATE ... REPLACE KEYS k1..kn` batches (atomic per call, TTLs carried). A key of
`big_key_bytes` or more would block both servers for the whole transfer, so it is copied in
chunks instead (HSCAN/SSCAN/ZSCAN/LRANGE/GETRANGE into a temporary key on the target, the TTL
set, then RENAME), while every proxy holds the commands that touch it.

Progress (database, SCAN cursor, keys moved) is saved after every page, so a mover that stops
resumes where it was. A pass that found keys is followed by another until one finds none.

The held keys are saved with the progress (durably, before a copy starts), so a supervisor
killed mid-copy comes back with every proxy holding them again. A run begins by settling each
held key: its copy is started again from scratch (the half-made temporary key is deleted first,
in every database), or, when the source no longer has it, only the temporary key is removed;
then it is released. Until then no proxy moves it whole with a blocking MIGRATE.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError, ResponseError

from steelyard.log import log
from steelyard.redis.client import connect
from steelyard.redis.slots import slot_of

SCAN_COUNT = 1000
CHUNK_ITEMS = 1000  # elements per chunk of a big aggregate
CHUNK_BYTES = 1024 * 1024  # bytes per chunk of a big string
IMPORT_PREFIX = b"steelyard:importing:"


@dataclass
class Progress:
    """Where a batch's mover is: saved in the store after every SCAN page."""

    source: int
    slots: list[int]
    db: int = 0
    cursor: int = 0
    moved: int = 0
    found: int = 0  # keys seen in the current pass (0 at the end of a pass: done)
    passes: int = 0
    total: int = 0  # keys counted before the move began (for a percentage)
    big: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Servers:
    """Clients to the servers a batch touches, one per (address, db)."""

    password: str | None
    timeout: float
    clients: dict[tuple[str, int], aredis.Redis] = field(default_factory=dict)

    def get(self, address: str, db: int) -> aredis.Redis:
        c = self.clients.get((address, db))
        if c is None:
            c = connect(address, self.password, self.timeout + 5, db)
            self.clients[(address, db)] = c
        return c

    async def close(self) -> None:
        for c in self.clients.values():
            await c.aclose()
        self.clients.clear()


def saved_holds(data: dict[str, Any]) -> dict[int, list[str]]:
    """The held keys saved with the progress (`held`: slot -> keys as latin-1 text)."""
    held = data.get("held") or {}
    if not isinstance(held, dict):
        raise TypeError(f"held is a {type(held).__name__}, not an object")
    out: dict[int, list[str]] = {}
    for slot, keys in held.items():
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise TypeError(f"held keys of slot {slot} are not a list of strings")
        if keys:
            out[int(slot)] = list(keys)
    return out


Hold = Callable[[int, list[bytes]], Awaitable[None]]  # every proxy holds these keys of a slot
Release = Callable[[int, list[bytes]], Awaitable[None]]


class Mover:
    def __init__(
        self,
        source: str,
        targets: dict[int, str],  # slot -> target master
        databases: int,
        servers: Servers,
        batch: int,
        big_key_bytes: int,
        timeout: float,
        save: Callable[[Progress], None],
    ) -> None:
        self.source = source
        self.targets = targets
        self.databases = databases
        self.servers = servers
        self.batch = batch
        self.big_key_bytes = big_key_bytes
        self.timeout_ms = max(1, int(timeout * 1000))
        self.save = save

    async def dbs(self) -> list[int]:
        """The databases of the source that hold keys (INFO keyspace), as Codis iterates."""
        info = await self.servers.get(self.source, 0).info("keyspace")
        found = sorted(int(name[2:]) for name in info if name.startswith("db"))
        return [db for db in found if db < self.databases]

    async def survey(self) -> tuple[int, dict[int, list[bytes]]]:
        """Count the batch's keys and find its big ones (before any proxy starts moving keys,
        so none of them is ever moved by a blocking MIGRATE)."""
        count = 0
        big: dict[int, list[bytes]] = {}
        for db in await self.dbs():
            client = self.servers.get(self.source, db)
            cursor = -1
            while cursor != 0:
                cursor, keys = await client.scan(max(cursor, 0), count=SCAN_COUNT)
                mine = [k for k in keys if slot_of(k) in self.targets]
                count += len(mine)
                for key, size in zip(mine, await self.sizes(client, mine), strict=True):
                    if size >= self.big_key_bytes:
                        big.setdefault(slot_of(key), []).append(key)
        return count, big

    async def sizes(self, client: aredis.Redis, keys: list[bytes]) -> list[int]:
        if not keys:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.memory_usage(k)
            return [int(n or 0) for n in await pipe.execute()]

    async def run(self, progress: Progress, held: set[bytes], hold: Hold, release: Release) -> None:
        """Move every key of the batch; returns when a full pass finds none left."""
        for key in sorted(held):
            if slot_of(key) in self.targets:  # else a batch of other slots left it held
                await self.settle(key)
            held.discard(key)
            await release(slot_of(key), [key])
        while True:
            dbs = await self.dbs()
            for db in dbs:
                if db < progress.db:
                    continue
                if db > progress.db:
                    progress.db, progress.cursor = db, 0
                await self._pass_db(progress, hold, release)
                progress.db, progress.cursor = db + 1, 0
                self.save(progress)
            progress.passes += 1
            found, progress.found = progress.found, 0
            progress.db = progress.cursor = 0
            self.save(progress)
            if found == 0:
                return
            log("redis_move_pass", source=self.source, passes=progress.passes, found=found)

    async def settle(self, key: bytes) -> None:
        """Copy a held key to its target in every database that has it, and remove any
        temporary key an earlier mover left (the supervisor stopped mid-copy)."""
        target = self.targets[slot_of(key)]
        for db in range(self.databases):
            await self.copy_big(self.servers.get(self.source, db), db, key, target)

    async def _pass_db(self, progress: Progress, hold: Hold, release: Release) -> None:
        db = progress.db
        client = self.servers.get(self.source, db)
        first = True
        while first or progress.cursor != 0:
            first = False
            cursor, keys = await client.scan(progress.cursor, count=SCAN_COUNT)
            mine = [k for k in keys if slot_of(k) in self.targets]
            progress.found += len(mine)
            small: dict[str, list[bytes]] = {}
            sizes = await self.sizes(client, mine)
            for key, size in zip(mine, sizes, strict=True):
                target = self.targets[slot_of(key)]
                if size >= self.big_key_bytes:
                    await hold(slot_of(key), [key])  # another database's, or grew big since
                    await self.copy_big(client, db, key, target)
                    await release(slot_of(key), [key])
                else:
                    small.setdefault(target, []).append(key)
            for target, group in small.items():
                for i in range(0, len(group), self.batch):
                    progress.moved += await self.migrate(
                        client, target, db, group[i : i + self.batch]
                    )
            progress.cursor = cursor
            self.save(progress)

    async def migrate(self, client: aredis.Redis, target: str, db: int, keys: list[bytes]) -> int:
        host, _, port = target.rpartition(":")
        args: list[Any] = ["MIGRATE", host.strip("[]"), port, "", db, self.timeout_ms, "REPLACE"]
        if self.servers.password:
            args += ["AUTH", self.servers.password]
        args += ["KEYS", *keys]
        reply = await client.execute_command(*args)
        return 0 if reply in (b"NOKEY", "NOKEY") else len(keys)

    async def copy_big(self, client: aredis.Redis, db: int, key: bytes, target: str) -> None:
        """Copy `key` to `target` in chunks, then make it appear there at once (RENAME) and
        remove it here. The proxies hold every command on `key` meanwhile."""
        dst = self.servers.get(target, db)
        tmp = IMPORT_PREFIX + key
        await dst.delete(tmp)  # a copy an earlier mover left half done
        kind = (await client.type(key)).decode()
        if kind == "none":
            return  # expired or moved since it was seen
        if kind not in ("string", "list", "hash", "set", "zset"):
            log(
                "redis_big_key_whole",
                key=key.decode("utf-8", "replace"),
                type=kind,
                cause="only strings, lists, hashes, sets and sorted sets are copied in chunks",
            )
            await self.migrate(client, target, db, [key])
            return
        expire_at = await client.execute_command("PEXPIRETIME", key)
        if kind == "string":
            length = await client.strlen(key)
            for off in range(0, length, CHUNK_BYTES):
                await dst.append(tmp, await client.getrange(key, off, off + CHUNK_BYTES - 1))
        elif kind == "list":
            length = await client.llen(key)
            for off in range(0, length, CHUNK_ITEMS):
                await dst.rpush(tmp, *await client.lrange(key, off, off + CHUNK_ITEMS - 1))
        else:
            cursor = -1
            while cursor != 0:
                if kind == "hash":
                    cursor, fields = await client.hscan(key, max(cursor, 0), count=CHUNK_ITEMS)
                    if fields:
                        await dst.hset(tmp, mapping=fields)
                elif kind == "set":
                    cursor, members = await client.sscan(key, max(cursor, 0), count=CHUNK_ITEMS)
                    if members:
                        await dst.sadd(tmp, *members)
                else:
                    cursor, pairs = await client.zscan(key, max(cursor, 0), count=CHUNK_ITEMS)
                    if pairs:
                        await dst.zadd(tmp, {m: s for m, s in pairs})
        if not await client.exists(key):
            await dst.delete(tmp)  # it expired while being copied
            return
        if expire_at is not None and int(expire_at) > 0:
            await dst.pexpireat(tmp, int(expire_at))
        await dst.rename(tmp, key)
        await client.unlink(key)
        log("redis_big_key_moved", key=key.decode("utf-8", "replace"), type=kind, to=target)


def describe(exc: BaseException) -> str:
    if isinstance(exc, ResponseError | RedisError | OSError | asyncio.TimeoutError):
        return f"{type(exc).__name__}: {exc}"
    return repr(exc)
