"""Source-address affinity on the ketama ring: stable per client, minimal movement, keyless RR."""

from __future__ import annotations

import random
from collections import Counter

from steelyard.core.backend import Server
from steelyard.core.balance.hashring import KetamaHash
from steelyard.core.balance.source_hash import SourceHash

_RNG = random.Random(23)


def _client() -> bytes:
    octets = [_RNG.randrange(1, 224), *(_RNG.randrange(256) for _ in range(3))]
    return ".".join(map(str, octets)).encode()


CLIENTS = [_client() for _ in range(50_000)]


def make(*weights: int) -> list[Server]:
    return [Server(f"192.168.5.{i + 1}:3306", weight=w) for i, w in enumerate(weights)]


def test_registered_as_keyed_ring() -> None:
    assert SourceHash.keyed
    assert issubclass(SourceHash, KetamaHash)


def test_a_client_always_gets_the_same_server_as_the_hash_ring() -> None:
    servers = make(2, 1, 1)
    src, ring = SourceHash(servers), KetamaHash(servers)
    for client in CLIENTS[:2000]:
        assert src.pick(client) is ring.pick(client) is src.pick(client)


def test_client_shares_follow_weights() -> None:
    weights = [4, 2, 1, 1]
    servers = make(*weights)
    src = SourceHash(servers)
    counts = Counter(src.pick(c) for c in CLIENTS)
    total = sum(weights)
    for server, weight in zip(servers, weights, strict=True):
        # 160 ring points per unit of weight (nginx's count): shares are weights within a few %.
        assert abs(counts[server] / len(CLIENTS) - weight / total) < 0.04


def test_removing_a_server_moves_only_its_clients_unlike_a_modulo() -> None:
    servers = make(1, 1, 1, 1, 1)
    gone = servers[2]
    full, less = SourceHash(servers), SourceHash([s for s in servers if s is not gone])
    before = [full.pick(c) for c in CLIENTS]
    after = [less.pick(c) for c in CLIENTS]
    moved = [b for b, a in zip(before, after, strict=True) if a is not b]
    assert all(b is gone for b in moved)
    # What ip_hash-style `hash % n` would do to the same clients: most of them move.
    modulo_moved = sum(hash_mod(c, 5) != hash_mod(c, 4) for c in CLIENTS) / len(CLIENTS)
    assert len(moved) / len(CLIENTS) < 0.25 < modulo_moved


def hash_mod(client: bytes, n: int) -> int:
    value = 89
    for octet in client.split(b".")[:3]:  # nginx ip_hash: first three octets
        value = (value * 113 + int(octet)) % 6271
    return value % n


def test_skipped_server_sends_each_client_to_one_fixed_fallback() -> None:
    servers = make(1, 1, 1)
    down = servers[0]
    src = SourceHash(servers)
    for client in CLIENTS[:1000]:
        first = src.pick(client, lambda s: s is down)
        assert first is not None and first is not down
        assert src.pick(client, lambda s: s is down) is first


def test_no_address_falls_back_to_weighted_round_robin() -> None:
    a, b = servers = make(3, 1)
    src = SourceHash(servers)
    assert [src.pick(None) for _ in range(8)] == [a, a, b, a] * 2
    assert Counter(src.pick(b"") for _ in range(400)) == {a: 300, b: 100}
    assert src.pick(None, lambda s: True) is None
    assert SourceHash([]).pick(b"10.0.0.1") is None
    assert SourceHash([]).pick(None) is None
