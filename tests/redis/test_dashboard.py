"""The dashboard's write side under `steelyard run`: groups, servers, promotion, assignment and
rebalance through the admin API and `steelyard redis-admin`, followed by every proxy at once."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error

import pytest
import redis as redis_py

from fixtures.procs import base_config, free_port, wait_for
from steelyard.redis.slots import slot_of


def config(tmp_path, port: int, *servers) -> dict:
    cfg = base_config(tmp_path, workers=2)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}"}],
        "groups": [{"id": i + 1, "master": s.address} for i, s in enumerate(servers)],
    }
    return cfg


def admin(sy, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steelyard.cli", "redis-admin", "--admin", sy.admin, *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def refused(sy, method: str, path: str, body=None) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as info:
        sy.api(method, path, body)
    return info.value.code, json.loads(info.value.read())["error"]


def role(server) -> str:
    info = server.command(b"INFO", b"replication").decode()
    return next(line.split(":")[1] for line in info.splitlines() if line.startswith("role:"))


def test_new_group_with_a_replica_then_rebalance(tmp_path, redis_servers, steelyard):
    a, b, c, c2 = (redis_servers("--repl-diskless-sync-delay", "0") for _ in range(4))
    port = free_port()
    sy = steelyard(config(tmp_path, port, a, b))
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    wait_for(r.ping, what="redis listener")
    for i in range(300):
        r.set(f"k{i}", i)
    out = admin(sy, "create-group", "--id", "3", "--master", c.address, "--replica", c2.address,
                "--weight", "2")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"group 3: master {c.address}"
    assert role(c2) == "slave"  # the replica was pointed at its master
    out = admin(sy, "rebalance", "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["512 slots queued to move", "migrations done"]
    slots = sy.api("GET", "/api/redis/slots")["slots"]
    assert [slots.count(g) for g in (1, 2, 3)] == [256, 256, 512]
    # every key is where the new map says, and still served
    homes = {1: a, 2: b, 3: c}
    for i in range(300):
        key = f"k{i}".encode()
        assert homes[slots[slot_of(key)]].command(b"GET", key) == str(i).encode()
    assert r.mget([f"k{i}" for i in range(300)]) == [str(i).encode() for i in range(300)]
    view = sy.api("GET", "/api/redis")
    assert [(g["id"], g["slots"], g["replicas"]) for g in view["groups"]] == [
        (1, 256, []), (2, 256, []), (3, 512, [c2.address]),
    ]  # fmt: skip
    assert admin(sy, "migrations").stdout.startswith("no slot is moving")


def test_refusals_name_the_reason(tmp_path, redis_servers, steelyard):
    a, b = redis_servers(), redis_servers()
    port = free_port()
    sy = steelyard(config(tmp_path, port, a, b))
    assert refused(sy, "DELETE", "/api/redis/groups/1") == (
        409, "group 1 still owns 512 slots: migrate them first",
    )  # fmt: skip
    assert refused(sy, "POST", "/api/redis/migrate", {"slots": "0-9", "to": 9}) == (
        409, "there is no group 9",
    )  # fmt: skip
    assert refused(sy, "POST", "/api/redis/migrate", {"slots": "0-2000", "to": 2}) == (
        400, "slot range '0-2000' is outside 0-1023",
    )  # fmt: skip
    assert refused(sy, "POST", "/api/redis/migrate", {"slots": "0-9"}) == (
        400,
        "to: Field required",
    )
    assert refused(sy, "POST", "/api/redis/groups", {"id": 1, "master": a.address}) == (
        409, "group 1 exists",
    )  # fmt: skip
    assert refused(sy, "POST", "/api/redis/groups", {"id": "x", "master": a.address})[0] == 400
    assert refused(sy, "POST", "/api/redis/rebalance", {"now": True}) == (
        400, "now: Extra inputs are not permitted",
    )  # fmt: skip
    # a replica that cannot be reached is refused before the model changes
    dead = f"127.0.0.1:{free_port()}"
    code, message = refused(sy, "POST", "/api/redis/groups/1/servers", {"address": dead})
    assert code == 502 and "did not answer" in message
    assert sy.api("GET", "/api/redis")["groups"][0]["replicas"] == []
    out = admin(sy, "remove-group", "2")
    assert out.returncode != 0 and "group 2 still owns 512 slots" in out.stderr
    # the proxy still serves after all of that
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    assert r.set("x", 1) and r.get("x") == b"1"


def test_add_promote_and_remove_servers(tmp_path, redis_servers, steelyard):
    a, b, a2 = (redis_servers("--repl-diskless-sync-delay", "0") for _ in range(3))
    port = free_port()
    sy = steelyard(config(tmp_path, port, a, b))
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    wait_for(r.ping, what="redis listener")
    key = next(f"p{i}" for i in range(100) if slot_of(f"p{i}".encode()) < 512)  # group 1
    r.set(key, "before")
    assert admin(sy, "add-server", "1", a2.address).returncode == 0
    wait_for(lambda: a2.command(b"GET", key.encode()) == b"before", what="replica in sync")
    out = admin(sy, "promote", "1", a2.address)
    assert out.returncode == 0, out.stderr
    assert role(a2) == "master" and role(a) == "slave"
    group = sy.api("GET", "/api/redis")["groups"][0]
    assert (group["master"], group["replicas"]) == (a2.address, [a.address])
    # every proxy (both workers) writes to the new master now
    for _ in range(8):
        c = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
        assert c.set(key, "after")
        c.close()
    assert a2.command(b"GET", key.encode()) == b"after"
    wait_for(lambda: a.command(b"GET", key.encode()) == b"after", what="old master follows")
    assert admin(sy, "remove-server", "1", a.address).returncode == 0
    assert sy.api("GET", "/api/redis")["groups"][0]["replicas"] == []


def test_assign_and_unassigned_slots(tmp_path, redis_servers, steelyard):
    a, b = redis_servers(), redis_servers()
    port = free_port()
    sy = steelyard(config(tmp_path, port, a, b))
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    wait_for(r.ping, what="redis listener")
    key = next(f"u{i}" for i in range(100) if slot_of(f"u{i}".encode()) < 512)
    slot = slot_of(key.encode())
    out = admin(sy, "assign", "--slots", str(slot), "--group", "0")
    assert out.stdout.strip() == "1 slots assigned to group 0"
    with pytest.raises(redis_py.ResponseError, match=f"slot {slot} is not assigned to any group"):
        r.get(key)
    assert r.ping()  # the connection stays open
    admin(sy, "assign", "--slots", str(slot), "--group", "2")
    assert r.set(key, "v") and b.command(b"GET", key.encode()) == b"v"
    assert admin(sy, "slots").stdout.splitlines()[2].startswith("2 ")


async def test_a_sentinel_master_is_followed_only_as_an_ip_literal(tmp_path):
    """Sentinel names a new master `host port`: an IPv6 host comes without brackets (taken,
    bracketed), a name (announce-hostnames) is refused with a log line, the model unchanged:
    the proxies would send backend_auth to whatever that name resolves to."""
    from steelyard.config.redis_model import RedisConfig
    from steelyard.core.store import EmbeddedStore
    from steelyard.redis.dashboard import Dashboard

    store = EmbeddedStore(tmp_path / "store")
    pushed: list[dict] = []

    async def broadcast(view: dict) -> None:
        pushed.append(view)

    cfg = RedisConfig(groups=[{"id": 1, "master": "127.0.0.1:7001"}])
    d = Dashboard(cfg, store, broadcast)
    try:
        await d.follow(1, "redis-b.example:7002", "sentinel view")
        assert (d.topo.groups[1].master, pushed) == ("127.0.0.1:7001", [])
        await d.follow(1, "::1:7003", "sentinel view")
        assert d.topo.groups[1].master == "[::1]:7003"
        assert d.topo.groups[1].replicas == ["127.0.0.1:7001"]
        assert pushed[-1]["groups"]["1"]["master"] == "[::1]:7003"
    finally:
        store.close()
