"""Saved operator state: applied on restore, health never persisted, removed servers forgotten."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelyard.core.backend import AdminState, Pool, Server
from steelyard.core.store import EmbeddedStore
from steelyard.core.store.server_state import restore, save_server, server_key


def make_pools() -> dict[str, Pool]:
    return {
        "web": Pool(
            "web",
            [Server("127.0.0.1:8081", weight=5), Server("127.0.0.1:8082"), Server("[::1]:80")],
        ),
        "db": Pool("db", [Server("10.0.0.1:3306")]),
    }


@pytest.fixture
def store(tmp_path: Path):
    s = EmbeddedStore(tmp_path)
    yield s
    s.close()


def test_save_and_restore(store: EmbeddedStore) -> None:
    pools = make_pools()
    a, b, v6 = pools["web"].servers
    a.admin = AdminState.DRAIN
    a.weight_override = 2
    b.admin = AdminState.MAINT
    v6.weight_override = 0
    for s in (a, b, v6):
        save_server(store, "web", s)
    save_server(store, "db", pools["db"].servers[0])  # at defaults: nothing saved

    assert store.get(server_key("web", "127.0.0.1:8081")) == {"admin": "drain", "weight": 2}
    assert store.get("pools/web/servers/[::1]:80") == {"admin": "ready", "weight": 0}
    assert store.get(server_key("db", "10.0.0.1:3306")) is None

    fresh = make_pools()
    assert restore(store, fresh) == 3
    a2, b2, v62 = fresh["web"].servers
    assert (a2.admin, a2.weight_override, a2.effective_weight) == (AdminState.DRAIN, 2, 2)
    assert (b2.admin, b2.weight_override) == (AdminState.MAINT, None)
    assert (v62.admin, v62.weight_override) == (AdminState.READY, 0)
    assert fresh["db"].servers[0].admin is AdminState.READY
    # restore rebuilt the pool: nothing drained, in maint or at weight 0 is a candidate
    assert fresh["web"].candidates() == []


def test_health_is_not_persisted(store: EmbeddedStore) -> None:
    pools = make_pools()
    s = pools["web"].servers[0]
    s.healthy = False
    s.ejected = True
    s.admin = AdminState.DRAIN
    save_server(store, "web", s)
    assert set(store.get(server_key("web", s.address)) or {}) == {"admin", "weight"}
    fresh = make_pools()
    restore(store, fresh)
    s2 = fresh["web"].servers[0]
    assert s2.healthy and not s2.ejected and s2.admin is AdminState.DRAIN


def test_back_to_defaults_drops_the_entry(store: EmbeddedStore) -> None:
    s = make_pools()["web"].servers[0]
    s.admin = AdminState.MAINT
    save_server(store, "web", s)
    assert store.get(server_key("web", s.address)) is not None
    s.admin = AdminState.READY
    save_server(store, "web", s)
    assert store.items("pools/") == {}


def test_removed_servers_and_pools_are_forgotten(store: EmbeddedStore) -> None:
    store.put(server_key("web", "127.0.0.1:8081"), {"admin": "maint", "weight": None})
    store.put(server_key("web", "127.0.0.1:9999"), {"admin": "drain", "weight": None})
    store.put(server_key("gone", "10.0.0.9:80"), {"admin": "maint", "weight": 1})
    store.put("pools/web/slots", {"other": "state"})  # not a server entry: not ours
    store.put("naming/svc/a", {"x": 1})

    pools = make_pools()
    assert restore(store, pools) == 1
    assert pools["web"].servers[0].admin is AdminState.MAINT
    assert set(store.items("")) == {
        server_key("web", "127.0.0.1:8081"),
        "pools/web/slots",
        "naming/svc/a",
    }
    # Re-adding the removed server later starts clean.
    later = make_pools()
    later["web"] = Pool("web", [*later["web"].servers, Server("127.0.0.1:9999")])
    restore(store, later)
    assert later["web"].server("127.0.0.1:9999").admin is AdminState.READY  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        {"admin": "sleepy", "weight": None},
        {"admin": "drain", "weight": -1},
        {"admin": "drain", "weight": "3"},
        {"admin": "drain", "weight": True},
        {"admin": "drain", "weight": 1001},
    ],
)
def test_bad_entries_are_discarded(store: EmbeddedStore, value: dict) -> None:
    store.put(server_key("web", "127.0.0.1:8081"), value)
    pools = make_pools()
    assert restore(store, pools) == 0
    s = pools["web"].servers[0]
    assert (s.admin, s.weight_override) == (AdminState.READY, None)
    assert store.items("pools/") == {}


def test_restore_survives_reopen(tmp_path: Path) -> None:
    with EmbeddedStore(tmp_path) as st:
        s = make_pools()["db"].servers[0]
        s.admin = AdminState.MAINT
        save_server(st, "db", s)
    with EmbeddedStore(tmp_path) as st:
        pools = make_pools()
        assert restore(st, pools) == 1
        assert pools["db"].servers[0].admin is AdminState.MAINT
