"""The merges of FUNCTION / SCRIPT answers (merge.py) and the typed reply codec (values.py),
over real redis-server 7 replies in both protocols: RESP2, and RESP3 after `HELLO 3` on a raw
socket. A merge of two servers' answers must give the bytes one server holding the same
libraries or scripts gives."""

from __future__ import annotations

import hashlib
import socket

import pytest

from fixtures.redis_server import RedisServer
from steelyard.redis import merge, resp, values

LIB_A = b"#!lua name=liba\nredis.register_function('fa', function(keys, args) return 1 end)"
LIB_B = (
    b"#!lua name=libb\nredis.register_function('fb1', function(keys, args) return 2 end)\n"
    b"redis.register_function{function_name='fb2', callback=function(keys, args) return 3 end, "
    b"flags={'no-writes'}, description='two'}"
)
SCRIPT_X, SCRIPT_Y = b"return 'x'", b"return 'y'"

# FUNCTION STATS of a redis-server 7.0 while FCALL spin 1 k{x} a1 ran on it (captured: a test
# cannot hold a server busy without racing it), and of the same server idle with two libraries.
RUNNING = {
    2: b"*4\r\n$14\r\nrunning_script\r\n*6\r\n$4\r\nname\r\n$4\r\nspin\r\n$7\r\ncommand\r\n*5\r\n"
    b"$5\r\nFCALL\r\n$4\r\nspin\r\n$1\r\n1\r\n$4\r\nk{x}\r\n$2\r\na1\r\n$11\r\nduration_ms\r\n"
    b":404\r\n$7\r\nengines\r\n*2\r\n$3\r\nLUA\r\n*4\r\n$15\r\nlibraries_count\r\n:1\r\n"
    b"$15\r\nfunctions_count\r\n:1\r\n",
    3: b"%2\r\n$14\r\nrunning_script\r\n%3\r\n$4\r\nname\r\n$4\r\nspin\r\n$7\r\ncommand\r\n*5\r\n"
    b"$5\r\nFCALL\r\n$4\r\nspin\r\n$1\r\n1\r\n$4\r\nk{x}\r\n$2\r\na1\r\n$11\r\nduration_ms\r\n"
    b":400\r\n$7\r\nengines\r\n%1\r\n$3\r\nLUA\r\n%2\r\n$15\r\nlibraries_count\r\n:1\r\n"
    b"$15\r\nfunctions_count\r\n:1\r\n",
}
BUSY = (
    b"-BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.\r\n"
)


def ask(server: RedisServer, proto: int, *argv: bytes) -> bytes:
    """The raw reply to argv, on a fresh connection speaking `proto`."""
    commands = [[b"HELLO", b"3"]] if proto == 3 else []
    commands.append(list(argv))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"".join(resp.encode_command(c) for c in commands))
        data = b""
        while True:
            replies, _ = values.split(data)
            if len(replies) == len(commands):
                return replies[-1]
            chunk = s.recv(65536)
            assert chunk, "closed before the reply"
            data += chunk


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """one: liba and script x; two: liba, libb, scripts x and y; ref: liba, libb, script x."""
    tmp = tmp_path_factory.mktemp("merge")
    started = [RedisServer(tmp) for _ in range(3)]
    one, two, ref = started
    for s, libs in ((one, [LIB_A]), (two, [LIB_A, LIB_B]), (ref, [LIB_B, LIB_A])):
        for lib in libs:
            assert ask(s, 2, b"FUNCTION", b"LOAD", lib).startswith(b"$")
    for s, scripts in ((one, [SCRIPT_X]), (two, [SCRIPT_X, SCRIPT_Y]), (ref, [SCRIPT_X])):
        for body in scripts:
            assert ask(s, 2, b"SCRIPT", b"LOAD", body).startswith(b"$40\r\n")
    yield one, two, ref
    for s in started:
        s.stop()


def entries(raw: bytes) -> list[bytes]:
    """The libraries of a FUNCTION LIST reply, each written back with its functions sorted:
    servers list both in their own hash order."""
    out = []
    for library in values.read(raw).items or []:
        functions = library.get(b"functions")
        assert functions is not None and functions.items is not None
        functions.items.sort(key=values.write)
        out.append(values.write(library))
    return sorted(out)


@pytest.mark.parametrize("proto", [2, 3])
@pytest.mark.parametrize(
    "args", [[], [b"WITHCODE"], [b"LIBRARYNAME", b"lib*"], [b"LIBRARYNAME", b"libb", b"WITHCODE"]]
)
def test_function_list_is_each_library_once(servers, proto, args):
    one, two, ref = servers
    parts = [ask(s, proto, b"FUNCTION", b"LIST", *args) for s in (one, two)]
    merged = merge.libraries(parts)
    want = ask(ref, proto, b"FUNCTION", b"LIST", *args)
    # the same libraries, each written as a server writes it
    assert entries(merged) == entries(want)
    assert merged.split(b"\r\n", 1)[0] == want.split(b"\r\n", 1)[0]  # *N
    if proto == 3 and b"libb" in want:
        assert b"%3\r\n$4\r\nname\r\n" in merged and b"~1\r\n+no-writes\r\n" in merged
    assert merge.libraries([parts[1], parts[1]]) == parts[1]


