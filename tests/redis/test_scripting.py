"""FUNCTION, SCRIPT and CONFIG through the proxy, with two real redis-servers as two groups and
redis-py / raw clients: libraries and scripts loaded through the proxy reach every master, and
FCALL / EVALSHA then run on the keys of either group; every bad input gets Redis's own answer.

The listener runs in-process (as in test_proxy_core), shared by the module's tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading

import pytest
import redis as redis_py
import uvloop

from fixtures.procs import free_port, wait_for
from fixtures.redis_server import RedisServer
from steelyard.config.redis_model import RedisConfig
from steelyard.redis import resp, values
from steelyard.redis.frontend import RedisFrontend
from steelyard.redis.scripting import REFUSED_CONFIG
from steelyard.redis.slots import slot_of

LIB = (
    "#!lua name=kv\n"
    "redis.register_function('kv_set', function(keys, args) "
    "return redis.call('SET', keys[1], args[1]) end)\n"
    "redis.register_function{function_name='kv_get', callback=function(keys, args) "
    "return redis.call('GET', keys[1]) end, flags={'no-writes'}}"
)
SPIN = (
    "#!lua name=spin\nredis.register_function('spin', function(keys, args) while true do end end)"
)
SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scripting")
    # FUNCTION KILL is served once a script has run this long
    a, b = (RedisServer(tmp, 0, "--busy-reply-threshold", "50") for _ in range(2))
    port = free_port()
    cfg = RedisConfig.model_validate(
        {
            "proxies": [{"listen": f"127.0.0.1:{port}"}],
            "groups": [{"id": 1, "master": a.address}, {"id": 2, "master": b.address}],
            "allow_fanout": True,
        }
    )
    loop = uvloop.new_event_loop()
    fe = RedisFrontend(cfg.proxies[0], cfg, loop)
    reports: list[dict] = []
    fe.report = reports.append
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    loop.call_soon_threadsafe(fe.start)
    c = redis_py.Redis(port=port, socket_timeout=10, protocol=2)
    wait_for(c.ping, what="proxy listening")
    yield port, a, b, fe, reports
    loop.call_soon_threadsafe(fe.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    for s in (a, b):
        s.stop()


@pytest.fixture
def proxy(cluster):
    """The cluster with both servers emptied (keys, libraries, scripts) before a test."""
    _port, a, b, fe, reports = cluster
    for s in (a, b):
        s.command(b"FUNCTION", b"FLUSH")
        s.command(b"SCRIPT", b"FLUSH")
        s.command(b"FLUSHALL")
    reports.clear()
    yield cluster
    fe.redis = fe.redis.model_copy(update={"allow_fanout": True, "scripts": "allow"})


def client(port: int) -> redis_py.Redis:
    return redis_py.Redis(port=port, socket_timeout=10, protocol=2)


def raw_replies(port: int, commands: list[list[bytes]]) -> list[bytes]:
    """The raw replies to a pipeline of commands sent in one write."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(resp.encode_command(c) for c in commands))
        data = b""
        while True:
            replies, _ = values.split(data)
            if len(replies) >= len(commands):
                return replies
            chunk = s.recv(65536)
            assert chunk, f"closed after {len(replies)} replies"
            data += chunk


def direct(server: RedisServer, *argv: bytes) -> bytes:
    return raw_replies(server.port, [list(argv)])[0]


def keys_of_both(fe) -> tuple[str, str]:
    """A key served by group 1 and one served by group 2."""
    names = [f"k{i}" for i in range(200)]
    first = next(k for k in names if fe.owner(slot_of(k.encode())) == fe.masters[1])
    second = next(k for k in names if fe.owner(slot_of(k.encode())) == fe.masters[2])
    return first, second


