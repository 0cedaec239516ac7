"""The proxy's data path with real redis-servers and redis-py / raw clients.

The listener runs in-process (its own event loop in a thread) until the `redis:` tier is wired
into `steelyard run`; everything it talks to is real.
"""

from __future__ import annotations

import socket
import threading

import pytest
import redis as redis_py

from fixtures.procs import wait_for
from fixtures.redis_proxy import running_proxy
from steelyard.redis.slots import slot_of


@pytest.fixture
def proxy(redis_servers, request):
    a, b = redis_servers(), redis_servers()
    extra = dict(getattr(request, "param", {}))
    listener = extra.pop("proxy", {})  # settings of the proxy entry itself
    with running_proxy([a.address, b.address], extra, **listener) as (port, fe):
        yield port, a, b, fe


def client(port: int) -> redis_py.Redis:
    # RESP2 (RESP3 clients: test_resp3_proxy.py, test_redispy_defaults.py)
    return redis_py.Redis(port=port, socket_timeout=10, protocol=2)


def owner_of(key: bytes, a, b, fe) -> object:
    return a if fe.owner(slot_of(key)) == a.address else b


def test_keys_land_on_the_group_that_owns_their_slot(proxy):
    port, a, b, fe = proxy
    c = client(port)
    keys = [f"key:{i}".encode() for i in range(40)]
    for k in keys:
        assert c.set(k, k + b"!")
    for k in keys:
        assert c.get(k) == k + b"!"
        server = owner_of(k, a, b, fe)
        assert server.command(b"GET", k) == k + b"!"
    # both groups hold some of them
    assert {owner_of(k, a, b, fe) for k in keys} == {a, b}


def test_split_commands_across_slots(proxy):
    port, *_ = proxy
    c = client(port)
    assert c.mset({"x1": "1", "x2": "2", "x3": "3"})
    assert c.mget("x1", "nope", "x3", "x2") == [b"1", None, b"3", b"2"]
    assert c.exists("x1", "x2", "nope") == 2
    assert c.delete("x1", "x2", "x3", "nope") == 3
    assert c.mget("x1", "x2") == [None, None]


def test_pipelined_replies_stay_in_order(proxy):
    port, *_ = proxy
    c = client(port)
    pipe = c.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"p{i}", i)
        pipe.incr(f"p{i}")
        pipe.get(f"p{i}")
    out = pipe.execute()
    assert out[2::3] == [str(i + 1).encode() for i in range(500)]


def test_select_and_errors_as_redis(proxy):
    port, *_ = proxy
    c = client(port)
    c.set("k", "db0")
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    # a (slot 579) and a1 (slot 35) are in different groups: CROSSSLOT
    raw.sendall(b"SELECT 3\r\nGET k\r\nSET k db3\r\nSELECT 16\r\nGET\r\nFOO a\r\nSINTER a a1\r\n")
    data = b""
    while data.count(b"\r\n") < 7:
        data += raw.recv(65536)
    assert data == (
        b"+OK\r\n$-1\r\n+OK\r\n-ERR DB index is out of range\r\n"
        b"-ERR wrong number of arguments for 'get' command\r\n"
        b"-ERR unknown command 'FOO', with args beginning with: 'a' \r\n"
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    )
    raw.close()
    assert c.get("k") == b"db0"


def test_protocol_error_closes_only_that_connection(proxy):
    port, *_ = proxy
    bad = socket.create_connection(("127.0.0.1", port), timeout=5)
    bad.sendall(b"*1\r\n$4\r\nPING\r\n*1\r\n$-5\r\n")
    data = b""
    while True:
        chunk = bad.recv(65536)
        if not chunk:
            break
        data += chunk
    assert data == b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert client(port).ping()


