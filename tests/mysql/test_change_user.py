"""COM_CHANGE_USER through the proxy: a new login on the same connection, checked by the proxy,
with a fresh session for the new user; a wrong password answered as MariaDB answers it."""

from __future__ import annotations

import pytest

from fixtures.mariadb import PASSWORD, USER
from fixtures.mysql_client import RawClient
from fixtures.procs import wait_for
from steelyard.mysql.protocol import auth, handshake, messages
from steelyard.mysql.protocol.constants import Command

USERS = {"users": [{"name": "app", "password": "proxy-secret"},
                   {"name": "report", "password": "r3port", "max_connections": 1}]}  # fmt: skip


def change_user(c: RawClient, user: str, password: str, plugin: str, db: str = "") -> bytes:
    """COM_CHANGE_USER, answering the fresh scramble the server asks for (MariaDB always asks);
    the server's verdict."""
    c.send(handshake.build_change_user(
        handshake.Response(c.capabilities, 0, 45, user, b"", db or None, plugin)
    ))  # fmt: skip
    seq, switch = c.read()
    asked, salt = handshake.parse_auth_switch(switch)
    assert (seq, asked) == (1, plugin if plugin in auth.PLUGINS else auth.NATIVE)
    c.send(auth.token(asked, password.encode(), salt), seq=2)
    _, verdict = c.read()
    if verdict == b"\x01\x03":  # caching_sha2_password's fast-auth success, then the OK
        _, verdict = c.read()
    return verdict


def value(c: RawClient, sql: bytes) -> bytes | None:
    t, packets = c.exchange(Command.QUERY, sql)
    assert t.error is None, t.error
    row = packets[-2]  # the one row before the end
    return None if row[:1] == b"\xfb" else row[1 : 1 + row[0]]


@pytest.mark.parametrize("proxy", [USERS], indirect=True)
def test_change_user_starts_a_fresh_session_for_the_new_user(proxy):
    port, primary, *_ = proxy
    primary.sql("CREATE DATABASE IF NOT EXISTS cu")
    c = wait_for(lambda: RawClient(port, "app", "proxy-secret"), what="a proxy login")
    assert c.exchange(Command.QUERY, b"SET @pinned = 1")[0].error is None
    assert c.exchange(Command.QUERY, b"SET SESSION sql_mode = 'ANSI_QUOTES'")[0].error is None
    answer = change_user(c, "report", "r3port", auth.SHA2, db="cu")
    assert messages.is_ok(answer), answer
    assert value(c, b"SELECT DATABASE()") == b"cu"
    assert value(c, b"/*master*/ SELECT @pinned") is None  # user variables are gone
    assert b"ANSI_QUOTES" not in (value(c, b"SELECT @@sql_mode") or b"")
    # the new user's limit counts this connection, the old user's no longer does
    with pytest.raises(ConnectionError, match="max_user_connections"):
        RawClient(port, "report", "r3port")
    RawClient(port, "app", "proxy-secret").close()
    c.close()


@pytest.mark.parametrize("proxy", [USERS], indirect=True)
def test_change_user_with_an_unknown_plugin_is_switched_to_native(proxy):
    port, *_ = proxy
    c = wait_for(lambda: RawClient(port, "app", "proxy-secret"), what="a proxy login")
    assert messages.is_ok(change_user(c, "report", "r3port", "client_ed25519"))
    assert value(c, b"SELECT 5") == b"5"
    c.close()


def test_a_wrong_password_is_answered_as_mariadb_does(proxy):
    port, primary, *_ = proxy
    direct = RawClient(primary.port, USER, PASSWORD)
    via = wait_for(lambda: RawClient(port, "app", "proxy-secret"), what="a proxy login")
    answers = []
    for c, user in ((direct, USER), (via, "app")):
        err = messages.parse_err(change_user(c, user, "wrong", auth.NATIVE))
        answers.append((err.code, err.sqlstate, err.message.replace("localhost", "127.0.0.1")))
    assert answers[0] == answers[1]
    assert answers[1] == (
        1045, "28000", "Access denied for user 'app'@'127.0.0.1' (using password: YES)",
    )  # fmt: skip
    # MariaDB keeps the connection, for the user it had, in a fresh session: so does the proxy
    for c in (direct, via):
        assert value(c, b"SELECT 1") == b"1"
    # a database that does not exist: refused the same way, the user kept
    for c, user in ((direct, USER), (via, "app")):
        err = messages.parse_err(change_user(c, user, PASSWORD if c is direct else "proxy-secret",
                                             auth.NATIVE, db="no_such_db"))  # fmt: skip
        assert (err.code, err.message) == (1049, "Unknown database 'no_such_db'")
        assert value(c, b"SELECT 2") == b"2"
    RawClient(port, "app", "proxy-secret").close()  # others still served


@pytest.mark.parametrize("proxy", [USERS], indirect=True)
def test_mysql_connector_change_user(proxy):
    import mysql.connector

    port, primary, *_ = proxy
    primary.sql("CREATE DATABASE IF NOT EXISTS cu")
    wait_for(lambda: RawClient(port, "app", "proxy-secret"), what="a proxy login").close()
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user="app",
                                   password="proxy-secret", use_pure=True)  # fmt: skip
    conn.cmd_change_user(username="report", password="r3port", database="cu")
    cur = conn.cursor()
    cur.execute("SELECT DATABASE()")
    assert cur.fetchall() == [("cu",)]
    conn.close()
