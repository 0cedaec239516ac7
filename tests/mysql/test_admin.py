"""The MySQL tier's admin side under `steelyard run`, over a MariaDB primary and two replicas:
GET /api/mysql (servers, roles, lag, traffic, backend connections), /metrics, and
`steelyard ctl mysql` taking a server offline and back online. The aggregator behind them
(steelyard.mysql.status) is tested on its own at the end, without processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error

import pymysql
import pytest

from fixtures.mariadb import PASSWORD, USER
from fixtures.mysql_client import connect, one
from fixtures.procs import base_config, wait_for
from steelyard.core.health.mysql import check_mysql
from steelyard.mysql.status import COUNTERS, MysqlStats


def ctl(sy, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steelyard.cli", "ctl", "--admin", sy.admin, "mysql", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def listener(sy) -> dict:
    (lst,) = sy.api("GET", "/api/mysql")["listeners"]
    return lst


def rows(lst: dict) -> dict[str, dict]:
    return {s["address"]: s for s in lst["servers"]}


def checked(sy):
    """The listener once every server has been checked: read_only known, lag on replicas."""
    lst = listener(sy)
    ok = all(
        s["health"] == "up"
        and s["read_only"] is not None
        and (s["role"] == "primary" or s["lag"] is not None)
        for s in lst["servers"]
    )
    return lst if ok else None


def reported(sy, pred):
    """The listener once the workers' reports satisfy `pred(listener)`."""

    def ready() -> dict | None:
        lst = listener(sy)
        return lst if pred(lst) else None

    return wait_for(ready, what="stats reports")


def refused(sy, method: str, path: str, body=None) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as info:
        sy.api(method, path, body)
    return info.value.code, json.loads(info.value.read())["error"]


def test_the_view_shows_servers_roles_lag_and_traffic(proxy):
    port, primary, replicas, sy = proxy
    conn = wait_for(lambda: connect(port), what="the proxy accepting logins")
    lst = wait_for(lambda: checked(sy), what="a check of every server")
    assert (lst["listen"], lst["primary"], lst["replicas"]) == (
        f"127.0.0.1:{port}", "primary", "replicas",
    )  # fmt: skip
    servers = rows(lst)
    assert list(servers) == [primary.address, *(r.address for r in replicas)]
    p = servers[primary.address]
    assert (p["pool"], p["role"], p["read_only"], p["state"]) == (
        "primary",
        "primary",
        False,
        "ready",
    )
    assert p["lag"] is None and "MariaDB" in p["version"]
    for r in replicas:
        s = servers[r.address]
        assert (s["pool"], s["role"], s["read_only"], s["health"]) == (
            "replicas", "replica", True, "up",
        )  # fmt: skip
        assert (s["lag"], s["io_running"], s["sql_running"]) == (0, True, True)

    # Once a read is counted, every command before it is too (one worker, whole rows).
    assert one(conn, "SELECT 1") == 1
    lst = reported(sy, lambda lst: lst["counters"]["replica"] >= 1 and lst["sessions"] == 1)
    assert lst["workers"] == 1
    before = lst["counters"]
    seen = {one(conn, "SELECT @@server_id") for _ in range(10)}
    assert seen == {2, 3}
    lst = reported(sy, lambda lst: lst["counters"]["replica"] >= before["replica"] + 10)
    after = lst["counters"]
    assert (after["replica"], after["primary"]) == (before["replica"] + 10, before["primary"])
    with conn.cursor() as c:
        c.execute("CREATE DATABASE IF NOT EXISTS admin_view")
        c.execute("CREATE TABLE IF NOT EXISTS admin_view.t (id INT)")
        for i in range(3):
            c.execute("INSERT INTO admin_view.t VALUES (%s)", (i,))
    lst = reported(sy, lambda lst: lst["counters"]["primary"] >= after["primary"] + 5)
    assert (lst["counters"]["primary"], lst["counters"]["replica"]) == (
        after["primary"] + 5, after["replica"],
    )  # fmt: skip
    assert set(lst["rates"]) == {*COUNTERS, "commands"}

    # Backend connections: each server served this session, and lent none out between commands.
    for s in lst["servers"]:
        assert s["open"] >= 1 and s["logins"] >= 1, s
        assert s["busy"] == s["open"] - s["idle"] == 0, s

    out = ctl(sy)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"listener 127.0.0.1:{port} (primary primary, replicas replicas): " \
        "1 session, 1 worker reporting"  # fmt: skip
    assert lines[1].split() == ["SERVER", "POOL", "ROLE", "HEALTH", "STATE", "LAG", "OPEN",
                                "IDLE", "BUSY", "LOGINS"]  # fmt: skip
    table = {line.split()[0]: line.split() for line in lines[2:5]}
    assert table[primary.address][1:6] == ["primary", "primary", "rw", "up", "ready"]
    assert table[primary.address][6] == "-"  # no lag on a primary
    for r in replicas:
        assert table[r.address][1:7] == ["replicas", "replica", "ro", "up", "ready", "0s"]
    assert re.fullmatch(
        r"commands: primary \d+, replica \d+ \([\d.]+/s\); errors: server 0, proxy 0; "
        r"refused 0; pool waits \d+",
        lines[5],
    ), lines[5]
    conn.close()


