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


async def test_caching_sha2_full_auth_with_the_servers_rsa_key():
    """The exchange of MySQL 8 for a user not in its cache, over plain TCP: the server asks for
    full authentication, sends its public key on request, and decrypts the password (XORed
    with the scramble) with RSA-OAEP, as MySQL's sha256 plugins do."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from steelyard.mysql.protocol import handshake, messages
    from steelyard.mysql.protocol.constants import Capability
    from steelyard.mysql.protocol.packets import PacketReader, frame

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    salt = auth.scramble()
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        packets = PacketReader()
        pending: list[tuple[int, bytes]] = []

        async def read() -> bytes:
            while not pending:
                pending.extend(packets.feed(await reader.read(65536)))
            return pending.pop(0)[1]

        caps = (Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
                | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA)  # fmt: skip
        writer.write(frame(handshake.build_greeting(
            handshake.Greeting("8.0.40", 1, salt, caps, plugin=auth.SHA2)), 0)[0])  # fmt: skip
        await read()  # the fast-auth scramble: not in our cache, ask for the password
        writer.write(frame(handshake.more_data(bytes((auth.PERFORM_FULL_AUTH,))), 2)[0])
        assert await read() == bytes((auth.REQUEST_PUBLIC_KEY,))
        writer.write(frame(handshake.more_data(pem), 4)[0])
        secret = key.decrypt(
            await read(), padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
        )
        got.append(auth.xor_password(secret[:-1], salt)[: len(secret) - 1])  # XOR is its inverse
        writer.write(frame(messages.ok(), 6)[0])
        await writer.drain()
        await reader.read()  # until the client quits
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = await Client.connect(f"127.0.0.1:{port}", USER, PASSWORD)
    assert c.plugin == auth.SHA2
    c.close()
    server.close()
    assert got == [PASSWORD.encode()]
