"""The MySQL protocol codec: byte vectors, and both sides of the connection phase against real
peers (a MariaDB server for the client side; PyMySQL and mysql-connector-python for the server
side, talking to a minimal server built from the codec)."""

from __future__ import annotations

import socket
import threading

import mysql.connector
import pymysql
import pytest

from fixtures.mariadb import PASSWORD, USER
from steelyard.mysql.protocol import auth, handshake, messages
from steelyard.mysql.protocol.constants import (
    ER_ACCESS_DENIED_ERROR,
    MAX_PAYLOAD,
    Capability,
    Command,
    Status,
)
from steelyard.mysql.protocol.packets import PacketReader, PacketTooLarge, frame
from steelyard.mysql.protocol.wire import Cursor, Malformed, lenenc_int, lenenc_str

# wire -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 250, 251, 0xFFFF, 0x10000, 0xFFFFFF, 0x1000000, 2**64 - 1])
def test_lenenc_int_round_trip(n):
    data = lenenc_int(n)
    assert len(data) == (1 if n < 251 else 3 if n < 2**16 else 4 if n < 2**24 else 9)
    c = Cursor(data)
    assert c.lenenc_int() == n and c.remaining() == 0


def test_cursor_refuses_short_and_bad_input():
    assert Cursor(b"\xfb").lenenc_int() is None  # NULL in a text row
    assert Cursor(lenenc_str(b"abc")).lenenc_str() == b"abc"
    for bad in (b"\xff", b"\xfc\x01", b"\x05ab"):
        with pytest.raises(Malformed):
            Cursor(bad).lenenc_str()
    with pytest.raises(Malformed):
        Cursor(b"no nul").nul_str()


# packets ----------------------------------------------------------------------------------------


def test_packets_round_trip_whole_and_byte_by_byte():
    payloads = [b"", b"\x03SELECT 1", b"x" * 1000]
    stream, seq = b"", 0
    for p in payloads:
        data, seq = frame(p, seq)
        stream += data
    assert seq == 3
    assert PacketReader().feed(stream) == [(0, b""), (1, b"\x03SELECT 1"), (2, b"x" * 1000)]
    r, out = PacketReader(), []
    for i in range(len(stream)):
        out += r.feed(stream[i : i + 1])
    assert [p for _, p in out] == payloads


def test_a_payload_of_16mib_or_more_is_split_and_joined():
    exact = b"a" * MAX_PAYLOAD
    data, seq = frame(exact, 7)
    # 0xFFFFFF bytes, then an empty packet says it ended
    assert len(data) == MAX_PAYLOAD + 8 and data[-4:] == b"\x00\x00\x00\x08" and seq == 9
    assert PacketReader(max_packet=2**25).feed(data) == [(7, exact)]
    bigger = b"b" * (MAX_PAYLOAD + 10)
    data, seq = frame(bigger, 0)
    assert seq == 2 and PacketReader(max_packet=2**25).feed(data) == [(0, bigger)]


def test_max_allowed_packet_is_checked_before_buffering():
    r = PacketReader(max_packet=1000)
    with pytest.raises(PacketTooLarge):
        r.feed(b"\xe9\x03\x00\x00")  # a header announcing 1001 bytes is enough


# OK / ERR / EOF ---------------------------------------------------------------------------------


def test_ok_err_eof_vectors():
    # from the MySQL documentation: OK with AUTOCOMMIT, an ERR 1096, an EOF
    ok = bytes.fromhex("00000002000000")
    assert messages.parse_ok(ok) == messages.Ok(0, 0, Status.AUTOCOMMIT, 0)
    assert messages.ok(messages.Ok()) == ok
    err = bytes.fromhex("ff4804234859303030") + b"No tables used"
    assert messages.parse_err(err) == messages.Err(1096, "HY000", "No tables used")
    assert messages.error((1096, "HY000"), "No tables used") == err
    eof = bytes.fromhex("fe00000200")
    assert messages.is_eof(eof) and messages.parse_eof(eof).status == Status.AUTOCOMMIT
    # with SESSION_TRACK the info is a length-encoded string
    tracked = messages.ok(messages.Ok(3, 9, Status.IN_TRANS, 1, b"Rows matched: 3"),
                          Capability.PROTOCOL_41 | Capability.SESSION_TRACK)  # fmt: skip
    assert messages.parse_ok(tracked, Capability.PROTOCOL_41 | Capability.SESSION_TRACK) == (
        messages.Ok(3, 9, Status.IN_TRANS, 1, b"Rows matched: 3")
    )
    assert messages.status_of(tracked, Capability.SESSION_TRACK) == Status.IN_TRANS


# the client side, against MariaDB ---------------------------------------------------------------

CLIENT_CAPS = (
    Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA | Capability.LONG_PASSWORD
    | Capability.TRANSACTIONS | Capability.MULTI_RESULTS | Capability.CONNECT_ATTRS
)  # fmt: skip


