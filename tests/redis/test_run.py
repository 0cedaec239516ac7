"""The Redis tier under `steelyard run`: listeners, the slot map seeded and kept in the store."""

from __future__ import annotations

import redis as redis_py

from fixtures.procs import base_config, free_port, wait_for
from steelyard.redis.slots import slot_of


def config(tmp_path, port: int, *servers) -> dict:
    cfg = base_config(tmp_path)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}"}],
        "groups": [{"id": i + 1, "master": s.address} for i, s in enumerate(servers)],
    }
    return cfg


def test_proxy_under_steelyard_run_keeps_its_slot_map(tmp_path, redis_servers, steelyard):
    a, b = redis_servers(), redis_servers()
    port = free_port()
    sy = steelyard(config(tmp_path, port, a, b))
    sy.wait_log(r"event=redis_slots_seeded groups=1,2")
    c = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    wait_for(lambda: c.ping(), what="redis listener")
    for i in range(50):
        c.set(f"k{i}", i)
    # the first 512 slots went to group 1 (weights 1:1), the rest to group 2
    for i in range(50):
        key = f"k{i}".encode()
        home = a if slot_of(key) < 512 else b
        assert home.command(b"GET", key) == str(i).encode()
    # a restart reads the same map from the store instead of seeding a new one
    sy.stop()
    sy.start()
    assert sy.count_log(r"event=redis_slots_seeded") == 0
    c = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    wait_for(lambda: c.ping(), what="redis listener after restart")
    assert c.mget([f"k{i}" for i in range(50)]) == [str(i).encode() for i in range(50)]


def test_redis_cli_through_the_proxy(tmp_path, redis_servers, steelyard):
    import subprocess

    a, b = redis_servers(), redis_servers()
    port = free_port()
    steelyard(config(tmp_path, port, a, b))
    wait_for(lambda: redis_py.Redis(port=port, protocol=2).ping(), what="redis listener")

    def cli(*args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout.removesuffix("\n")

    assert cli("SET", "greeting", "hello world") == "OK"
    assert cli("GET", "greeting") == "hello world"
    assert cli("MSET", "x", "1", "y", "2") == "OK"
    assert cli("MGET", "x", "y", "nope").split("\n") == ["1", "2", ""]  # nil: an empty line
    assert cli("DBSIZE") == "3"
    assert cli("CONFIG", "GET", "maxmemory").split("\n") == ["maxmemory", "0"]
    assert cli("CONFIG", "SET", "maxmemory", "1").strip() == (
        "ERR command 'CONFIG SET' is not supported by the proxy (allow_fanout is off)"
    )
    # a pipe of commands, as `redis-cli --pipe`-style bulk loads do
    piped = subprocess.run(
        ["redis-cli", "-p", str(port)],
        input="".join(f"SET p{i} {i}\n" for i in range(100)),
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert piped.stdout.split() == ["OK"] * 100


def test_redis_admin_shows_groups_and_slots(tmp_path, redis_servers, steelyard):
    import json
    import subprocess
    import sys

    a, b = redis_servers(), redis_servers()
    port = free_port()
    cfg = config(tmp_path, port, a, b)
    cfg["redis"]["groups"][1]["weight"] = 3
    sy = steelyard(cfg)
    view = sy.api("GET", "/api/redis")
    assert [(g["id"], g["slots"], g["ranges"]) for g in view["groups"]] == [
        (1, 256, "0-255"),
        (2, 768, "256-1023"),
    ]
    assert view["unassigned"] == 0
    # the proxy table: its workers report sessions and commands every second
    c = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    wait_for(c.ping, what="redis listener")
    for i in range(50):
        c.set(f"x{i}", i)

    def counted() -> dict | None:
        proxies = sy.api("GET", "/api/redis")["proxies"]
        return proxies[0] if proxies[0]["commands"] >= 51 else None

    proxy = wait_for(counted, what="commands counted")
    assert proxy["listen"] == f"127.0.0.1:{port}" and proxy["sessions"] == 1
    assert proxy["workers"] == 1
    slots = sy.api("GET", "/api/redis/slots")["slots"]
    assert slots == [1] * 256 + [2] * 768

    def cli(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "steelyard.cli", "redis-admin", "--admin", sy.admin, *args],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return out.stdout

    table = cli("slots").splitlines()
    assert table[0].split() == ["GROUP", "MASTER", "REPLICAS", "WEIGHT", "SLOTS", "RANGES"]
    assert table[1].split() == ["1", a.address, "-", "1", "256", "0-255"]
    assert table[2].split() == ["2", b.address, "-", "3", "768", "256-1023"]
    assert json.loads(cli("slot-map")) == slots


def test_redis_api_without_a_redis_section(tmp_path, steelyard):
    from fixtures.procs import base_config

    sy = steelyard(base_config(tmp_path))
    import httpx

    r = httpx.get(f"http://{sy.admin}/api/redis")
    assert r.status_code == 404 and r.json() == {"error": "no redis: section in the config"}
