"""Sync groups: VRRP instances that change state together (keepalived's `vrrp_sync_group`), so
that, say, the public and the private VIP of a router are always held by the same node. Sans-IO:
the group reads and drives its members' machines and returns their actions.

The rules, as keepalived's:
  * a member in FAULT of its own (a tracked object) puts every other member in FAULT, until it
    recovers; the others' faults are named `sync group NAME: MEMBER`;
  * a member that gives MASTER up (a higher priority elsewhere) takes the others with it;
  * the group goes MASTER only when every member is ready to (its Master_Down timer fired and
    no advert has held it since), all at once; one member still hearing a better master keeps
    the whole group BACKUP, so two nodes never split a group's addresses between them.
"""

from __future__ import annotations

from collections.abc import Callable

from steelyard.vrrp.machine import Action, Became, Machine, Ready, State

SYNC = "sync group "  # the prefix of a fault one member gives the others


class SyncGroup:
    def __init__(self, name: str, members: dict[str, Machine], notify: str | None = None) -> None:
        self.name = name
        self.members = members
        self.notify = notify  # the group's program, run with its name and each settled state
        self.faulty: set[str] = set()  # members in FAULT of their own
        self.settled = State.INIT  # the state all members were last in together

    def react(self, member: str, actions: list[Action], now: float) -> dict[str, list[Action]]:
        """What the other members (and `member` itself, when the group promotes it) do after
        `member` produced `actions`."""
        out: dict[str, list[Action]] = {}
        cause = f"{SYNC}{self.name}: {member}"
        own = any(not f.startswith(SYNC) for f in self.members[member].faults)
        if own and member not in self.faulty:
            self.faulty.add(member)
            self._each(out, member, lambda m: m.fault(cause, now))
        elif not own and member in self.faulty:
            self.faulty.discard(member)
            self._each(out, member, lambda m: m.recover(cause, now))
        for action in actions:
            if isinstance(action, Became) and action.old is State.MASTER:
                left = f"{SYNC}{self.name}: {member} left MASTER"
                self._each(out, member, lambda m, r=left: m.demote(now, r))
            elif isinstance(action, Became) and action.new is State.MASTER:
                became = f"{SYNC}{self.name}: {member} became MASTER"
                self._each(out, member, lambda m, r=became: m.promote(now, r))
            elif isinstance(action, Ready) and self._all_ready():
                ready = f"{SYNC}{self.name}: every member ready"
                self._each(out, None, lambda m, r=ready: m.promote(now, r))
        return out

    def settle(self) -> State | None:
        """The group's new state when every member is now in the same one, and it is not the
        state they last shared (once per group transition, for the group's notify)."""
        states = {m.state for m in self.members.values()}
        if len(states) != 1:
            return None
        (state,) = states
        if state is self.settled:
            return None
        self.settled = state
        return state

    def _all_ready(self) -> bool:
        return all(
            m.state is State.MASTER or (m.state is State.BACKUP and m.ready)
            for m in self.members.values()
        )

    def _each(
        self, out: dict[str, list[Action]], but: str | None, step: Callable[[Machine], list[Action]]
    ) -> None:
        for name, machine in self.members.items():
            if name != but:
                actions = step(machine)
                if actions:
                    out.setdefault(name, []).extend(actions)
