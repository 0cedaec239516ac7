"""What every registered algorithm promises (base.Balancer): checked over all of them."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steelyard.core.backend import Server
from steelyard.core.balance import ALGORITHMS, Balancer, balancer_class, make_balancer


def make(*weights: int) -> list[Server]:
    return [Server(f"10.4.0.{i + 1}:80", weight=w) for i, w in enumerate(weights)]


def test_registry_has_every_algorithm() -> None:
    assert set(ALGORITHMS) == {
        "round_robin",
        "least_conn",
        "random_two",
        "source_hash",
        "hash",
        "maglev",
        "first",
    }
    for name in ALGORITHMS:
        cls = balancer_class(name)
        assert issubclass(cls, Balancer) and cls.name == name
    assert [n for n in ALGORITHMS if balancer_class(n).keyed] == ["source_hash", "hash", "maglev"]


@pytest.mark.parametrize("name", ALGORITHMS)
def test_empty_and_all_skipped_give_none(name: str) -> None:
    assert make_balancer(name, []).pick(b"k") is None
    assert make_balancer(name, []).pick(None) is None
    balancer = make_balancer(name, make(1, 2, 3))
    for key in (None, b"k"):
        assert balancer.pick(key, lambda s: True) is None


@pytest.mark.parametrize("name", ALGORITHMS)
def test_weight_zero_servers_get_nothing(name: str) -> None:
    servers = make(0, 1, 0)
    balancer = make_balancer(name, servers)
    for i in range(200):
        assert balancer.pick(str(i).encode() if i % 2 else None) is servers[1]


@pytest.mark.parametrize("name", ALGORITHMS)
@settings(max_examples=25, deadline=None)
@given(
    weights=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    data=st.data(),
)
def test_a_skipped_server_is_never_returned(
    name: str, weights: list[int], data: st.DataObject
) -> None:
    servers = make(*weights)
    banned = data.draw(st.sets(st.sampled_from(range(len(servers)))))
    balancer = make_balancer(name, servers)
    rng = random.Random(data.draw(st.integers(0, 1000)))
    for _ in range(30):
        key = rng.choice([None, rng.randbytes(6)])
        picked = balancer.pick(key, lambda s: servers.index(s) in banned)
        if len(banned) == len(servers):
            assert picked is None
        else:
            assert picked is not None and servers.index(picked) not in banned