def test_backend_dying_mid_pipeline_gives_errors_in_order_then_recovers(proxy):
    port, a, b, fe = proxy
    c = client(port)
    key_a = next(f"k{i}".encode() for i in range(1000) if owner_of(f"k{i}".encode(), a, b, fe) is a)
    key_b = next(f"k{i}".encode() for i in range(1000) if owner_of(f"k{i}".encode(), a, b, fe) is b)
    c.set(key_b, "alive")
    a.stop()
    pipe = c.pipeline(transaction=False)
    pipe.get(key_b)
    pipe.get(key_a)
    pipe.get(key_b)
    out = pipe.execute(raise_on_error=False)
    assert out[0] == b"alive" and out[2] == b"alive"
    assert isinstance(out[1], redis_py.ResponseError)
    a.__init__(a.dir.parent, a.port)  # the same server comes back on its port
    wait_for(lambda: client(port).set(key_a, "back"), what="reconnect to the restarted backend")
    assert c.get(key_a) == b"back"


def test_pipeline_of_a_thousand_mixed_commands_over_raw_socket(proxy):
    port, *_ = proxy
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    cmds = b"".join(b"SET r%d %d\r\nGET r%d\r\n" % (i, i, i) for i in range(1000))
    s.sendall(cmds)
    want = b"".join(b"+OK\r\n$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(1000))
    data = b""
    while len(data) < len(want):
        data += s.recv(1 << 20)
    assert data == want
    s.close()


def test_auth_gate(redis_servers):
    a = redis_servers()
    with running_proxy([a.address], auth="s3cret") as (port, _):
        c = redis_py.Redis(port=port, socket_timeout=5, protocol=2)
        with pytest.raises(redis_py.AuthenticationError):
            c.get("k")
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(port=port, password="wrong", socket_timeout=5, protocol=2).ping()
        ok = redis_py.Redis(port=port, password="s3cret", socket_timeout=5, protocol=2)
        assert ok.set("k", "v") and ok.get("k") == b"v"


def test_dbsize_info_and_scan_cover_every_group(proxy):
    port, a, b, _ = proxy
    c = client(port)
    keys = {f"s{i}".encode() for i in range(300)}
    for k in keys:
        c.set(k, 1, ex=1000 if k.endswith(b"7") else None)
    a_keys = a.command(b"DBSIZE")
    b_keys = b.command(b"DBSIZE")
    assert a_keys and b_keys and a_keys + b_keys == 300
    assert c.dbsize() == 300
    info = c.info("keyspace")
    assert info["db0"]["keys"] == 300 and info["db0"]["expires"] == 30
    seen: set[bytes] = set()
    cursor = 0
    while True:
        cursor, batch = c.scan(cursor, count=50)
        seen.update(batch)
        if cursor == 0:
            break
    assert seen == keys
    assert set(c.scan_iter(match="s1*")) == {k for k in keys if k.startswith(b"s1")}


def test_keys_and_flush_need_allow_fanout(proxy):
    port, *_ = proxy
    c = client(port)
    with pytest.raises(redis_py.ResponseError, match="not supported by the proxy"):
        c.keys("*")


@pytest.mark.parametrize("proxy", [{"allow_fanout": True}], indirect=True)
def test_keys_and_flushdb_fan_out_when_allowed(proxy):
    port, *_ = proxy
    c = client(port)
    for i in range(20):
        c.set(f"f{i}", i)
    assert sorted(c.keys("f*")) == sorted(f"f{i}".encode() for i in range(20))
    assert c.flushdb()
    assert c.dbsize() == 0 and c.keys("*") == []


def test_blocking_commands_wait_on_their_own_connection(proxy):
    port, *_ = proxy
    waiter = client(port)
    other = client(port)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(waiter.blpop(["queue"], timeout=10)))
    t.start()
    # while the BLPOP waits, the shared connections keep serving everyone else
    for i in range(20):
        assert other.set(f"busy{i}", i) and other.get(f"busy{i}") == str(i).encode()
    wait_for(lambda: _blocked_clients(proxy) >= 1, what="BLPOP waiting at the server")
    assert other.rpush("queue", "job") >= 1
    t.join(10)
    assert result == [(b"queue", b"job")]


def _blocked_clients(proxy) -> int:
    _, a, b, fe = proxy
    server = a if fe.owner(slot_of(b"queue")) == a.address else b
    info = server.command(b"INFO", b"clients")
    assert isinstance(info, bytes)
    line = next(x for x in info.decode().splitlines() if x.startswith("blocked_clients:"))
    return int(line.split(":")[1])


