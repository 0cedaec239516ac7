"""HAProxy `balance first`: fill servers in config order up to max_conns."""

from __future__ import annotations

from steelyard.core.backend import Server
from steelyard.core.balance.first import First


def make(*max_conns: int) -> list[Server]:
    return [Server(f"10.3.0.{i + 1}:80", max_conns=m) for i, m in enumerate(max_conns)]


def test_unlimited_first_server_takes_everything() -> None:
    a, _ = servers = make(0, 0)
    a.active = 10_000
    assert First(servers).pick() is a


def test_servers_fill_in_order_and_empty_back_in_order() -> None:
    a, b, c = servers = make(2, 2, 0)
    first = First(servers)
    picks = []
    for _ in range(6):
        server = first.pick()
        assert server is not None
        server.active += 1
        picks.append(server)
    assert picks == [a, a, b, b, c, c]
    b.active -= 1  # a connection on b closes: b is the first with room again
    assert first.pick() is b
    a.active -= 1
    assert first.pick() is a


def test_all_full_or_skipped_gives_none() -> None:
    a, b = servers = make(1, 1)
    a.active = b.active = 1
    assert First(servers).pick() is None
    a.active = 0
    assert First(servers).pick(None, lambda s: s is a) is None
    assert First([]).pick() is None


def test_skip_and_weight_zero() -> None:
    a, b, c = servers = make(0, 0, 0)
    b.weight = 0
    first = First(servers)
    assert first.pick(None, lambda s: s is a) is c
    assert first.pick(b"key-is-ignored") is a
