"""Libraries and scripts loaded through the proxy reach masters that join later, under
`steelyard run`: a group added through the admin API gets them before a slot moves to it, a
promoted replica gets the scripts (Redis 7 replicates functions, not its script cache), and
the dashboard's record of scripts is bounded and cleared by SCRIPT FLUSH."""

from __future__ import annotations

import hashlib
import json
import urllib.error

import pytest
import redis as redis_py

from fixtures.procs import base_config, free_port, wait_for
from steelyard.core.store.embedded import EmbeddedStore
from steelyard.redis.library import ScriptRecord
from steelyard.redis.slots import slot_of

LIB = (
    "#!lua name=lib\n"
    "redis.register_function('put', function(keys, args) "
    "return redis.call('SET', keys[1], args[1]) end)"
)
SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
FAST = ("--repl-diskless-sync-delay", "0")  # no 5 s wait before a full sync


def config(tmp_path, port: int, groups: list[dict]) -> dict:
    cfg = base_config(tmp_path, workers=2)
    cfg["redis"] = {"proxies": [{"listen": f"127.0.0.1:{port}"}], "groups": groups}
    return cfg


def client(port: int) -> redis_py.Redis:
    c = redis_py.Redis(port=port, protocol=2, socket_timeout=30)
    wait_for(c.ping, what="redis listener")
    return c


def kept(sy) -> int:
    return sy.api("GET", "/api/redis")["scripts"]["kept"]


def load_both(sy, c: redis_py.Redis) -> None:
    assert c.function_load(LIB) == b"lib"
    assert c.script_load(SCRIPT) == SHA
    wait_for(lambda: kept(sy) == 1, what="the script in the dashboard's record")


def test_a_group_added_later_gets_functions_and_scripts_before_its_first_slot(
    tmp_path, redis_servers, steelyard
):
    a, b, c3 = redis_servers(), redis_servers(), redis_servers()
    port = free_port()
    groups = [{"id": 1, "master": a.address}, {"id": 2, "master": b.address}]
    sy = steelyard(config(tmp_path, port, groups))
    c = client(port)
    load_both(sy, c)
    sy.api("POST", "/api/redis/groups", {"id": 3, "master": c3.address})
    assert c3.command(b"FUNCTION", b"LIST") == []  # nothing yet: no slot either
    key = "moving-key"
    c.set(key, 1)
    sy.api("POST", "/api/redis/migrate", {"slots": str(slot_of(key.encode())), "to": 3})
    sy.wait_log(rf"event=redis_group_equipped group=3 master={c3.address} functions=copied "
                rf"source=\S+ scripts=1")  # fmt: skip
    wait_for(lambda: not sy.api("GET", "/api/redis/migrations")["moves"], what="slot moved")
    assert sy.api("GET", "/api/redis/slots")["slots"][slot_of(key.encode())] == 3
    assert c3.command(b"FUNCTION", b"LIST")[0][1] == b"lib"
    assert c3.command(b"SCRIPT", b"EXISTS", SHA.encode()) == [1]
    # EVALSHA and FCALL on the slot's keys run on group 3, from every worker
    for i in range(6):
        fresh = redis_py.Redis(port=port, protocol=2, socket_timeout=30)
        assert fresh.evalsha(SHA, 1, key, 1) == 2 + i
        fresh.close()
    assert c3.command(b"GET", key.encode()) == b"7"
    assert c.fcall("put", 1, key, "v") == b"OK" and c3.command(b"GET", key.encode()) == b"v"


def test_a_promoted_replica_gets_the_scripts(tmp_path, redis_servers, steelyard):
    a, a2, b = redis_servers(*FAST), redis_servers(*FAST), redis_servers()
    port = free_port()
    groups = [{"id": 1, "master": a.address, "replicas": [a2.address]},
              {"id": 2, "master": b.address}]  # fmt: skip
    sy = steelyard(config(tmp_path, port, groups))
    sy.wait_log(rf"event=redis_replica_repointed server={a2.address} master={a.address}")
    c = client(port)
    load_both(sy, c)
    key = next(f"p{i}" for i in range(200) if slot_of(f"p{i}".encode()) < 512)  # group 1's
    c.set(key, 10)
    wait_for(lambda: a2.command(b"GET", key.encode()) == b"10", what="replica in sync")
    # Redis 7: the replica has the library (replicated), not the script
    assert a2.command(b"FUNCTION", b"LIST")[0][1] == b"lib"
    assert a2.command(b"SCRIPT", b"EXISTS", SHA.encode()) == [0]
    sy.api("POST", "/api/redis/groups/1/promote", {"address": a2.address})
    assert a2.command(b"SCRIPT", b"EXISTS", SHA.encode()) == [1]
    for i in range(6):  # both workers route group 1 to the new master now
        fresh = redis_py.Redis(port=port, protocol=2, socket_timeout=30)
        assert fresh.evalsha(SHA, 1, key, 1) == 11 + i
        fresh.close()
    assert a2.command(b"GET", key.encode()) == b"16"
    assert c.fcall("put", 1, key, "v") == b"OK" and a2.command(b"GET", key.encode()) == b"v"
    # SCRIPT FLUSH through the proxy clears the record
    assert c.script_flush() is True
    wait_for(lambda: kept(sy) == 0, what="the record cleared")
    sy.wait_log(r"event=redis_scripts_flushed scripts=1")


