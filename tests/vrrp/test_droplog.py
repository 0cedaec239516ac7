"""The dropped-advert log: once per source and reason a minute, and a bounded memory of who was
logged, so spoofed sources cannot grow the supervisor (sans-IO, the clock passed in)."""

from __future__ import annotations

from steelyard.vrrp.droplog import CAPACITY, LOG_EVERY, DropLog


def test_once_per_source_and_reason_a_minute():
    d = DropLog()
    assert d.due("10.0.0.9", "ttl", 0.0)
    assert not d.due("10.0.0.9", "ttl", 1.0)
    assert d.due("10.0.0.9", "checksum", 1.0)  # another reason
    assert d.due("10.0.0.8", "ttl", 1.0)  # another source
    assert not d.due("10.0.0.9", "ttl", LOG_EVERY - 0.001)
    assert d.due("10.0.0.9", "ttl", LOG_EVERY)
    assert not d.due("10.0.0.9", "ttl", LOG_EVERY + 1.0)


def test_a_flood_of_spoofed_sources_keeps_the_table_bounded():
    """A flood from 100,000 forged sources (one packet each) leaves 256 entries, not 100,000:
    before the bound, the same flood left a 100,000-entry dict of 19 MB (tracemalloc)."""
    d = DropLog()
    logged = sum(d.due(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "ttl", i * 1e-4)
                 for i in range(100_000))  # fmt: skip
    assert logged == 100_000  # each new source is logged once
    assert len(d.logged) == CAPACITY
    # the newest are the ones remembered
    last = f"10.{99_999 >> 16 & 255}.{99_999 >> 8 & 255}.{99_999 & 255}"
    assert not d.due(last, "ttl", 10.0)


def test_the_one_logged_longest_ago_is_forgotten_first():
    d = DropLog(capacity=3)
    for n, src in enumerate(["a", "b", "c"]):
        assert d.due(src, "ttl", float(n))
    # "a" logged again after a minute: it becomes the newest, "b" is now the oldest
    assert d.due("a", "ttl", LOG_EVERY + 1)
    assert d.due("d", "ttl", LOG_EVERY + 2)  # over capacity: "b" goes
    assert list(d.logged) == [("c", "ttl"), ("a", "ttl"), ("d", "ttl")]
    assert d.due("b", "ttl", LOG_EVERY + 3)  # forgotten, so logged again at once
    assert not d.due("d", "ttl", LOG_EVERY + 3)  # remembered
