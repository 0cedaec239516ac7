"""Weighted least connections: nginx's choice and tie-break, shares under steady load."""

from __future__ import annotations

from collections import Counter, deque
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from steelyard.core.backend import Server
from steelyard.core.balance.least_conn import LeastConn


def make(*weights: int) -> list[Server]:
    return [Server(f"10.0.1.{i + 1}:80", weight=w) for i, w in enumerate(weights)]


def test_idle_pool_is_smooth_weighted_round_robin_like_nginx() -> None:
    # Checked against nginx `least_conn` with weights 5/1/1 and sequential requests.
    servers = make(5, 1, 1)
    lc = LeastConn(servers)
    a, b, c = servers
    assert [lc.pick() for _ in range(14)] == [a, a, b, a, c, a, a] * 2


def test_fewest_connections_per_weight_wins() -> None:
    a, b, c = servers = make(4, 1, 1)
    a.active, b.active, c.active = 7, 2, 2  # 7/4 < 2/1
    assert LeastConn(servers).pick() is a
    a.active = 9  # 9/4 > 2/1: b and c tie, round robin among them
    lc = LeastConn(servers)
    assert [lc.pick() for _ in range(4)] == [b, c, b, c]


def test_exact_ratio_ties_are_ties() -> None:
    # 3 active on weight 3 and 1 on weight 1 compare as 3 * 1 == 1 * 3: a tie, so the picks
    # split by weight instead of one server taking all of them.
    a, b = servers = make(3, 1)
    a.active, b.active = 3, 1
    lc = LeastConn(servers)
    assert Counter(lc.pick() for _ in range(8)) == {a: 6, b: 2}


def test_ties_only_move_the_tied_servers_current_weights() -> None:
    a, b, c = servers = make(1, 1, 1)
    lc = LeastConn(servers)
    a.active = 1
    assert [lc.pick() for _ in range(2)] == [b, c]
    a.active = 0
    # a's current weight did not move while it was busier, so the three start level again.
    assert [lc.pick() for _ in range(3)] == [a, b, c]


def test_skip_and_empty() -> None:
    a, b = servers = make(1, 1)
    lc = LeastConn(servers)
    assert all(lc.pick(None, lambda s: s is a) is b for _ in range(5))
    assert lc.pick(None, lambda s: True) is None
    assert LeastConn([]).pick() is None


def test_weight_zero_server_gets_nothing() -> None:
    _, b = servers = make(0, 1)
    b.active = 100
    assert LeastConn(servers).pick() is b


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 10), st.integers(0, 30), st.booleans()), min_size=1, max_size=8
    )
)
def test_pick_has_the_minimum_load_among_non_skipped(rows: list[tuple[int, int, bool]]) -> None:
    servers = make(*(w for w, _, _ in rows))
    banned = set()
    for server, (_, active, skipped) in zip(servers, rows, strict=True):
        server.active = active
        if skipped:
            banned.add(id(server))
    picked = LeastConn(servers).pick(None, lambda s: id(s) in banned)
    allowed = [s for s in servers if id(s) not in banned]
    if not allowed:
        assert picked is None
        return
    assert picked is not None and id(picked) not in banned
    assert Fraction(picked.active, picked.weight) == min(
        Fraction(s.active, s.weight) for s in allowed
    )


def test_shares_follow_weights_under_steady_open_close() -> None:
    # Connections of equal length: every pick opens one and the oldest of the last 64 closes.
    weights = [5, 3, 1, 1]
    servers = make(*weights)
    lc = LeastConn(servers)
    open_conns: deque[Server] = deque()
    counts: Counter[Server] = Counter()
    picks = 100_000
    for _ in range(picks):
        server = lc.pick()
        assert server is not None
        server.active += 1
        counts[server] += 1
        open_conns.append(server)
        if len(open_conns) > 64:
            open_conns.popleft().active -= 1
    total = sum(weights)
    for server, weight in zip(servers, weights, strict=True):
        assert abs(counts[server] / picks - weight / total) < 0.01
