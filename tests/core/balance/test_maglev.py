"""Maglev: full table, weighted slot shares, stable across processes, key movement, fall-over."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import zlib
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steelyard.core.backend import Server
from steelyard.core.balance.maglev import TABLE_SIZE, Maglev, permutation_seed

_RNG = random.Random(31)
KEYS = [_RNG.randbytes(10) for _ in range(20_000)]


def make(*weights: int, net: str = "10.2.0") -> list[Server]:
    return [Server(f"{net}.{i + 1}:8080", weight=w) for i, w in enumerate(weights)]


def test_table_is_full_and_slot_shares_follow_weights() -> None:
    weights = [1, 2, 3, 4]
    servers = make(*weights)
    started = time.perf_counter()
    maglev = Maglev(servers)
    print(f"maglev build, 4 servers: {(time.perf_counter() - started) * 1000:.1f} ms")
    assert len(maglev.table) == TABLE_SIZE == 65537
    counts = Counter(maglev.table)
    for i, weight in enumerate(weights):
        assert abs(counts[i] / TABLE_SIZE - weight / sum(weights)) < 0.001


def test_weights_1_2_split_the_table_like_envoy() -> None:
    counts = Counter(Maglev(make(1, 2)).table)
    # Envoy's docs: weights 1:2 give 21,846 and 43,691 entries; a slot either way is the last
    # slot's race, so allow one.
    assert abs(counts[0] - 21_846) <= 1 and counts[0] + counts[1] == TABLE_SIZE


@pytest.mark.parametrize("weights", [[1, 1, 1], [5, 1, 1], [1, 2, 3, 4], [1] * 10])
def test_key_shares_follow_weights(weights: list[int]) -> None:
    servers = make(*weights)
    maglev = Maglev(servers)
    rng = random.Random(2)
    keys = [rng.randbytes(12) for _ in range(100_000)]
    counts = Counter(maglev.pick(k) for k in keys)
    for server, weight in zip(servers, weights, strict=True):
        assert abs(counts[server] / len(keys) - weight / sum(weights)) < 0.01


def test_build_time_for_ten_servers() -> None:
    servers = make(*range(1, 11))
    started = time.perf_counter()
    Maglev(servers)
    elapsed = time.perf_counter() - started
    # Timing goals live in bench/; this only reports the number.
    print(f"maglev build, 10 servers weights 1..10: {elapsed * 1000:.1f} ms")


def test_table_is_the_same_in_another_process() -> None:
    code = (
        "import zlib; from steelyard.core.backend import Server;"
        "from steelyard.core.balance.maglev import Maglev;"
        "t = Maglev([Server(f'10.2.0.{i}:8080', weight=i) for i in range(1, 6)]).table;"
        "print(zlib.crc32(bytes(t)))"
    )
    here = zlib.crc32(
        bytes(Maglev([Server(f"10.2.0.{i}:8080", weight=i) for i in range(1, 6)]).table)
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert int(out.stdout) == here


def test_permutation_seeds_are_in_range_and_differ() -> None:
    offset, skip = permutation_seed("10.2.0.1:8080")
    assert 0 <= offset < TABLE_SIZE and 1 <= skip < TABLE_SIZE
    assert permutation_seed("10.2.0.1:8080") != permutation_seed("10.2.0.2:8080")


@pytest.mark.parametrize("n", [3, 5, 10])
def test_key_movement_when_one_server_leaves(n: int) -> None:
    servers = make(*[1] * n)
    full = Maglev(servers)
    before = [full.pick(k) for k in KEYS]
    worst_moved = worst_other = 0.0
    for gone in (servers[0], servers[n // 2], servers[-1]):
        less = Maglev([s for s in servers if s is not gone])
        after = [less.pick(k) for k in KEYS]
        moved = [b for b, a in zip(before, after, strict=True) if a is not b]
        other = sum(b is not gone for b in moved)  # keys of servers that stayed, yet moved
        worst_moved = max(worst_moved, len(moved) / len(KEYS))
        worst_other = max(worst_other, other / len(KEYS))
    print(
        f"maglev N={n}: moved {worst_moved:.4f} (1/N = {1 / n:.4f}), "
        f"of which keys of remaining servers {worst_other:.4f}"
    )
    assert worst_moved <= 2 / n + 0.03
    assert worst_other <= 0.02


@pytest.mark.parametrize("n", [3, 5, 10])
def test_key_movement_when_one_server_joins(n: int) -> None:
    servers = make(*[1] * (n + 1))
    old, new = Maglev(servers[:n]), Maglev(servers)
    moved = sum(old.pick(k) is not new.pick(k) for k in KEYS) / len(KEYS)
    print(f"maglev N={n}->{n + 1}: moved {moved:.4f} (1/(N+1) = {1 / (n + 1):.4f})")
    assert moved <= 2 / (n + 1) + 0.03


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=2, max_size=8), st.data())
def test_skip_gives_a_fixed_fallback_and_never_a_skipped_server(
    weights: list[int], data: st.DataObject
) -> None:
    servers = make(*weights, net="10.9.9")
    banned = data.draw(st.sets(st.sampled_from(range(len(servers))), max_size=len(servers) - 1))
    maglev = Maglev(servers)

    def skip(s: Server) -> bool:
        return servers.index(s) in banned

    for key in KEYS[:300]:
        picked = maglev.pick(key, skip)
        assert picked is not None and servers.index(picked) not in banned
        assert maglev.pick(key, skip) is picked
        if servers.index(maglev.pick(key)) not in banned:  # type: ignore[arg-type]
            assert picked is maglev.pick(key)


def test_all_skipped_empty_weight_zero_and_keyless() -> None:
    servers = make(2, 1, 0)
    maglev = Maglev(servers)
    assert maglev.pick(b"k", lambda s: True) is None
    assert maglev.pick(None, lambda s: True) is None
    assert 2 not in maglev.table
    assert Maglev([]).pick(b"k") is None
    assert Maglev(make(0)).pick(None) is None
    # Keyless picks walk the table: a full turn gives exactly the slot shares.
    counts = Counter(maglev.pick() for _ in range(TABLE_SIZE))
    assert counts == {servers[i]: c for i, c in Counter(maglev.table).items()}
    assert Counter(maglev.pick(b"") for _ in range(TABLE_SIZE)) == counts


def test_weights_are_read_once_at_build() -> None:
    servers = make(1, 1)
    maglev = Maglev(servers)
    table = maglev.table
    servers[0].weight = 9
    assert maglev.table is table
    assert [maglev.pick(k) for k in KEYS[:200]] == [maglev.pick(k) for k in KEYS[:200]]
