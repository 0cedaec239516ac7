"""Online slot migration under `steelyard run`: keys move with their values and TTLs, clients
keep being served, and under concurrent writes nothing is lost or applied twice."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
from typing import Any

import pytest
import redis as redis_py

from fixtures.procs import base_config, free_port, wait_for
from steelyard.redis.mover import saved_holds
from steelyard.redis.slots import slot_of


def cluster_config(tmp_path, port: int, servers, **redis_extra: Any) -> dict:
    cfg = base_config(tmp_path, workers=2)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}"}],
        "groups": [{"id": i + 1, "master": s.address} for i, s in enumerate(servers)],
        **redis_extra,
    }
    return cfg


def client(port: int, db: int = 0, protocol: int = 2) -> redis_py.Redis:
    c = redis_py.Redis(port=port, db=db, protocol=protocol, socket_timeout=30)
    wait_for(c.ping, what="redis listener")
    return c


def blpop(c: redis_py.Redis, queue: str) -> list:
    return list(c.blpop([queue], timeout=0))  # a tuple in RESP2, a list in RESP3


def wait_moves_done(sy, timeout: float = 60.0) -> dict:
    def done() -> dict | None:
        data = sy.api("GET", "/api/redis/migrations")
        # The moves are gone once the last barrier starts; the batch has ended (its history
        # written) when its progress is gone too.
        return data if not data["moves"] and data["progress"] is None else None

    return wait_for(done, timeout, "migrations done")


def owner(sy, key: bytes) -> int:
    return sy.api("GET", "/api/redis/slots")["slots"][slot_of(key)]


def test_migrate_moves_keys_values_and_ttls(tmp_path, redis_servers, steelyard):
    a, b = redis_servers(), redis_servers()
    port = free_port()
    sy = steelyard(cluster_config(tmp_path, port, [a, b], migrate_batch=7))
    c = client(port)
    keys = [f"k{i}".encode() for i in range(400)]
    for i, k in enumerate(keys):
        c.set(k, i, ex=1000 if i % 2 else None)
    c.hset(b"h{k1}", mapping={"f": "v"})
    c.rpush(b"l{k1}", 1, 2, 3)
    c.zadd(b"z{k1}", {"m": 1.5})
    c1 = client(port, db=3)
    c1.set(b"k1", b"in db 3")
    moving = sorted({slot_of(k) for k in keys if slot_of(k) < 512})
    out = sy.api("POST", "/api/redis/migrate", {"slots": "0-511", "to": 2})
    assert out["queued"] == list(range(512))
    done = wait_moves_done(sy)
    assert done["history"][-1]["slots"] == "0-511"
    assert done["history"][-1]["moved"] >= len([k for k in keys if slot_of(k) < 512])
    assert sy.api("GET", "/api/redis/slots")["slots"] == [2] * 1024
    # every key now lives on b, none left on a, with values and TTLs kept
    assert a.command(b"DBSIZE") == 0
    for i, k in enumerate(keys):
        assert b.command(b"GET", k) == str(i).encode()
        ttl = b.command(b"TTL", k)
        assert (0 < ttl <= 1000) if i % 2 else ttl == -1
    assert b.command(b"HGET", b"h{k1}", b"f") == b"v"
    assert b.command(b"LRANGE", b"l{k1}", b"0", b"-1") == [b"1", b"2", b"3"]
    assert b.command(b"ZSCORE", b"z{k1}", b"m") == b"1.5"
    assert b.raw(b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n*2\r\n$3\r\nGET\r\n$2\r\nk1\r\n").endswith(
        b"$7\r\nin db 3\r\n"
    )
    # the proxy serves them all from their new home, in every database
    assert c.mget(keys) == [str(i).encode() for i in range(400)]
    assert c1.get(b"k1") == b"in db 3"
    assert moving  # the test moved keys, not empty slots
    sy.wait_log(r"event=redis_move_done slots=0-511 source=1")


def test_big_keys_are_copied_in_chunks_with_writes_held(tmp_path, redis_servers, steelyard):
    a, b = redis_servers(), redis_servers()
    port = free_port()
    sy = steelyard(cluster_config(tmp_path, port, [a, b], big_key_bytes="20KB"))
    c = client(port)
    # all on group 1 (slots 0-511) thanks to one hash tag
    tag = next(f"{{t{i}}}" for i in range(100) if slot_of(f"t{i}".encode()) < 512)
    big = {
        "hash": f"{tag}hash",
        "list": f"{tag}list",
        "set": f"{tag}set",
        "zset": f"{tag}zset",
        "string": f"{tag}string",
    }
    c.hset(big["hash"], mapping={f"f{i}": f"value-{i}" * 5 for i in range(3000)})
    c.rpush(big["list"], *[f"item-{i}" for i in range(3000)])
    c.sadd(big["set"], *[f"member-{i}" for i in range(3000)])
    c.zadd(big["zset"], {f"m{i}": i / 7 for i in range(3000)})
    c.set(big["string"], b"x" * 3_000_000)
    c.pexpire(big["hash"], 500_000)
    c.set(f"{tag}small", "tiny")
    slot = slot_of(tag.strip("{}").encode())
    sy.api("POST", "/api/redis/migrate", {"slots": str(slot), "to": 2})
    # a write sent while the move is under way lands once, on the new home
    c.rpush(big["list"], "late")
    wait_moves_done(sy)
    assert a.command(b"EXISTS", *[k.encode() for k in big.values()]) == 0
    assert b.command(b"HLEN", big["hash"].encode()) == 3000
    assert b.command(b"HGET", big["hash"].encode(), b"f2999") == b"value-2999" * 5
    assert 0 < b.command(b"PTTL", big["hash"].encode()) <= 500_000
    assert b.command(b"LLEN", big["list"].encode()) == 3001
    assert b.command(b"LINDEX", big["list"].encode(), b"-1") == b"late"
    assert b.command(b"LINDEX", big["list"].encode(), b"0") == b"item-0"
    assert b.command(b"SCARD", big["set"].encode()) == 3000
    assert float(b.command(b"ZSCORE", big["zset"].encode(), b"m2999")) == 2999 / 7
    assert b.command(b"STRLEN", big["string"].encode()) == 3_000_000
    assert b.command(b"GET", f"{tag}small".encode()) == b"tiny"
    assert sy.count_log(r"event=redis_big_key_moved") == 5
    assert b.command(b"KEYS", b"steelyard:importing:*") == []
    assert c.llen(big["list"]) == 3001


class Writer(threading.Thread):
    """A client writing its own keys through the proxy and counting what was acknowledged."""

    def __init__(self, port: int, n: int, stop: threading.Event, pipeline: bool) -> None:
        super().__init__(daemon=True)
        self.c = redis_py.Redis(port=port, protocol=2, socket_timeout=30)
        self.n = n
        self.stop = stop
        self.pipeline = pipeline
        self.incr: dict[str, int] = {}
        self.sadd: dict[str, set[str]] = {}
        self.lpush: dict[str, list[str]] = {}
        self.sets: dict[str, str] = {}
        self.errors: list[str] = []
        self.ops = 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.step(i)
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            i += 1

    def step(self, i: int) -> None:
        j = i % 97  # a key set wide enough to cover slots on both sides of every move
        ctr, st, ls, s = (
            f"w{self.n}:ctr:{j}",
            f"w{self.n}:set:{j}",
            f"w{self.n}:list:{j}",
            f"w{self.n}:str:{j}",
        )
        if self.pipeline:
            p = self.c.pipeline(transaction=False)
            p.incr(ctr).sadd(st, str(i)).lpush(ls, str(i)).set(s, str(i), ex=600)
            r = p.execute()
            assert r[0] == self.incr.get(ctr, 0) + 1, (ctr, r)
        else:
            assert self.c.incr(ctr) == self.incr.get(ctr, 0) + 1, ctr
            self.c.sadd(st, str(i))
            self.c.lpush(ls, str(i))
            self.c.set(s, str(i), ex=600)
        self.incr[ctr] = self.incr.get(ctr, 0) + 1
        self.sadd.setdefault(st, set()).add(str(i))
        self.lpush.setdefault(ls, []).insert(0, str(i))
        self.sets[s] = str(i)
        self.ops += 4


def run_moves_under_load(tmp_path, redis_servers, steelyard) -> None:
    a, b = redis_servers(), redis_servers()
    port = free_port()
    sy = steelyard(cluster_config(tmp_path, port, [a, b], migrate_batch=5))
    # Filler keys make every pass over a source long enough for the writers to race it.
    filler = client(port).pipeline(transaction=False)
    for i in range(20000):
        filler.set(f"filler:{i}", i)
    filler.execute()
    stop = threading.Event()
    writers = [Writer(port, n, stop, pipeline=n % 2 == 1) for n in range(4)]
    for w in writers:
        w.start()
    wait_for(lambda: all(w.ops > 200 for w in writers), what="writers under way")
    plan = [("0-511", 2), ("0-255", 1), ("600-1023", 1), ("0-1023", 2), ("0-511", 1)]
    for slots, to in plan:
        sy.api("POST", "/api/redis/migrate", {"slots": slots, "to": to})
        wait_moves_done(sy)
        assert not any(w.errors for w in writers), [w.errors for w in writers]
    stop.set()
    for w in writers:
        w.join(30)
    assert not any(w.errors for w in writers), [w.errors for w in writers]
    slots = sy.api("GET", "/api/redis/slots")["slots"]
    assert slots == [1] * 512 + [2] * 512
    servers = {1: a, 2: b}
    for w in writers:
        for key, n in w.incr.items():
            home, other = (
                servers[slots[slot_of(key.encode())]],
                servers[3 - slots[slot_of(key.encode())]],
            )
            assert home.command(b"GET", key.encode()) == str(n).encode(), key
            assert other.command(b"EXISTS", key.encode()) == 0, f"{key} left behind"
        for key, members in w.sadd.items():
            home = servers[slots[slot_of(key.encode())]]
            assert set(m.decode() for m in home.command(b"SMEMBERS", key.encode())) == members
        for key, items in w.lpush.items():
            home = servers[slots[slot_of(key.encode())]]
            assert [x.decode() for x in home.command(b"LRANGE", key.encode(), b"0", b"-1")] == items
        for key, value in w.sets.items():
            home = servers[slots[slot_of(key.encode())]]
            assert home.command(b"GET", key.encode()) == value.encode()
            assert 0 < home.command(b"TTL", key.encode()) <= 600
    total = sum(w.ops for w in writers)
    assert total > 1000
    assert sy.count_log(r"event=redis_move_done") == len(plan)


@pytest.mark.parametrize("run", [1, 2])
def test_no_write_lost_or_doubled_while_slots_move_back_and_forth(
    run, tmp_path, redis_servers, steelyard
):
    run_moves_under_load(tmp_path, redis_servers, steelyard)


def test_mover_resumes_after_the_supervisor_is_killed(tmp_path, redis_servers, steelyard):
    import signal

    a, b = redis_servers(), redis_servers()
    port = free_port()
    sy = steelyard(cluster_config(tmp_path, port, [a, b], migrate_batch=1))
    c = client(port)
    n = 20000
    p = c.pipeline(transaction=False)
    for i in range(n):
        p.set(f"r{i}", i)
    p.execute()
    sy.api("POST", "/api/redis/migrate", {"slots": "0-511", "to": 2})
    wait_for(
        lambda: (sy.api("GET", "/api/redis/migrations")["progress"] or {}).get("moved", 0) > 500,
        what="the mover under way",
    )
    workers = sy.worker_pids()
    sy.proc.send_signal(signal.SIGKILL)
    sy.proc.wait()
    # the workers see their channel close and exit; then the listener is free again
    wait_for(
        lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers), what="workers gone"
    )
    sy.start()
    sy.wait_log(r"event=redis_move_done")
    assert sy.api("GET", "/api/redis/slots")["slots"] == [2] * 1024
    c = client(port)
    values = c.mget([f"r{i}" for i in range(n)])
    assert values == [str(i).encode() for i in range(n)]
    assert a.command(b"DBSIZE") == 0
    assert b.command(b"DBSIZE") == n


@pytest.mark.parametrize("protocol", [2, 3])
def test_subscribers_follow_their_channel_to_its_new_group(
    tmp_path, redis_servers, steelyard, protocol
):
    a, b = redis_servers(), redis_servers()
    port = free_port()
    sy = steelyard(cluster_config(tmp_path, port, [a, b]))
    c = client(port, protocol=protocol)
    channel = next(f"news{i}" for i in range(100) if slot_of(f"news{i}".encode()) < 512)
    sub = c.pubsub()
    sub.subscribe(channel)
    assert sub.get_message(timeout=5)["type"] == "subscribe"

    def receive(data: bytes) -> None:
        assert c.publish(channel, data) == 1  # one subscriber counted, on the owner
        msg = wait_for(lambda: sub.get_message(timeout=0.1), what=f"message {data!r}")
        assert (msg["type"], msg["data"]) == ("message", data)

    receive(b"on group 1")
    slot = slot_of(channel.encode())
    sy.api("POST", "/api/redis/migrate", {"slots": str(slot), "to": 2})
    wait_moves_done(sy)
    receive(b"on group 2")  # PUBLISH goes to the new owner, where the subscriber listens now
    assert a.command(b"PUBSUB", b"NUMSUB", channel.encode()) == [channel.encode(), 0]
    assert b.command(b"PUBSUB", b"NUMSUB", channel.encode()) == [channel.encode(), 1]
    sy.api("POST", "/api/redis/migrate", {"slots": str(slot), "to": 1})
    wait_moves_done(sy)
    receive(b"back on group 1")
    assert sub.get_message(timeout=0.2) is None  # nothing twice, no stray confirmation
    sub.unsubscribe(channel)
    assert sub.get_message(timeout=5)["type"] == "unsubscribe"
    wait_for(lambda: a.command(b"PUBSUB", b"NUMSUB", channel.encode())[1] == 0, what="unsubscribed")


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_blocked_pop_follows_its_list_to_the_new_group(
    tmp_path, redis_servers, steelyard, protocol
):
    """Woken on the old group by CLIENT UNBLOCK, a pop answers as on a timeout (RESP2's null
    array, RESP3's null): the proxy takes that for the wake-up and sends it again."""
    a, b = redis_servers(), redis_servers()
    port = free_port()
    sy = steelyard(cluster_config(tmp_path, port, [a, b]))
    c = client(port)
    queue = next(f"jobs{i}" for i in range(100) if slot_of(f"jobs{i}".encode()) < 512)
    got: list = []
    blocked = client(port, protocol=protocol)
    waiter = threading.Thread(target=lambda: got.append(blpop(blocked, queue)))
    waiter.start()
    wait_for(lambda: a.command(b"INFO", b"clients").count(b"blocked_clients:1"), what="blocked")
    sy.api("POST", "/api/redis/migrate", {"slots": str(slot_of(queue.encode())), "to": 2})
    wait_moves_done(sy)
    # the waiter was woken on the old group and waits on the new one now
    wait_for(lambda: b.command(b"INFO", b"clients").count(b"blocked_clients:1"), what="re-blocked")
    assert not got
    c.rpush(queue, "job-1")
    waiter.join(10)
    assert got == [[queue.encode(), b"job-1"]]
    assert b.command(b"LLEN", queue.encode()) == 0


def test_pattern_subscribers_listen_on_a_group_added_later(tmp_path, redis_servers, steelyard):
    a, b, c3 = redis_servers(), redis_servers(), redis_servers()
    port = free_port()
    sy = steelyard(cluster_config(tmp_path, port, [a, b]))
    c = client(port)
    sub = c.pubsub()
    sub.psubscribe("alerts.*")
    assert sub.get_message(timeout=5)["type"] == "psubscribe"
    sy.api("POST", "/api/redis/groups", {"id": 3, "master": c3.address})
    channel = "alerts.disk"
    sy.api("POST", "/api/redis/migrate", {"slots": str(slot_of(channel.encode())), "to": 3})
    wait_moves_done(sy)
    assert c.publish(channel, "full") == 1  # published on group 3, where the pattern listens now
    msg = wait_for(lambda: sub.get_message(timeout=0.1), what="the pattern's message")
    assert (msg["type"], msg["channel"], msg["data"]) == ("pmessage", channel.encode(), b"full")
    assert sub.get_message(timeout=0.2) is None


def test_big_key_holds_survive_a_supervisor_killed_mid_copy(tmp_path, redis_servers, steelyard):
    """A supervisor SIGKILLed while it copies a big key in chunks comes back with every proxy
    holding that key: a write to it waits for the copy, which starts again from scratch (the
    half-made temporary key replaced), and the key is never moved whole by a blocking MIGRATE.

    The hold is in the store (written with fdatasync) before the copy starts. Measured when
    written: a 2M-element list (about 30 MB in each redis-server) takes 2-4 s to copy in
    chunks of 1000; the target is write-paused (CLIENT PAUSE WRITE) as soon as the copy is
    seen under way, so the kill lands mid-copy on any machine.
    """
    a, b = redis_servers(), redis_servers()
    port = free_port()
    cfg = cluster_config(tmp_path, port, [a, b], big_key_bytes="20KB")
    cfg["workers"] = 1
    sy = steelyard(cfg)
    ra = redis_py.Redis(port=a.port, protocol=2, socket_timeout=60)
    rb = redis_py.Redis(port=b.port, protocol=2, socket_timeout=60)
    tag = next(f"{{t{i}}}" for i in range(100) if slot_of(f"t{i}".encode()) < 512)
    key = f"{tag}list".encode()
    slot = slot_of(key)
    n = 2_000_000
    for i in range(0, n, 20_000):
        ra.rpush(key, *[f"item-{j}" for j in range(i, i + 20_000)])
    tmp = b"steelyard:importing:" + key
    sy.api("POST", "/api/redis/migrate", {"slots": str(slot), "to": 2})
    wait_for(lambda: rb.llen(tmp) > 0, 60, "the chunked copy under way")
    rb.client_pause(600_000, all=False)  # writes wait: the copy stops where it is
    copied = rb.llen(tmp)
    assert 0 < copied < n, copied
    db = sqlite3.connect(tmp_path / "store" / "state.db")
    try:
        (saved,) = db.execute("SELECT value FROM kv WHERE key = 'redis/mover'").fetchone()
    finally:
        db.close()
    assert json.loads(saved)["held"] == {str(slot): [key.decode()]}

    workers = sy.worker_pids()
    sy.proc.send_signal(signal.SIGKILL)
    sy.proc.wait()
    wait_for(
        lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers), what="workers gone"
    )
    ra.config_resetstat()
    sy.start()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"*3\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n$4\r\nlate\r\n" % (len(key), key))
        # The worker has read the command (and decided where it goes) once it counts it.
        wait_for(
            lambda: sy.api("GET", "/api/redis")["proxies"][0]["commands"] >= 1,
            what="the write read by the proxy",
        )
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(64)  # held: no answer while the copy cannot go on
        s.setblocking(True)
        # Not moved whole: the source still has every element and ran no MIGRATE.
        assert ra.llen(key) == n
        assert "cmdstat_migrate" not in ra.info("commandstats")
        rb.client_unpause()
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(64)
            assert chunk, "the proxy closed the connection"
            reply += chunk
    assert reply == b":%d\r\n" % (n + 1)
    wait_moves_done(sy, 120)
    assert ra.exists(key) == 0
    assert rb.llen(key) == n + 1
    assert rb.lindex(key, 0) == b"item-0"
    assert rb.lindex(key, n - 1) == f"item-{n - 1}".encode()
    assert rb.lindex(key, -1) == b"late"
    assert rb.keys(b"steelyard:importing:*") == []
    assert sy.count_log(r"event=redis_big_key_moved") == 1  # copied in chunks, once


def test_saved_holds_are_read_back_or_refused():
    assert saved_holds({"source": 1}) == {}  # progress saved before holds were kept in it
    assert saved_holds({"held": {"7": ["{t}big", "{t}other"], "9": []}}) == {
        7: ["{t}big", "{t}other"]
    }
    for bad in ({"held": ["k"]}, {"held": {"7": "k"}}, {"held": {"7": [1]}}):
        with pytest.raises(TypeError):
            saved_holds(bad)
    with pytest.raises(ValueError):
        saved_holds({"held": {"seven": ["k"]}})
