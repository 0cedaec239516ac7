"""Smooth weighted round robin: bit-exact with nginx, exact shares, skip behaviour."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from steelyard.core.backend import Server
from steelyard.core.balance.round_robin import RoundRobin


def make(*weights: int) -> list[Server]:
    return [Server(f"10.0.0.{i + 1}:80", weight=w) for i, w in enumerate(weights)]


def names(picks: list[Server | None], servers: list[Server]) -> str:
    letters = {id(s): "abcdefghij"[i] for i, s in enumerate(servers)}
    return " ".join("-" if s is None else letters[id(s)] for s in picks)


def test_weights_5_1_1_give_the_nginx_sequence_repeating() -> None:
    servers = make(5, 1, 1)
    rr = RoundRobin(servers)
    # Checked against nginx itself: upstream {a weight=5; b; c}, sequential requests.
    assert names([rr.pick() for _ in range(21)], servers) == " ".join(["a a b a c a a"] * 3)


def test_skipped_server_is_never_returned_and_the_rest_keep_their_ratio() -> None:
    servers = make(5, 1, 1)
    rr = RoundRobin(servers)
    a = servers[0]
    picks = [rr.pick(None, lambda s: s is a) for _ in range(20)]
    assert a not in picks
    assert Counter(picks) == {servers[1]: 10, servers[2]: 10}


def test_all_skipped_or_empty_gives_none() -> None:
    servers = make(1, 2)
    assert RoundRobin(servers).pick(None, lambda s: True) is None
    assert RoundRobin([]).pick() is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=8))
def test_every_cycle_of_total_weight_picks_matches_weights_exactly(weights: list[int]) -> None:
    servers = make(*weights)
    rr = RoundRobin(servers)
    total = sum(weights)
    for _ in range(3):
        counts = Counter(rr.pick() for _ in range(total))
        assert [counts[s] for s in servers] == weights


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10), min_size=2, max_size=6), st.data())
def test_skip_is_exclusive_under_any_weights(weights: list[int], data: st.DataObject) -> None:
    servers = make(*weights)
    banned = set(data.draw(st.sets(st.integers(0, len(servers) - 1), max_size=len(servers) - 1)))
    rr = RoundRobin(servers)
    for _ in range(3 * sum(weights)):
        picked = rr.pick(None, lambda s: servers.index(s) in banned)
        assert picked is not None and servers.index(picked) not in banned
