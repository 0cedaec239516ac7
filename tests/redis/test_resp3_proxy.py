"""RESP3 through the proxy, against real redis-servers: after HELLO 3 a client gets the bytes
one Redis 7 would send. The differential test sends the same commands to a redis-server
directly and to steelyard (over two groups) and compares the raw replies, normalising only
what must differ (connection ids, the version, INFO's text, SCAN's cursor)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator

import pytest

from fixtures.redis_proxy import RawClient, running_proxy
from fixtures.redis_server import RedisServer
from steelyard.redis import resp
from steelyard.redis.backend import BackendConn, BackendPool
from steelyard.redis.slots import slot_of


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[list[RedisServer]]:
    """Two groups' masters and a third server, the reference a client talks to directly."""
    workdir = tmp_path_factory.mktemp("resp3")
    started = [RedisServer(workdir) for _ in range(3)]
    yield started
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def proxy(servers) -> Iterator[tuple[int, object]]:
    masters = [servers[0].address, servers[1].address]
    with running_proxy(masters, {"allow_fanout": True}) as running:
        yield running


def hello_normalised(raw: bytes) -> bytes:
    """HELLO's answer without what differs between two servers: the version and the id."""
    fields = resp.elements(raw)
    fields[3] = resp.bulk(b"V")
    fields[7] = resp.integer(0)
    return raw[: raw.index(b"\r\n") + 2] + b"".join(fields)


def both(servers, proxy, protocol: int = 3) -> tuple[RawClient, RawClient]:
    for s in servers:
        s.command(b"FLUSHALL")
    direct, through = RawClient(servers[2].port), RawClient(proxy[0])
    if protocol == 3:
        a, b = direct.call("HELLO", "3"), through.call("HELLO", "3")
        assert a.startswith(b"%7\r\n") and hello_normalised(a) == hello_normalised(b)
    return direct, through


# Commands whose replies must be byte for byte those of one Redis 7 in RESP3.
SAME = [
    ["SET", "str", "v"],
    ["GET", "str"],
    ["GET", "missing"],  # null: _
    ["HSET", "h", "f", "v", "g", "w"],
    ["HGETALL", "h"],  # map
    ["HGETALL", "missing"],  # empty map
    ["HMGET", "h", "f", "nope"],
    ["SADD", "s", "3", "1", "2"],  # an intset: the same order on any server
    ["SMEMBERS", "s"],  # set
    ["SISMEMBER", "s", "1"],
    ["ZADD", "z", "1.5", "m", "2", "n"],
    ["ZSCORE", "z", "m"],  # double
    ["ZSCORE", "z", "nope"],
    ["ZINCRBY", "z", "1", "n"],
    ["ZRANGE", "z", "0", "-1", "WITHSCORES"],  # pairs with doubles
    ["ZMSCORE", "z", "m", "nope"],
    ["ZPOPMIN", "z"],
    ["ZRANDMEMBER", "nozset", "1", "WITHSCORES"],
    ["LPOS", "nolist", "x"],
    ["EVAL", "redis.setresp(3); return true", "1", "k"],  # boolean
    ["EVAL", "redis.setresp(3); return false", "1", "k"],
    ["EVAL", "return true", "1", "k"],  # :1 without setresp
    ["EVAL", "return {double=3.14}", "1", "k"],
    ["EVAL", "return {big_number='123456789012345678901234567890'}", "1", "k"],  # big number
    ["EVAL", "return {map={a=1}}", "1", "k"],
    ["EVAL", "return {set={a=true}}", "1", "k"],
    ["EVAL", "return nil", "1", "k"],
    ["MSET", "a1", "1", "b2", "2", "c3", "3", "d4", "4"],
    ["MGET", "a1", "missing", "b2", "c3", "nope", "d4"],  # over slots: nulls kept as _
    ["EXISTS", "a1", "b2", "missing"],
    ["TOUCH", "a1", "b2", "missing"],
    ["DEL", "a1", "b2", "missing"],
    ["UNLINK", "c3", "d4"],
    ["DBSIZE"],
    ["CLIENT", "GETNAME"],  # null
    ["CLIENT", "SETNAME", "resp3-client"],
    ["CLIENT", "GETNAME"],
    ["PING"],
    ["PING", "hi"],
    ["ECHO", "e"],
    ["BLPOP", "nolist", "0.05"],  # the timeout: _
    ["BZPOPMIN", "nozset", "0.05"],
    ["XREAD", "COUNT", "1", "BLOCK", "50", "STREAMS", "nostream", "0"],
    ["WATCH", "{t}a"],  # a RESP3 connection of the session's own
    ["MULTI"],
    ["SET", "{t}a", "1"],
    ["INCRBYFLOAT", "{t}b", "1.5"],
    ["HGETALL", "{t}h"],
    ["EXEC"],  # an array of RESP3 replies
    ["PUBSUB", "NUMSUB", "ch"],
    ["PUBSUB", "NUMPAT"],
    ["PUBSUB", "CHANNELS"],
    ["HELLO"],  # no version: the current one
]


