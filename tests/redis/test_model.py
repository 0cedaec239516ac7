"""The cluster model: what each operator action changes, and what it refuses and why."""

from __future__ import annotations

import re

import pytest

from steelyard.redis.model import ModelError, Topology
from steelyard.redis.topology import spread


def two_groups() -> Topology:
    t = Topology()
    t.create_group(1, "127.0.0.1:7001", ["127.0.0.1:7101"])
    t.create_group(2, "127.0.0.1:7002")
    t.slots = spread({1: 1, 2: 1})
    return t


def test_create_group_refusals():
    t = two_groups()
    with pytest.raises(ModelError, match="group 1 exists"):
        t.create_group(1, "127.0.0.1:7009")
    with pytest.raises(ModelError, match=re.escape("127.0.0.1:7101 is already in group 1")):
        t.create_group(3, "127.0.0.1:7101")
    with pytest.raises(ModelError, match="listed twice"):
        t.create_group(3, "127.0.0.1:7003", ["127.0.0.1:7003"])
    with pytest.raises(ModelError, match=re.escape("group id must be 1..9999")):
        t.create_group(10000, "127.0.0.1:7003")
    with pytest.raises(ModelError, match=re.escape("weight must be 1..1000")):
        t.create_group(3, "127.0.0.1:7003", weight=0)


def test_remove_group_only_when_it_owns_nothing():
    t = two_groups()
    with pytest.raises(ModelError, match="group 2 still owns 512 slots"):
        t.remove_group(2)
    t.create_group(3, "127.0.0.1:7003")
    t.migrate([5], 3)
    with pytest.raises(ModelError, match="part of a slot migration"):
        t.remove_group(3)
    t.finish([5])
    t.assign([5], 1)
    t.remove_group(3)
    assert 3 not in t.groups and 3 in t.removed


def test_servers_and_promotion():
    t = two_groups()
    t.add_server(2, "127.0.0.1:7102")
    with pytest.raises(ModelError, match="already in group 2"):
        t.add_server(1, "127.0.0.1:7102")
    with pytest.raises(ModelError, match="is the master of group 1"):
        t.remove_server(1, "127.0.0.1:7001")
    with pytest.raises(ModelError, match="not in group 1"):
        t.remove_server(1, "127.0.0.1:7102")
    assert t.promote(1, "127.0.0.1:7101") == "127.0.0.1:7001"
    assert t.groups[1].master == "127.0.0.1:7101"
    assert t.groups[1].replicas == ["127.0.0.1:7001"]  # the old master stays, as a replica
    with pytest.raises(ModelError, match="already the master"):
        t.promote(1, "127.0.0.1:7101")
    with pytest.raises(ModelError, match="not a replica of group 1"):
        t.promote(1, "127.0.0.1:7002")
    t.migrate([0], 2)
    with pytest.raises(ModelError, match="wait for it to finish"):
        t.promote(1, "127.0.0.1:7001")


def test_migrate_queues_only_real_moves():
    t = two_groups()
    t.assign([1000], 0)
    queued = t.migrate([0, 1, 600, 1000], 2)
    assert queued == [0, 1]  # 600 is group 2's already; 1000 had no owner: assigned at once
    assert t.slots[1000] == 2
    assert {s: (m.source, m.to, m.state) for s, m in t.moves.items()} == {
        0: (1, 2, "pending"),
        1: (1, 2, "pending"),
    }
    with pytest.raises(ModelError, match="slot 0 is already being migrated"):
        t.migrate([0], 1)
    with pytest.raises(ModelError, match="slot 1 is being migrated"):
        t.assign([1], 1)
    with pytest.raises(ModelError, match="there is no group 7"):
        t.migrate([5], 7)
    with pytest.raises(ModelError, match="a migration is under way"):
        t.rebalance()
    t.finish([0, 1])
    assert t.slots[0] == t.slots[1] == 2 and not t.moves


def test_rebalance_moves_the_new_group_its_share():
    t = two_groups()
    t.create_group(3, "127.0.0.1:7003", weight=2)
    queued = t.rebalance()
    assert len(queued) == 512  # a half of the slots for weight 2 of 4
    assert all(t.moves[s].to == 3 for s in queued)
    assert sorted({t.moves[s].source for s in queued}) == [1, 2]


def test_json_round_trip_and_the_proxy_view():
    t = two_groups()
    t.migrate([3], 2)
    t.moves[3].state = "migrating"
    back = Topology.from_json(t.to_json())
    assert back.to_json() == t.to_json()
    view = t.proxy_view({3: ["big"]})
    assert view["moving"] == {
        "3": {"state": "migrating", "from": "127.0.0.1:7001", "to": "127.0.0.1:7002",
              "held": ["big"]}
    }  # fmt: skip
    t.migrate([4], 2)  # pending: proxies need not know yet
    assert "4" not in t.proxy_view()["moving"]
    with pytest.raises(ModelError, match="1024 entries"):
        Topology.from_json({**t.to_json(), "slots": [1, 2]})
