"""Kernel virtual services rendered as one nftables table (`ip steelyard`), sans-IO: the text
that `nft -f` applies in one transaction, so a change is all or nothing and traffic never sees
half a table.

The table, per service (VIP, port, protocol):
  * `nat_pre` / `nat_out` (prerouting, and output for clients on this node) jump to the
    service's chain for packets to the VIP and port; NAT chains see only a connection's first
    packet, so scheduling happens once per connection and conntrack carries the rest;
  * the service chain picks a server chain through a verdict map keyed by `numgen inc`
    (weighted round robin, the buckets interleaved as nginx's smooth WRR orders them),
    `numgen random` (weighted random: the kernel cannot see connection counts, so this is what
    least_conn and random_two become) or `jhash ip saddr` (source hashing over a Maglev table,
    so only the clients of a server that leaves move);
  * each server chain counts the connection (`n_` counter) and DNATs it to the server; with
    persistence it also records the client in the server's timed set (`p_`), and the service
    chain sends a known client straight back to its server, LVS's persistence template;
  * `nat_post` masquerades the service's connections (method masquerade); `traffic` (forward)
    counts each server's packets and bytes in both directions (`t_` counters).

A health or weight change re-renders the table with `flush table` instead of deleting it: rules
are replaced in one transaction while counters and persistence sets stay, and objects of
servers that left are deleted. Established connections do not depend on the rules at all: their
NAT binding lives in conntrack, so a removed server keeps its flows and gets no new ones.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import reduce
from typing import Literal

from steelyard.core.backend import Server
from steelyard.core.balance.maglev import Maglev

TABLE = "steelyard"
HASH_BUCKETS = 1021  # prime: the Maglev table for source hashing
MAX_BUCKETS = 1024  # weights are scaled down to this many round-robin or random buckets
HASH_SEED = 0x5EED

Scheduler = Literal["rr", "random", "hash", "first"]
# the pool's balance, as the kernel can do it
SCHEDULERS: dict[str, Scheduler] = {
    "round_robin": "rr",
    "least_conn": "random",
    "random_two": "random",
    "source_hash": "hash",
    "hash": "hash",
    "maglev": "hash",
    "first": "first",
}


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    weight: int = 1

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def key(self) -> str:
        return _ident(self.address)


@dataclass(frozen=True)
class Service:
    vip: str
    port: int
    protocol: Literal["tcp", "udp"]
    targets: tuple[Target, ...]
    scheduler: Scheduler = "rr"
    persistence: float = 0.0  # seconds; 0 = none
    masquerade: bool = True
    # servers whose traffic is counted besides `targets` (the whole pool, scheduled or not)
    counted: tuple[Target, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.protocol}_{_ident(self.vip)}_{self.port}"

    @property
    def address(self) -> str:
        return f"{self.vip}:{self.port}"


def _ident(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text)


def counter_names(svc: Service, target: Target) -> tuple[str, str]:
    """(new connections, traffic) counters of one server of one service."""
    return f"n_{svc.key}_{target.key}", f"t_{svc.key}_{target.key}"


# buckets ------------------------------------------------------------------------------------


def _scaled(weights: list[int]) -> list[int]:
    """Weights divided by their gcd, scaled down (each at least 1) when they sum past
    MAX_BUCKETS."""
    g = reduce(math.gcd, weights)
    weights = [w // g for w in weights]
    total = sum(weights)
    if total > MAX_BUCKETS:
        weights = [max(1, w * MAX_BUCKETS // total) for w in weights]
    return weights


def smooth_wrr(weights: list[int]) -> list[int]:
    """One full cycle of nginx's smooth weighted round robin: each index as often as its weight,
    spread out (weights 5, 1, 1 give a a b a c a a rather than a a a a a b c)."""
    current = [0] * len(weights)
    total = sum(weights)
    order = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


def contiguous(weights: list[int]) -> list[int]:
    return [i for i, w in enumerate(weights) for _ in range(w)]


def maglev_buckets(targets: tuple[Target, ...]) -> list[int]:
    servers = [Server(t.address, weight=t.weight) for t in targets]
    return list(Maglev(servers, table_size=HASH_BUCKETS).table)


def buckets(svc: Service) -> list[int]:
    """Bucket -> index into the service's targets."""
    if svc.scheduler == "hash":
        return maglev_buckets(svc.targets)
    weights = _scaled([t.weight for t in svc.targets])
    return smooth_wrr(weights) if svc.scheduler == "rr" else contiguous(weights)


def _vmap(table: list[int], chains: list[str]) -> str:
    """`0-4 : jump a, 5 : jump b, ...`: runs of one target written as ranges."""
    parts = []
    start = 0
    for i in range(1, len(table) + 1):
        if i == len(table) or table[i] != table[start]:
            span = f"{start}" if i - 1 == start else f"{start}-{i - 1}"
            parts.append(f"{span} : jump {chains[table[start]]}")
            start = i
    return ", ".join(parts)