def test_function_load_reaches_every_master_and_fcall_runs_on_either_group(proxy):
    port, a, b, fe, _ = proxy
    c = client(port)
    assert c.function_load(LIB) == b"kv"
    for s in (a, b):
        assert s.command(b"FUNCTION", b"LIST")[0][1] == b"kv"
    for key in keys_of_both(fe):
        assert c.fcall("kv_set", 1, key, "v-" + key) == b"OK"
        assert c.fcall_ro("kv_get", 1, key) == ("v-" + key).encode()
    # one library, as one server lists it
    listed = c.function_list()
    assert len(listed) == 1 and listed[0][1] == b"kv"
    assert c.function_list(library="k*", withcode=True)[0][-1] == LIB.encode()
    stats = c.execute_command("FUNCTION", "STATS")
    assert stats[1] is None and stats[3][1][1::2] == [1, 2]  # 1 library, 2 functions
    # loading it again: Redis's refusal; REPLACE: the name again
    with pytest.raises(redis_py.ResponseError, match="Library 'kv' already exists"):
        c.function_load(LIB)
    assert c.function_load(LIB, replace=True) == b"kv"
    # DUMP from one master, FLUSH and RESTORE on every one
    payload = c.function_dump()
    assert c.function_flush() is True and c.function_list() == []
    assert c.function_restore(payload) in (True, b"OK")
    assert [s.command(b"FUNCTION", b"LIST")[0][1] for s in (a, b)] == [b"kv", b"kv"]
    assert c.function_delete("kv") in (True, b"OK")
    with pytest.raises(redis_py.ResponseError, match="Library not found"):
        c.function_delete("kv")
    assert a.command(b"FUNCTION", b"LIST") == [] and b.command(b"FUNCTION", b"LIST") == []


def test_script_load_and_evalsha_on_either_group(proxy):
    port, a, _b, fe, reports = proxy
    c = client(port)
    sha = c.script_load(SCRIPT)
    assert sha == hashlib.sha1(SCRIPT.encode()).hexdigest()
    assert reports == [{"t": "redis_script", "body": SCRIPT}]  # for the dashboard's record
    read = c.script_load("return redis.call('GET', KEYS[1])")
    for key in keys_of_both(fe):
        assert c.evalsha(sha, 1, key, 5) == 5
        assert c.evalsha_ro(read, 1, key) == b"5"
    assert c.script_exists(sha, "0" * 40) == [True, False]
    # a script one master lacks is not there for the cluster
    other = "return 7"
    a.command(b"SCRIPT", b"LOAD", other.encode())
    assert c.script_exists(hashlib.sha1(other.encode()).hexdigest()) == [False]
    assert c.script_flush() is True
    assert reports[-1] == {"t": "redis_script", "flush": True}
    assert c.script_exists(sha) == [False]
    with pytest.raises(redis_py.exceptions.NoScriptError):
        c.evalsha(sha, 1, "k1", 1)


def test_register_script_loads_on_noscript(proxy):
    """redis-py's Script: EVALSHA, and on NOSCRIPT a SCRIPT LOAD (through the proxy: on every
    master) and EVALSHA again; then EVALSHA alone on keys of either group."""
    port, _a, b, fe, _ = proxy
    c = client(port)
    incr = c.register_script(SCRIPT)
    first, second = keys_of_both(fe)
    assert incr(keys=[first], args=[2]) == 2
    assert direct(b, b"SCRIPT", b"EXISTS", incr.sha.encode()) == b"*1\r\n:1\r\n"
    assert incr(keys=[second], args=[3]) == 3
    assert incr(keys=[first], args=[2]) == 4


def test_kill_reaches_the_master_running_the_function(proxy):
    port, _a, _b, fe, _ = proxy
    c = client(port)
    assert c.function_load(SPIN) == b"spin"
    assert (
        raw_replies(port, [[b"FUNCTION", b"KILL"], [b"SCRIPT", b"KILL"]])
        == [b"-NOTBUSY No scripts in execution right now.\r\n"] * 2
    )
    first, _ = keys_of_both(fe)
    answer: list[object] = []

    def spin() -> None:
        try:
            answer.append(client(port).fcall("spin", 1, first))
        except redis_py.ResponseError as exc:
            answer.append(str(exc))

    runner = threading.Thread(target=spin)
    runner.start()

    def running() -> bool:
        return c.execute_command("FUNCTION", "STATS")[1] is not None

    wait_for(running, what="the function running")  # STATS: on a connection of its own
    stats = c.execute_command("FUNCTION", "STATS")
    assert stats[1][1] == b"spin" and stats[1][3] == [b"FCALL", b"spin", b"1", first.encode()]
    with pytest.raises(redis_py.ResponseError, match=r"^BUSY Redis is busy running a script"):
        c.execute_command("SCRIPT", "KILL")  # a function runs: Redis's BUSY
    assert c.execute_command("FUNCTION", "KILL") == b"OK"
    runner.join(10)
    assert answer and str(answer[0]).startswith("Script killed by user with SCRIPT KILL")
    assert c.set(first, "after") and c.get(first) == b"after"


