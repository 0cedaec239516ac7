"""The slot map's home in the store: read it, or seed it by weight on first start.

Key `redis/slots` holds `{"slots": [group id x 1024]}`. A map that names groups the config no
longer has is repaired by a rebalance over the groups that remain (with a warning: until the
migration tier moves keys, those slots start empty on their new groups).
"""

from __future__ import annotations

from steelyard.config.redis_model import RedisConfig
from steelyard.core.store.base import Store
from steelyard.log import log
from steelyard.redis.slots import SLOTS
from steelyard.redis.topology import SlotMap, apply, ranges, rebalance, spread

KEY = "redis/slots"


def load_or_seed(store: Store, cfg: RedisConfig) -> SlotMap:
    weights = {g.id: g.weight for g in cfg.groups}
    if not weights:
        return [0] * SLOTS
    stored = store.get(KEY)
    slots = stored.get("slots") if stored else None
    if not (
        isinstance(slots, list) and len(slots) == SLOTS and all(isinstance(s, int) for s in slots)
    ):
        slot_map = spread(weights)
        store.put(KEY, {"slots": slot_map})
        log("redis_slots_seeded", groups=",".join(map(str, sorted(weights))))
        return slot_map
    orphans = [i for i, g in enumerate(slots) if g not in weights]
    if orphans:
        moves = [m for m in rebalance(slots, weights) if m[0] in set(orphans)]
        slots = apply(slots, moves)
        # Whatever is still unowned (rebalance only places what the shares allow) goes round.
        ids = sorted(weights)
        for n, i in enumerate(j for j, g in enumerate(slots) if g not in weights):
            slots[i] = ids[n % len(ids)]
        store.put(KEY, {"slots": slots})
        log("redis_slots_reassigned", "warn", slots=ranges(orphans),
            cause="their group is no longer configured; keys were not moved")  # fmt: skip
    return slots