def _selector(svc: Service, size: int) -> str:
    if svc.scheduler == "hash":
        return f"jhash ip saddr mod {size} seed {HASH_SEED:#x}"
    if svc.scheduler == "rr":
        return f"numgen inc mod {size}"
    return f"numgen random mod {size}"


# the table ----------------------------------------------------------------------------------


def render(services: list[Service], previous: frozenset[str] = frozenset(),
           fresh: bool = False) -> tuple[str, frozenset[str]]:  # fmt: skip
    """The `nft -f` script bringing the table to `services`, and the objects it holds.

    `previous` are the objects the table held (the last render's); those no longer wanted are
    deleted. `fresh` starts from an empty table (the first apply: a crash may have left one).
    """
    t = f"ip {TABLE}"
    lines = [f"add table {t}"]
    if fresh:
        lines += [f"delete table {t}", f"add table {t}"]
    lines.append(f"flush table {t}")
    lines += [
        f"add chain {t} nat_pre {{ type nat hook prerouting priority dstnat; policy accept; }}",
        f"add chain {t} nat_out {{ type nat hook output priority -100; policy accept; }}",
        f"add chain {t} nat_post {{ type nat hook postrouting priority srcnat; policy accept; }}",
        f"add chain {t} traffic {{ type filter hook forward priority filter; policy accept; }}",
    ]
    objects: set[str] = set()
    for svc in services:
        lines += _service(svc, t, objects)
    if not fresh:
        # chains before the counters and sets their rules named (all rules are flushed above)
        for kind in ("chain", "counter", "set"):
            for obj in sorted(previous - objects):
                if obj.startswith(kind + " "):
                    lines.append(f"delete {kind} {t} {obj.split(' ', 1)[1]}")
    return "\n".join(lines) + "\n", frozenset(objects)


def _service(svc: Service, t: str, objects: set[str]) -> list[str]:
    proto, key = svc.protocol, svc.key
    match = f"ip daddr {svc.vip} {proto} dport {svc.port}"
    vs_chain = f"vs_{key}"
    lines = [f"add chain {t} {vs_chain}"]
    objects.add(f"chain {vs_chain}")
    chains: list[str] = []
    ms = round(svc.persistence * 1000)
    original = f"meta l4proto {proto} ct status dnat ct original ip daddr {svc.vip} "
    original += f"ct original proto-dst {svc.port}"
    # every scheduled server is counted too (a sorry server from outside the pool)
    known = {c.address for c in svc.counted}
    counted = [*svc.counted, *(t for t in svc.targets if t.address not in known)]
    for target in counted:
        # every server of the pool keeps its counters, scheduled or not: its established
        # connections still pass, and its totals do not restart when it comes back
        conns, traffic = counter_names(svc, target)
        lines += [f"add counter {t} {conns}", f"add counter {t} {traffic}"]
        objects.update({f"counter {conns}", f"counter {traffic}"})
        lines += [
            f"add rule {t} traffic {original} ip daddr {target.host} {proto} dport "
            f'{target.port} counter name "{traffic}"',
            f"add rule {t} traffic {original} ip saddr {target.host} {proto} sport "
            f'{target.port} counter name "{traffic}"',
        ]
    for target in svc.targets:
        chain = f"rs_{key}_{target.key}"
        conns, _ = counter_names(svc, target)
        chains.append(chain)
        lines.append(f"add chain {t} {chain}")
        objects.add(f"chain {chain}")
        remember = ""
        if ms:
            # the timeout is in the name: a set's timeout cannot change in place
            pset = f"p_{key}_{target.key}_{ms}"
            lines.append(f"add set {t} {pset} {{ type ipv4_addr; flags dynamic,timeout; "
                         f"timeout {ms}ms; }}")  # fmt: skip
            objects.add(f"set {pset}")
            lines.append(f"add rule {t} {vs_chain} ip saddr @{pset} jump {chain}")
            remember = f"update @{pset} {{ ip saddr }} "
        lines.append(f'add rule {t} {chain} {remember}counter name "{conns}" '
                     f"meta l4proto {proto} dnat ip to {target.host}:{target.port}")  # fmt: skip
    for hook in ("nat_pre", "nat_out"):
        lines.append(f"add rule {t} {hook} {match} jump {vs_chain}")
    if svc.scheduler == "first" and svc.targets:
        lines.append(f"add rule {t} {vs_chain} jump {chains[0]}")
    elif svc.targets:
        table = buckets(svc)
        lines.append(f"add rule {t} {vs_chain} {_selector(svc, len(table))} "
                     f"vmap {{ {_vmap(table, chains)} }}")  # fmt: skip
    if svc.masquerade:
        lines.append(f"add rule {t} nat_post {original} masquerade")
    return lines


def removal() -> str:
    """The script that removes the table (and nothing else)."""
    return f"add table ip {TABLE}\ndelete table ip {TABLE}\n"