def test_offline_takes_a_replica_out_of_rotation_and_online_brings_it_back(proxy):
    port, primary, replicas, sy = proxy
    conn = wait_for(lambda: connect(port), what="the proxy accepting logins")
    wait_for(lambda: checked(sy), what="a check of every server")
    wait_for(lambda: {one(conn, "SELECT @@server_id") for _ in range(6)} == {2, 3},
             what="reads on both replicas")  # fmt: skip
    out_of = replicas[0]
    out = ctl(sy, "offline", out_of.address)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{out_of.address}: offline (pool replicas drain)\n"
    # The PUT returns once the change is sent; each worker applies it as it reads it.
    wait_for(lambda: {one(conn, "SELECT @@server_id") for _ in range(6)} == {3},
             what="reads leaving the offline replica")  # fmt: skip
    assert {one(conn, "SELECT @@server_id") for _ in range(20)} == {3}
    assert one(conn, "/*master*/ SELECT @@server_id") == 1  # writes and the primary: as before
    assert rows(listener(sy))[out_of.address]["state"] == "drain"
    assert sy.server("replicas", out_of.address)["state"] == "drain"  # the same admin state
    # its idle pooled connections are closed: the server sees the proxy go
    wait_for(lambda: rows(listener(sy))[out_of.address]["open"] == 0,
             what="the offline replica's pooled connections closed")  # fmt: skip

    out = ctl(sy, "online", out_of.address, "--json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert (answer["address"], answer["state"]) == (out_of.address, "online")
    assert [(s["listen"], s["pool"], s["state"]) for s in answer["servers"]] == [
        (f"127.0.0.1:{port}", "replicas", "ready"),
    ]
    wait_for(lambda: {one(conn, "SELECT @@server_id") for _ in range(6)} == {2, 3},
             what="reads on both replicas again")  # fmt: skip

    # Offline of the primary: a transaction under way there finishes; then writes are refused.
    with conn.cursor() as c:
        c.execute("CREATE DATABASE IF NOT EXISTS admin_offline")
        c.execute("CREATE TABLE IF NOT EXISTS admin_offline.t (id INT)")
        conn.begin()
        c.execute("INSERT INTO admin_offline.t VALUES (1)")
        out = ctl(sy, "offline", primary.address)
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"{primary.address}: offline (pool primary drain)\n"
        c.execute("INSERT INTO admin_offline.t VALUES (2)")
        conn.commit()

        def write(value: int) -> pymysql.err.OperationalError | None:
            try:
                c.execute(f"INSERT INTO admin_offline.t VALUES ({value})")
            except pymysql.err.OperationalError as exc:
                return exc
            return None

        # (the PUT returns once the change is sent; each worker applies it as it reads it)
        err = wait_for(lambda: write(3), what="writes refused with the primary offline")
        assert err.args[0] == 2013 and "no server of pool 'primary' is usable" in err.args[1]
        assert ctl(sy, "online", primary.address).returncode == 0
        assert rows(listener(sy))[primary.address]["state"] == "ready"
        wait_for(lambda: write(4) is None, what="writes again")
    assert one(conn, "/*master*/ SELECT COUNT(*) FROM admin_offline.t WHERE id < 3") == 2
    conn.close()


def test_bad_requests_are_refused_with_the_reason(proxy):
    port, _, replicas, sy = proxy
    out = ctl(sy, "offline", "127.0.0.1:1")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "error: 404 '127.0.0.1:1' is not a server of a mysql listener's pools"
    )
    path = f"/api/mysql/servers/{replicas[0].address}"
    assert refused(sy, "PUT", path, {"state": "down"}) == (
        400, "state must be offline or online, not 'down'",
    )  # fmt: skip
    assert refused(sy, "PUT", path, {"state": "offline", "weight": 1}) == (
        400, 'unknown key(s) \'weight\': expected a JSON object like {"state": "offline"} or '
        '{"state": "online"}',
    )  # fmt: skip
    assert refused(sy, "PUT", path, [])[0] == 400
    # nothing changed, and the proxy still serves
    assert rows(listener(sy))[replicas[0].address]["state"] == "ready"
    conn = wait_for(lambda: connect(port), what="the proxy accepting logins")
    assert one(conn, "SELECT 1") == 1
    conn.close()


