"""The proxy's greeting names the primary's default authentication plugin (MariaDB's
mysql_native_password), so real clients answer with it and log in without an auth switch, as
they do with MariaDB itself: the login's packets are watched on the wire between client and
proxy."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable, Iterator

import mysql.connector
import pymysql
import pytest

from fixtures.mariadb import PASSWORD, USER
from fixtures.mysql_client import RawClient, primary_proxy
from fixtures.procs import free_port, wait_for
from steelyard.mysql.protocol import auth, handshake
from steelyard.mysql.protocol.packets import PacketReader


class Tap:
    """A relay in front of `address` that keeps what the server side sends (one client)."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.down = bytearray()  # server -> client
        self.lock = threading.Lock()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target)
        threading.Thread(target=self.pump, args=(client, server, None), daemon=True).start()
        self.pump(server, client, self.down)

    def pump(self, src: socket.socket, dst: socket.socket, keep: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if keep is not None:
                    with self.lock:
                        keep += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def login(self) -> list[tuple[int, int]]:
        """(sequence id, first byte) of the server's packets up to its first OK or ERR."""
        with self.lock:
            packets = PacketReader().feed(bytes(self.down))
        out = []
        for seq, payload in packets:
            out.append((seq, payload[0]))
            if payload[0] in (0x00, 0xFF) and seq:
                return out
        raise AssertionError(f"no login verdict in {out}")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def port(tmp_path, steelyard, mariadb) -> int:
    port, _ = primary_proxy(tmp_path, steelyard, mariadb)
    return port


def greeting_of(port: int) -> handshake.Greeting:
    with socket.create_connection(("127.0.0.1", port)) as s:
        reader = PacketReader()
        while not (packets := reader.feed(s.recv(65536))):
            pass
    return handshake.parse_greeting(packets[0][1])


def test_the_greeting_names_the_primarys_plugin(port, mariadb, tmp_path, steelyard):
    assert greeting_of(mariadb.port).plugin == auth.NATIVE  # MariaDB's default
    wait_for(lambda: RawClient(port, "app", "pw"), what="the proxy accepting logins").close()
    assert greeting_of(port).plugin == auth.NATIVE
    # a configured server_version is what clients are told; the plugin is the primary's still
    other, _ = primary_proxy(tmp_path / "other", steelyard, mariadb, server_version="8.0.1-x")
    greeting = greeting_of(other)
    assert (greeting.server_version, greeting.plugin) == ("8.0.1-x", auth.NATIVE)


Login = Callable[[int, str, str], None]


def pymysql_login(port: int, user: str, password: str) -> None:
    pymysql.connect(host="127.0.0.1", port=port, user=user, password=password).close()


def connector_login(port: int, user: str, password: str) -> None:
    mysql.connector.connect(host="127.0.0.1", port=port, user=user, password=password).close()


def cli_login(port: int, user: str, password: str) -> None:
    out = subprocess.run(
        ["mariadb", "-h127.0.0.1", f"-P{port}", f"-u{user}", f"-p{password}", "-e", "SELECT 1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


@pytest.fixture
def tapped() -> Iterator[Callable[[str, Login, str, str], list[tuple[int, int]]]]:
    taps: list[Tap] = []

    def run(address: str, login: Login, user: str, password: str) -> list[tuple[int, int]]:
        tap = Tap(address)
        taps.append(tap)
        login(tap.port, user, password)
        return tap.login()

    yield run
    for tap in taps:
        tap.close()


@pytest.mark.parametrize("login", [pymysql_login, connector_login, cli_login])
def test_real_clients_log_in_without_an_auth_switch(port, mariadb, tapped, login):
    wait_for(lambda: RawClient(port, "app", "pw"), what="the proxy accepting logins").close()
    # the greeting (0x0a), then the OK (seq 2): no auth switch (0xfe), no AuthMoreData (0x01)
    assert tapped(f"127.0.0.1:{port}", login, "app", "pw") == [(0, 0x0A), (2, 0x00)]
    assert tapped(mariadb.address, login, USER, PASSWORD) == [(0, 0x0A), (2, 0x00)]


def test_the_greeting_falls_back_when_the_primary_cannot_be_asked(tmp_path, steelyard):
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    port, sy = primary_proxy(tmp_path, steelyard, type("Down", (), {"address": down}))
    assert greeting_of(port).plugin == auth.SHA2
    sy.wait_log(r"event=mysql_version_unknown", what="the fallback logged")


def test_a_client_asking_for_client_ed25519_is_switched_to_what_the_proxy_checks(port, tapped):
    """MariaDB's client_ed25519 is not one the proxy verifies: the client is asked for a
    mysql_native_password scramble instead (an auth switch), which it gives."""
    wait_for(lambda: RawClient(port, "app", "pw"), what="the proxy accepting logins").close()

    def ed25519_login(port: int, user: str, password: str) -> None:
        out = subprocess.run(
            ["mariadb", "-h127.0.0.1", f"-P{port}", f"-u{user}", f"-p{password}",
             "--default-auth=client_ed25519", "-N", "-e", "SELECT CURRENT_USER()"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0 and out.stdout.startswith(USER), out.stderr

    assert tapped(f"127.0.0.1:{port}", ed25519_login, "app", "pw") == [
        (0, 0x0A), (2, 0xFE), (4, 0x00),
    ]  # fmt: skip
    wrong = subprocess.run(  # and a wrong password is still wrong
        ["mariadb", "-h127.0.0.1", f"-P{port}", "-uapp", "-pnot-pw",
         "--default-auth=client_ed25519", "-e", "SELECT 1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert (
        "ERROR 1045 (28000): Access denied for user 'app'@'127.0.0.1' (using password: YES)"
        in wrong.stderr
    )
