"""The nftables rendering, sans-IO: buckets follow the weights (interleaved for round robin,
contiguous for random, a Maglev table for source hashing that moves only a leaving server's
clients), verdict maps compress runs, an update flushes rules and deletes only the objects of
servers that left, and persistence sets carry their timeout in their name."""

from __future__ import annotations

from collections import Counter

from steelyard.kernel.render import (
    HASH_BUCKETS,
    Service,
    Target,
    _scaled,
    _vmap,
    buckets,
    contiguous,
    render,
    smooth_wrr,
)

A, B, C = Target("10.0.0.11", 8080, 5), Target("10.0.0.12", 8080, 1), Target("10.0.0.13", 8080, 1)


def svc(*targets: Target, **kw) -> Service:
    return Service("10.0.0.100", 80, "tcp", targets, **kw)


def test_round_robin_buckets_interleave_by_weight():
    assert smooth_wrr([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]  # nginx's order
    assert contiguous([2, 1]) == [0, 0, 1]
    assert _scaled([300, 100]) == [3, 1]  # gcd
    scaled = _scaled([5000, 1, 3])
    assert sum(scaled) <= 1024 + 2 and min(scaled) == 1
    assert buckets(svc(A, B, C)) == [0, 0, 1, 0, 2, 0, 0]
    assert Counter(buckets(svc(A, B, scheduler="random"))) == {0: 5, 1: 1}


def test_hash_buckets_move_only_a_leaving_servers_clients():
    before = buckets(svc(A, B, C, scheduler="hash"))
    assert len(before) == HASH_BUCKETS
    shares = Counter(before)
    assert shares[0] > 4 * shares[1] and abs(shares[1] - shares[2]) < HASH_BUCKETS // 20
    after = buckets(svc(A, C, scheduler="hash"))  # B left: index 1 is now C
    names_before = [("A", "B", "C")[i] for i in before]
    names_after = [("A", "C")[i] for i in after]
    moved = sum(b != a for b, a in zip(names_before, names_after, strict=True) if b != "B")
    assert moved < HASH_BUCKETS // 50  # Maglev: almost none of the others' buckets move


def test_verdict_maps_write_runs_as_ranges():
    assert _vmap([0, 0, 1, 0], ["a", "b"]) == "0-1 : jump a, 2 : jump b, 3 : jump a"


def test_a_first_render_starts_from_an_empty_table():
    script, objects = render([svc(A, B)], fresh=True)
    lines = script.splitlines()
    assert lines[:4] == ["add table ip steelyard", "delete table ip steelyard",
                         "add table ip steelyard", "flush table ip steelyard"]  # fmt: skip
    assert (
        "add rule ip steelyard nat_pre ip daddr 10.0.0.100 tcp dport 80 jump vs_tcp_10_0_0_100_80"
        in lines
    )
    assert any("numgen inc mod 6 vmap" in line for line in lines)
    assert any(line.endswith("dnat ip to 10.0.0.12:8080") for line in lines)
    assert any("masquerade" in line for line in lines)
    assert "chain rs_tcp_10_0_0_100_80_10_0_0_12_8080" in objects
    assert not any(line.startswith("delete chain") for line in lines)


def test_an_update_keeps_counters_and_deletes_what_left():
    _, objects = render([svc(A, B, persistence=30)])
    # B leaves scheduling but stays in the pool (counted): its counters stay, its chain and
    # persistence set go
    script, after = render([svc(A, persistence=30, counted=(A, B))], objects)
    lines = script.splitlines()
    assert "delete table ip steelyard" not in lines
    assert "delete chain ip steelyard rs_tcp_10_0_0_100_80_10_0_0_12_8080" in lines
    assert "delete set ip steelyard p_tcp_10_0_0_100_80_10_0_0_12_8080_30000" in lines
    assert not any(line.startswith("delete counter") for line in lines)
    assert "counter n_tcp_10_0_0_100_80_10_0_0_12_8080" in after
    # chains are deleted before the sets their (flushed) rules used
    assert lines.index("delete chain ip steelyard rs_tcp_10_0_0_100_80_10_0_0_12_8080") < (
        lines.index("delete set ip steelyard p_tcp_10_0_0_100_80_10_0_0_12_8080_30000")
    )
    # a persistent client goes straight back to its server, whose chain refreshes the timeout
    pset, chain = "p_tcp_10_0_0_100_80_10_0_0_11_8080_30000", "rs_tcp_10_0_0_100_80_10_0_0_11_8080"
    assert f"add rule ip steelyard vs_tcp_10_0_0_100_80 ip saddr @{pset} jump {chain}" in lines
    assert any(f"update @{pset} {{ ip saddr }}" in line for line in lines)


def test_no_server_no_map_and_nat_without_masquerade():
    script, _ = render([svc(masquerade=False)])
    assert "vmap" not in script and "masquerade" not in script
    assert "jump vs_tcp_10_0_0_100_80" in script  # the chain is there, empty: no DNAT
    first, _ = render([svc(A, B, scheduler="first")])
    assert (
        "add rule ip steelyard vs_tcp_10_0_0_100_80 jump rs_tcp_10_0_0_100_80_10_0_0_11_8080"
        in first
    )
    udp, _ = render([Service("10.0.0.100", 53, "udp", (A,), scheduler="hash")])
    assert "ip daddr 10.0.0.100 udp dport 53" in udp and "meta l4proto udp dnat ip to" in udp
    assert "jhash ip saddr mod 1021 seed 0x5eed" in udp
