"""The MySQL listener's guards: client allow-list, per-user connection limits, and the
firewall's refusal of unbounded writes; each answered with MySQL's error, others unaffected."""

from __future__ import annotations

import pymysql
import pytest

from fixtures.mysql_client import primary_proxy
from fixtures.procs import wait_for


def start(tmp_path, steelyard, primary, **listener) -> int:
    return primary_proxy(tmp_path, steelyard, primary, **listener)[0]


def login(port: int, **kw) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="app", password="pw",
                           autocommit=True, **kw)  # fmt: skip


def test_unbounded_writes_are_refused(tmp_path, steelyard, mariadb):
    port = start(tmp_path, steelyard, mariadb, firewall={"block_unbounded_writes": True})
    conn = wait_for(lambda: login(port), what="the proxy")
    with conn.cursor() as c:
        c.execute("CREATE DATABASE IF NOT EXISTS fw")
        c.execute("CREATE TABLE IF NOT EXISTS fw.t (id INT)")
        c.execute("INSERT INTO fw.t VALUES (1), (2)")
        with pytest.raises(pymysql.err.OperationalError) as refused:
            c.execute("DELETE FROM fw.t")
        assert refused.value.args == (
            1105, "DELETE without WHERE is refused by the proxy (firewall.block_unbounded_writes)"
        )  # fmt: skip
        with pytest.raises(pymysql.err.OperationalError):
            c.execute("UPDATE fw.t SET id = 0")
        c.execute("DELETE FROM fw.t WHERE id = 1")  # bounded: runs
        c.execute("SELECT COUNT(*) FROM fw.t")
        assert c.fetchone() == (1,)
    conn.close()


def test_the_firewall_sees_every_statement_of_a_multi_statement(tmp_path, steelyard, mariadb):
    """The attack (issue 12, before the fix): `SELECT 1; DELETE FROM t` from PyMySQL with
    CLIENT_MULTI_STATEMENTS passed block_unbounded_writes (only the first keyword was read)
    and deleted every row. Also hidden: in an executable comment, behind a comment that says
    WHERE, and behind a literal that NO_BACKSLASH_ESCAPES (set by the client) reads otherwise.
    Each is refused whole (nothing of it runs), and the session goes on."""
    port = start(tmp_path, steelyard, mariadb, firewall={"block_unbounded_writes": True})
    conn = wait_for(
        lambda: login(port, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS),
        what="the proxy",
    )
    refusal = (1105, "DELETE without WHERE is refused by the proxy "
                     "(firewall.block_unbounded_writes)")  # fmt: skip
    with conn.cursor() as c:
        c.execute("CREATE DATABASE IF NOT EXISTS fw_multi")
        c.execute("CREATE TABLE IF NOT EXISTS fw_multi.t (id INT)")
        c.execute("DELETE FROM fw_multi.t WHERE id >= 0")
        c.execute("INSERT INTO fw_multi.t VALUES (1), (2)")
        for attack in (
            "SELECT 1; DELETE FROM fw_multi.t",
            "SELECT 1 /*!; DELETE FROM fw_multi.t */",
            "/*!DELETE FROM fw_multi.t*/",
            "DELETE FROM fw_multi.t /* WHERE */",
            "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT '\\'; "
            "DELETE FROM fw_multi.t; -- '",
        ):
            with pytest.raises(pymysql.err.OperationalError) as refused:
                c.execute(attack)
            assert refused.value.args == refusal, attack
        c.execute("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
        with pytest.raises(pymysql.err.OperationalError) as refused:
            c.execute("DELETE FROM fw_multi.t ORDER BY '\\'' WHERE 1 -- '")
        assert refused.value.args == refusal
        c.execute("SELECT COUNT(*) FROM fw_multi.t")
        assert c.fetchone() == (2,)  # nothing was deleted
        c.execute("SELECT 1; DELETE FROM fw_multi.t WHERE id = 1")  # bounded: runs
        while c.nextset():
            pass
        c.execute("SELECT COUNT(*) FROM fw_multi.t")
        assert c.fetchone() == (1,)
    conn.close()


def test_clients_outside_the_allow_list_are_refused(tmp_path, steelyard, mariadb):
    port = start(tmp_path, steelyard, mariadb, allow=["10.0.0.0/8"])
    with pytest.raises(pymysql.err.OperationalError) as refused:
        wait_for(lambda: _refused(port), what="a refusal")
        login(port)
    assert refused.value.args == (
        1130, "Host '127.0.0.1' is not allowed to connect to this MySQL server",
    )  # fmt: skip


def _refused(port: int) -> bool:
    try:
        login(port)
    except pymysql.err.OperationalError as exc:
        return exc.args[0] == 1130
    return False


def test_max_connections_per_user(tmp_path, steelyard, mariadb):
    port = start(tmp_path, steelyard, mariadb,
                 users=[{"name": "app", "password": "pw", "max_connections": 1}])  # fmt: skip
    first = wait_for(lambda: login(port), what="the proxy")
    with pytest.raises(pymysql.err.OperationalError) as refused:
        login(port)
    assert refused.value.args == (
        1203, "User app already has more than 'max_user_connections' active connections",
    )  # fmt: skip
    first.close()
    wait_for(lambda: login(port), what="the place freed").close()
