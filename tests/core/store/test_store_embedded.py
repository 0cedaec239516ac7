"""EmbeddedStore: the SQLite key/value store, including sharing the file between processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from steelyard.config.model import StoreConfig
from steelyard.core.store import EmbeddedStore, Store, open_store
from steelyard.core.store.embedded import FILENAME, _prefix_end


@pytest.fixture
def store(tmp_path: Path):
    s = EmbeddedStore(tmp_path / "data")
    yield s
    s.close()


def test_put_get_delete(store: EmbeddedStore) -> None:
    assert store.get("pools/web/servers/127.0.0.1:8081") is None
    store.put("pools/web/servers/127.0.0.1:8081", {"admin": "drain", "weight": 3})
    assert store.get("pools/web/servers/127.0.0.1:8081") == {"admin": "drain", "weight": 3}
    store.put("pools/web/servers/127.0.0.1:8081", {"admin": "maint"})
    assert store.get("pools/web/servers/127.0.0.1:8081") == {"admin": "maint"}
    store.delete("pools/web/servers/127.0.0.1:8081")
    assert store.get("pools/web/servers/127.0.0.1:8081") is None
    store.delete("pools/web/servers/127.0.0.1:8081")  # deleting a missing key is fine


def test_nested_values_round_trip(store: EmbeddedStore) -> None:
    value = {"slots": [[0, 8191, "g1"]], "meta": {"epoch": 7, "ok": True, "x": None}, "f": 1.5}
    store.put("redis/slots", value)
    assert store.get("redis/slots") == value


def test_items_by_prefix(store: EmbeddedStore) -> None:
    store.put("pools/web/servers/b:2", {"n": 2})
    store.put("pools/web/servers/a:1", {"n": 1})
    store.put("pools/web2/servers/c:3", {"n": 3})
    store.put("naming/svc/x", {"n": 4})
    assert store.items("pools/web/") == {
        "pools/web/servers/a:1": {"n": 1},
        "pools/web/servers/b:2": {"n": 2},
    }
    assert list(store.items("pools/web/")) == ["pools/web/servers/a:1", "pools/web/servers/b:2"]
    # A plain string prefix, as in etcd: `pools/web` also covers `pools/web2`.
    assert set(store.items("pools/web")) == {
        "pools/web/servers/a:1",
        "pools/web/servers/b:2",
        "pools/web2/servers/c:3",
    }
    assert len(store.items("")) == 4
    assert store.items("nothing/") == {}


def test_items_prefix_is_case_sensitive_and_literal(store: EmbeddedStore) -> None:
    store.put("a%b/x", {"v": 1})
    store.put("a_b/x", {"v": 2})
    store.put("A%b/x", {"v": 3})
    assert store.items("a%") == {"a%b/x": {"v": 1}}
    assert store.items("a_") == {"a_b/x": {"v": 2}}


def test_unicode_keys_and_prefix_bounds(store: EmbeddedStore) -> None:
    store.put("zone/é/x", {"v": 1})
    store.put("zone/\U0010ffff/y", {"v": 2})
    store.put("zone/\ud7ff/z", {"v": 3})
    store.put("zone/\ue000/w", {"v": 4})
    assert store.items("zone/é") == {"zone/é/x": {"v": 1}}
    assert store.items("zone/\U0010ffff") == {"zone/\U0010ffff/y": {"v": 2}}
    assert store.items("zone/\ud7ff") == {"zone/\ud7ff/z": {"v": 3}}
    assert _prefix_end("a\U0010ffff") == "b"
    assert _prefix_end("\U0010ffff") is None
    assert _prefix_end("\ud7ff") == "\ue000"


@pytest.mark.parametrize("key", ["", "/pools", "pools/", "pools//web", 5, None])
def test_bad_keys(store: EmbeddedStore, key: object) -> None:
    with pytest.raises(ValueError):
        store.put(key, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.get(key)  # type: ignore[arg-type]


def test_bad_values_leave_the_store_unchanged(store: EmbeddedStore) -> None:
    store.put("k", {"v": 1})
    with pytest.raises(TypeError):
        store.put("k", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.put("k", {"v": object()})
    assert store.get("k") == {"v": 1}


def test_persists_across_reopen_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b"  # directories are created
    with EmbeddedStore(path) as s:
        s.put("pools/web/servers/127.0.0.1:8081", {"admin": "maint", "weight": None})
    assert (path / FILENAME).is_file()
    with EmbeddedStore(path) as s:
        assert s.items("pools/") == {
            "pools/web/servers/127.0.0.1:8081": {"admin": "maint", "weight": None}
        }
    db = sqlite3.connect(path / FILENAME)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [row[1] for row in db.execute("PRAGMA table_info(kv)")]
        assert cols == ["key", "value", "updated"]
        (updated,) = db.execute("SELECT updated FROM kv").fetchone()
        assert updated > 0
    finally:
        db.close()


def test_two_connections_see_each_other(tmp_path: Path) -> None:
    with EmbeddedStore(tmp_path) as a, EmbeddedStore(tmp_path) as b:
        a.put("k/1", {"v": 1})
        assert b.get("k/1") == {"v": 1}
        b.put("k/2", {"v": 2})
        a.delete("k/1")
        assert a.items("k/") == {"k/2": {"v": 2}}
        assert b.items("k/") == {"k/2": {"v": 2}}


def test_another_process_writes_while_we_hold_the_file(tmp_path: Path) -> None:
    with EmbeddedStore(tmp_path) as ours:
        ours.put("mine", {"v": 0})
        script = textwrap.dedent(
            f"""
            from steelyard.core.store import EmbeddedStore
            s = EmbeddedStore({str(tmp_path)!r})
            assert s.get("mine") == {{"v": 0}}
            for i in range(50):
                s.put(f"theirs/{{i:02d}}", {{"i": i}})
            s.close()
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        theirs = ours.items("theirs/")
        assert len(theirs) == 50
        assert theirs["theirs/49"] == {"i": 49}


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    s = EmbeddedStore(tmp_path)
    s.close()
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.get("k")


def test_open_store(tmp_path: Path) -> None:
    s = open_store(StoreConfig(kind="embedded", path=str(tmp_path / "st")))
    try:
        assert isinstance(s, Store)
        assert isinstance(s, EmbeddedStore)
        s.put("k", {"v": 1})
    finally:
        s.close()
    # etcd is refused by validation, before any store is opened
    with pytest.raises(ValueError, match="etcd is not available yet"):
        StoreConfig(kind="etcd", endpoints=["127.0.0.1:2379"])