def test_same_bytes_as_redis(servers, proxy):
    direct, through = both(servers, proxy)
    for argv in SAME:
        want, got = direct.call(*argv), through.call(*argv)
        if argv == ["HELLO"]:
            want, got = hello_normalised(want), hello_normalised(got)
        assert got == want, argv
    # the nulls and the map really are RESP3 (not the RESP2 forms passing twice)
    assert through.call("GET", "missing") == b"_\r\n"
    assert through.call("HGETALL", "h").startswith(b"%2\r\n")
    direct.close()
    through.close()


def test_fanouts_and_scan_in_resp3(servers, proxy):
    """Replies merged from both groups: the same elements, in the types Redis uses."""
    direct, through = both(servers, proxy)
    keys = [f"key:{i}" for i in range(30)]
    assert len({slot_of(k.encode()) for k in keys}) > 1
    for k in keys:
        assert direct.call("SET", k, "1") == through.call("SET", k, "1") == b"+OK\r\n"
    want, got = direct.call("KEYS", "*"), through.call("KEYS", "*")
    assert got[:1] == want[:1] == b"*" and sorted(resp.elements(got)) == sorted(resp.elements(want))
    assert through.call("DBSIZE") == direct.call("DBSIZE") == b":30\r\n"
    seen: list[bytes] = []
    cursor = b"0"
    while True:
        reply = through.call("SCAN", cursor, "COUNT", "7")
        assert reply.startswith(b"*2\r\n$")
        head, keys_raw = resp.elements(reply)
        assert keys_raw[:1] == b"*"
        seen += resp.elements(keys_raw)
        cursor = resp.parse(head)  # type: ignore[assignment]
        if cursor == b"0":
            break
    assert sorted(seen) == sorted(resp.elements(want))
    # INFO: a verbatim string, as Redis 7 sends it in RESP3
    info = through.call("INFO")
    assert direct.call("INFO").startswith(b"=") and info.startswith(b"=")
    assert info.split(b"\r\n", 1)[1].startswith(b"txt:# Proxy")
    assert b"db0:keys=30," in info
    direct.close()
    through.close()


def test_hello_switches_and_errors(servers, proxy):
    """HELLO's answers and errors, checked against the real server: NOPROTO, the version
    check, option syntax, a bad client name; HELLO 2 switches back."""
    direct, through = both(servers, proxy, protocol=2)
    cases = [
        ["HELLO", "4"],
        ["HELLO", "1"],
        ["HELLO", "x"],
        ["HELLO", "3", "FOO"],
        ["HELLO", "3", "SETNAME"],
        ["HELLO", "3", "AUTH", "default"],
        ["HELLO", "3", "AUTH", "bob", "pw"],  # no such user
        ["HELLO", "3", "SETNAME", "a b"],
        ["GET", "missing"],  # still RESP2 after each refusal
        ["HELLO", "3", "AUTH", "default", "any", "SETNAME", "named"],  # passwordless default
        ["GET", "missing"],
        ["CLIENT", "GETNAME"],
        ["HELLO", "2"],
        ["GET", "missing"],
        ["HGETALL", "missing"],
        ["HELLO", "3", "SETNAME", "again", "FOO"],  # the name is set before the bad option
        ["CLIENT", "GETNAME"],
        ["GET", "missing"],
    ]
    for argv in cases:
        want, got = direct.call(*argv), through.call(*argv)
        if argv[0] == "HELLO" and want[:1] in (b"%", b"*"):
            want, got = hello_normalised(want), hello_normalised(got)
        assert got == want, argv
    direct.close()
    through.close()
    # the next client is served as ever
    fresh = RawClient(proxy[0])
    assert fresh.call("PING") == b"+PONG\r\n"
    fresh.close()


