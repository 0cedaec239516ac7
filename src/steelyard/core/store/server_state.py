"""Operator-set server state that survives restarts: steelyard's HAProxy server-state file.

What an operator sets at runtime (admin state `drain`/`maint`, a weight override) is saved under
`pools/<pool>/servers/<address>` as `{"admin": ..., "weight": ...}` and put back when the
supervisor starts or reloads. Health is not saved: it is re-learned by the checks, and a stale
"up" would send traffic to a server nobody has looked at since the restart.

A server back at its defaults (ready, no override) has no entry, and a server or pool removed
from the config file is forgotten: its entry is deleted on the next restore, so re-adding it
later starts from a clean slate rather than from a months-old `maint`.
"""

from __future__ import annotations

from typing import Any

from steelyard.core.backend import AdminState, Pool, Server, find_server
from steelyard.core.store.base import Store
from steelyard.log import log

PREFIX = "pools/"
MAX_WEIGHT = 1000  # same bound as the config's server weight


def server_key(pool_name: str, address: str) -> str:
    return f"{PREFIX}{pool_name}/servers/{address}"


def _parse_key(key: str) -> tuple[str, str] | None:
    """`pools/<pool>/servers/<address>` -> (pool, address); None for any other key."""
    parts = key.split("/")
    if len(parts) == 4 and parts[0] == PREFIX[:-1] and parts[2] == "servers":
        return parts[1], parts[3]
    return None


def save_server(store: Store, pool_name: str, server: Server) -> None:
    """Persist `server`'s admin state and weight override (or drop the entry at defaults)."""
    key = server_key(pool_name, server.address)
    if server.admin is AdminState.READY and server.weight_override is None:
        store.delete(key)
    else:
        store.put(key, {"admin": server.admin.value, "weight": server.weight_override})


def _decode(value: dict[str, Any]) -> tuple[AdminState, int | None]:
    """Saved value -> (admin state, weight override); ValueError when it is not one we wrote."""
    admin = AdminState(value.get("admin", AdminState.READY.value))
    weight = value.get("weight")
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT
    ):
        raise ValueError(f"bad weight {weight!r}")
    return admin, weight


def restore(store: Store, pools: dict[str, Pool]) -> int:
    """Apply saved state to the configured servers; forget the rest. Returns how many applied."""
    applied = 0
    touched: set[str] = set()
    for key, value in store.items(PREFIX).items():
        parsed = _parse_key(key)
        if parsed is None:
            continue  # other state kept under pools/ is not ours to judge
        pool_name, address = parsed
        server = find_server(pools, pool_name, address)
        if server is None:
            store.delete(key)
            log("state_forgotten", pool=pool_name, server=address, cause="not in the config")
            continue
        try:
            admin, weight = _decode(value)
        except (ValueError, AttributeError) as exc:
            # Not something save_server wrote: drop it rather than fail the start.
            store.delete(key)
            log("state_discarded", "warn", pool=pool_name, server=address, cause=str(exc))
            continue
        server.admin = admin
        server.weight_override = weight
        applied += 1
        touched.add(pool_name)
        log("state_restored", pool=pool_name, server=address, state=admin.value, weight=weight)
    for name in touched:
        pools[name].refresh()
    return applied


__all__ = ["restore", "save_server", "server_key"]
