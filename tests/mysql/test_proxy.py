"""The MySQL proxy under `steelyard run`, over a MariaDB primary and two replicas: clients log
in to the proxy, writes go to the primary, plain reads to the replicas, transactions and
pinned sessions stay on one connection."""

from __future__ import annotations

import subprocess

import pymysql
import pytest

from fixtures.mariadb import PASSWORD
from fixtures.mysql_client import RawClient, connect, one
from fixtures.procs import wait_for
from steelyard.mysql.protocol.constants import Command


def test_reads_go_to_replicas_and_writes_to_the_primary(proxy):
    port, primary, replicas, _ = proxy
    conn = wait_for(lambda: connect(port), what="the proxy accepting logins")
    with conn.cursor() as c:
        c.execute("CREATE DATABASE IF NOT EXISTS shop")
        c.execute("CREATE TABLE IF NOT EXISTS shop.items (id INT PRIMARY KEY, name TEXT)")
        c.execute("REPLACE INTO shop.items VALUES (1, 'one'), (2, 'two')")
    for r in replicas:
        r.wait_for(primary)
    seen = {one(conn, "SELECT @@server_id") for _ in range(20)}
    assert seen == {2, 3}  # both replicas, never the primary
    assert one(conn, "/*master*/ SELECT @@server_id") == 1
    assert one(conn, "SELECT COUNT(*) FROM shop.items") == 2
    assert one(conn, "SELECT @@server_id FOR UPDATE") == 1
    conn.close()


def test_a_transaction_stays_on_the_primary(proxy):
    port, primary, replicas, _ = proxy
    conn = wait_for(lambda: connect(port), what="the proxy accepting logins")
    with conn.cursor() as c:
        c.execute("CREATE DATABASE IF NOT EXISTS tx")
        c.execute("CREATE TABLE IF NOT EXISTS tx.t (id INT)")
    conn.begin()
    with conn.cursor() as c:
        c.execute("INSERT INTO tx.t VALUES (7)")
    # a read inside the transaction: the primary, on the transaction's own connection
    assert one(conn, "SELECT @@server_id") == 1
    assert one(conn, "SELECT COUNT(*) FROM tx.t WHERE id = 7") == 1
    conn.rollback()
    for r in replicas:
        r.wait_for(primary)
    assert one(conn, "SELECT COUNT(*) FROM tx.t WHERE id = 7") == 0  # rolled back, everywhere
    conn.close()


def test_session_state_follows_the_session(proxy):
    port, *_ = proxy
    conn = wait_for(lambda: connect(port, database="mysql"), what="the proxy accepting logins")
    # the database chosen at login and with USE goes to every connection the session borrows
    assert {one(conn, "SELECT DATABASE()") for _ in range(6)} == {"mysql"}
    with conn.cursor() as c:
        c.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
    assert {one(conn, "SELECT @@sql_mode") for _ in range(6)} == {"ANSI_QUOTES"}
    # a user variable pins the session: it stays where the variable lives
    with conn.cursor() as c:
        c.execute("SET @mine = 42")
    assert {one(conn, "SELECT @mine") for _ in range(6)} == {42}
    conn.close()