def test_watch_failure_answers_a_resp3_null(servers, proxy):
    """EXEC after a touched WATCH is a null (`_` in RESP3), as Redis answers."""
    direct, through = both(servers, proxy)
    for client, port in ((direct, servers[2].port), (through, proxy[0])):
        assert client.call("WATCH", "w") == b"+OK\r\n"
        other = RawClient(port)
        assert other.call("SET", "w", "changed") == b"+OK\r\n"
        other.close()
        assert client.call("MULTI") == b"+OK\r\n"
        assert client.call("GET", "w") == b"+QUEUED\r\n"
        assert client.call("EXEC") == b"_\r\n"
    direct.close()
    through.close()


def test_client_tracking_refused_and_redispy_handshake(proxy):
    """CLIENT TRACKING is refused with a reason; what redis-py 8 sends after HELLO 3 with its
    defaults is answered as it tolerates: CLIENT MAINT_NOTIFICATIONS (enabled "auto") with an
    error, as Redis 7.0 does (redis-py ignores a ResponseError there), and CLIENT SETINFO
    (Redis 7.2's, not in the proxy's 7.0 command table) with an error too, which redis-py
    ignores as well."""
    c = RawClient(proxy[0])
    c.call("HELLO", "3")
    assert c.call("CLIENT", "TRACKING", "on") == (
        b"-ERR CLIENT TRACKING is not supported by the proxy (client-side caching needs "
        b"invalidation messages from every group)\r\n"
    )
    maint = c.call("CLIENT", "MAINT_NOTIFICATIONS", "ON", "moving-endpoint-type", "internal-ip")
    assert maint.startswith(b"-ERR ")
    assert c.call("CLIENT", "SETINFO", "LIB-NAME", "redis-py").startswith(b"-ERR ")
    assert c.call("CLIENT", "SETINFO", "LIB-VER", "8.1.0").startswith(b"-ERR ")
    assert c.call("GET", "missing") == b"_\r\n"
    c.close()


def test_pubsub_in_resp3(servers, proxy):
    """Confirmations and messages are push frames; ordinary commands run while subscribed;
    PING answers as outside subscriber mode; confirmations match Redis's bytes."""
    direct, through = both(servers, proxy)
    for client in (direct, through):
        client.send("SUBSCRIBE", "c1", "c2")
        assert client.replies(2) == [
            b">3\r\n$9\r\nsubscribe\r\n$2\r\nc1\r\n:1\r\n",
            b">3\r\n$9\r\nsubscribe\r\n$2\r\nc2\r\n:2\r\n",
        ]
        assert client.call("PING") == b"+PONG\r\n"
        assert client.call("SET", "k", "v") == b"+OK\r\n"
        assert client.call("GET", "k") == b"$1\r\nv\r\n"
        assert client.call("PSUBSCRIBE", "p*") == b">3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:3\r\n"
    publisher = RawClient(proxy[0])
    assert publisher.call("PUBLISH", "c1", "hello") == b":1\r\n"
    assert publisher.call("PUBLISH", "p1", "hey") == b":1\r\n"
    assert through.replies(2) == [
        b">3\r\n$7\r\nmessage\r\n$2\r\nc1\r\n$5\r\nhello\r\n",
        b">4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\np1\r\n$3\r\nhey\r\n",
    ]
    # a RESP2 subscriber of the same channel gets arrays, on the same servers
    old = RawClient(proxy[0])
    old.send("SUBSCRIBE", "c1")
    assert old.replies(1) == [b"*3\r\n$9\r\nsubscribe\r\n$2\r\nc1\r\n:1\r\n"]
    assert old.call("GET", "k").startswith(b"-ERR Can't execute 'get'")
    assert publisher.call("PUBLISH", "c1", "both") == b":2\r\n"
    assert old.replies(1) == [b"*3\r\n$7\r\nmessage\r\n$2\r\nc1\r\n$4\r\nboth\r\n"]
    assert through.replies(1) == [b">3\r\n$7\r\nmessage\r\n$2\r\nc1\r\n$4\r\nboth\r\n"]
    for client in (direct, through):
        # every channel, in an order of the server's own: the counts go down in turn
        client.send("UNSUBSCRIBE")
        frames = client.replies(2)
        assert all(f.startswith(b">3\r\n$11\r\nunsubscribe\r\n") for f in frames)
        parsed: list = [resp.parse(f) for f in frames]
        assert {p[1] for p in parsed} == {b"c1", b"c2"} and [p[2] for p in parsed] == [2, 1]
        assert client.call("PUNSUBSCRIBE") == b">3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n"
        assert client.call("UNSUBSCRIBE") == b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"
    for c in (direct, through, publisher, old):
        c.close()


