"""The libraries and cached scripts a master must have before it serves a slot (the dashboard's
side of FUNCTION LOAD and SCRIPT LOAD through the proxy, see `scripting`).

Functions: every group's master has the same libraries (they are loaded on all of them), so a
group about to take its first slots gets an exact copy of a serving master's: FUNCTION DUMP
there, FUNCTION RESTORE ... FLUSH on it. A promoted replica needs nothing: Redis 7 replicates
functions to replicas (in the full sync and as they are loaded or deleted).

Scripts: Redis replicates no script cache, and no command lists one, so the proxy keeps the
bodies loaded through it (`ScriptRecord`, in the store, bounded) and loads them on a master
about to serve slots (a new group, a promoted replica) and on a replica about to serve reads.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoPermissionError

from steelyard.core.store.base import Store
from steelyard.log import log
from steelyard.redis.client import connect

PREFIX = "redis/scripts/"  # + sha1: {"body": latin-1 text}
MAX_SCRIPTS = 1000
MAX_BYTES = 16 * 1024 * 1024
TIMEOUT = 10.0


class ScriptRecord:
    """The script bodies loaded through the proxies (SCRIPT LOAD), by sha1; SCRIPT FLUSH
    through a proxy clears it. Past `max_scripts` or `max_bytes` a new script is not kept
    (logged): a master added later answers NOSCRIPT for it until a client loads it again."""

    def __init__(self, store: Store, max_scripts: int = MAX_SCRIPTS, max_bytes: int = MAX_BYTES):
        self.store = store
        self.max_scripts = max_scripts
        self.max_bytes = max_bytes
        self.bodies: dict[str, bytes] = {}
        for key, value in store.items(PREFIX).items():
            body = value.get("body")
            if isinstance(body, str):
                self.bodies[key[len(PREFIX) :]] = body.encode("latin-1")
        self.size = sum(map(len, self.bodies.values()))
        self.dropped = 0  # scripts not kept since the record was last cleared

    def reported(self, msg: dict[str, Any]) -> None:
        """A worker's message: {"body": text} after a SCRIPT LOAD, {"flush": true} after a
        SCRIPT FLUSH."""
        if msg.get("flush"):
            self.clear()
        elif isinstance(msg.get("body"), str):
            self.add(msg["body"].encode("latin-1"))

    def add(self, body: bytes) -> bool:
        sha = hashlib.sha1(body).hexdigest()  # Redis names scripts by it
        if sha in self.bodies:
            return True
        if len(self.bodies) >= self.max_scripts or self.size + len(body) > self.max_bytes:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log("redis_scripts_full", "warn", sha1=sha, scripts=len(self.bodies),
                    bytes=self.size, dropped=self.dropped,
                    cause="not kept for masters added later")  # fmt: skip
            return False
        self.store.put(PREFIX + sha, {"body": body.decode("latin-1")})
        self.bodies[sha] = body
        self.size += len(body)
        return True

    def clear(self) -> None:
        for sha in self.bodies:
            self.store.delete(PREFIX + sha)
        if self.bodies:
            log("redis_scripts_flushed", scripts=len(self.bodies))
        self.bodies.clear()
        self.size = 0
        self.dropped = 0


async def copy_functions(source: str, target: str, password: str | None) -> str:
    """Make `target`'s libraries an exact copy of `source`'s: "copied"; "none" when `source`
    has none (`target` is left alone); "denied" when the backend user may not use FUNCTION
    (an ACL with -function, as the README's hardened one): then no library can have been
    loaded through the proxy either."""
    src = connect(source, password, TIMEOUT)
    dst = connect(target, password, TIMEOUT)
    try:
        try:
            libraries = await src.execute_command("FUNCTION", "LIST")
        except NoPermissionError:
            return "denied"
        if not libraries:
            return "none"
        payload = await src.execute_command("FUNCTION", "DUMP")
        await dst.execute_command("FUNCTION", "RESTORE", payload, "FLUSH")
        return "copied"
    finally:
        await src.aclose()
        await dst.aclose()


async def load_scripts(target: str, bodies: list[bytes], password: str | None) -> None:
    """SCRIPT LOAD every body on `target`, in one pipeline (RedisError when one fails)."""
    if not bodies:
        return
    client = connect(target, password, TIMEOUT)
    try:
        pipe = client.pipeline(transaction=False)
        for body in bodies:
            pipe.execute_command("SCRIPT", "LOAD", body)
        await pipe.execute()
    finally:
        await client.aclose()
