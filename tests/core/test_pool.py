"""Pool: which servers are candidates (backup, protect threshold, admin state, weight 0),
capacity skipping through pick/acquire/release, and rebuilding on weight changes."""

from __future__ import annotations

from collections import Counter

import pytest

from steelyard.core.backend import AdminState, Pool, Server
from steelyard.core.balance import ALGORITHMS


def make(n: int, **kwargs: object) -> list[Server]:
    return [Server(f"10.5.0.{i + 1}:80", **kwargs) for i in range(n)]  # type: ignore[arg-type]


def picks(pool: Pool, count: int = 100) -> Counter[Server | None]:
    return Counter(pool.pick(str(i).encode()) for i in range(count))


# --- backup ----------------------------------------------------------------------------------


def test_backup_gets_traffic_only_when_no_primary_is_usable() -> None:
    a, b = make(2)
    backup = Server("10.5.1.1:80", backup=True)
    pool = Pool("p", [a, b, backup])
    assert set(picks(pool)) == {a, b}

    a.healthy = False
    pool.refresh()
    assert set(picks(pool)) == {b}

    b.admin = AdminState.MAINT
    pool.refresh()
    assert set(picks(pool)) == {backup}

    a.healthy = True
    pool.refresh()
    assert set(picks(pool)) == {a}


def test_no_usable_server_at_all_gives_none() -> None:
    a = Server("10.5.0.1:80", healthy=False)
    backup = Server("10.5.1.1:80", backup=True, ejected=True)
    pool = Pool("p", [a, backup])
    assert pool.candidates() == []
    assert pool.pick() is None


# --- protect threshold -----------------------------------------------------------------------


def test_protect_threshold_uses_every_ready_server_at_or_below_it() -> None:
    servers = make(4)
    pool = Pool("p", servers, protect_threshold=0.5)
    servers[0].healthy = False
    pool.refresh()
    # 3 of 4 healthy (0.75 > 0.5): only the healthy ones.
    assert pool.candidates() == servers[1:]
    assert set(picks(pool)) == set(servers[1:])

    servers[1].ejected = True
    pool.refresh()
    # 2 of 4 (0.5 <= 0.5): the pool would rather spread over all four than crush two.
    assert pool.candidates() == servers
    assert set(picks(pool)) == set(servers)


def test_protect_threshold_ignores_drained_servers_and_zero_means_off() -> None:
    servers = make(4)
    servers[0].admin = AdminState.DRAIN
    servers[1].healthy = False
    guarded = Pool("p", servers, protect_threshold=0.5)
    # Ready: 3, healthy among them: 2 (0.67 > 0.5), and the drained one never comes back.
    assert guarded.candidates() == servers[2:]
    servers[2].healthy = False
    guarded.refresh()
    assert guarded.candidates() == servers[1:]
    assert Pool("q", servers).candidates() == [servers[3]]


# --- admin state and weight 0 ----------------------------------------------------------------


@pytest.mark.parametrize("state", [AdminState.DRAIN, AdminState.MAINT])
def test_drain_and_maint_get_no_new_connections(state: AdminState) -> None:
    a, b, c = make(3)
    pool = Pool("p", [a, b, c])
    b.admin = state
    pool.refresh()
    assert set(picks(pool)) == {a, c}
    b.apply_state({"admin": "ready"})
    pool.refresh()
    assert set(picks(pool)) == {a, b, c}


def test_weight_zero_and_override_zero_are_excluded() -> None:
    a, b, c = make(3)
    b.weight = 0
    c.weight_override = 0
    pool = Pool("p", [a, b, c])
    assert pool.candidates() == [a]
    c.apply_state({"weight": None})
    pool.refresh()
    assert pool.candidates() == [a, c]


# --- capacity --------------------------------------------------------------------------------


def test_max_conns_servers_are_skipped_while_full() -> None:
    a, b = make(2, max_conns=1)
    pool = Pool("p", [a, b])
    first = pool.pick()
    assert first is not None
    pool.acquire(first)
    second = pool.pick()
    assert second is not None and second is not first
    pool.acquire(second)
    assert pool.pick() is None  # both full
    pool.release(first)
    assert pool.pick() is first
    assert (first.total, second.total, first.active) == (1, 1, 0)


def test_caller_skip_combines_with_capacity() -> None:
    a, b, c = make(3, max_conns=1)
    pool = Pool("p", [a, b, c], balance="first")
    pool.acquire(a)
    assert pool.pick(None, lambda s: s is b) is c
    assert pool.pick() is b


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_respects_capacity_through_the_pool(name: str) -> None:
    servers = make(3, max_conns=2)
    pool = Pool("p", servers, balance=name)
    taken = []
    for i in range(6):
        server = pool.pick(f"key{i}".encode())
        assert server is not None
        pool.acquire(server)
        taken.append(server)
    assert Counter(taken) == {s: 2 for s in servers}
    assert pool.pick(b"key-any") is None
    pool.release(servers[1])
    assert pool.pick(b"key-any") is servers[1]


# --- slow start and rebuilds -----------------------------------------------------------------


def test_slow_start_ramp_scales_weight_and_refresh_rebuilds() -> None:
    a, b = make(2, weight=8)
    pool = Pool("p", [a, b])
    built = pool.balancer
    pool.refresh()
    assert pool.balancer is built  # nothing changed: same tables

    b.apply_state({"ramp": 0.25})
    assert b.effective_weight == 2
    assert pool.balancer is built  # the algorithm read weights once, until refresh
    pool.refresh()
    assert pool.balancer is not built
    shares = Counter(pool.pick() for _ in range(100))
    assert shares == {a: 80, b: 20}  # 8:2, smooth round robin is exact per cycle

    b.apply_state({"ramp": 0.01})
    assert b.effective_weight == 1  # the ramp never takes a server to 0
    b.apply_state({"ramp": 1.0})
    pool.refresh()
    assert Counter(pool.pick() for _ in range(100)) == {a: 50, b: 50}


def test_on_result_counts_failures() -> None:
    (a,) = make(1)
    pool = Pool("p", [a])
    pool.on_result(a, False)
    pool.on_result(a, True)
    assert a.failures == 1
    assert pool.server("10.5.0.1:80") is a and pool.server("10.5.0.9:80") is None
