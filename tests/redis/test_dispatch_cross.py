"""What `classify` says of keys in several slots: CROSSSLOT (Redis Cluster's rule), and in
`cross` the kind the command has when one group owns all those slots."""

from __future__ import annotations

from steelyard.redis.commands import CommandTable
from steelyard.redis.dispatch import CROSSSLOT, Kind, classify

TABLE = CommandTable.snapshot()


def decide(*argv: bytes):
    return classify(list(argv), TABLE)


def test_keys_in_several_slots_say_what_they_would_be():
    for argv, kind, write in [
        ((b"SINTER", b"a", b"b"), Kind.SLOT, False),
        ((b"SUNIONSTORE", b"d", b"a", b"b"), Kind.SLOT, True),
        ((b"EVAL", b"return 1", b"2", b"a", b"b"), Kind.SLOT, True),
        ((b"XREAD", b"STREAMS", b"a", b"b", b"0", b"0"), Kind.SLOT, False),
        ((b"XREAD", b"BLOCK", b"0", b"STREAMS", b"a", b"b", b"$", b"$"), Kind.BLOCKING, False),
        ((b"BLMOVE", b"a", b"b", b"LEFT", b"LEFT", b"0"), Kind.BLOCKING, True),
        ((b"BLPOP", b"a", b"b", b"0"), Kind.BLOCKING, True),
        ((b"WATCH", b"a", b"b"), Kind.TRANSACTION, False),
    ]:
        d = decide(*argv)
        assert (d.kind, d.error, d.cross) == (Kind.ERROR, CROSSSLOT, kind), argv
        assert d.write is write, argv
        assert [argv[i] for i in d.keys] == [a for a in argv if a in (b"a", b"b", b"d")], argv


def test_one_slot_split_and_other_errors_have_no_cross():
    assert decide(b"SINTER", b"{t}a", b"{t}b").cross is None
    assert decide(b"MGET", b"a", b"b").kind is Kind.SPLIT
    assert decide(b"MGET", b"a", b"b").cross is None
    assert decide(b"GET").cross is None  # wrong arity
    assert decide(b"EVAL", b"return 1", b"0").cross is None  # no keys


def test_sort_store_names_its_destination():
    d = decide(b"SORT", b"a", b"BY", b"nosort", b"GET", b"#", b"STORE", b"b")
    assert (d.kind, d.cross, d.keys) == (Kind.ERROR, Kind.SLOT, [1, 7])
    assert decide(b"SORT", b"{t}a", b"LIMIT", b"0", b"5", b"STORE", b"{t}b").kind is Kind.SLOT
    assert decide(b"SORT", b"a", b"STORE").keys == [1]  # no destination after it