@pytest.mark.parametrize("proto", [2, 3])
def test_function_stats_count_as_one_server(servers, proto):
    one, two, ref = servers
    parts = [ask(s, proto, b"FUNCTION", b"STATS") for s in (one, two)]
    want = ask(ref, proto, b"FUNCTION", b"STATS")
    assert merge.function_stats(parts) == want
    assert merge.function_stats(parts[::-1]) == want
    assert merge.function_stats([parts[0]]) == parts[0]


@pytest.mark.parametrize("proto", [2, 3])
def test_function_stats_show_the_running_script(servers, proto):
    _, two, _ = servers
    idle = ask(two, proto, b"FUNCTION", b"STATS")  # libraries 2, functions 3
    want = RUNNING[proto].replace(b":1\r\n$15\r\nfunctions_count\r\n:1\r\n",
                                  b":2\r\n$15\r\nfunctions_count\r\n:3\r\n")  # fmt: skip
    assert merge.function_stats([idle, RUNNING[proto]]) == want
    assert merge.function_stats([RUNNING[proto], idle]) == want


@pytest.mark.parametrize("proto", [2, 3])
def test_script_exists_only_where_every_master_has_it(servers, proto):
    one, two, ref = servers
    shas = [hashlib.sha1(body).hexdigest().encode() for body in (SCRIPT_X, SCRIPT_Y)]
    argv = [b"SCRIPT", b"EXISTS", *shas, b"0" * 40]
    parts = [ask(s, proto, *argv) for s in (one, two)]
    assert parts[1] == b"*3\r\n:1\r\n:1\r\n:0\r\n"
    want = ask(ref, proto, *argv)
    assert want == b"*3\r\n:1\r\n:0\r\n:0\r\n"
    assert merge.exists(parts) == want and merge.exists(parts[::-1]) == want


@pytest.mark.parametrize("proto", [2, 3])
def test_kill_is_ok_where_one_master_killed_something(servers, proto):
    one, two, _ = servers
    notbusy = [ask(s, proto, b"FUNCTION", b"KILL") for s in (one, two)]
    assert notbusy[0] == merge.NOTBUSY
    assert merge.kill(notbusy) == merge.NOTBUSY
    assert merge.kill([notbusy[0], resp.OK]) == resp.OK
    assert merge.kill([BUSY, notbusy[1]]) == BUSY  # SCRIPT KILL while a function runs
    assert merge.kill([notbusy[0], BUSY, resp.OK]) == resp.OK


@pytest.mark.parametrize("proto", [2, 3])
def test_changes_answer_the_first_refusal_or_the_common_answer(servers, proto):
    one, two, _ = servers
    loads = [ask(s, proto, b"SCRIPT", b"LOAD", SCRIPT_X) for s in (one, two)]
    assert merge.same(loads) == loads[0] and loads[0].startswith(b"$40\r\n")
    exists = [ask(s, proto, b"FUNCTION", b"LOAD", LIB_A) for s in (one, two)]
    assert merge.same(exists) == b"-ERR Library 'liba' already exists\r\n"
    mixed = [b"$4\r\nliba\r\n", exists[0]]
    assert merge.same(mixed) == exists[0]
    assert merge.same([b"$4\r\nliba\r\n", b"$4\r\nlibb\r\n"]).startswith(
        b"-ERR the groups' masters answered differently: "
    )


@pytest.mark.parametrize("proto", [2, 3])
def test_values_write_back_every_reply_byte_for_byte(servers, proto):
    one, *_ = servers
    for argv in [[b"HSET", b"h", b"f", b"v", b"g", b"1.5"], [b"SADD", b"s", b"a", b"b"],
                 [b"ZADD", b"z", b"1.5", b"m"]]:  # fmt: skip
        ask(one, proto, *argv)
    for argv in [[b"HGETALL", b"h"], [b"SMEMBERS", b"s"], [b"ZSCORE", b"z", b"m"],
                 [b"GET", b"nope"], [b"INFO", b"server"], [b"CLIENT", b"INFO"],
                 [b"FUNCTION", b"LIST", b"WITHCODE"], [b"FUNCTION", b"DUMP"],
                 [b"CONFIG", b"GET", b"maxmemory*"], [b"HELLO"], [b"NOPE"]]:  # fmt: skip
        raw = ask(one, proto, *argv)
        assert values.write(values.read(raw)) == raw, argv
    if proto == 3:  # the RESP3 types are all there
        assert ask(one, 3, b"HGETALL", b"h").startswith(b"%2\r\n")
        assert ask(one, 3, b"SMEMBERS", b"s").startswith(b"~2\r\n")
        assert ask(one, 3, b"ZSCORE", b"z", b"m") == b",1.5\r\n"
        assert ask(one, 3, b"GET", b"nope") == b"_\r\n"
        assert ask(one, 3, b"INFO", b"server").startswith(b"=")


def test_values_refuse_malformed_or_short_replies():
    with pytest.raises(values.Incomplete):
        values.read(b"*2\r\n:1\r\n")
    with pytest.raises(values.Incomplete):
        values.read(b"$5\r\nab")
    with pytest.raises(ValueError):
        values.read(b"?1\r\n")
    with pytest.raises(ValueError):
        values.read(b":1\r\n:2\r\n")
    assert values.split(b":1\r\n$3\r\nab") == ([b":1\r\n"], 4)
    null = values.read(b"*-1\r\n")
    assert null.is_null and values.write(null) == b"*-1\r\n"
