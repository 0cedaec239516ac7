"""The command table against a real Redis 7: its own COMMAND GETKEYS says where keys are."""

from __future__ import annotations

import json

import pytest

from steelyard.redis.commands import SNAPSHOT, CommandTable, _to_json, fetch

SAMPLES = [
    [b"GET", b"k"],
    [b"SET", b"k", b"v", b"EX", b"10"],
    [b"MSET", b"a", b"1", b"b", b"2", b"c", b"3"],
    [b"MGET", b"a", b"b", b"c"],
    [b"DEL", b"a", b"b"],
    [b"XREAD", b"COUNT", b"2", b"STREAMS", b"s1", b"s2", b"0", b"0"],
    [b"XREADGROUP", b"GROUP", b"g", b"c", b"BLOCK", b"0", b"STREAMS", b"s1", b">"],
    [b"EVAL", b"return 1", b"2", b"k1", b"k2", b"a1"],
    [b"EVALSHA", b"abc", b"1", b"k1", b"a1"],
    [b"ZUNIONSTORE", b"d", b"2", b"k1", b"k2", b"WEIGHTS", b"1", b"2"],
    [b"ZINTERCARD", b"2", b"k1", b"k2", b"LIMIT", b"1"],
    [b"BLPOP", b"a", b"b", b"0"],
    [b"BLMOVE", b"a", b"b", b"LEFT", b"RIGHT", b"0"],
    [b"LMPOP", b"2", b"a", b"b", b"LEFT"],
    [b"RPOPLPUSH", b"a", b"b"],
    [b"SINTERSTORE", b"d", b"a", b"b"],
    [b"OBJECT", b"ENCODING", b"k"],
    [b"XINFO", b"STREAM", b"s"],
    [b"GEORADIUS", b"g", b"0", b"0", b"1", b"km", b"STORE", b"d"],
    [b"BITOP", b"AND", b"d", b"a", b"b"],
    [b"PFMERGE", b"d", b"a", b"b"],
    [b"SMOVE", b"a", b"b", b"m"],
    [b"COPY", b"a", b"b"],
    [b"RENAME", b"a", b"b"],
    [b"TOUCH", b"a", b"b"],
    [b"UNLINK", b"a", b"b"],
    [b"EXISTS", b"a", b"b"],
    [b"GETEX", b"k", b"PERSIST"],
    [b"HSET", b"h", b"f", b"v"],
    [b"FCALL", b"f", b"2", b"k1", b"k2", b"x"],
]


def getkeys(server, argv: list[bytes]) -> list[bytes]:
    reply = server.command(b"COMMAND", b"GETKEYS", *argv)
    assert isinstance(reply, list), reply
    return reply


def test_key_positions_match_command_getkeys(redis_servers):
    server = redis_servers()
    table = CommandTable.from_reply(fetch("127.0.0.1", server.port))
    for argv in SAMPLES:
        info = table.lookup(argv)
        assert info is not None, argv
        ours = [argv[i] for i in info.key_positions(argv)]
        assert ours == getkeys(server, argv), argv


def test_snapshot_is_this_redis(redis_servers):
    server = redis_servers()
    live = _to_json(fetch("127.0.0.1", server.port))
    snap = json.loads(SNAPSHOT.read_text())
    by_name = {e[0]: e for e in snap}
    assert {e[0] for e in live} == set(by_name)
    for entry in live:
        assert entry[:3] == by_name[entry[0]][:3], entry[0]  # name, arity, flags


@pytest.mark.parametrize(
    ("argv", "ok"),
    [([b"GET"], False), ([b"GET", b"k"], True), ([b"GET", b"k", b"x"], False),
     ([b"MSET", b"a"], False), ([b"MSET", b"a", b"1"], True)],
)  # fmt: skip
def test_arity(argv, ok):
    info = CommandTable.snapshot().lookup(argv)
    assert info is not None and info.arity_ok(len(argv)) is ok


def test_flags_and_unknown_commands():
    table = CommandTable.snapshot()
    assert table.lookup([b"set", b"k", b"v"]).write
    assert table.lookup([b"BLPOP", b"k", b"0"]).blocking
    assert not table.lookup([b"GET", b"k"]).write
    assert table.lookup([b"FOOBARZ"]) is None