def login(server, password: str) -> tuple[handshake.Greeting, bytes]:
    """Greeting, then a HandshakeResponse41 from the codec; the server's verdict payload."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        reader = PacketReader()

        def read() -> tuple[int, bytes]:
            while True:
                got = reader.feed(s.recv(65536))
                if got:
                    return got[0]

        seq, payload = read()
        assert seq == 0
        greeting = handshake.parse_greeting(payload)
        response = handshake.Response(
            CLIENT_CAPS, 16 * 1024 * 1024, 45, USER,
            auth.token(greeting.plugin, password.encode(), greeting.salt),
            plugin=greeting.plugin, attributes={"_client_name": "steelyard-test"},
        )  # fmt: skip
        s.sendall(frame(handshake.build_response(response), 1)[0])
        seq, verdict = read()
        assert seq == 2
        return greeting, verdict


def test_codec_logs_in_to_mariadb(mariadb):
    greeting, verdict = login(mariadb, PASSWORD)
    # MariaDB puts "5.5.5-" before its version, for clients that parse it as MySQL's
    assert greeting.server_version == "5.5.5-" + mariadb.sql("SELECT VERSION()").strip()
    assert len(greeting.salt) == auth.SCRAMBLE_LEN and b"\0" not in greeting.salt
    assert greeting.plugin == auth.NATIVE
    assert greeting.capabilities & Capability.PROTOCOL_41
    assert messages.is_ok(verdict), verdict
    _, verdict = login(mariadb, "wrong")
    err = messages.parse_err(verdict)
    assert (err.code, err.sqlstate) == ER_ACCESS_DENIED_ERROR
    assert err.message == f"Access denied for user '{USER}'@'127.0.0.1' (using password: YES)"


# the server side, with real clients -------------------------------------------------------------

SERVER_CAPS = CLIENT_CAPS | Capability.CONNECT_WITH_DB | Capability.DEPRECATE_EOF


class TinyServer(threading.Thread):
    """Greets with `plugin`, checks the password with the codec, answers OK to everything."""

    def __init__(self, plugin: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.plugin = plugin
        self.seen: list[tuple[str, str | None, bool]] = []  # (user, plugin used, accepted)

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self.serve(conn)
                except (OSError, Malformed):
                    pass

    def serve(self, conn: socket.socket) -> None:
        reader = PacketReader()

        def read() -> tuple[int, bytes]:
            while True:
                data = conn.recv(65536)
                if not data:
                    raise OSError("closed")
                got = reader.feed(data)
                if got:
                    return got[0]

        def send(payload: bytes, seq: int) -> int:
            data, nxt = frame(payload, seq)
            conn.sendall(data)
            return nxt

        salt = auth.scramble()
        greeting = handshake.Greeting("10.11.0-steelyard", 7, salt, SERVER_CAPS, plugin=self.plugin)
        send(handshake.build_greeting(greeting), 0)
        seq, payload = read()
        response = handshake.parse_response(payload)
        plugin, answer, seq = response.plugin or auth.NATIVE, response.auth, seq + 1
        if plugin != self.plugin:
            # The client chose another plugin: ask for ours, on a fresh salt.
            salt = auth.scramble()
            seq = send(handshake.auth_switch(self.plugin, salt), seq)
            seq, answer = read()
            seq, plugin = seq + 1, self.plugin
        ok = auth.verify(plugin, PASSWORD.encode(), salt, answer)
        self.seen.append((response.user, plugin, ok))
        if not ok:
            send(messages.error(ER_ACCESS_DENIED_ERROR, f"Access denied for user "
                 f"'{response.user}'@'127.0.0.1' (using password: YES)"), seq)  # fmt: skip
            return
        if plugin == auth.SHA2:
            seq = send(handshake.more_data(bytes((auth.FAST_AUTH_SUCCESS,))), seq)
        send(messages.ok(messages.Ok(), SERVER_CAPS), seq)
        while True:
            _, payload = read()
            if payload[:1] == bytes((Command.QUIT,)):
                return
            send(messages.ok(messages.Ok(), SERVER_CAPS), 1)  # PING, SET ...: OK

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tiny():
    servers = []

    def start(plugin: str) -> TinyServer:
        s = TinyServer(plugin)
        s.start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


@pytest.mark.parametrize("plugin", [auth.NATIVE, auth.SHA2])
def test_pymysql_logs_in_with_either_plugin(tiny, plugin):
    server = tiny(plugin)
    conn = pymysql.connect(host="127.0.0.1", port=server.port, user=USER, password=PASSWORD)
    conn.ping(reconnect=False)
    conn.close()
    assert server.seen == [(USER, plugin, True)]
    with pytest.raises(pymysql.err.OperationalError) as refused:
        pymysql.connect(host="127.0.0.1", port=server.port, user=USER, password="nope")
    assert refused.value.args == (
        1045, f"Access denied for user '{USER}'@'127.0.0.1' (using password: YES)",
    )  # fmt: skip


def test_mysql_connector_logs_in_with_caching_sha2(tiny):
    server = tiny(auth.SHA2)
    conn = mysql.connector.connect(
        host="127.0.0.1", port=server.port, user=USER, password=PASSWORD, use_pure=True,
        auth_plugin=auth.SHA2,
    )  # fmt: skip
    conn.ping()
    conn.close()
    assert server.seen[0] == (USER, auth.SHA2, True)