def test_without_a_mysql_section_the_routes_say_so(tmp_path, steelyard):
    sy = steelyard(base_config(tmp_path))
    assert refused(sy, "GET", "/api/mysql") == (404, "no mysql: section in the config")
    assert refused(sy, "PUT", "/api/mysql/servers/127.0.0.1:3306", {"state": "offline"}) == (
        404, "'127.0.0.1:3306' is not a server of a mysql listener's pools",
    )  # fmt: skip
    out = ctl(sy)
    assert (out.returncode, out.stderr) == (1, "error: 404 no mysql: section in the config\n")
    assert "steelyard_mysql_sessions{" not in sy.api("GET", "/metrics").decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return None if m is None else float(m.group(1))


def test_metrics_count_commands_errors_refusals_and_connections(proxy):
    port, primary, replicas, sy = proxy
    conn = wait_for(lambda: connect(port), what="the proxy accepting logins")
    wait_for(lambda: checked(sy), what="a check of every server")
    for _ in range(4):
        one(conn, "SELECT @@server_id")
    with conn.cursor() as c:
        c.execute("CREATE DATABASE IF NOT EXISTS admin_metrics")
        with pytest.raises(pymysql.err.ProgrammingError):
            c.execute("SELECT * FROM admin_metrics.no_such_table")
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host="127.0.0.1", port=port, user="app", password="wrong")
    reported(sy, lambda lst: lst["counters"]["refused"] >= 1 and lst["counters"]["primary"] >= 1)

    text = sy.api("GET", "/metrics").decode()
    name = f"127.0.0.1:{port}"
    assert metric(text, "steelyard_mysql_sessions", listener=name) == 1
    assert metric(text, "steelyard_mysql_commands_total", listener=name, route="replica") >= 5
    assert metric(text, "steelyard_mysql_commands_total", listener=name, route="primary") >= 1
    assert metric(text, "steelyard_mysql_errors_total", listener=name, source="server") == 1
    assert metric(text, "steelyard_mysql_errors_total", listener=name, source="proxy") == 0
    assert metric(text, "steelyard_mysql_refused_total", listener=name) == 1
    assert metric(text, "steelyard_mysql_pool_waits_total", listener=name) >= 0
    assert "# TYPE steelyard_mysql_commands_total counter" in text
    assert "# TYPE steelyard_mysql_backend_connections gauge" in text
    idle = metric(text, "steelyard_mysql_backend_connections", listener=name,
                  server=primary.address, state="idle")  # fmt: skip
    busy = metric(text, "steelyard_mysql_backend_connections", listener=name,
                  server=primary.address, state="busy")  # fmt: skip
    assert idle is not None and idle >= 1 and busy == 0
    for r in replicas:
        lag = metric(text, "steelyard_mysql_replication_lag_seconds", pool="replicas",
                     server=r.address)  # fmt: skip
        assert lag == 0
    # a primary's lag is not read: no series rather than a made-up 0
    assert 'steelyard_mysql_replication_lag_seconds{pool="primary"' not in text
    conn.close()