def test_resp2_and_resp3_clients_pipelining_at_once(proxy):
    """Two clients of either protocol pipelining to the same servers at the same time: each
    gets its own protocol (its own backend connections), reply for reply."""
    port, fe = proxy
    two, three = RawClient(port), RawClient(port)
    assert three.call("HELLO", "3").startswith(b"%7")
    assert two.call("HSET", "ph", "f", "v") in (b":1\r\n", b":0\r\n")
    batch = [["GET", "pmissing"], ["HGETALL", "ph"], ["SET", "px", "1"], ["GET", "px"]] * 100
    raw = b"".join(resp.encode_command([a.encode() for a in argv]) for argv in batch)
    for i in range(0, len(raw), 997):  # interleaved writes
        two.sock.sendall(raw[i : i + 997])
        three.sock.sendall(raw[i : i + 997])
    answers2 = [b"$-1\r\n", b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n", b"+OK\r\n", b"$1\r\n1\r\n"]
    answers3 = [b"_\r\n", b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n", b"+OK\r\n", b"$1\r\n1\r\n"]
    assert two.replies(len(batch)) == answers2 * 100
    assert three.replies(len(batch)) == answers3 * 100
    protocols = {key[2] for key in list(fe.backends.conns)}  # type: ignore[attr-defined]
    assert protocols == {2, 3}
    two.close()
    three.close()


def test_redis_cli_resp3(servers, proxy):
    port = str(proxy[0])
    cli = ["redis-cli", "-3", "--no-raw", "-p", port]

    def run(*argv: str) -> str:
        done = subprocess.run([*cli, *argv], capture_output=True, text=True, timeout=30, check=True)
        return done.stdout

    assert run("HSET", "cli:h", "f", "v") in ("(integer) 1\n", "(integer) 0\n")
    assert run("HGETALL", "cli:h") == '1# "f" => "v"\n'
    assert run("GET", "cli:missing") == "(nil)\n"
    assert run("ZADD", "cli:z", "2.5", "m") in ("(integer) 1\n", "(integer) 0\n")
    assert run("ZSCORE", "cli:z", "m") == "(double) 2.5\n"
    assert run("SADD", "cli:s", "a") in ("(integer) 1\n", "(integer) 0\n")
    assert run("SMEMBERS", "cli:s") == '1~ "a"\n'


def test_redis_cli_resp3_with_auth(servers):
    with running_proxy([servers[0].address], auth="s3cret") as (port, _):
        cli = ["redis-cli", "-3", "--no-raw", "-p", str(port), "--user", "default"]
        ok = subprocess.run([*cli, "--pass", "s3cret", "HGETALL", "nohash"], capture_output=True,
                            text=True, timeout=30, check=True)  # fmt: skip
        assert ok.stdout == "(empty hash)\n"
        bad = subprocess.run([*cli, "--pass", "wrong", "PING"], capture_output=True, text=True,
                             timeout=30, check=True)  # fmt: skip
        assert "AUTH failed: WRONGPASS invalid username-password pair" in bad.stderr + bad.stdout
        assert bad.stdout.strip().endswith("NOAUTH Authentication required.")
        # HELLO 3 with AUTH on a raw socket, as the clients of RESP3 libraries open
        c = RawClient(port)
        assert c.call("HELLO", "3").startswith(b"-NOAUTH HELLO must be called")
        assert c.call("HELLO", "3", "AUTH", "default", "s3cret").startswith(b"%7\r\n")
        assert c.call("GET", "missing") == b"_\r\n"
        c.close()


def test_a_push_on_a_shared_connection_is_no_reply(servers, caplog):
    """A RESP3 push frame between replies (here a real invalidation message: the backend
    connection was made to track keys) never answers a waiting request: it is dropped with a
    log line on a connection without a push callback, and handed to the callback otherwise."""

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        pool = BackendPool(asyncio.get_running_loop())
        tracked = pool.get(servers[0].address, 0, 3)
        other = pool.get(servers[0].address, 0, 2)
        replies: list[bytes] = []
        pushed: list[bytes] = []

        async def ask(conn: BackendConn, *argv: bytes) -> bytes:
            done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            conn.send(resp.encode_command(list(argv)), done.set_result)
            pool.flush()
            return await asyncio.wait_for(done, 10)

        replies.append(await ask(tracked, b"CLIENT", b"TRACKING", b"on"))
        for push in (None, pushed.append):
            tracked.push = push
            replies.append(await ask(tracked, b"GET", b"tracked"))
            replies.append(await ask(other, b"SET", b"tracked", b"x"))  # invalidates it
            replies.append(await ask(tracked, b"PING"))
        pool.close()
        return replies, pushed

    with caplog.at_level(logging.WARNING, logger="steelyard"):
        replies, pushed = asyncio.run(scenario())
    assert replies == [b"+OK\r\n", b"_\r\n", b"+OK\r\n", b"+PONG\r\n",
                       b"$1\r\nx\r\n", b"+OK\r\n", b"+PONG\r\n"]  # fmt: skip
    assert pushed == [b">2\r\n$10\r\ninvalidate\r\n*1\r\n$7\r\ntracked\r\n"]
    dropped = [r for r in caplog.records if r.getMessage() == "redis_backend_push_dropped"]
    assert len(dropped) == 1


@pytest.mark.parametrize("protocol", [2, 3])
def test_backend_auth_rides_in_hello(tmp_path, protocol):
    """With backend_auth, a protocol-3 backend connection authenticates inside its HELLO 3
    (a protocol-2 one with AUTH); a wrong backend password is every request's error (the
    connection setup is refused), once each, and the client is still served."""
    server = RedisServer(tmp_path, 0, "--requirepass", "backpw")
    empty, null = (b"%0\r\n", b"_\r\n") if protocol == 3 else (b"*0\r\n", b"$-1\r\n")
    try:
        for password, ok in (("backpw", True), ("wrong", False)):
            with running_proxy([server.address], backend_auth=password) as (port, _):
                c = RawClient(port)
                if protocol == 3:
                    assert c.call("HELLO", "3").startswith(b"%7\r\n")
                c.send("HGETALL", "missing")
                c.send("GET", "missing")  # pipelined behind the refused setup
                got = c.replies(2)
                if ok:
                    assert got == [empty, null]
                else:
                    for reply in got:
                        assert reply.startswith(b"-ERR backend " + server.address.encode())
                        assert b"refused the connection setup: b'-WRONGPASS" in reply
                    assert c.call("PING") == b"+PONG\r\n"
                c.close()
    finally:
        server.stop()


def test_long_resp3_reply_streams_through_whole(servers, proxy):
    """A reply far over the streaming threshold (a 30000-member ZRANGE WITHSCORES: pairs of a
    bulk and a double), which the proxy forwards in pieces as it comes, arrives byte for byte
    as Redis sent it."""
    direct, through = both(servers, proxy)
    members: list[str] = []
    for i in range(30000):
        members += [f"{i / 7:.6f}", f"member:{i:06d}"]
    for client in (direct, through):
        for start in range(0, len(members), 2000):
            assert client.call("ZADD", "bigz", *members[start : start + 2000]).startswith(b":")
    want = direct.call("ZRANGE", "bigz", "0", "-1", "WITHSCORES")
    assert len(want) > 512 * 1024 and b",4285.5714289999996\r\n" in want
    assert through.call("ZRANGE", "bigz", "0", "-1", "WITHSCORES") == want
    assert through.call("GET", "missing") == b"_\r\n"  # in step after it
    direct.close()
    through.close()


LIBRARY = (
    "#!lua name=r3lib\n"
    "redis.register_function('r3get', function(keys) return redis.call('GET', keys[1]) end)"
)


def test_functions_scripts_and_config_in_resp3(servers, proxy):
    """FUNCTION, SCRIPT and CONFIG answers merged from both groups' masters are, for a RESP3
    client, the bytes one Redis 7 sends (maps for CONFIG GET and FUNCTION LIST/STATS)."""
    direct, through = both(servers, proxy)
    for client in (direct, through):
        client.call("FUNCTION", "FLUSH")
        client.call("SCRIPT", "FLUSH")
    cases = [
        ["FUNCTION", "LOAD", LIBRARY],
        ["FUNCTION", "LOAD", LIBRARY],  # already there: the error
        ["FUNCTION", "LIST"],
        ["FUNCTION", "LIST", "WITHCODE"],
        ["FUNCTION", "STATS"],
        ["SET", "fk", "fv"],
        ["FCALL", "r3get", "1", "fk"],
        ["FCALL", "r3get", "1", "missing"],  # a null from a function: _
        ["SCRIPT", "LOAD", "return 1"],
        ["SCRIPT", "EXISTS", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0" * 40],
        ["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "1", "fk"],
        ["CONFIG", "GET", "maxmemory-policy"],
        ["CONFIG", "GET", "nosuchparameter"],
        ["FUNCTION", "DELETE", "r3lib"],
        ["FUNCTION", "LIST"],
    ]
    for argv in cases:
        assert through.call(*argv) == direct.call(*argv), argv
    assert through.call("CONFIG", "GET", "maxmemory-policy").startswith(b"%1\r\n")
    direct.close()
    through.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_lock_barrier_leaves_subscriber_connections_alone(servers, proxy, protocol):
    """The barrier that waits for commands in flight on a slot's old owner pings that server's
    command connections, not the subscriber ones: a RESP2 PONG there arrives among the
    messages, where one message could be taken for it and the PONG relayed as a message."""
    port, fe = proxy
    source = servers[0].address
    channel = next(
        f"ch{i}" for i in range(1000) if fe.router.route[slot_of(f"ch{i}".encode())] == source
    )
    sub = RawClient(port)
    if protocol == 3:
        assert sub.call("HELLO", "3").startswith(b"%")
    assert sub.call("SUBSCRIBE", channel).split(b"\r\n")[0] in (b"*3", b">3")
    loop = fe.loop
    barrier = asyncio.run_coroutine_threadsafe(_barrier(fe, source), loop)
    barrier.result(10)
    listing = servers[0].command(b"CLIENT", b"LIST")
    assert isinstance(listing, bytes)
    subscribers = [line for line in listing.decode().splitlines() if " sub=1 " in line]
    assert subscribers and all(" cmd=subscribe " in line for line in subscribers), subscribers
    publisher = RawClient(port)
    assert publisher.call("PUBLISH", channel, "after") == b":1\r\n"
    message = sub.replies(1)[0]
    assert message.endswith(b"$5\r\nafter\r\n") and b"pong" not in message
    sub.close()
    publisher.close()


async def _barrier(fe, source: str) -> None:
    await fe.router._barrier(source)


def test_reset_command_time_and_auth_default(servers, proxy):
    """RESET, COMMAND, TIME and AUTH of the passwordless default user, against Redis 7."""
    direct, through = both(servers, proxy)
    cases = [
        ["SELECT", "3"],
        ["CLIENT", "SETNAME", "before"],
        ["SUBSCRIBE", "rch"],
        ["RESET"],  # back to RESP2, db 0, no name, no subscription
        ["CLIENT", "GETNAME"],
        ["GET", "missing"],
        ["HGETALL", "missing"],
        ["COMMAND", "COUNT"],
        ["COMMAND", "INFO", "get", "mset"],
        ["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"],
        ["AUTH", "default", "anything"],
        ["AUTH", "bob", "anything"],
        ["AUTH", "anything"],
    ]
    for argv in cases:
        assert through.call(*argv) == direct.call(*argv), argv
    assert through.call("GET", "missing") == b"$-1\r\n"
    now = resp.elements(through.call("TIME"))
    assert len(now) == 2 and int(resp.parse(now[0])) > 1_700_000_000  # type: ignore[arg-type]
    direct.close()
    through.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_commands_after_a_blocking_one_wait_for_its_answer(servers, proxy, protocol):
    """As on one Redis connection, a command pipelined behind a BLPOP runs after the BLPOP's
    answer: the LPUSH behind it does not feed it (the BLPOP times out, then the push lands)."""
    direct, through = both(servers, proxy, protocol)
    answers = []
    for client in (direct, through):
        client.send("BLPOP", "blist", "0.2")
        client.send("LPUSH", "blist", "x")
        client.send("LLEN", "blist")
        answers.append(client.replies(3))
    assert answers[1] == answers[0]
    assert answers[0][1:] == [b":1\r\n", b":1\r\n"] and answers[0][0] in (b"*-1\r\n", b"_\r\n")
    direct.close()
    through.close()