def test_help_is_redis_own(proxy):
    port, a, *_ = proxy
    asks = [[b"FUNCTION", b"HELP"], [b"SCRIPT", b"HELP"], [b"CONFIG", b"HELP"]]
    assert raw_replies(port, asks) == [direct(a, *argv) for argv in asks]


def test_config_get_set_resetstat(proxy):
    port, a, b, *_ = proxy
    c = client(port)
    assert c.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert c.config_set("maxmemory-policy", "allkeys-lru") is True
    for s in (a, b):
        assert s.command(b"CONFIG", b"GET", b"maxmemory-policy") == [
            b"maxmemory-policy", b"allkeys-lru",
        ]  # fmt: skip
    assert c.config_set("maxmemory-policy", "noeviction") is True
    assert c.config_resetstat() is True
    replies = raw_replies(
        port,
        [[b"CONFIG", b"SET", b"port", b"1"], [b"CONFIG", b"SET", b"maxmemory", b"0", b"DIR", b"/"],
         [b"CONFIG", b"SET", b"requirepass", b"x"], [b"CONFIG", b"REWRITE"],
         [b"CONFIG", b"SET", b"maxmemory", b"nope"], [b"PING"]],
    )  # fmt: skip
    assert replies[:3] == [
        b"-ERR CONFIG SET failed (possibly related to argument '%b') - not allowed through the "
        b"proxy\r\n" % p
        for p in (b"port", b"DIR", b"requirepass")
    ]
    assert replies[3] == (
        b"-ERR CONFIG REWRITE is not supported by the proxy: it must not rewrite the servers' "
        b"config files; run it on each server\r\n"
    )
    # a value a server refuses: its own error
    assert replies[4] == direct(a, b"CONFIG", b"SET", b"maxmemory", b"nope")
    assert replies[4].startswith(b"-ERR CONFIG SET failed (possibly related to argument 'maxm")
    assert replies[5] == b"+PONG\r\n"
    assert direct(a, b"CONFIG", b"GET", b"port") == b"*2\r\n$4\r\nport\r\n$%d\r\n%d\r\n" % (
        len(str(a.port)), a.port,
    )  # fmt: skip


def test_config_changes_need_allow_fanout(proxy):
    port, a, _b, fe, _ = proxy
    fe.redis = fe.redis.model_copy(update={"allow_fanout": False})
    replies = raw_replies(
        port,
        [[b"CONFIG", b"SET", b"maxmemory", b"1mb"], [b"CONFIG", b"RESETSTAT"],
         [b"CONFIG", b"GET", b"maxmemory"], [b"PING"]],
    )  # fmt: skip
    assert replies == [
        b"-ERR command 'CONFIG SET' is not supported by the proxy (allow_fanout is off)\r\n",
        b"-ERR command 'CONFIG RESETSTAT' is not supported by the proxy (allow_fanout is off)\r\n",
        b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
        b"+PONG\r\n",
    ]
    assert a.command(b"CONFIG", b"GET", b"maxmemory") == [b"maxmemory", b"0"]


def test_scripts_deny_refuses_loading(proxy):
    port, a, _b, fe, reports = proxy
    payload = direct(a, b"FUNCTION", b"DUMP")
    fe.redis = fe.redis.model_copy(update={"scripts": "deny"})
    replies = raw_replies(
        port,
        [[b"FUNCTION", b"LOAD", LIB.encode()], [b"SCRIPT", b"LOAD", b"return 1"],
         [b"FUNCTION", b"RESTORE", values.read(payload).text], [b"FUNCTION", b"LIST"],
         [b"PING"]],
    )  # fmt: skip
    assert replies == [
        b"-ERR command 'FUNCTION LOAD' is not supported by the proxy (scripts: deny)\r\n",
        b"-ERR command 'SCRIPT LOAD' is not supported by the proxy (scripts: deny)\r\n",
        b"-ERR command 'FUNCTION RESTORE' is not supported by the proxy (scripts: deny)\r\n",
        b"*0\r\n",
        b"+PONG\r\n",
    ]
    assert reports == [] and a.command(b"FUNCTION", b"LIST") == []


