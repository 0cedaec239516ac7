"""Routing decisions per command, and error texts checked against a real Redis 7."""

from __future__ import annotations

import pytest

from steelyard.redis import resp
from steelyard.redis.commands import CommandTable
from steelyard.redis.dispatch import CROSSSLOT, Kind, classify
from steelyard.redis.slots import slot_of

TABLE = CommandTable.snapshot()


def decide(*argv: bytes):
    return classify(list(argv), TABLE)


def test_single_key_commands_go_to_their_slot():
    d = decide(b"SET", b"user:{42}:name", b"x")
    assert d.kind is Kind.SLOT and d.slot == slot_of(b"42") and d.write
    d = decide(b"GET", b"k")
    assert d.kind is Kind.SLOT and not d.write


def test_multi_key_rules():
    assert decide(b"MGET", b"{a}1", b"{a}2").kind is Kind.SLOT  # one slot: forwarded whole
    assert decide(b"MGET", b"a", b"b").kind is Kind.SPLIT
    assert decide(b"DEL", b"a", b"b", b"c").kind is Kind.SPLIT
    assert decide(b"MSET", b"a", b"1", b"b", b"2").kind is Kind.SPLIT
    d = decide(b"SINTER", b"a", b"b")
    assert d.kind is Kind.ERROR and d.error == CROSSSLOT
    assert decide(b"SINTER", b"{t}a", b"{t}b").kind is Kind.SLOT
    assert decide(b"EVAL", b"return 1", b"2", b"a", b"b").error == CROSSSLOT
    assert decide(b"RPOPLPUSH", b"{q}a", b"{q}b").kind is Kind.SLOT


def test_connections_of_their_own():
    assert decide(b"BLPOP", b"q", b"0").kind is Kind.BLOCKING
    assert decide(b"XREAD", b"BLOCK", b"0", b"STREAMS", b"s", b"$").kind is Kind.BLOCKING
    assert decide(b"XREAD", b"STREAMS", b"s", b"0").kind is Kind.SLOT
    assert decide(b"SUBSCRIBE", b"ch").kind is Kind.PUBSUB
    assert decide(b"PUBLISH", b"ch", b"m").kind is Kind.PUBSUB
    assert decide(b"MULTI").kind is Kind.TRANSACTION
    assert decide(b"WATCH", b"a", b"b").error == CROSSSLOT


def test_local_fanout_and_unsupported():
    for argv in ([b"PING"], [b"ECHO", b"x"], [b"SELECT", b"1"], [b"INFO"], [b"DBSIZE"],
                 [b"SCAN", b"0"], [b"AUTH", b"pw"], [b"QUIT"]):  # fmt: skip
        assert decide(*argv).kind is Kind.LOCAL, argv
    assert decide(b"KEYS", b"*").kind is Kind.FANOUT
    d = decide(b"MONITOR")
    assert d.kind is Kind.ERROR and d.error == "ERR command 'MONITOR' is not supported by the proxy"
    for argv in ([b"CONFIG", b"GET", b"maxmemory"], [b"FUNCTION", b"LOAD", b"x"],
                 [b"SCRIPT", b"EXISTS", b"a"], [b"FUNCTION", b"HELP"]):  # fmt: skip
        assert decide(*argv).kind is Kind.SERVER, argv
    assert decide(b"CONFIG", b"REWRITE").error.startswith("ERR CONFIG REWRITE is not supported")
    assert decide(b"SCRIPT", b"DEBUG", b"YES").error.startswith("ERR SCRIPT DEBUG is not")
    assert "not supported" in decide(b"EVAL", b"return 1", b"0").error


@pytest.mark.parametrize(
    "argv",
    [[b"GET"], [b"GET", b"a", b"b"], [b"SET", b"k"], [b"FOOBARZ", b"a", b"b"], [b"foobarz"],
     [b"OBJECT", b"ENCODING"], [b"HSET", b"h", b"f"]],
)  # fmt: skip
def test_errors_are_redis_texts(argv, redis_servers):
    server = redis_servers()
    d = classify(argv, TABLE)
    assert d.kind is Kind.ERROR
    real = server.command(*argv)  # hiredis gives the error text with its prefix
    assert resp.error(d.error) == f"-{real}\r\n".encode()
