"""Bad input to the MySQL proxy, each answered with MySQL's error (and a close where MySQL
closes), while other clients go on being served; and a backend lost mid-query."""

from __future__ import annotations

import socket
import threading

import pymysql
import pytest

from fixtures.mariadb import PASSWORD, USER
from fixtures.mysql_client import RawClient
from fixtures.procs import base_config, free_port, wait_for
from steelyard.mysql.protocol import messages
from steelyard.mysql.protocol.constants import Capability, Command
from steelyard.mysql.protocol.packets import frame


@pytest.fixture
def port(tmp_path, steelyard, mariadb) -> int:
    port = free_port()
    cfg = base_config(
        tmp_path,
        pools={"primary": {"servers": [{"address": mariadb.address}]}},
        mysql={"listeners": [{
            "listen": f"127.0.0.1:{port}", "users": [{"name": "app", "password": "pw"}],
            "backend_user": USER, "backend_password": PASSWORD, "primary": "primary",
            "max_allowed_packet": "4KiB",
        }]},
    )  # fmt: skip
    steelyard(cfg)
    wait_for(lambda: RawClient(port, "app", "pw").close() or True, what="the proxy")
    return port


def err_of(payload: bytes) -> tuple[int, str]:
    e = messages.parse_err(payload)
    return e.code, e.message


def closed(c: RawClient) -> bool:
    c.sock.settimeout(5)
    try:
        return c.sock.recv(100) == b""
    except ConnectionResetError:
        return True


def still_served(port: int) -> None:
    c = RawClient(port, "app", "pw")
    c.send(b"\x03SELECT 1")
    _, first = c.read()
    assert first == b"\x01"  # one column
    c.close()


def test_packets_out_of_order(port):
    c = RawClient(port, "app", "pw")
    c.send(b"\x03SELECT 1", seq=5)
    seq, payload = c.read()
    assert (seq, err_of(payload)) == (6, (1156, "Got packets out of order"))
    assert closed(c)
    still_served(port)


def test_empty_and_unknown_commands(port):
    c = RawClient(port, "app", "pw")
    c.send(b"")
    assert err_of(c.read()[1]) == (1835, "Malformed communication packet")
    c.send(bytes((Command.BINLOG_DUMP,)) + b"\x00" * 10)
    assert err_of(c.read()[1]) == (1047, "Unknown command")
    c.send(bytes((Command.PING,)))
    assert messages.is_ok(c.read()[1])  # the connection goes on
    c.close()


def test_a_packet_over_max_allowed_packet(port):
    c = RawClient(port, "app", "pw")
    c.send(b"\x03SELECT '" + b"x" * 5000 + b"'")
    assert err_of(c.read()[1]) == (1153, "Got a packet bigger than 'max_allowed_packet' bytes")
    assert closed(c)
    still_served(port)


def test_a_bad_handshake(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.recv(1000)  # the greeting
        s.sendall(frame(b"\x00\x00", 1)[0])  # far too short for a handshake response
        data = s.recv(1000)
    assert err_of(data[4:]) == (1043, "Bad handshake")
    still_served(port)


def test_a_backend_lost_mid_query(port, mariadb):
    conn = pymysql.connect(host="127.0.0.1", port=port, user="app", password="pw")
    errors: list[tuple] = []

    def slow() -> None:
        try:
            with conn.cursor() as c:
                c.execute("SELECT SLEEP(20)")
        except pymysql.err.OperationalError as exc:
            errors.append(exc.args)

    t = threading.Thread(target=slow)
    t.start()
    thread = wait_for(
        lambda: mariadb.sql("SELECT id FROM information_schema.processlist "
                            "WHERE info LIKE 'SELECT SLEEP(20)%'").strip(),
        what="the query running on the server",
    )  # fmt: skip
    mariadb.sql(f"KILL CONNECTION {thread}")
    t.join(10)
    assert errors and errors[0][0] == 2013
    assert "Lost connection to backend server" in errors[0][1]
    # the same client goes on, on another connection
    with conn.cursor() as c:
        c.execute("SELECT 7")
        assert c.fetchone() == (7,)
    conn.close()


def test_tls_asked_of_a_listener_without_it(port):
    """A client that asks for TLS the greeting did not offer (CLIENT_SSL unset) is refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.recv(1000)  # the greeting
        caps = Capability.PROTOCOL_41 | Capability.SSL | Capability.SECURE_CONNECTION
        s.sendall(frame(caps.to_bytes(4, "little") + (16 << 20).to_bytes(4, "little")
                        + bytes(24), 1)[0])  # fmt: skip
        data = s.recv(1000)
    assert err_of(data[4:]) == (1043, "Bad handshake: TLS is not offered")
    still_served(port)


def app_connections(mariadb) -> list[str]:
    """The backend user's connections on the server, with what each runs."""
    out = mariadb.sql(
        f"SELECT id, COALESCE(info, '') FROM information_schema.processlist WHERE user = '{USER}'"
    )
    return [line for line in out.splitlines() if line.strip()]


def test_a_client_that_leaves_mid_result_set(port, mariadb):
    """The backend connection carrying the rest of the answer is closed, not pooled (its
    query stops on the server), and the proxy serves the next client."""
    c = RawClient(port, "app", "pw")
    big = b"SELECT REPEAT('x', 1000) FROM mysql.seq_1_to_2000000"
    c.send(b"\x03" + big)
    for _ in range(50):  # some rows
        c.read()
    c.close()
    wait_for(lambda: not any("seq_1_to_2000000" in row for row in app_connections(mariadb)),
             what="the abandoned query to stop on the server")  # fmt: skip
    still_served(port)


def test_a_client_that_leaves_mid_packet(port, mariadb):
    """Half a command, then gone: nothing reaches a server, nothing is kept."""
    before = len(app_connections(mariadb))
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # greeting unread, nothing sent
    c = RawClient(port, "app", "pw")
    c.sock.sendall(b"\x20\x00\x00\x00\x03SELECT")  # 32 bytes announced, 7 sent
    c.close()
    still_served(port)
    assert len(app_connections(mariadb)) <= before + 1  # at most the pooled one still_served used


def test_a_malformed_change_user(port, mariadb):
    """Answered as MariaDB answers it (its parser calls any malformed COM_CHANGE_USER an
    unknown command), the session going on as it was."""
    for c in (RawClient(mariadb.port, USER, PASSWORD), RawClient(port, "app", "pw")):
        c.send(b"\x11app")  # the user's name is not even terminated
        assert err_of(c.read()[1]) == (1047, "Unknown command")
        c.send(b"\x03SELECT 1")
        assert c.read()[1] == b"\x01"
        c.close()