BAD = [
    [b"FUNCTION"],
    [b"FUNCTION", b"NOPE"],
    [b"function", b"load"],
    [b"FUNCTION", b"LOAD", b"return 1"],  # no metadata
    [b"FUNCTION", b"LOAD", b"#!lua name=bad\nfoo("],  # does not compile
    [b"FUNCTION", b"LOAD", b"#!lua name=empty\nlocal x = 1"],  # registers nothing
    [b"FUNCTION", b"LOAD", b"#!lua name=x engine=none\nreturn 1"],
    [b"FUNCTION", b"DELETE", b"nope"],
    [b"FUNCTION", b"FLUSH", b"NOW"],
    [b"FUNCTION", b"LIST", b"LIBRARYNAME"],
    [b"FUNCTION", b"LIST", b"BOGUS"],
    [b"FUNCTION", b"RESTORE", b"garbage"],
    [b"FUNCTION", b"RESTORE", b"garbage", b"BOGUS"],
    [b"FUNCTION", b"DUMP", b"extra"],
    [b"FUNCTION", b"STATS", b"extra"],
    [b"SCRIPT"],
    [b"SCRIPT", b"NOPE"],
    [b"SCRIPT", b"EXISTS"],
    [b"SCRIPT", b"LOAD"],
    [b"SCRIPT", b"LOAD", b"return +"],
    [b"SCRIPT", b"FLUSH", b"NOW"],
    [b"CONFIG"],
    [b"CONFIG", b"NOPE"],
    [b"CONFIG", b"GET"],
    [b"CONFIG", b"SET", b"maxmemory"],
    [b"CONFIG", b"SET", b"nosuchparameter", b"1"],
    [b"FCALL", b"nosuchfunction", b"1", b"k"],
    [b"FCALL", b"f", b"notanumber", b"k"],
    [b"EVALSHA", b"0" * 40, b"1", b"k"],
    [b"EVALSHA", b"short", b"1", b"k"],
]


def test_bad_input_gets_redis_own_error_and_the_next_command_is_served(proxy):
    port, a, b, *_ = proxy
    replies = raw_replies(port, [*BAD, [b"PING"]])
    for argv, got in zip(BAD, replies, strict=False):
        want = direct(a, *argv)
        assert want.startswith(b"-"), argv
        if argv[0] in (b"FCALL",) and argv[2] == b"notanumber":
            # a key count that is no number: no key to route by, so the proxy says so
            assert got == b"-ERR command 'FCALL' is not supported by the proxy without keys\r\n"
            continue
        assert got == want, argv
    assert replies[-1] == b"+PONG\r\n"
    assert a.command(b"FUNCTION", b"LIST") == [] and b.command(b"FUNCTION", b"LIST") == []
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass
    assert client(port).ping()


def test_no_group_to_run_on(proxy):
    port, _a, _b, fe, _ = proxy
    loop = fe.loop
    empty = {"version": 99, "groups": {}, "slots": [0] * 1024}
    done = asyncio.run_coroutine_threadsafe(_apply(fe, empty), loop)
    done.result(10)
    try:
        assert raw_replies(port, [[b"FUNCTION", b"LIST"], [b"PING"]]) == [
            b"-ERR no group to run it on: the cluster has no group\r\n",
            b"+PONG\r\n",
        ]
    finally:
        from steelyard.redis.frontend import config_view

        asyncio.run_coroutine_threadsafe(_apply(fe, config_view(fe.redis)), loop).result(10)


async def _apply(fe, view) -> None:
    await asyncio.gather(*fe.apply_view(view))


def test_refused_config_parameters_are_redis_own(proxy):
    """Every name on the refusal list is a parameter of redis-server 7 (no typo lets one
    through), checked against a real server."""
    _, a, *_ = proxy
    for name in sorted(REFUSED_CONFIG):
        assert a.command(b"CONFIG", b"GET", name.encode()) != [], name
