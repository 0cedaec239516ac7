"""Multi-key commands whose keys are in several slots of one group (`cross_slot: group`), under
`steelyard run` with real redis-servers and redis-py: they run on that group as on a single
Redis; across groups, and with `cross_slot: refuse`, they get Redis Cluster's CROSSSLOT."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Container, Iterator
from typing import Any

import pytest
import redis as redis_py

from fixtures.procs import Steelyard, base_config, free_port, wait_for
from fixtures.redis_server import RedisServer
from steelyard.redis.slots import slot_of

CROSSSLOT = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"


def config(
    tmp_path, port: int, servers: list[RedisServer], proxy: dict | None = None, **redis_extra: Any
) -> dict:
    cfg = base_config(tmp_path, workers=1)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}", **(proxy or {})}],
        "groups": [{"id": i + 1, "master": s.address} for i, s in enumerate(servers)],
        **redis_extra,
    }
    return cfg


def client(port: int) -> redis_py.Redis:
    c = redis_py.Redis(port=port, socket_timeout=30)  # redis-py's defaults: RESP3 (HELLO 3)
    wait_for(c.ping, what="redis listener")
    return c


class Cluster:
    def __init__(self, tmp_path, n: int, proxy: dict | None = None, **redis_extra: Any) -> None:
        self.servers = [RedisServer(tmp_path) for _ in range(n)]
        self.port = free_port()
        self.cfg = config(tmp_path, self.port, self.servers, proxy, **redis_extra)
        self.sy = Steelyard(tmp_path, self.cfg)
        self.c = client(self.port)

    def owned(self, group: int) -> set[int]:
        """The slots `group` owns now, from the dashboard's slot map."""
        slots = self.sy.api("GET", "/api/redis/slots")["slots"]
        return {s for s, g in enumerate(slots) if g == group}

    def stop(self) -> None:
        self.sy.stop(timeout=10)
        for s in self.servers:
            s.stop()

    def exchange(self, data: bytes, replies: int) -> bytes:
        """Raw commands on a new connection; the bytes of `replies` one-line replies."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(data)
            out = b""
            while out.count(b"\r\n") < replies:
                chunk = s.recv(65536)
                assert chunk, "the proxy closed the connection"
                out += chunk
            return out


def keys(prefix: str, n: int, group_slots: Container[int] = range(1024)) -> list[bytes]:
    """`n` keys named after `prefix`, each in a slot of its own among `group_slots`."""
    out: list[bytes] = []
    seen: set[int] = set()
    i = 0
    while len(out) < n:
        key = f"{prefix}:{i}".encode()
        slot = slot_of(key)
        if slot in group_slots and slot not in seen:
            seen.add(slot)
            out.append(key)
        i += 1
    return out


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("one-group"), 1)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("two-groups"), 2)  # 0-511 on 1, 512-1023 on 2
    yield cluster
    cluster.stop()


# one group: every slot is its own ---------------------------------------------------------


def test_set_stores(one):
    c, (server,) = one.c, one.servers
    x, y, dst, dst2 = keys("sets", 4)
    c.sadd(x, "a", "b", "c")
    c.sadd(y, "b", "c", "d")
    assert c.sunionstore(dst, [x, y]) == 4
    assert set(server.command(b"SMEMBERS", dst)) == {b"a", b"b", b"c", b"d"}
    assert c.sinterstore(dst2, [x, y]) == 2
    assert set(server.command(b"SMEMBERS", dst2)) == {b"b", b"c"}
    assert c.sinter(x, y) == {b"b", b"c"}
    assert c.smove(x, y, "a") is True
    assert c.smembers(y) == {b"a", b"b", b"c", b"d"}
    assert not server.command(b"SISMEMBER", x, b"a")


def test_renames_and_copy(one):
    c, (server,) = one.c, one.servers
    src, dst, other, copy = keys("ren", 4)
    c.set(src, "v")
    c.set(other, "taken")
    assert c.rename(src, dst) is True
    assert server.command(b"GET", dst) == b"v"
    assert server.command(b"EXISTS", src) == 0
    assert c.renamenx(dst, other) is False
    assert c.renamenx(dst, src) is True
    assert c.copy(src, copy) is True
    assert server.command(b"GET", copy) == b"v"
    assert c.get(src) == b"v"


def test_sorted_set_stores_and_pops(one):
    c, (server,) = one.c, one.servers
    x, y, dst, dst2 = keys("zsets", 4)
    c.zadd(x, {"a": 1, "b": 2})
    c.zadd(y, {"b": 3, "c": 4})
    assert c.zunionstore(dst, [x, y]) == 3
    assert server.command(b"ZSCORE", dst, b"b") == b"5"
    assert c.zinterstore(dst2, [x, y]) == 1
    assert server.command(b"ZRANGE", dst2, b"0", b"-1", b"WITHSCORES") == [b"b", b"5"]
    empty = keys("zsets-empty", 1)[0]
    assert c.execute_command("BZMPOP", 0, 2, empty, x, "MIN") == [x, [[b"a", b"1"]]]
    assert server.command(b"ZRANGE", x, b"0", b"-1") == [b"b"]


def test_list_moves_and_pops(one):
    c, (server,) = one.c, one.servers
    x, y, z = keys("lists", 3)
    c.rpush(x, "1", "2", "3")
    assert c.lmove(x, y, "LEFT", "RIGHT") == b"1"
    assert server.command(b"LRANGE", y, b"0", b"-1") == [b"1"]
    assert c.execute_command("LMPOP", 2, z, x, "LEFT") == [x, [b"2"]]
    assert c.execute_command("BLMPOP", 0, 2, z, x, "RIGHT", "COUNT", 5) == [x, [b"3"]]
    assert server.command(b"EXISTS", x) == 0
    # several empty lists: times out with a nil, as Redis does
    assert c.execute_command("BLMPOP", 0.05, 2, z, x, "LEFT") is None
    assert c.blpop([z, x], timeout=0.05) is None
    c.rpush(x, "4")
    assert c.brpoplpush(x, z, 0) == b"4"
    assert c.brpop([y, z], 0) == (y, b"1")
    assert c.brpop([y, z], 0) == (z, b"4")
    c.zadd(x, {"a": 1})
    c.zadd(z, {"b": 2})
    assert c.bzpopmax([y, z, x], 0) == (z, b"b", 2.0)  # the first key that has members
    assert c.bzpopmin([z, x], 0) == (x, b"a", 1.0)


def test_a_blocked_move_is_served_by_a_later_push(one):
    c, (server,) = one.c, one.servers
    src, dst = keys("blmove", 2)
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(client(one.port).blmove(src, dst, 0, "LEFT", "RIGHT"))
    )
    waiter.start()
    wait_for(lambda: b"blocked_clients:1" in server.command(b"INFO", b"clients"), what="blocked")
    assert c.rpush(src, "job") == 1
    waiter.join(30)
    assert got == [b"job"]
    assert server.command(b"LRANGE", dst, b"0", b"-1") == [b"job"]
    assert server.command(b"EXISTS", src) == 0


def test_strings_bits_and_hyperloglogs(one):
    c, (server,) = one.c, one.servers
    a, b, dst, h1, h2, hdst = keys("bits", 6)
    assert c.msetnx({a: b"\x0f", b: b"\xff"}) is True
    assert c.msetnx({a: "again", dst: "new"}) is False  # one exists: none is set
    assert server.command(b"EXISTS", dst) == 0
    assert c.bitop("AND", dst, a, b) == 1
    assert server.command(b"GET", dst) == b"\x0f"
    c.pfadd(h1, "x", "y")
    c.pfadd(h2, "y", "z")
    assert c.pfmerge(hdst, h1, h2) is True
    assert c.pfcount(hdst) == 3
    assert c.pfcount(h1, h2) == 3


def test_sort_store(one):
    c, (server,) = one.c, one.servers
    src, dst = keys("sort", 2)
    c.rpush(src, "3", "1", "2")
    assert c.sort(src, store=dst) == 3
    assert server.command(b"LRANGE", dst, b"0", b"-1") == [b"1", b"2", b"3"]


def test_xread_over_two_streams(one):
    c = one.c
    s1, s2 = keys("streams", 2)
    id1 = c.xadd(s1, {"f": "1"})
    id2 = c.xadd(s2, {"f": "2"})
    assert c.xread({s1: 0, s2: 0}) == [[s1, [(id1, {b"f": b"1"})]], [s2, [(id2, {b"f": b"2"})]]]
    assert c.xread({s1: "$", s2: "$"}, block=50) == []  # BLOCK: a timeout answers nil


def test_eval_with_keys_in_two_slots(one):
    c, (server,) = one.c, one.servers
    k1, k2 = keys("eval", 2)
    script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('APPEND', KEYS[2], ARGV[1])"
    assert c.eval(script, 2, k1, k2, "v") == 1
    assert server.command(b"MGET", k1, k2) == [b"v", b"v"]


def test_multi_over_several_slots(one):
    c, (server,) = one.c, one.servers
    k1, k2, k3 = keys("tx", 3)
    p = c.pipeline(transaction=True)
    p.set(k1, "1").incr(k2).mset({k1: "one", k3: "three"}).mget(k1, k2, k3).delete(k1, k3)
    assert p.execute() == [True, 1, True, [b"one", b"1", b"three"], 2]
    assert server.command(b"MGET", k1, k2, k3) == [None, b"1", None]


def test_commands_after_exec_wait_for_its_answer(one):
    """The transaction runs on a connection of its own: a command pipelined after EXEC (on
    the shared connection) sees what it wrote, as on a single Redis."""
    k1, k2 = keys("after-exec", 2)
    for tx_keys in ((k1,), (k1, k2)):
        queued = b"".join(b"INCR %b\r\n" % k for k in tx_keys)
        commands = b"SET %b 1\r\nMULTI\r\n%bEXEC\r\nGET %b\r\nPING\r\n" % (k1, queued, k1)
        replies = b"+OK\r\n+OK\r\n" + b"+QUEUED\r\n" * len(tx_keys)
        replies += b"*%d\r\n:2\r\n" % len(tx_keys) + b":1\r\n" * (len(tx_keys) - 1)
        replies += b"$1\r\n2\r\n+PONG\r\n"
        assert one.exchange(commands, replies.count(b"\r\n")) == replies, tx_keys
        one.c.delete(k1, k2)


def test_watch_over_several_slots(one):
    c, (server,) = one.c, one.servers
    k1, k2, out = keys("watch", 3)
    c.mset({k1: "1", k2: "2"})
    with c.pipeline() as p:
        p.watch(k1, k2)
        total = int(p.get(k1)) + int(p.get(k2))
        p.multi()
        p.set(out, total)
        assert p.execute() == [True]
    assert server.command(b"GET", out) == b"3"
    # a watched key changed by another client: EXEC answers nil (redis-py: WatchError)
    with c.pipeline() as p:
        p.watch(k1)
        p.watch(k2)  # a second WATCH, in another slot
        client(one.port).set(k2, "changed")
        p.multi()
        p.set(out, "late")
        with pytest.raises(redis_py.WatchError):
            p.execute()
    assert server.command(b"GET", out) == b"3"


def test_refuse_answers_crossslot_and_reloads_back(one):
    k1, k2 = keys("refuse", 2)
    refuse = {**one.cfg, "redis": {**one.cfg["redis"], "cross_slot": "refuse"}}
    one.sy.reload(refuse)
    try:
        commands = (
            b"SET %b v\r\nRENAME %b %b\r\nGET %b\r\n"
            b"MULTI\r\nSET %b 1\r\nSET %b 2\r\nEXEC\r\nWATCH %b %b\r\nGET %b\r\n"
        ) % (k1, k1, k2, k1, k1, k2, k1, k2, k1)
        assert one.exchange(commands, 10) == (
            b"+OK\r\n" + CROSSSLOT + b"$1\r\nv\r\n"
            b"+OK\r\n+QUEUED\r\n" + CROSSSLOT
            + b"-EXECABORT Transaction discarded because of previous errors.\r\n"
            + CROSSSLOT + b"$1\r\nv\r\n"
        )  # fmt: skip
    finally:
        one.sy.reload(one.cfg)
    assert one.c.rename(k1, k2) is True  # `group` again
    assert one.servers[0].command(b"GET", k2) == b"v"


# two groups: keys of one group together, keys of two groups refused -------------------------


def test_keys_of_one_group_run_on_it(two):
    c, (a, b) = two.c, two.servers
    for group, server, other in ((1, a, b), (2, b, a)):
        x, y, dst = keys(f"same-{group}", 3, two.owned(group))
        c.sadd(x, "1")
        c.sadd(y, "2")
        assert c.sunionstore(dst, [x, y]) == 2
        assert set(server.command(b"SMEMBERS", dst)) == {b"1", b"2"}
        assert other.command(b"EXISTS", dst) == 0
        p = c.pipeline(transaction=True)
        p.rename(dst, x).scard(x).mset({y: "s", dst: "d"})
        assert p.execute() == [True, 2, True]
        assert server.command(b"MGET", y, dst) == [b"s", b"d"]


def test_keys_of_two_groups_get_crossslot(two):
    (lo,) = keys("apart-lo", 1, two.owned(1))
    (hi,) = keys("apart-hi", 1, two.owned(2))
    commands = (
        b"RENAME %b %b\r\nPING\r\nBLMOVE %b %b LEFT LEFT 0\r\nPING\r\nWATCH %b %b\r\nPING\r\n"
        b"MULTI\r\nSET %b 1\r\nSET %b 2\r\nEXEC\r\nPING\r\n"
    ) % (lo, hi, lo, hi, lo, hi, lo, hi)
    assert two.exchange(commands, 11) == (
        CROSSSLOT + b"+PONG\r\n" + CROSSSLOT + b"+PONG\r\n" + CROSSSLOT + b"+PONG\r\n"
        b"+OK\r\n+QUEUED\r\n" + CROSSSLOT
        + b"-EXECABORT Transaction discarded because of previous errors.\r\n+PONG\r\n"
    )  # fmt: skip
    assert two.servers[0].command(b"EXISTS", lo) == 0  # the transaction did not run


def test_watch_of_one_group_then_a_key_of_another(two):
    x, y = keys("watch-lo", 2, two.owned(1))
    (hi,) = keys("watch-hi", 1, two.owned(2))
    commands = b"WATCH %b %b\r\nWATCH %b\r\nMULTI\r\nSET %b 1\r\nEXEC\r\n" % (x, y, hi, y)
    assert two.exchange(commands, 6) == (
        b"+OK\r\n" + CROSSSLOT + b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n"
    )  # fmt: skip
    assert two.servers[0].command(b"GET", y) == b"1"


def test_redis_cli_over_one_group_and_two(two):
    x, y = keys("cli-lo", 2, two.owned(1))
    (hi,) = keys("cli-hi", 1, two.owned(2))

    def cli(*argv: bytes, protocol: str = "-2") -> str:
        command = ["redis-cli", protocol, "--no-raw", "-p", str(two.port), *map(bytes.decode, argv)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        return done.stdout

    assert cli(b"RPUSH", x, b"a", b"b") == "(integer) 2\n"
    assert cli(b"LMOVE", x, y, b"LEFT", b"LEFT") == '"a"\n'
    assert cli(b"LMPOP", b"2", y, x, b"RIGHT", b"COUNT", b"5", protocol="-3") == (
        f'1) "{y.decode()}"\n2) 1) "a"\n'
    )
    assert cli(b"RENAME", x, hi) == (
        "(error) CROSSSLOT Keys in request don't hash to the same slot\n"
    )
    assert two.servers[0].command(b"LRANGE", x, b"0", b"-1") == [b"b"]


# while slots move -----------------------------------------------------------------------------


def moves_done(sy: Steelyard) -> None:
    def done() -> bool:
        data = sy.api("GET", "/api/redis/migrations")
        return not data["moves"] and data["progress"] is None

    wait_for(done, 60, "migrations done")


def recv_until(s: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = s.recv(65536)
        assert chunk, "the proxy closed the connection"
        out += chunk
    return out


@pytest.mark.parametrize("in_tx", [False, True], ids=["command", "exec"])
def test_a_command_on_a_moving_slot_waits_then_runs_where_its_keys_are(tmp_path, in_tx):
    """SUNIONSTORE of a key at rest on group 2 and one whose slot moves from group 1 to 2
    (alone, or in MULTI/EXEC without WATCH): held while the slot moves (it would be
    CROSSSLOT before, and its key is half copied), then run on group 2 with both keys there.
    The client's next commands (on the key at rest) wait behind it: they do not overtake it;
    more of them than max_pipeline pause reading until it is on its way."""
    cluster = Cluster(tmp_path, 2, {"max_pipeline": 4}, big_key_bytes="20KB")
    try:
        c, (a, b), sy = cluster.c, cluster.servers, cluster.sy
        (here,) = keys("here", 1, cluster.owned(2))
        (big,) = keys("moving", 1, cluster.owned(1))
        c.sadd(big, *[f"m{i}" for i in range(3000)])  # copied in chunks: held while copied
        c.sadd(here, "h", "m1")
        union = b"SUNIONSTORE %b %b %b\r\n" % (here, here, big)
        if in_tx:
            commands, early, late = (
                b"MULTI\r\n" + union + b"EXEC\r\n",
                b"+OK\r\n+QUEUED\r\n",
                b"*1\r\n",
            )
        else:
            commands, early, late = union, b"", b""
        commands += b"SCARD %b\r\n" % here * 20
        late += b":3001\r\n" * 21
        target = redis_py.Redis(port=b.port, socket_timeout=30)
        target.client_pause(600_000, all=False)  # the copy's writes wait: the slot stays moving
        try:
            slot = slot_of(big)
            sy.api("POST", "/api/redis/migrate", {"slots": str(slot), "to": 2})

            def migrating() -> bool:
                data = sy.api("GET", "/api/redis/migrations")
                # progress is set once every proxy has the slot migrating
                states = {m["slot"]: m["state"] for m in data["moves"]}
                return states.get(slot) == "migrating" and data["progress"] is not None

            wait_for(migrating, what="the slot migrating")
            read = sy.api("GET", "/api/redis")["proxies"][0]["commands"]
            with socket.create_connection(("127.0.0.1", cluster.port), timeout=30) as s:
                s.sendall(commands)
                wait_for(
                    lambda: sy.api("GET", "/api/redis")["proxies"][0]["commands"] > read,
                    what="the commands read by the proxy",
                )
                assert recv_until(s, len(early)) == early
                s.setblocking(False)
                with pytest.raises(BlockingIOError):
                    s.recv(64)  # held: its slot is moving
                s.setblocking(True)
                target.client_unpause()
                reply = recv_until(s, len(late))
                s.sendall(b"PING\r\n")
                assert recv_until(s, 7) == b"+PONG\r\n"  # reading resumed
        finally:
            target.client_unpause()
        assert reply == late
        moves_done(sy)
        assert b.command(b"SCARD", here) == 3001
        assert a.command(b"EXISTS", big, here) == 0
    finally:
        cluster.stop()


def test_a_blocked_move_follows_its_slots_and_delivers_once(tmp_path):
    cluster = Cluster(tmp_path, 2)
    try:
        c, (a, b), sy = cluster.c, cluster.servers, cluster.sy
        src, dst = keys("jobs", 2, cluster.owned(1))
        got: list[Any] = []
        waiter = threading.Thread(
            target=lambda: got.append(client(cluster.port).blmove(src, dst, 0, "LEFT", "RIGHT"))
        )
        waiter.start()
        wait_for(lambda: b"blocked_clients:1" in a.command(b"INFO", b"clients"), what="blocked")
        slots = f"{slot_of(src)},{slot_of(dst)}"
        sy.api("POST", "/api/redis/migrate", {"slots": slots, "to": 2})
        moves_done(sy)
        # woken on group 1 as its slots started moving, sent again to group 2 once they settled
        wait_for(lambda: b"blocked_clients:1" in b.command(b"INFO", b"clients"), what="re-blocked")
        assert b"blocked_clients:0" in a.command(b"INFO", b"clients")
        assert not got
        assert c.rpush(src, "job-1") == 1
        waiter.join(30)
        assert got == [b"job-1"]
        assert c.rpush(src, "job-2") == 1
        assert b.command(b"LRANGE", dst, b"0", b"-1") == [b"job-1"]
        assert b.command(b"LRANGE", src, b"0", b"-1") == [b"job-2"]
        assert a.command(b"EXISTS", src, dst) == 0
    finally:
        cluster.stop()


def calls(server: RedisServer, command: str) -> int:
    text = server.command(b"INFO", b"commandstats").decode()
    for line in text.splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_reads_over_several_slots_go_to_a_replica(tmp_path):
    fast = ("--repl-diskless-sync-delay", "0")
    master, replica = RedisServer(tmp_path, 0, *fast), RedisServer(tmp_path, 0, *fast)
    port = free_port()
    cfg = base_config(tmp_path, workers=1)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}", "read_from_replicas": True}],
        "groups": [{"id": 1, "master": master.address, "replicas": [replica.address]}],
        "health_interval": "200ms",
    }
    sy = Steelyard(tmp_path, cfg)
    try:
        wait_for(lambda: sy.api("GET", "/api/redis")["groups"][0]["readers"] == [replica.address],
                 what="the replica fit for reads")  # fmt: skip
        c = client(port)
        x, y, dst = keys("replica", 3)
        c.sadd(x, "1", "2")
        c.sadd(y, "2", "3")
        wait_for(lambda: replica.command(b"EXISTS", x, y) == 2, what="replicated")
        assert c.sinter(x, y) == {b"2"}
        assert (calls(replica, "sinter"), calls(master, "sinter")) == (1, 0)
        assert c.sinterstore(dst, [x, y]) == 1  # a write: the master (replicated from there)
        assert calls(master, "sinterstore") == 1
        assert master.command(b"SMEMBERS", dst) == [b"2"]
    finally:
        sy.stop(timeout=10)
        master.stop()
        replica.stop()


def test_exec_after_watched_slots_moved_answers_as_if_modified(tmp_path):
    cluster = Cluster(tmp_path, 2)
    try:
        (a, b), sy = cluster.servers, cluster.sy
        x, y = keys("watched", 2, cluster.owned(1))
        with socket.create_connection(("127.0.0.1", cluster.port), timeout=30) as s:
            s.sendall(b"WATCH %b %b\r\n" % (x, y))
            assert recv_until(s, 5) == b"+OK\r\n"
            sy.api("POST", "/api/redis/migrate", {"slots": f"{slot_of(x)},{slot_of(y)}", "to": 2})
            moves_done(sy)
            # both slots are on group 2 now: the transaction is queued, and EXEC fails as if
            # the watched keys had been modified (their group changed since WATCH)
            s.sendall(b"MULTI\r\nSET %b 1\r\nEXEC\r\nPING\r\n" % x)
            replies = b"+OK\r\n+QUEUED\r\n*-1\r\n+PONG\r\n"
            assert recv_until(s, len(replies)) == replies
        assert a.command(b"EXISTS", x) == b.command(b"EXISTS", x) == 0
    finally:
        cluster.stop()
