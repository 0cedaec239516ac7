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
