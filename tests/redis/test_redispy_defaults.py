"""redis-py 8 as users create it, `redis.Redis(host=..., port=...)` and nothing else, through
the proxy: it opens with HELLO 3 (then CLIENT MAINT_NOTIFICATIONS and CLIENT SETINFO, which the
proxy refuses or accepts the way redis-py tolerates) and gets RESP3 replies it decodes into
dicts, sets and floats. The same run with `protocol=2` gets the same values."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from fixtures.redis_proxy import running_proxy
from fixtures.redis_server import RedisServer
from steelyard.redis.slots import slot_of


@pytest.fixture(scope="module")
def proxy_port(tmp_path_factory) -> Iterator[int]:
    workdir = tmp_path_factory.mktemp("redispy")
    servers = [RedisServer(workdir) for _ in range(2)]
    try:
        with running_proxy([s.address for s in servers]) as (port, _):
            yield port
    finally:
        for s in servers:
            s.stop()


PROTOCOLS = pytest.mark.parametrize("protocol", [None, 2], ids=["defaults", "protocol2"])


def connect(port: int, protocol: int | None) -> redis.Redis:
    if protocol is None:
        return redis.Redis(host="127.0.0.1", port=port)  # no other option at all
    return redis.Redis(host="127.0.0.1", port=port, protocol=protocol)


@PROTOCOLS
def test_data_types(proxy_port, protocol):
    r = connect(proxy_port, protocol)
    p = f"{protocol}:"
    assert r.ping() is True
    assert r.set(p + "s", "v") is True and r.get(p + "s") == b"v"
    assert r.get(p + "missing") is None
    assert r.hset(p + "h", mapping={"f": "1", "g": "2"}) == 2
    assert r.hgetall(p + "h") == {b"f": b"1", b"g": b"2"}
    assert r.sadd(p + "set", "a", "b") == 2 and r.smembers(p + "set") == {b"a", b"b"}
    assert r.zadd(p + "z", {"m": 1.5, "n": 2}) == 2
    assert r.zscore(p + "z", "m") == 1.5
    assert r.zincrby(p + "z", 1, "n") == 3.0
    assert r.zrange(p + "z", 0, -1, withscores=True) == [(b"m", 1.5), (b"n", 3.0)]
    keys = [f"{p}k{i}" for i in range(20)]
    assert len({slot_of(k.encode()) for k in keys}) > 1
    assert r.mset({k: k for k in keys}) is True
    assert r.mget([*keys, p + "nope"]) == [k.encode() for k in keys] + [None]
    assert set(r.scan_iter(match=p + "k*", count=5)) == {k.encode() for k in keys}
    assert r.dbsize() >= len(keys)
    assert r.delete(*keys) == len(keys)
    info = r.info()
    assert info["proxy"] == "steelyard" and "db0" in info
    assert r.client_setname("me") is True and r.client_getname() in ("me", b"me")
    assert r.blpop([p + "nolist"], timeout=0.1) is None
    r.close()


@PROTOCOLS
def test_pipeline_and_transaction(proxy_port, protocol):
    r = connect(proxy_port, protocol)
    p = f"{protocol}:"
    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"{p}pk{i}", i)
        pipe.get(f"{p}pk{i}")
    results = pipe.execute()
    assert results == [x for i in range(50) for x in (True, str(i).encode())]
    tx = r.pipeline(transaction=True)
    tx.set(f"{{{p}t}}a", 1).incrbyfloat(f"{{{p}t}}b", 1.5).hgetall(f"{{{p}t}}h")
    assert tx.execute() == [True, 1.5, {}]
    r.close()


@PROTOCOLS
def test_pubsub_while_issuing_commands(proxy_port, protocol):
    r = connect(proxy_port, protocol)
    p = f"{protocol}:"
    sub = r.pubsub()
    sub.subscribe(p + "news")
    confirmation = sub.get_message(timeout=10)
    assert confirmation is not None and confirmation["type"] == "subscribe"
    for i in range(3):
        assert r.set(f"{p}n{i}", i) is True  # commands on the client's other connection
        assert r.publish(p + "news", f"m{i}") == 1
        message = sub.get_message(timeout=10)
        assert message is not None
        assert (message["type"], message["data"]) == ("message", f"m{i}".encode())
    sub.unsubscribe()
    sub.close()
    r.close()


def test_defaults_speak_resp3(proxy_port):
    """Not RESP2 in disguise: the connection said HELLO 3 and stayed there."""
    r = connect(proxy_port, None)
    r.ping()
    conn = r.connection_pool.get_connection()
    try:
        assert conn.protocol in (3, "3")
        assert conn.handshake_metadata[b"proto"] == 3
    finally:
        r.connection_pool.release(conn)
    r.close()
