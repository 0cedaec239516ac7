"""Power of two choices: distinct weighted draws, the less loaded wins, seeded determinism."""

from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from steelyard.core.backend import Server
from steelyard.core.balance.random_two import RandomTwo


def make(*weights: int) -> list[Server]:
    return [Server(f"10.0.2.{i + 1}:80", weight=w) for i, w in enumerate(weights)]


def test_same_seed_same_picks() -> None:
    servers = make(3, 2, 1, 1)
    one = RandomTwo(servers, rng=random.Random(42))
    two = RandomTwo(servers, rng=random.Random(42))
    assert [one.pick() for _ in range(200)] == [two.pick() for _ in range(200)]


def test_equal_load_shares_follow_weights() -> None:
    weights = [5, 3, 1, 1]
    servers = make(*weights)
    rtwo = RandomTwo(servers, rng=random.Random(1))
    picks = 100_000
    counts = Counter(rtwo.pick() for _ in range(picks))
    total = sum(weights)
    for server, weight in zip(servers, weights, strict=True):
        assert abs(counts[server] / picks - weight / total) < 0.01


def test_draws_are_distinct_so_the_busier_of_two_never_wins() -> None:
    # Weight 1000:1 would make a repeated draw of the heavy server almost certain.
    heavy, light = servers = make(1000, 1)
    heavy.active = 1000  # 1000/1000 > 0/1
    rtwo = RandomTwo(servers, rng=random.Random(3))
    assert all(rtwo.pick() is light for _ in range(500))


def test_load_is_per_unit_of_weight() -> None:
    big, small = servers = make(4, 1)
    big.active, small.active = 3, 1  # 3/4 < 1/1
    rtwo = RandomTwo(servers, rng=random.Random(5))
    assert all(rtwo.pick() is big for _ in range(100))


def test_skip_draws_from_the_rest() -> None:
    a, b, c = servers = make(1, 1, 1)
    rtwo = RandomTwo(servers, rng=random.Random(9))
    picks = Counter(rtwo.pick(None, lambda s: s is a) for _ in range(2000))
    assert set(picks) == {b, c}
    assert rtwo.pick(None, lambda s: s is not c) is c  # a single survivor is returned as is
    assert rtwo.pick(None, lambda s: True) is None
    assert RandomTwo([]).pick() is None
    assert RandomTwo(make(0, 0)).pick() is None


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 10), st.integers(0, 30), st.booleans()), min_size=1, max_size=8
    ),
    st.integers(0, 2**32),
)
def test_never_skipped_and_never_the_unique_busiest(
    rows: list[tuple[int, int, bool]], seed: int
) -> None:
    servers = make(*(w for w, _, _ in rows))
    banned = {id(s) for s, (_, _, skipped) in zip(servers, rows, strict=True) if skipped}
    for server, (_, active, _) in zip(servers, rows, strict=True):
        server.active = active
    allowed = [s for s in servers if id(s) not in banned]
    rtwo = RandomTwo(servers, rng=random.Random(seed))
    for _ in range(20):
        picked = rtwo.pick(None, lambda s: id(s) in banned)
        if not allowed:
            assert picked is None
            continue
        assert picked is not None and id(picked) not in banned
        if len(allowed) >= 2:
            loads = sorted(Fraction(s.active, s.weight) for s in allowed)
            if loads[-1] > loads[-2]:
                assert Fraction(picked.active, picked.weight) < loads[-1]
