"""HA of the Redis tier under `steelyard run`: every server health-checked, a dead master
replaced by its most up-to-date replica, proxies switched, the old master made a replica."""

from __future__ import annotations

import redis as redis_py

from fixtures.procs import base_config, free_port, wait_for
from fixtures.redis_server import RedisServer
from steelyard.redis.slots import slot_of


def info(server, field: str) -> str | None:
    try:
        text = server.command(b"INFO", b"replication").decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1]
    return None


def test_auto_failover_promotes_the_replica_and_the_old_master_rejoins(
    tmp_path, redis_servers, steelyard
):
    fast = ("--repl-diskless-sync-delay", "0")  # no 5 s wait before a full sync
    a, a2, b = redis_servers(*fast), redis_servers(*fast), redis_servers()
    port = free_port()
    cfg = base_config(tmp_path, workers=2)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}"}],
        "groups": [
            {"id": 1, "master": a.address, "replicas": [a2.address]},
            {"id": 2, "master": b.address},
        ],
        "auto_failover": True,
        "health_interval": "200ms",
    }
    sy = steelyard(cfg)
    # the model says a2 is a replica: the watcher makes it one
    sy.wait_log(rf"event=redis_replica_repointed server={a2.address} master={a.address}")
    wait_for(lambda: info(a2, "master_link_status") == "up", what="replica in sync")
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    keys = [f"f{i}" for i in range(200) if slot_of(f"f{i}".encode()) < 512]  # group 1's
    for k in keys:
        r.set(k, k)
    wait_for(lambda: a2.command(b"DBSIZE") == len(keys), what="replica caught up")

    def probed() -> dict | None:  # the next probe after the writes
        view = sy.api("GET", "/api/redis")["groups"][0]["servers"]
        return view if view[a.address]["keys"] == len(keys) else None

    view = wait_for(probed, what="keys counted by the health probe")
    assert view[a.address]["role"] == "master" and view[a2.address]["role"] == "slave"
    assert view[a.address]["up"] and view[a2.address]["link"] == "up"

    a.stop()
    sy.wait_log(rf"event=redis_promoted group=1 master={a2.address} old={a.address} "
                r"reason=auto_failover")  # fmt: skip
    assert info(a2, "role") == "master"
    group = sy.api("GET", "/api/redis")["groups"][0]
    assert (group["master"], group["replicas"]) == (a2.address, [a.address])
    # fresh connections (either worker) read the old values and write to the new master
    for k in keys[:20]:
        c = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
        assert c.get(k) == k.encode()
        assert c.set(k, "new")
        c.close()
    assert a2.command(b"GET", keys[0].encode()) == b"new"

    # the old master comes back empty and claiming to be a master: it is made a replica
    back = RedisServer(tmp_path, a.port, *fast)
    try:
        sy.wait_log(rf"event=redis_replica_repointed server={a.address} master={a2.address}")
        wait_for(lambda: back.command(b"GET", keys[0].encode()) == b"new", what="old master syncs")
        assert info(back, "role") == "slave"
    finally:
        back.stop()


def test_sentinel_switches_are_followed(tmp_path, redis_servers, steelyard):
    fast = ("--repl-diskless-sync-delay", "0")
    a, a2, b = redis_servers(*fast), redis_servers(*fast), redis_servers()
    a2.command(b"REPLICAOF", b"127.0.0.1", str(a.port).encode())
    wait_for(lambda: info(a2, "master_link_status") == "up", what="replica in sync")
    sentinel = redis_servers(sentinel=True)
    port = free_port()
    cfg = base_config(tmp_path)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}"}],
        "groups": [
            {"id": 1, "master": a.address, "replicas": [a2.address]},
            {"id": 2, "master": b.address},
        ],
        "sentinel": {"addresses": [sentinel.address], "quorum": 1, "down_after": "1s",
                     "failover_timeout": "10s"},
    }  # fmt: skip
    sy = steelyard(cfg)
    # steelyard registered both groups with the sentinel, named as Codis names them
    sy.wait_log(r"event=redis_sentinel_monitor .*name=steelyard-2")
    assert sentinel.command(b"SENTINEL", b"get-master-addr-by-name", b"steelyard-1") == [
        b"127.0.0.1", str(a.port).encode(),
    ]  # fmt: skip
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    key = next(f"s{i}" for i in range(100) if slot_of(f"s{i}".encode()) < 512)
    r.set(key, "before")
    # a script loaded through the proxy: Redis does not replicate its script cache, so the
    # replica the sentinel promotes gets it from steelyard's record
    sha = r.script_load("return redis.call('GET', KEYS[1])")
    assert a2.command(b"SCRIPT", b"EXISTS", sha.encode()) == [0]
    wait_for(lambda: a2.command(b"GET", key.encode()) == b"before", what="replicated")
    # the sentinel must have seen the replica before it can fail over to it
    wait_for(
        lambda: sentinel.command(b"SENTINEL", b"replicas", b"steelyard-1"), what="replica known"
    )
    a.stop()
    sy.wait_log(rf"event=redis_master_switched group=1 master={a2.address} old={a.address}",
                timeout=60)  # fmt: skip
    assert info(a2, "role") == "master"
    assert a2.command(b"SCRIPT", b"EXISTS", sha.encode()) == [1]
    assert r.evalsha(sha, 1, key) == b"before"
    for i in range(6):
        c = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
        assert c.get(key) == (b"before" if i == 0 else b"after")
        assert c.set(key, "after")
        c.close()
    assert a2.command(b"GET", key.encode()) == b"after"
    group = sy.api("GET", "/api/redis")["groups"][0]
    assert (group["master"], group["replicas"]) == (a2.address, [a.address])


