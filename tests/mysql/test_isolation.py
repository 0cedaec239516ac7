"""No session state crosses from one client to another through a pooled backend connection.

The attack (issue 12, against steelyard before the fix, MariaDB 10.11): session A ran
`SELECT 1; USE otherdb` (a multi-statement: the proxy saw only `SELECT`) and disconnected;
session B, another proxy user, was handed the same backend connection and read otherdb's rows
with an unqualified `SELECT * FROM t`. The same held for a SET, a temporary table, a user
variable or a text PREPARE hidden in a multi-statement, in a procedure (CALL) or in EXECUTE
IMMEDIATE.

Each case here: A leaves the state and disconnects; once the connection is back in the pool
(one per server: `backend_pool_size: 1`), B logs in on the SAME backend connection (the same
server thread id, @@pseudo_thread_id: CONNECTION_ID() through the proxy is the proxy's session
id; so the test would catch a proxy that merely closes connections) and sees
none of it. Clients: PyMySQL (no CLIENT_SESSION_TRACK: the proxy's own reading of the
statements decides), the codec's raw client (with CLIENT_SESSION_TRACK: the server's
SERVER_SESSION_STATE_CHANGED flag proves changes too), and the mariadb command-line client.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from fixtures.mariadb import PASSWORD, USER
from fixtures.mysql_client import CAPS, RawClient
from fixtures.procs import base_config, free_port, wait_for
from steelyard.mysql.client import read_result
from steelyard.mysql.protocol.constants import Capability, Command

DB = "iso"


@pytest.fixture
def primary(replication):
    primary = replication[0]
    primary.sql(
        f"CREATE DATABASE IF NOT EXISTS {DB}; CREATE DATABASE IF NOT EXISTS {DB}_other;"
        f"CREATE TABLE IF NOT EXISTS {DB}_other.t (secret VARCHAR(20));"
        f"DELETE FROM {DB}_other.t; INSERT INTO {DB}_other.t VALUES ('tenant-a-row');"
        f"CREATE TABLE IF NOT EXISTS {DB}.t (id INT);"
        f"CREATE OR REPLACE PROCEDURE {DB}.setz() SET @z = 'from-proc';"
        f"CREATE OR REPLACE FUNCTION {DB}.sety() RETURNS INT DETERMINISTIC "
        "RETURN LENGTH(@y := 'from-func');"
    )
    return primary


@pytest.fixture
def pooled(tmp_path, steelyard, primary):
    """A proxy over the primary alone, one pooled connection per server; users app and other."""
    port = free_port()
    cfg = base_config(
        tmp_path,
        pools={"primary": {"servers": [{"address": primary.address}]}},
        mysql={"listeners": [{
            "listen": f"127.0.0.1:{port}",
            "users": [{"name": "app", "password": "pw"}, {"name": "other", "password": "pw2"}],
            "backend_user": USER, "backend_password": PASSWORD, "primary": "primary",
            "backend_pool_size": 1,
        }]},
    )  # fmt: skip
    cfg["log_level"] = "debug"  # mysql_connection_reset: when a connection is back, reset
    sy = steelyard(cfg)
    wait_for(lambda: _login(port, "app", "pw"), what="the proxy").close()
    return port, sy


def _login(port: int, user: str, password: str) -> pymysql.Connection:
    return pymysql.connect(
        host="127.0.0.1", port=port, user=user, password=password, autocommit=True,
        client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
    )  # fmt: skip


# Cases whose state the session follows itself: A's connection goes back to the pool as soon as
# A's command is answered (and is reset when B, in another state, borrows it); in the others A
# keeps its connection, which is reset when A leaves and then pooled.
FOLLOWED = {"SET SESSION", "visible USE"}
# A connection whose database is set never serves a session without one (COM_INIT_DB cannot
# leave a database, COM_RESET_CONNECTION keeps it): B gets another connection.
IN_A_DATABASE = {"visible USE", "hidden USE", "hidden USE, then a table"}


def _back(sy, case: str, thread_id: int) -> None:
    """Until A's connection is back in the pool."""
    if case not in FOLLOWED:
        sy.wait_log(rf"event=mysql_connection_reset .*id={thread_id}\b")