def test_logins_are_checked_by_the_proxy(proxy):
    port, *_ = proxy
    wait_for(lambda: connect(port), what="the proxy accepting logins")
    with pytest.raises(pymysql.err.OperationalError) as refused:
        pymysql.connect(host="127.0.0.1", port=port, user="app", password=PASSWORD)
    assert refused.value.args == (
        1045, "Access denied for user 'app'@'127.0.0.1' (using password: YES)",
    )  # fmt: skip
    with pytest.raises(pymysql.err.OperationalError) as refused:
        connect(port, database="no_such_db")
    assert refused.value.args[0] == 1049
    # the mariadb command-line client
    out = subprocess.run(
        ["mariadb", "-h", "127.0.0.1", "-P", str(port), "-u", "app", "-pproxy-secret", "-N",
         "-e", "SELECT 1 + 1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"


def test_a_replica_that_stops_replicating_leaves_read_rotation(proxy):
    port, _, replicas, sy = proxy
    conn = wait_for(lambda: connect(port), what="the proxy accepting logins")
    stopped = replicas[0]
    stopped.sql("STOP SLAVE SQL_THREAD")
    try:
        why = r'reason="replication is not running \(IO thread Yes, SQL thread No\)"'
        sy.wait_log(rf"event=health_flip pool=replicas server={stopped.address} state=down {why}")
        assert {one(conn, "SELECT @@server_id") for _ in range(10)} == {3}
    finally:
        stopped.sql("START SLAVE SQL_THREAD")
    sy.wait_log(rf"event=health_flip pool=replicas server={stopped.address} state=up")
    assert {one(conn, "SELECT @@server_id") for _ in range(20)} == {2, 3}
    conn.close()


def test_replication_problems_are_named():
    from steelyard.core.health.mysql import replication_problem
    from steelyard.mysql.protocol.resultset import ResultSet

    def status(io: bytes, sql: bytes, behind: bytes | None) -> ResultSet:
        cols = ["Slave_IO_Running", "Slave_SQL_Running", "Seconds_Behind_Master"]
        return ResultSet(cols, [[io, sql, behind]])

    assert replication_problem(status(b"Yes", b"Yes", b"3"), 5.0) is None
    assert replication_problem(status(b"Yes", b"Yes", b"12"), 5.0) == (
        "replication lag 12s over the 5s allowed"
    )
    assert replication_problem(status(b"Connecting", b"Yes", None), 5.0) == (
        "replication is not running (IO thread Connecting, SQL thread Yes)"
    )
    assert replication_problem(ResultSet(), 5.0) == "not a replica (SHOW SLAVE STATUS is empty)"


@pytest.mark.parametrize("proxy", [{"causal_reads": True}], indirect=True)
def test_causal_reads_see_the_sessions_own_writes(proxy):
    port, primary, replicas, _ = proxy
    conn = wait_for(lambda: connect(port), what="the proxy accepting logins")
    with conn.cursor() as c:
        c.execute("CREATE DATABASE IF NOT EXISTS causal")
        c.execute("CREATE TABLE IF NOT EXISTS causal.t (id INT PRIMARY KEY)")
    for r in replicas:
        r.wait_for(primary)
        # the replicas apply every event a second late (they keep replicating: still healthy)
        r.sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=1; START SLAVE")
    try:
        for i in range(3):
            with conn.cursor() as c:
                c.execute(f"INSERT INTO causal.t VALUES ({i})")
            # read at once: served by a replica, after it has applied the insert
            assert one(conn, f"SELECT COUNT(*) FROM causal.t WHERE id = {i}") == 1
        assert one(conn, "SELECT @@server_id") in (2, 3)
    finally:
        for r in replicas:
            r.sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=0; START SLAVE")
    conn.close()


def test_the_login_character_set_follows_the_session(proxy):
    """A latin1 client: every connection it borrows speaks latin1 (backend connections log in
    as utf8mb4), also after COM_RESET_CONNECTION; text round-trips unharmed."""
    port, *_ = proxy
    wait_for(lambda: connect(port), what="the proxy accepting logins").close()
    conn = connect(port, charset="latin1")
    for _ in range(4):  # replicas and primary alike
        assert one(conn, "SELECT @@character_set_client") == "latin1"
        assert one(conn, "SELECT 'café'") == "café"
    assert one(conn, "/*master*/ SELECT @@collation_connection") == "latin1_swedish_ci"
    conn.ping()
    with conn.cursor() as c:
        c.execute("SET @x = 1")  # pins, then a reset: the charset stays the login's
    conn._execute_command(0x1F, b"")  # COM_RESET_CONNECTION
    conn._read_ok_packet()
    assert one(conn, "SELECT @@character_set_client") == "latin1"
    conn.close()
    utf = connect(port)  # and other sessions keep theirs on the same pooled connections
    assert one(utf, "SELECT @@character_set_client") == "utf8mb4"
    assert one(utf, "SELECT 'café'") == "café"
    utf.close()


def test_multi_statements_field_list_and_16mib_packets(proxy):
    """Several result sets from one query; COM_FIELD_LIST; a query and a row of more than
    16 MiB, each split over several packets, through the proxy both ways."""
    port, primary, *_ = proxy
    primary.sql("SET GLOBAL max_allowed_packet = 64 * 1024 * 1024;"
                "CREATE DATABASE IF NOT EXISTS multi;"
                "CREATE TABLE IF NOT EXISTS multi.t (id INT PRIMARY KEY, v TEXT)")  # fmt: skip
    wait_for(lambda: connect(port), what="the proxy accepting logins").close()
    conn = connect(port, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
                   max_allowed_packet=64 * 1024 * 1024)  # fmt: skip
    with conn.cursor() as c:
        c.execute("/*master*/ SELECT 1; SELECT 2, 3; DO 0; SELECT 'four'")
        sets = [c.fetchall()]
        while c.nextset():
            sets.append(c.fetchall())
    assert [list(s) for s in sets] == [[(1,)], [(2, 3)], [], [("four",)]]
    big = 17 * 1024 * 1024
    with conn.cursor() as c:
        c.execute("/*master*/ SELECT LENGTH(%s)", ("y" * big,))
        assert c.fetchone() == (big,)
        c.execute("/*master*/ SELECT REPEAT('x', %s), 'after'", (big,))
        value, after = c.fetchone()
    assert (len(value), after) == (big, "after")
    assert one(conn, "SELECT 'next'") == "next"  # the connection is in step
    conn.close()
    raw = RawClient(port, "app", "proxy-secret")
    t, packets = raw.exchange(Command.INIT_DB, b"multi")
    assert t.error is None
    t, packets = raw.exchange(Command.FIELD_LIST, b"t\0")
    assert t.error is None and len(packets) == 3  # two column definitions and an end
    raw.close()
