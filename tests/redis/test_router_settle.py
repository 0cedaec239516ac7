"""The router's wait for moving slots to settle, and its routing of commands on several slots
(`cross_slot: group`): views applied as the dashboard pushes them, answers recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from steelyard.redis import resp
from steelyard.redis.backend import BackendPool
from steelyard.redis.dispatch import CROSSSLOT
from steelyard.redis.router import Router

A, B = "127.0.0.1:7001", "127.0.0.1:7002"  # never connected: no request is sent to them


def view(version: int, slots: list[int] | None = None, moving: dict[int, Any] | None = None):
    return {
        "version": version,
        "groups": {"1": {"master": A}, "2": {"master": B}},
        "slots": slots if slots is not None else [1] * 512 + [2] * 512,
        "moving": {str(s): m for s, m in (moving or {}).items()},
    }


def move(state: str, source: str = A, target: str = B) -> dict[str, Any]:
    return {"state": state, "from": source, "to": target, "held": []}


@pytest.fixture
def router() -> Iterator[Router]:
    loop = asyncio.new_event_loop()
    r = Router(BackendPool(loop), None, 1.0)
    r.apply(view(1))
    yield r
    loop.close()


class Outcome:
    """Where a command went (`go`) or what it was answered (`fail`), in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def go(self, address: str) -> None:
        self.events.append(("go", address))

    def fail(self, raw: bytes) -> None:
        self.events.append(("fail", raw))


def test_slots_at_rest_are_settled_at_once(router):
    called: list[int] = []
    assert router.when_settled([3, 700], lambda: called.append(1))
    assert called == []


def test_a_moving_slot_is_waited_for_until_its_move_has_ended(router):
    called: list[int] = []
    router.apply(view(2, moving={5: move("locked")}))
    assert not router.when_settled([3, 5], lambda: called.append(1))
    router.apply(view(3, moving={5: move("migrating")}))
    assert called == []  # migrating is still moving: its keys change place
    router.apply(view(4, slots=[1] * 5 + [2] + [1] * 506 + [2] * 512))
    assert called == [1]
    assert router.when_settled([3, 5], lambda: called.append(2))
    assert called == [1]


def test_via_slots_runs_on_the_one_owner(router):
    out = Outcome()
    router.via_slots([3, 5, 400], out.go, out.fail)
    router.via_slots([600, 1023], out.go, out.fail)
    assert out.events == [("go", A), ("go", B)]


def test_via_slots_refuses_slots_of_two_groups(router):
    out = Outcome()
    router.via_slots([3, 600], out.go, out.fail)
    assert out.events == [("fail", resp.error(CROSSSLOT))]


def test_via_slots_reports_a_slot_no_group_owns(router):
    out = Outcome()
    router.apply(view(2, slots=[1] * 10 + [0] + [1] * 501 + [2] * 512))
    router.via_slots([3, 10], out.go, out.fail)
    assert out.events == [("fail", b"-ERR slot 10 is not assigned to any group\r\n")]


def test_via_slots_waits_for_every_moving_slot_then_routes_again(router):
    out = Outcome()
    router.apply(view(2, moving={600: move("locked", B, A), 700: move("locked", B, A)}))
    router.via_slots([3, 600, 700], out.go, out.fail)
    assert out.events == []  # before the moves: 600 and 700 are on group 2 (CROSSSLOT)
    after_600 = [1] * 512 + [2] * 512
    after_600[600] = 1
    router.apply(view(3, slots=after_600, moving={700: move("migrating", B, A)}))
    assert out.events == []  # 700 still moving
    after_600[700] = 1
    router.apply(view(4, slots=after_600))
    assert out.events == [("go", A)]  # all on group 1 now


def test_a_waiting_command_gets_crossslot_when_its_slots_end_apart(router):
    out = Outcome()
    router.apply(view(2, moving={5: move("locked")}))
    router.via_slots([3, 5], out.go, out.fail)
    router.apply(view(3, slots=[1] * 5 + [2] + [1] * 506 + [2] * 512))
    assert out.events == [("fail", resp.error(CROSSSLOT))]


def test_waiters_of_a_slot_left_without_owner_are_answered(router):
    """A group removed while its slot moved: what waited on it gets the unassigned error
    instead of waiting for ever (single-key commands too)."""
    out, single = Outcome(), Outcome()
    router.apply(view(2, moving={5: move("locked")}))
    router.via_slots([3, 5], out.go, out.fail)
    router.via(5, 0, [b"k"], single.go, single.fail)
    assert out.events == single.events == []
    router.apply(view(3, slots=[1] * 5 + [0] + [1] * 506 + [2] * 512))
    error = b"-ERR slot 5 is not assigned to any group\r\n"
    assert out.events == single.events == [("fail", error)]


def test_waiters_are_routed_once_the_whole_view_is_in_place(router):
    """Slot 5's move ends in the same view that starts slot 700's: a command on both waits
    on, though slot 5 comes first in the view (routed halfway, it would go to the old
    owner of 700)."""
    out = Outcome()
    router.apply(view(2, moving={5: move("locked")}))
    router.via_slots([5, 700], out.go, out.fail)
    after = [1] * 5 + [2] + [1] * 506 + [2] * 512
    router.apply(view(3, slots=after, moving={700: move("locked", B, A)}))
    assert out.events == []
    after[700] = 1
    router.apply(view(4, slots=after))
    assert out.events == [("fail", resp.error(CROSSSLOT))]  # 5 on group 2, 700 on group 1