def _error(run: Callable[[], Any]) -> Any:
    """The value, or ("error", code) when the server refused."""
    try:
        return run()
    except pymysql.err.MySQLError as exc:
        return ("error", exc.args[0])


# (what A does, what B asks, what B must get): B is never told what A left
CASES = [
    ("hidden USE", ["SELECT 1; USE iso_other"], "SELECT DATABASE()", None),
    ("hidden USE, then a table", ["SELECT 1; USE iso_other"], "SELECT secret FROM t",
     ("error", 1046)),
    ("visible USE", ["USE iso_other"], "SELECT DATABASE()", None),
    ("hidden SET", ["SELECT 1; SET SESSION time_zone = '+05:00'"],
     "SELECT @@session.time_zone", "SYSTEM"),
    ("SET SESSION", ["SET SESSION time_zone = '+05:00'"], "SELECT @@session.time_zone", "SYSTEM"),
    ("user variable", ["SET @secret = 'tenant-a'"], "SELECT @secret", None),
    ("hidden user variable", ["SELECT 1; SET @secret = 'tenant-a'"], "SELECT @secret", None),
    ("user variable in an executable comment", ["/*!SET @secret = 'tenant-a'*/"],
     "SELECT @secret", None),
    ("temporary table", [f"CREATE TEMPORARY TABLE {DB}.shadow (v INT)"],
     f"SELECT v FROM {DB}.shadow", ("error", 1146)),
    ("hidden temporary table", [f"SELECT 1; CREATE TEMPORARY TABLE {DB}.shadow (v INT)"],
     f"SELECT v FROM {DB}.shadow", ("error", 1146)),
    ("text PREPARE", ["PREPARE s FROM 'SELECT 1'"], "EXECUTE s", ("error", 1243)),
    ("procedure", [f"CALL {DB}.setz()"], "SELECT @z", None),
    ("EXECUTE IMMEDIATE", ["EXECUTE IMMEDIATE 'SET @w = 1'"], "SELECT @w", None),
    ("GET_LOCK", ["SELECT GET_LOCK('iso-lock', 0)"], "SELECT IS_FREE_LOCK('iso-lock')", 1),
    ("open transaction", ["BEGIN", f"INSERT INTO {DB}.t VALUES (99)"],
     "SELECT @@in_transaction", 0),
]  # fmt: skip


def _one_value(conn: pymysql.Connection, sql: str) -> Any:
    with conn.cursor() as c:
        c.execute(sql)
        row = c.fetchone()
        while c.nextset():
            pass
    if row is None:
        return None
    value = row[0]
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.parametrize(("case", "leave", "ask", "expected"), CASES, ids=[c[0] for c in CASES])
def test_nothing_crosses_with_pymysql(pooled, case, leave, ask, expected):
    port, sy = pooled
    a = _login(port, "app", "pw")
    with a.cursor() as c:
        for sql in leave:
            c.execute(sql)
            while c.nextset():
                pass
    a_id = _one_value(a, "SELECT @@pseudo_thread_id")
    a.close()
    _back(sy, case, a_id)
    b = _login(port, "other", "pw2")
    if case not in IN_A_DATABASE:
        assert _one_value(b, "SELECT @@pseudo_thread_id") == a_id  # the same backend connection
    assert _error(lambda: _one_value(b, ask)) == expected, case
    b.close()


def _raw_value(c: RawClient, sql: str) -> Any:
    t, packets = c.exchange(Command.QUERY, sql.encode())
    if t.error is not None:
        return ("error", t.error.code)
    rows = read_result(packets, c.capabilities).rows
    if not rows:
        return None
    value = rows[0][0]
    if value is None:
        return None
    text = value.decode()
    return int(text) if text.isdigit() else text


RAW_CASES = [
    *CASES,
    # a plain INSERT the proxy cannot suspect: only the server's flag tells the function set @y
    ("stored function", [f"INSERT INTO {DB}.t VALUES ({DB}.sety())"], "SELECT @y", None),
]


@pytest.mark.parametrize(("case", "leave", "ask", "expected"), RAW_CASES,
                         ids=[c[0] for c in RAW_CASES])  # fmt: skip
