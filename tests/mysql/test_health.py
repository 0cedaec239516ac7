"""`health: {kind: mysql}` under `steelyard run`: a pool of MariaDB servers checked by logging
in and running SELECT 1, as an HAProxy `mode tcp` front of MySQL would be with mysql-check."""

from __future__ import annotations

from fixtures.mariadb import PASSWORD, USER
from fixtures.procs import base_config, free_port, wait_for


def check_of(sy, pool: str) -> dict:
    for p in sy.api("GET", "/api/pools")["pools"]:
        if p["name"] == pool:
            return p["servers"][0]
    raise KeyError(pool)


def test_mysql_health_check_logs_in(tmp_path, mariadb, steelyard):
    health = {"kind": "mysql", "interval": "200ms", "timeout": "1s", "user": USER}
    cfg = base_config(
        tmp_path,
        pools={
            "good": {"health": {**health, "password": PASSWORD},
                     "servers": [{"address": mariadb.address}]},
            "bad": {"health": {**health, "password": "wrong", "fall": 2},
                    "servers": [{"address": mariadb.address}]},
        },
        tcp=[{"name": "db", "listen": f"127.0.0.1:{free_port()}", "pool": "good"}],
    )  # fmt: skip
    sy = steelyard(cfg)
    good = wait_for(lambda: (s := check_of(sy, "good"))["check"]["checks"] >= 2 and s,
                    what="probes of the good pool")  # fmt: skip
    assert good["health"] == "up" and good["check"]["last_detail"] == "SELECT 1 ok"
    # what the check learnt on the way; no replication facts where lag is not checked
    facts = good["check"]["last_facts"]
    assert facts["read_only"] is False and "MariaDB" in facts["version"]
    assert set(facts) == {"read_only", "version"}
    sy.wait_log(r"event=health_flip pool=bad .*state=down")
    bad = check_of(sy, "bad")
    assert bad["health"] == "down"
    assert bad["check"]["last_detail"].startswith(f"error 1045: Access denied for user '{USER}'")
    assert bad["check"]["last_facts"] is None  # refused at login: nothing learnt


def test_the_mysql_check_needs_a_user(tmp_path):
    from fixtures.procs import run_with_config

    pool = {"health": {"kind": "mysql"}, "servers": [{"address": "127.0.0.1:3306"}]}
    cfg = base_config(tmp_path, pools={"db": pool})
    out = run_with_config(tmp_path, cfg)
    assert out.returncode != 0
    want = "pools.db.health: the mysql check logs in: give it a user, or use the pool in a "
    assert f"run.yaml:5: {want}mysql listener" in out.stderr
