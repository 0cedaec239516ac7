"""The proxy's own MySQL client and the `mysql` health check, against a real MariaDB."""

from __future__ import annotations

import asyncio
import socket

import pytest

from fixtures.mariadb import PASSWORD, USER
from fixtures.procs import free_port
from steelyard.core.health.mysql import check_mysql
from steelyard.mysql.client import Client, MySQLError
from steelyard.mysql.protocol import auth


async def test_login_query_and_errors(mariadb):
    c = await Client.connect(mariadb.address, USER, PASSWORD)
    result = await c.query("SELECT 1 AS one, NULL AS nothing, 'x' AS letter")
    assert result.columns == ["one", "nothing", "letter"]
    assert result.rows == [[b"1", None, b"x"]]
    assert (await c.query("DO 1")).rows == []  # an OK: no result set
    with pytest.raises(MySQLError) as err:
        await c.query("SELECT * FROM no_such.t")
    assert err.value.code == 1146
    await c.ping()  # the connection survives its errors
    c.close()
    c = await Client.connect(mariadb.address, USER, PASSWORD, database="mysql")
    assert (await c.query("SELECT DATABASE()")).rows == [[b"mysql"]]
    c.close()
    with pytest.raises(MySQLError) as err:
        await Client.connect(mariadb.address, USER, "wrong")
    assert err.value.code == 1045


async def test_an_auth_switch_is_followed(mariadb):
    # MariaDB has no caching_sha2_password: answered with it, the server switches the login to
    # mysql_native_password (a fresh salt), and the client follows.
    c = await Client.connect(mariadb.address, USER, PASSWORD, first_plugin=auth.SHA2)
    assert c.plugin == auth.NATIVE and c.switched
    await c.ping()
    c.close()
    with pytest.raises(MySQLError) as err:
        await Client.connect(mariadb.address, USER, "wrong", first_plugin=auth.SHA2)
    assert err.value.code == 1045


async def test_health_check_verdicts(mariadb):
    host, port = "127.0.0.1", mariadb.port
    ok = await check_mysql(host, port, 2.0, USER, PASSWORD)
    assert ok.ok and ok.detail == "SELECT 1 ok"
    bad = await check_mysql(host, port, 2.0, USER, "wrong")
    assert not bad.ok and bad.detail.startswith("error 1045: Access denied for user 'app'")
    down = await check_mysql(host, free_port(), 2.0, USER, PASSWORD)
    assert not down.ok and down.detail == "connection refused"
    # a server that accepts and never greets: a timeout, in the phase it happened
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        hung = await check_mysql(host, silent.getsockname()[1], 0.3, USER, PASSWORD)
        assert not hung.ok and hung.detail == "timeout after 300ms (connecting)"
    finally:
        silent.close()
    await asyncio.sleep(0)