def test_nothing_crosses_with_session_tracking(pooled, case, leave, ask, expected):
    """The client asks for CLIENT_SESSION_TRACK (as MariaDB Connector/C does): its backend
    connections report state changes, which the stored-function case needs."""
    port, sy = pooled
    a = RawClient(port, "app", "pw")
    for sql in leave:
        t, _ = a.exchange(Command.QUERY, sql.encode())
        assert t.error is None, (case, sql, t.error)
    a_id = _raw_value(a, "SELECT @@pseudo_thread_id")
    a.exchange(Command.QUIT)
    a.close()
    _back(sy, case, a_id)
    b = RawClient(port, "other", "pw2")
    if case not in IN_A_DATABASE:
        assert _raw_value(b, "SELECT @@pseudo_thread_id") == a_id
    assert _raw_value(b, ask) == expected, case
    b.close()


def _cli(port: int, user: str, password: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mariadb", "-h127.0.0.1", f"-P{port}", f"-u{user}", f"-p{password}", "-N", "-B",
         "-e", sql],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _rows(out: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


def test_nothing_crosses_with_the_mariadb_client(pooled):
    port, sy = pooled
    a = _cli(port, "app", "pw",
             "SET @secret = 'tenant-a'; SET SESSION time_zone = '+05:00';"
             f"CREATE TEMPORARY TABLE {DB}.shadow (v INT); PREPARE s FROM 'SELECT 1';"
             "SELECT @@pseudo_thread_id")  # fmt: skip
    (a_id,) = _rows(a)[-1]
    _back(sy, "mariadb client", int(a_id))
    b = _cli(port, "other", "pw2",
             "SELECT @@pseudo_thread_id, DATABASE(), @secret, @@session.time_zone")  # fmt: skip
    assert _rows(b) == [[a_id, "NULL", "NULL", "SYSTEM"]]
    for ask, code in ((f"SELECT v FROM {DB}.shadow", "1146"), ("EXECUTE s", "1243")):
        b = _cli(port, "other", "pw2", ask)
        assert b.returncode == 1 and f"ERROR {code} " in b.stderr, (ask, b.stderr)


def test_state_left_on_a_replica_is_reset_not_kept(make_proxy, primary):
    """A read on a replica that changes the session (a stored function setting a user
    variable, seen by the server's flag): that connection is reset, not kept, so the session's
    next write still goes to the primary (kept, it would hit the read-only replica)."""
    port, primary, replicas, _ = make_proxy(backend_pool_size=1)
    for r in replicas:
        r.wait_for(primary)
    c = wait_for(lambda: RawClient(port, "app", "proxy-secret",
                                   CAPS | Capability.DEPRECATE_EOF), what="the proxy")  # fmt: skip
    assert _raw_value(c, f"SELECT @@server_id, {DB}.sety()") in (2, 3)  # on a replica
    t, _ = c.exchange(Command.QUERY, f"INSERT INTO {DB}.t VALUES (7)".encode())
    assert t.error is None, t.error
    c.close()


def test_a_connection_whose_multi_statement_option_changed_is_not_reused(pooled, primary):
    """COM_SET_OPTION turns multi-statements off (or on) for the server connection, and
    COM_RESET_CONNECTION leaves it so: that connection is closed when its session ends, never
    handed to a client that negotiated otherwise."""
    port, _ = pooled
    a = RawClient(port, "app", "pw")
    t, _ = a.exchange(Command.SET_OPTION, b"\x01\x00")  # MYSQL_OPTION_MULTI_STATEMENTS_OFF
    assert t.error is None
    a_id = _raw_value(a, "SELECT @@pseudo_thread_id")
    t, _ = a.exchange(Command.QUERY, b"SELECT 1; SELECT 2")
    assert t.error is not None and t.error.code == 1064  # off for A, as asked
    a.exchange(Command.QUIT)
    a.close()
    wait_for(
        lambda: primary.sql(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                            f"WHERE ID = {a_id}").strip() == "0",
        what="A's server connection closed",
    )  # fmt: skip
    b = RawClient(port, "other", "pw2")
    t, _ = b.exchange(Command.QUERY, b"SELECT 1; SELECT 2")
    assert t.error is None and t.results == 2
    b.close()
