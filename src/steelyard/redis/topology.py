"""Slot ownership, sans-IO: the 1024-slot map, its first spread, and rebalance plans by weight.

A slot map is a list of 1024 group ids (0 = not assigned). The first spread gives each group a
contiguous range sized by its weight. A rebalance moves as few slots as it can: every group ends
within one slot of its weighted share; unassigned slots are placed first, then slots leave only
groups above their share, highest-numbered first (as Codis picks them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from steelyard.redis.slots import SLOTS

SlotMap = list[int]


def shares(weights: Mapping[int, int], slots: int = SLOTS) -> dict[int, int]:
    """How many slots each group should own: proportional to weight, summing to `slots`.

    Largest remainder; ties go to the lower group id, so the result is deterministic.
    """
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("no group with a weight above 0")
    exact = {g: slots * w / total for g, w in weights.items()}
    out = {g: int(x) for g, x in exact.items()}
    left = slots - sum(out.values())
    for g in sorted(exact, key=lambda g: (-(exact[g] - out[g]), g))[:left]:
        out[g] += 1
    return out


def spread(weights: Mapping[int, int]) -> SlotMap:
    """A first assignment: contiguous ranges in group-id order, sized by weight."""
    want = shares(weights)
    out: SlotMap = []
    for g in sorted(want):
        out += [g] * want[g]
    return out


def rebalance(current: SlotMap, weights: Mapping[int, int]) -> list[tuple[int, int, int]]:
    """Moves (slot, from group, to group) that bring every group to its share.

    Slots owned by groups not in `weights` (removed ones) are treated as unassigned.
    """
    want = shares(weights, len(current))
    owned: dict[int, list[int]] = {g: [] for g in want}
    free: list[int] = []
    for slot, g in enumerate(current):
        if g in owned:
            owned[g].append(slot)
        else:
            free.append(slot)
    # Slots that must leave: the highest-numbered beyond each group's share.
    leaving: list[tuple[int, int]] = [(slot, current[slot]) for slot in free]
    for g, slots in owned.items():
        extra = len(slots) - want[g]
        if extra > 0:
            leaving += [(slot, g) for slot in slots[-extra:]]
    moves: list[tuple[int, int, int]] = []
    needy = sorted(g for g in want if len(owned[g]) < want[g])
    for g in needy:
        need = want[g] - len(owned[g])
        take, leaving = leaving[:need], leaving[need:]
        moves += [(slot, src, g) for slot, src in take]
    return sorted(moves)


def apply(current: SlotMap, moves: list[tuple[int, int, int]]) -> SlotMap:
    out = list(current)
    for slot, _, dst in moves:
        out[slot] = dst
    return out


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def parse_ranges(spec: str) -> list[int]:
    """`0-511,600,700-701` -> the slots, in order, without repeats."""
    out: list[int] = []
    for part in spec.split(","):
        m = _RANGE.match(part)
        if not m:
            raise ValueError(f"bad slot range {part.strip()!r}: use 0-511 or 7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 0 <= lo <= hi < SLOTS:
            raise ValueError(f"slot range {part.strip()!r} is outside 0-{SLOTS - 1}")
        for s in range(lo, hi + 1):
            if s not in out:
                out.append(s)
    return out


def ranges(slots: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (for logs and the CLI)."""
    parts: list[tuple[int, int]] = []
    for s in sorted(set(slots)):
        if parts and parts[-1][1] == s - 1:
            parts[-1] = (parts[-1][0], s)
        else:
            parts.append((s, s))
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)