async def test_the_mysql_check_reports_what_it_learnt(replication):
    primary, replica, _ = replication
    ok = await check_mysql("127.0.0.1", primary.port, 2.0, USER, PASSWORD)
    assert ok.ok and ok.detail == "SELECT 1 ok"
    assert ok.facts is not None and ok.facts["read_only"] is False
    assert ok.facts["version"] == primary.sql("SELECT @@version").strip()
    r = await check_mysql("127.0.0.1", replica.port, 2.0, USER, PASSWORD, max_lag=5.0)
    assert r.ok and r.facts is not None
    assert (r.facts["read_only"], r.facts["lag"], r.facts["io_running"], r.facts["sql_running"]) \
        == (True, 0, True, True)  # fmt: skip
    # a failed check still tells what it saw
    replica.sql("STOP SLAVE SQL_THREAD")
    try:
        r = await check_mysql("127.0.0.1", replica.port, 2.0, USER, PASSWORD, max_lag=5.0)
    finally:
        replica.sql("START SLAVE SQL_THREAD")
    assert not r.ok and r.facts is not None
    assert (r.facts["lag"], r.facts["io_running"], r.facts["sql_running"]) == (None, True, False)
    r = await check_mysql("127.0.0.1", primary.port, 2.0, USER, PASSWORD, max_lag=5.0)
    assert r.detail == "not a replica (SHOW SLAVE STATUS is empty)"
    assert r.facts is not None
    assert (r.facts["lag"], r.facts["io_running"], r.facts["sql_running"]) == (None, False, False)


# the aggregator, without processes ------------------------------------------------------------


def row(listen: str, sessions: int, servers: dict | None = None, **counters: int) -> list:
    return [listen, sessions, {k: counters.get(k, 0) for k in COUNTERS}, servers or {}]


def test_rows_from_workers_are_summed_and_rated():
    stats = MysqlStats(stale=5.0)
    stats.update(0, [row("a", 2, {"s1": [3, 1, 4]}, primary=10, replica=100)], now=100.0)
    stats.update(1, [row("a", 1, {"s1": [2, 2, 2]}, primary=5)], now=100.5)
    stats.update(0, [row("a", 3, {"s1": [3, 0, 5]}, primary=12, replica=130)], now=101.0)
    t = stats.listener("a", now=101.2)
    assert (t.workers, t.sessions) == (2, 4)
    assert (t.counters["primary"], t.counters["replica"]) == (17, 130)
    assert (t.rates["primary"], t.rates["replica"]) == (2.0, 30.0)  # worker 1 has no rate yet
    assert t.servers == {"s1": [5, 2, 7]}
    assert stats.listener("b").workers == 0  # another listener: nothing


def test_a_stale_worker_counts_no_more_but_its_counts_stay():
    stats = MysqlStats(stale=5.0)
    stats.update(0, [row("a", 2, {"s1": [3, 1, 4]}, replica=10)], now=100.0)
    stats.update(1, [row("a", 1, {"s1": [1, 1, 1]}, replica=5)], now=100.0)
    stats.update(1, [row("a", 1, {"s1": [1, 1, 1]}, replica=7)], now=104.0)
    t = stats.listener("a", now=106.0)  # worker 0 silent for 6 s
    assert (t.workers, t.sessions) == (1, 1)
    assert t.rates["replica"] == 0.5
    assert t.servers == {"s1": [1, 1, 5]}  # open and idle of the live worker, logins of both
    assert t.counters["replica"] == 17  # a total does not go down
    # worker 1 exits; a new worker 1 starts again from zero
    stats.worker_gone(1)
    assert stats.listener("a", now=106.0).workers == 0
    stats.update(1, [row("a", 1, {"s1": [1, 0, 1]}, replica=2)], now=107.0)
    t = stats.listener("a", now=107.0)
    assert (t.workers, t.counters["replica"], t.servers["s1"]) == (1, 19, [1, 0, 6])
    # worker 0 comes back restarted under its index without an exit seen: still no drop
    stats.update(0, [row("a", 0, {}, replica=1)], now=108.0)
    t = stats.listener("a", now=108.0)
    assert (t.workers, t.counters["replica"], t.servers["s1"]) == (2, 20, [1, 0, 6])
    assert t.rates["replica"] == 0.0  # no rate across a restart