def test_transactions_on_one_slot(proxy):
    port, *_ = proxy
    c = client(port)
    pipe = c.pipeline(transaction=True)
    pipe.set("{acct}:a", 10).incrby("{acct}:a", 5).set("{acct}:b", 1).get("{acct}:a")
    assert pipe.execute() == [True, 15, True, b"15"]
    # keys of two slots: refused at queue time, EXEC aborts, nothing ran
    pipe = c.pipeline(transaction=True)
    pipe.set("{acct}:a", 0).set("other", 1)
    with pytest.raises(redis_py.exceptions.ResponseError):
        pipe.execute()
    assert c.get("{acct}:a") == b"15" and c.get("other") is None


def test_watch_gives_optimistic_locking(proxy):
    port, *_ = proxy
    c, rival = client(port), client(port)
    c.set("{w}counter", 1)
    with c.pipeline(transaction=True) as pipe:
        pipe.watch("{w}counter")
        value = int(pipe.get("{w}counter"))
        rival.set("{w}counter", 100)  # changes the watched key before EXEC
        pipe.multi()
        pipe.set("{w}counter", value + 1)
        with pytest.raises(redis_py.WatchError):
            pipe.execute()
    assert c.get("{w}counter") == b"100"
    with c.pipeline(transaction=True) as pipe:
        pipe.watch("{w}counter")
        value = int(pipe.get("{w}counter"))
        pipe.multi()
        pipe.set("{w}counter", value + 1)
        assert pipe.execute() == [True]
    assert c.get("{w}counter") == b"101"


def test_transaction_errors_as_redis(proxy):
    port, a, *_ = proxy
    commands = b"EXEC\r\nDISCARD\r\nMULTI\r\nMULTI\r\nSET k v\r\nGET\r\nEXEC\r\nGET k\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(commands)
    want = (
        b"-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n+OK\r\n"
        b"-ERR MULTI calls can not be nested\r\n+QUEUED\r\n"
        b"-ERR wrong number of arguments for 'get' command\r\n"
        b"-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n"
    )
    data = b""
    while len(data) < len(want):
        data += s.recv(65536)
    assert data == want
    s.close()
    assert a.raw(commands) == want  # what Redis itself answers
    assert a.raw(commands) == want  # what Redis itself answers


def test_pubsub_channels_and_patterns_across_groups(proxy):
    port, *_ = proxy
    sub = client(port).pubsub()
    channels = [f"news:{i}" for i in range(6)]  # spread over both groups
    sub.subscribe(*channels)
    sub.psubscribe("alerts:*")
    confirmations = []
    while len(confirmations) < 7:
        m = sub.get_message(timeout=5)
        assert m is not None
        confirmations.append(m)
    # counts are the session's own, 1..7, whatever server confirmed
    assert sorted(m["data"] for m in confirmations) == list(range(1, 8))
    pub = client(port)
    for ch in channels:
        assert pub.publish(ch, f"hello {ch}") == 1
    assert pub.publish("alerts:disk", "full") == 1
    got = []
    while len(got) < 7:
        m = sub.get_message(timeout=5)
        assert m is not None
        got.append((m["type"], m["channel"], m["data"]))
    assert sorted(got) == sorted(
        [("message", ch.encode(), f"hello {ch}".encode()) for ch in channels]
        + [("pmessage", b"alerts:disk", b"full")]
    )
    sub.unsubscribe(*channels)
    sub.punsubscribe("alerts:*")
    counts = []
    while len(counts) < 7:
        m = sub.get_message(timeout=5)
        assert m is not None
        counts.append(m["data"])
    assert sorted(counts) == list(range(0, 7))
    assert pub.publish("news:0", "nobody") == 0
    sub.close()


def test_subscriber_mode_refuses_other_commands_as_redis(proxy):
    port, a, *_ = proxy
    commands = b"SUBSCRIBE ch\r\nGET k\r\nPING\r\nUNSUBSCRIBE\r\nPING\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(commands)
    want = a.raw(commands)  # what Redis itself answers
    data = b""
    while len(data) < len(want):
        data += s.recv(65536)
    s.close()
    assert data == want


