"""The Redis tier's cluster model, sans-IO: groups, the slot map and the slot moves under way.

The dashboard (supervisor) is its only writer. Every operator action (create a group, add a
server, promote, assign, migrate, rebalance) is a method here that checks the request against
the whole model and raises `ModelError` with the reason, so the API and the CLI refuse the same
things with the same words. The model round-trips through JSON for the store, and renders the
smaller view a proxy needs (master addresses, owners, per-slot move states).

A move of one slot goes pending -> locked -> migrating -> (done: the owner changes, the move is
gone). While locked, proxies hold the slot's commands; while migrating, they move each key a
command names from the source to the target before running it there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from steelyard.config.shared import ServerAddress
from steelyard.redis.slots import SLOTS
from steelyard.redis.topology import SlotMap, rebalance, shares

MAX_GROUP_ID = 9999
MOVE_STATES = ("pending", "locked", "migrating")


class ModelError(ValueError):
    """An operator request the model refuses; the message says why."""


_SERVER_ADDRESS: TypeAdapter[str] = TypeAdapter(ServerAddress)


def check_address(address: str) -> None:
    """A server is an IP:port literal, as in the config: a name could later resolve to any
    listener, which the dashboard and proxies would then send backend_auth to."""
    try:
        _SERVER_ADDRESS.validate_python(address)
    except ValidationError as exc:
        raise ModelError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None


@dataclass
class Group:
    id: int
    master: str
    replicas: list[str] = field(default_factory=list)
    weight: int = 1

    def servers(self) -> list[str]:
        return [self.master, *self.replicas]

    def to_json(self) -> dict[str, Any]:
        return {"master": self.master, "replicas": list(self.replicas), "weight": self.weight}


@dataclass
class Move:
    source: int  # group id
    to: int  # group id
    state: str = "pending"


@dataclass
class Topology:
    groups: dict[int, Group] = field(default_factory=dict)
    slots: SlotMap = field(default_factory=lambda: [0] * SLOTS)
    moves: dict[int, Move] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)  # group ids removed at runtime
    version: int = 0

    # reading ---------------------------------------------------------------------------------

    def group_of(self, address: str) -> Group | None:
        for g in self.groups.values():
            if address in g.servers():
                return g
        return None

    def owned(self, gid: int) -> list[int]:
        return [s for s, g in enumerate(self.slots) if g == gid]

    def moving_groups(self) -> set[int]:
        out: set[int] = set()
        for m in self.moves.values():
            out |= {m.source, m.to}
        return out

    # groups and servers ----------------------------------------------------------------------

    def _group(self, gid: int) -> Group:
        g = self.groups.get(gid)
        if g is None:
            raise ModelError(f"there is no group {gid}")
        return g

    def _free_address(self, address: str) -> None:
        check_address(address)
        g = self.group_of(address)
        if g is not None:
            raise ModelError(f"{address} is already in group {g.id}")

    def create_group(
        self, gid: int, master: str, replicas: list[str] | None = None, weight: int = 1
    ) -> Group:
        replicas = replicas or []
        if not 1 <= gid <= MAX_GROUP_ID:
            raise ModelError(f"group id must be 1..{MAX_GROUP_ID}, not {gid}")
        if gid in self.groups:
            raise ModelError(f"group {gid} exists")
        if not 1 <= weight <= 1000:
            raise ModelError(f"weight must be 1..1000, not {weight}")
        for address in [master, *replicas]:
            self._free_address(address)
        if len({master, *replicas}) != 1 + len(replicas):
            raise ModelError("a server is listed twice")
        g = self.groups[gid] = Group(gid, master, list(replicas), weight)
        self.removed.discard(gid)
        return g

    def remove_group(self, gid: int) -> None:
        self._group(gid)
        owned = self.owned(gid)
        if owned:
            raise ModelError(f"group {gid} still owns {len(owned)} slots: migrate them first")
        if gid in self.moving_groups():
            raise ModelError(f"group {gid} is part of a slot migration")
        del self.groups[gid]
        self.removed.add(gid)

    def set_weight(self, gid: int, weight: int) -> None:
        if not 1 <= weight <= 1000:
            raise ModelError(f"weight must be 1..1000, not {weight}")
        self._group(gid).weight = weight

    def add_server(self, gid: int, address: str) -> None:
        g = self._group(gid)
        self._free_address(address)
        g.replicas.append(address)

    def remove_server(self, gid: int, address: str) -> None:
        g = self._group(gid)
        if address == g.master:
            raise ModelError(f"{address} is the master of group {gid}: promote another first")
        if address not in g.replicas:
            raise ModelError(f"{address} is not in group {gid}")
        g.replicas.remove(address)

    def promote(self, gid: int, address: str) -> str:
        """`address` becomes the master; the old master is kept as a replica. Returns it."""
        g = self._group(gid)
        if address == g.master:
            raise ModelError(f"{address} is already the master of group {gid}")
        if address not in g.replicas:
            raise ModelError(f"{address} is not a replica of group {gid}")
        if gid in self.moving_groups():
            raise ModelError(f"group {gid} is part of a slot migration: wait for it to finish")
        old = g.master
        g.replicas.remove(address)
        g.replicas.insert(0, old)
        g.master = address
        return old

    def switch_master(self, gid: int, address: str) -> str:
        """Record a switch made outside (Sentinel): no refusal, the servers have switched
        already. The old master is kept as a replica; returns it."""
        g = self._group(gid)
        old = g.master
        if address == old:
            return old
        if address in g.replicas:
            g.replicas.remove(address)
        else:
            self._free_address(address)
        g.replicas.insert(0, old)
        g.master = address
        return old

    # slots -----------------------------------------------------------------------------------

    def assign(self, slots: list[int], gid: int) -> None:
        """Set owners without moving keys (for slots that hold none, as Codis's slots-assign)."""
        if gid != 0:
            self._group(gid)
        busy = sorted(s for s in slots if s in self.moves)
        if busy:
            raise ModelError(f"slot {busy[0]} is being migrated")
        for s in slots:
            self.slots[s] = gid

    def migrate(self, slots: list[int], to: int) -> list[int]:
        """Queue moves of `slots` to group `to`; the slots it already owns are left out."""
        self._group(to)
        busy = sorted(s for s in slots if s in self.moves)
        if busy:
            raise ModelError(f"slot {busy[0]} is already being migrated")
        queued = []
        for s in slots:
            src = self.slots[s]
            if src == to:
                continue
            if src == 0:
                self.slots[s] = to  # nobody held its keys: nothing to move
                continue
            self.moves[s] = Move(src, to)
            queued.append(s)
        return queued

    def rebalance(self) -> list[int]:
        """Queue the fewest moves that bring every group to its share by weight."""
        if self.moves:
            raise ModelError("a migration is under way: rebalance when it has finished")
        weights = {g.id: g.weight for g in self.groups.values()}
        if not weights:
            raise ModelError("there are no groups")
        queued = []
        for slot, src, dst in rebalance(self.slots, weights):
            if src in self.groups:
                self.moves[slot] = Move(src, dst)
                queued.append(slot)
            else:
                self.slots[slot] = dst
        return queued

    def finish(self, slots: list[int]) -> None:
        for s in slots:
            move = self.moves.pop(s)
            self.slots[s] = move.to

    def targets(self) -> dict[int, int]:
        return shares({g.id: g.weight for g in self.groups.values()}) if self.groups else {}

    # JSON ------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "groups": {str(g.id): g.to_json() for g in sorted(self.groups.values(), key=_gid)},
            "slots": list(self.slots),
            "moves": {str(s): [m.source, m.to, m.state] for s, m in sorted(self.moves.items())},
            "removed": sorted(self.removed),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Topology:
        groups = {
            int(k): Group(int(k), v["master"], list(v.get("replicas", [])), int(v.get("weight", 1)))
            for k, v in data.get("groups", {}).items()
        }
        slots = [int(s) for s in data["slots"]]
        if len(slots) != SLOTS:
            raise ModelError(f"a slot map has {SLOTS} entries, not {len(slots)}")
        moves = {int(k): Move(int(v[0]), int(v[1]), str(v[2])) for k, v in data["moves"].items()}
        return cls(groups, slots, moves, set(data.get("removed", [])), int(data.get("version", 0)))

    def proxy_view(
        self, held: dict[int, list[str]] | None = None, readers: dict[int, list[str]] | None = None
    ) -> dict[str, Any]:
        """What a proxy routes by: group members, slot owners, each moving slot's state with
        its source and target masters (and the keys held while the mover copies them), and the
        replicas fit to serve reads (`read_from_replicas`)."""
        moving: dict[str, Any] = {}
        for s, m in self.moves.items():
            if m.state == "pending":
                continue
            moving[str(s)] = {
                "state": m.state,
                "from": self.groups[m.source].master,
                "to": self.groups[m.to].master,
                "held": (held or {}).get(s, []),
            }
        return {
            "version": self.version,
            "groups": {str(g.id): g.to_json() for g in self.groups.values()},
            "slots": list(self.slots),
            "moving": moving,
            "readers": {str(g): list(r) for g, r in (readers or {}).items() if r},
        }


def _gid(g: Group) -> int:
    return g.id
