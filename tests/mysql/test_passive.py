"""Passive health on the MySQL tier: a replica that cannot be reached is reported by the
workers as they fail to connect to it, ejected after `passive.consecutive_failures`, and the
reads that met it went to another replica (nothing had been sent: any command may move)."""

from __future__ import annotations

from fixtures.mariadb import PASSWORD, USER
from fixtures.mysql_client import connect, one
from fixtures.procs import base_config, free_port, wait_for


def test_an_unreachable_replica_is_ejected_and_reads_move_on(tmp_path, replication, steelyard):
    primary, *replicas = replication
    port, dead = free_port(), free_port()  # nothing listens on `dead`
    slow_checks = {"kind": "mysql", "interval": "1h"}  # only passive results act here
    cfg = base_config(
        tmp_path,
        pools={
            "primary": {"health": slow_checks, "servers": [{"address": primary.address}]},
            "replicas": {
                "health": slow_checks,
                "passive": {"consecutive_failures": 2, "eject_for": "1m", "max_ejected": 0.5},
                "servers": [{"address": f"127.0.0.1:{dead}"},
                            *({"address": r.address} for r in replicas)],
            },
        },
        mysql={"listeners": [{
            "listen": f"127.0.0.1:{port}",
            "users": [{"name": "app", "password": "proxy-secret"}],
            "backend_user": USER, "backend_password": PASSWORD,
            "primary": "primary", "replicas": "replicas",
        }]},
    )  # fmt: skip
    sy = steelyard(cfg)
    conn = wait_for(lambda: connect(port), what="the proxy accepting logins")
    seen = {one(conn, "SELECT @@server_id") for _ in range(30)}  # not one error
    assert seen == {2, 3}

    def dead_server() -> dict:
        pools = {p["name"]: p for p in sy.api("GET", "/api/pools")["pools"]}
        return next(s for s in pools["replicas"]["servers"] if s["address"].endswith(f":{dead}"))

    def ejected() -> dict | None:
        s = dead_server()
        return s if s["ejected"] and s["failures"] >= 2 else None  # failures come with stats

    assert not wait_for(ejected, what="the replica ejected")["usable"]
    conn.close()