def test_pubsub_introspection_over_groups(proxy):
    port, *_ = proxy
    sub = client(port).pubsub()
    channels = [f"room:{i}" for i in range(6)]
    sub.subscribe(*channels)
    sub.psubscribe("x:*", "y:*")
    for _ in range(8):
        assert sub.get_message(timeout=5) is not None
    c = client(port)
    assert sorted(c.pubsub_channels("room:*")) == sorted(ch.encode() for ch in channels)
    assert c.pubsub_numsub("room:0", "room:5", "none") == [
        (b"room:0", 1),
        (b"room:5", 1),
        (b"none", 0),
    ]
    assert c.pubsub_numpat() == 2
    sub.close()


def test_many_clients_big_values_no_cross_talk(proxy):
    """Shared backend connections carry every client's pipelines: each reply must reach the
    client and the request it belongs to."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    port, *_ = proxy

    def worker(seed: int) -> int:
        rng = random.Random(seed)
        c = client(port)
        expected = {}
        pipe = c.pipeline(transaction=False)
        for i in range(200):
            key = f"c{seed}:{i}"
            value = rng.randbytes(rng.choice([1, 100, 5000, 200_000]))
            expected[key] = value
            pipe.set(key, value)
        assert all(pipe.execute())
        keys = list(expected)
        rng.shuffle(keys)
        for start in range(0, len(keys), 50):
            batch = keys[start : start + 50]
            assert c.mget(batch) == [expected[k] for k in batch]
        return len(keys)

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(worker, range(8))) == 1600


def test_split_commands_send_one_request_per_server(proxy):
    port, a, b, fe = proxy
    c = client(port)
    by_owner: dict[object, list[str]] = {a: [], b: []}
    i = 0
    while min(len(v) for v in by_owner.values()) < 10:  # keys on both groups
        key = f"g{i}"
        owner = owner_of(key.encode(), a, b, fe)
        if len(by_owner[owner]) < 10:
            by_owner[owner].append(key)
        i += 1
    keys = by_owner[a] + by_owner[b]
    c.mset({k: k for k in keys})
    for server in (a, b):
        server.command(b"CONFIG", b"RESETSTAT")
    assert c.mget(keys) == [k.encode() for k in keys]
    assert c.delete(*keys) == 20
    for server in (a, b):
        stats = server.command(b"INFO", b"commandstats")
        assert isinstance(stats, bytes)
        text = stats.decode()
        assert "cmdstat_mget:calls=1," in text and "cmdstat_del:calls=1," in text, text


@pytest.mark.parametrize("proxy", [{"proxy": {"max_clients": 2}}], indirect=True)
def test_max_clients_answers_as_redis_does(proxy):
    port, *_ = proxy
    first, second = client(port), client(port)
    assert first.ping() and second.ping()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        # told at once, unasked (a request sent after the close would only meet a reset)
        assert s.recv(100) == b"-ERR max number of clients reached\r\n"
        assert s.recv(100) == b""  # and closed
    first.close()
    wait_for(lambda: client(port).ping(), what="a place freed")
    assert second.ping()


@pytest.mark.parametrize("proxy", [{"proxy": {"idle_timeout": "1s"}}], indirect=True)
def test_idle_clients_are_closed_but_not_blocked_ones(proxy):
    port, *_ = proxy
    blocked_result: list = []
    waiter = threading.Thread(target=lambda: blocked_result.append(client(port).blpop(["q"], 0)))
    waiter.start()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(100) == b"+PONG\r\n"
        assert s.recv(100) == b""  # closed once idle for a second or two
    client(port).rpush("q", "still here")  # the blocked client was spared
    waiter.join(10)
    assert blocked_result == [(b"q", b"still here")]


@pytest.mark.parametrize("proxy", [{"proxy": {"max_pipeline": 4}}], indirect=True)
def test_a_deep_pipeline_is_read_in_steps(proxy):
    port, *_ = proxy
    c = client(port)
    c.mset({f"p{i}": i for i in range(200)})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(b"GET p%d\r\n" % i for i in range(200)))
        want = b"".join(b"$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(200))
        got = b""
        while len(got) < len(want):
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        assert got == want
