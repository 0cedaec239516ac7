"""Slot maps: the first spread, weighted shares, and rebalance plans that move little."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steelyard.redis.slots import SLOTS
from steelyard.redis.topology import apply, parse_ranges, ranges, rebalance, shares, spread


def test_spread_two_equal_groups():
    m = spread({1: 1, 2: 1})
    assert m == [1] * 512 + [2] * 512


def test_shares_follow_weights():
    assert shares({1: 1, 2: 3}) == {1: 256, 2: 768}
    assert sum(shares({1: 1, 2: 1, 3: 1}).values()) == SLOTS
    assert shares({1: 1, 2: 1, 3: 1}) == {1: 342, 2: 341, 3: 341}  # remainder to the lowest id
    with pytest.raises(ValueError):
        shares({})


def test_adding_a_group_moves_only_what_it_needs():
    before = spread({1: 1, 2: 1})
    moves = rebalance(before, {1: 1, 2: 1, 3: 1})
    after = apply(before, moves)
    assert Counter(after) == {1: 342, 2: 341, 3: 341}
    assert len(moves) == 341  # every move lands on the new group
    assert all(dst == 3 for _, _, dst in moves)
    # the slots that left are each group's highest-numbered ones
    assert max(s for s, src, _ in moves if src == 1) == 511


def test_removed_group_slots_are_reassigned():
    before = spread({1: 1, 2: 1, 3: 1})
    after = apply(before, rebalance(before, {1: 1, 3: 1}))
    assert set(after) == {1, 3} and Counter(after) == {1: 512, 3: 512}


def test_unassigned_slots_are_filled():
    before = [0] * SLOTS
    after = apply(before, rebalance(before, {7: 1}))
    assert after == [7] * SLOTS


@given(
    st.dictionaries(st.integers(1, 50), st.integers(1, 10), min_size=1, max_size=8),
    st.dictionaries(st.integers(1, 50), st.integers(1, 10), min_size=1, max_size=8),
)
def test_rebalance_reaches_the_shares_with_minimal_moves(old, new):
    before = spread(old)
    moves = rebalance(before, new)
    after = apply(before, moves)
    want = shares(new)
    assert Counter(after) == {g: n for g, n in want.items() if n}
    # a move never leaves a group that was at or below its share
    have = Counter(before)
    for _, src, _ in moves:
        if src in want:
            assert have[src] > want[src]
    # and no slot moves twice, nor to its own group
    assert len({s for s, _, _ in moves}) == len(moves)
    assert all(src != dst for _, src, dst in moves)


def test_ranges_round_trip():
    assert parse_ranges("0-3, 7,5-5") == [0, 1, 2, 3, 7, 5]
    assert ranges([0, 1, 2, 3, 5, 7, 8]) == "0-3,5,7-8"
    for bad in ("1024", "5-3", "a", "-1"):
        with pytest.raises(ValueError):
            parse_ranges(bad)