def test_the_record_is_kept_in_the_store_and_bounded(tmp_path):
    store = EmbeddedStore(tmp_path)
    record = ScriptRecord(store, max_scripts=3, max_bytes=40)
    bodies = [b"return 1", b"return 2", b"return '\xff\x00'"]
    for body in bodies:
        assert record.add(body)
    assert record.add(bodies[0])  # once
    assert not record.add(b"return 4")  # over the count
    assert record.dropped == 1
    # read back by the next supervisor, byte for byte
    again = ScriptRecord(store, max_scripts=3, max_bytes=40)
    assert sorted(again.bodies.values()) == sorted(bodies)
    assert again.bodies[hashlib.sha1(bodies[2]).hexdigest()] == bodies[2]
    again.reported({"t": "redis_script", "flush": True})
    assert again.bodies == {} and ScriptRecord(store).bodies == {}
    small = ScriptRecord(store, max_scripts=10, max_bytes=12)
    assert small.add(b"return 1") and not small.add(b"return 22")  # over the bytes
    small.reported({"t": "redis_script", "body": "return 3"})
    assert len(small.bodies) == 1 and small.dropped == 2
    store.close()


def test_replicas_serving_reads_get_the_scripts(tmp_path, redis_servers, steelyard):
    """With read_from_replicas, EVALSHA_RO may run on a replica, which has no script its
    master cached: SCRIPT LOAD goes to the replicas serving reads too, and a replica that
    starts serving reads gets the recorded scripts first."""
    a, a2, b = redis_servers(*FAST), redis_servers(*FAST), redis_servers()
    port = free_port()
    cfg = config(tmp_path, port, [{"id": 1, "master": a.address}, {"id": 2, "master": b.address}])
    cfg["redis"]["proxies"][0]["read_from_replicas"] = True
    cfg["redis"]["health_interval"] = "200ms"
    sy = steelyard(cfg)
    c = client(port)
    load_both(sy, c)  # before the replica exists
    key = next(f"r{i}" for i in range(200) if slot_of(f"r{i}".encode()) < 512)  # group 1's
    c.set(key, 5)
    sy.api("POST", "/api/redis/groups/1/servers", {"address": a2.address})

    def reading() -> bool:
        return sy.api("GET", "/api/redis")["groups"][0]["readers"] == [a2.address]

    wait_for(reading, what="the replica serving reads")
    assert a2.command(b"SCRIPT", b"EXISTS", SHA.encode()) == [1]  # given before it served
    read = "return redis.call('GET', KEYS[1])"
    read_sha = c.script_load(read)  # on the masters and the replica serving reads
    assert a2.command(b"SCRIPT", b"EXISTS", read_sha.encode()) == [1]
    for _ in range(6):
        fresh = redis_py.Redis(port=port, protocol=2, socket_timeout=30)
        assert fresh.evalsha_ro(read_sha, 1, key) == b"5"
        fresh.close()
    stats = a2.command(b"INFO", b"commandstats").decode()
    assert "cmdstat_evalsha_ro:calls=" in stats  # run on the replica, without NOSCRIPT
    line = stats.split("cmdstat_evalsha_ro:")[1].split("\r\n")[0]
    assert "rejected_calls=0,failed_calls=0" in line, line


def test_a_group_that_cannot_take_the_functions_gets_no_slot(tmp_path, redis_servers, steelyard):
    """FUNCTION RESTORE refused by the new master (here its ACL): the migration is refused
    with the server's error, so no FCALL can reach a master without its library."""
    a, b = redis_servers(), redis_servers()
    c3 = redis_servers("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-function")
    port = free_port()
    groups = [{"id": 1, "master": a.address}, {"id": 2, "master": b.address}]
    sy = steelyard(config(tmp_path, port, groups))
    c = client(port)
    load_both(sy, c)
    sy.api("POST", "/api/redis/groups", {"id": 3, "master": c3.address})
    slot = slot_of(b"k")
    with pytest.raises(urllib.error.HTTPError) as info:
        sy.api("POST", "/api/redis/migrate", {"slots": str(slot), "to": 3})
    assert info.value.code == 502
    assert "a Redis server refused: " in json.loads(info.value.read())["error"]
    assert sy.api("GET", "/api/redis/migrations")["moves"] == []
    assert sy.api("GET", "/api/redis/slots")["slots"][slot] in (1, 2)
    assert c.fcall("put", 1, "k", "v") == b"OK"  # still served where it was


def test_a_backend_user_without_function_still_moves_slots(tmp_path, redis_servers, steelyard):
    """The README's hardened backend ACL (-function -script): nothing can be loaded through
    the proxy, and a slot still moves to a new group (no library to copy)."""
    acl = ("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-function", "-script")
    a, b, c3 = redis_servers(*acl), redis_servers(*acl), redis_servers(*acl)
    port = free_port()
    groups = [{"id": 1, "master": a.address}, {"id": 2, "master": b.address}]
    sy = steelyard(config(tmp_path, port, groups))
    c = client(port)
    with pytest.raises(redis_py.exceptions.NoPermissionError):
        c.function_load(LIB)
    c.set("k", "v")
    sy.api("POST", "/api/redis/groups", {"id": 3, "master": c3.address})
    sy.api("POST", "/api/redis/migrate", {"slots": str(slot_of(b"k")), "to": 3})
    sy.wait_log(rf"event=redis_group_equipped group=3 master={c3.address} functions=denied")
    wait_for(lambda: not sy.api("GET", "/api/redis/migrations")["moves"], what="slot moved")
    assert c3.command(b"GET", b"k") == b"v" and c.get("k") == b"v"