def test_reads_go_to_replicas_in_sync(tmp_path, redis_servers, steelyard):
    fast = ("--repl-diskless-sync-delay", "0")
    a, a2, b = redis_servers(*fast), redis_servers(*fast), redis_servers()
    port = free_port()
    cfg = base_config(tmp_path, workers=2)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}", "read_from_replicas": True}],
        "groups": [
            {"id": 1, "master": a.address, "replicas": [a2.address]},
            {"id": 2, "master": b.address},
        ],
        "health_interval": "200ms",
    }
    sy = steelyard(cfg)
    wait_for(lambda: sy.api("GET", "/api/redis")["groups"][0]["readers"] == [a2.address],
             what="the replica fit for reads")  # fmt: skip
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    keys = [f"r{i}" for i in range(100) if slot_of(f"r{i}".encode()) < 512][:10]
    for k in keys:
        assert r.set(k, k)  # writes: the master
    wait_for(lambda: a2.command(b"DBSIZE") == len(keys), what="replicated")

    def calls(server, command: str) -> int:
        text = server.command(b"INFO", b"commandstats").decode()
        for line in text.splitlines():
            if line.startswith(f"cmdstat_{command}:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    for k in keys:
        assert r.get(k) == k.encode()
    assert r.mget(keys) == [k.encode() for k in keys]
    assert calls(a2, "get") == len(keys) and calls(a, "get") == 0
    assert calls(a2, "mget") == 1 and calls(a, "mget") == 0
    assert calls(a, "set") == len(keys)
    # a replica that goes away stops serving reads: the master answers at once, then alone
    a2.stop()
    for k in keys:
        assert r.get(k) == k.encode()
    wait_for(lambda: sy.api("GET", "/api/redis")["groups"][0]["readers"] == [],
             what="the replica taken out of reads")  # fmt: skip
    assert r.get(keys[0]) == keys[0].encode()
    assert calls(a, "get") == len(keys) + 1


def test_failover_during_a_migration_lets_it_finish(tmp_path, redis_servers, steelyard):
    fast = ("--repl-diskless-sync-delay", "0")
    a, a2, b = redis_servers(*fast), redis_servers(*fast), redis_servers()
    a2.command(b"REPLICAOF", b"127.0.0.1", str(a.port).encode())
    wait_for(lambda: info(a2, "master_link_status") == "up", what="replica in sync")
    port = free_port()
    cfg = base_config(tmp_path)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}"}],
        "groups": [
            {"id": 1, "master": a.address, "replicas": [a2.address]},
            {"id": 2, "master": b.address},
        ],
        "auto_failover": True,
        "health_interval": "200ms",
        "migrate_batch": 1,  # a slow mover: the master dies while it works
    }
    sy = steelyard(cfg)
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    p = r.pipeline(transaction=False)
    for i in range(20000):
        p.set(f"m{i}", i)
    p.execute()
    wait_for(lambda: a2.command(b"DBSIZE") == a.command(b"DBSIZE"), what="replica caught up")
    sy.api("POST", "/api/redis/migrate", {"slots": "0-511", "to": 2})
    wait_for(lambda: (sy.api("GET", "/api/redis/migrations")["progress"] or {}).get("moved", 0)
             > 200, what="the mover under way")  # fmt: skip
    a.stop()
    sy.wait_log(rf"event=redis_promoted group=1 master={a2.address} .*reason=auto_failover")
    sy.wait_log(r"event=redis_move_done slots=0-511", timeout=60)
    assert sy.api("GET", "/api/redis/slots")["slots"] == [2] * 1024
    assert a2.command(b"DBSIZE") == 0
    # every key that had reached the replica is served from its new home
    values = r.mget([f"m{i}" for i in range(20000)])
    assert values == [str(i).encode() for i in range(20000)]
