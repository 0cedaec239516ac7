"""The cluster model's home in the store: read it, or seed it from the config on first start.

Key `redis/topology` holds the model (groups, slot map, moves under way). The config's groups
seed it: at first start every group is taken and the slots are spread by weight. Later the store
wins, because the dashboard changes groups at runtime (promotions, added servers); a config
group the store does not know and was not removed at runtime is added (that is how a group is
added from the config file), and a config group that differs from the store's is reported.
"""

from __future__ import annotations

from steelyard.config.redis_model import RedisConfig
from steelyard.core.store.base import Store
from steelyard.log import log
from steelyard.redis.model import ModelError, Topology
from steelyard.redis.topology import apply, ranges, rebalance, spread

KEY = "redis/topology"
LEGACY_KEY = "redis/slots"  # the slot map alone, as the first releases kept it


def load(store: Store, cfg: RedisConfig) -> Topology:
    data = store.get(KEY)
    topo: Topology | None = None
    if data is not None:
        try:
            topo = Topology.from_json(data)
        except (KeyError, TypeError, ValueError, ModelError) as exc:
            log("redis_topology_unreadable", "error", cause=str(exc), action="seeding anew")
    if topo is None:
        topo = _seed(store, cfg)
        save(store, topo)
        return topo
    changed = False
    for g in cfg.groups:
        known = topo.groups.get(g.id)
        if known is None and g.id not in topo.removed:
            try:
                topo.create_group(g.id, g.master, list(g.replicas), g.weight)
            except ModelError as exc:
                log("redis_group_not_added", "warn", group=g.id, cause=str(exc))
                continue
            log("redis_group_added", group=g.id, master=g.master, source="config")
            changed = True
        elif known is not None and (known.master, sorted(known.replicas)) != (
            g.master,
            sorted(g.replicas),
        ):
            log(
                "redis_group_differs",
                "warn",
                group=g.id,
                stored=",".join(known.servers()),
                cause="the store's group (changed at runtime) is used; edit it with redis-admin",
            )
    changed |= _repair(topo)
    if changed:
        save(store, topo)
    return topo


def save(store: Store, topo: Topology) -> None:
    topo.version += 1
    store.put(KEY, topo.to_json())


def from_config(cfg: RedisConfig) -> Topology:
    """The config's groups, with the slots spread over them by weight."""
    topo = Topology()
    for g in cfg.groups:
        topo.create_group(g.id, g.master, list(g.replicas), g.weight)
    if topo.groups:
        topo.slots = spread({g.id: g.weight for g in topo.groups.values()})
    return topo


def _seed(store: Store, cfg: RedisConfig) -> Topology:
    topo = from_config(cfg)
    if not topo.groups:
        return topo
    legacy = store.get(LEGACY_KEY)
    slots = legacy.get("slots") if legacy else None
    if isinstance(slots, list) and len(slots) == len(topo.slots):
        topo.slots = [int(s) for s in slots]
        _repair(topo)
        log("redis_slots_loaded", groups=",".join(map(str, sorted(topo.groups))))
    else:
        log("redis_slots_seeded", groups=",".join(map(str, sorted(topo.groups))))
    return topo


def _repair(topo: Topology) -> bool:
    """Slots that name a group the model does not have go to the groups that remain."""
    weights = {g.id: g.weight for g in topo.groups.values()}
    orphans = {i for i, g in enumerate(topo.slots) if g != 0 and g not in weights}
    if not orphans or not weights:
        return False
    moves = [m for m in rebalance(topo.slots, weights) if m[0] in orphans]
    topo.slots = apply(topo.slots, moves)
    ids = sorted(weights)
    for n, i in enumerate(j for j, g in enumerate(topo.slots) if g != 0 and g not in weights):
        topo.slots[i] = ids[n % len(ids)]
    log(
        "redis_slots_reassigned",
        "warn",
        slots=ranges(sorted(orphans)),
        cause="their group is unknown; keys were not moved",
    )
    return True
