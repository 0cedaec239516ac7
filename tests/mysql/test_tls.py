"""TLS between clients and the proxy (CLIENT_SSL): PyMySQL, mysql-connector (caching_sha2)
and the mariadb command-line client verify the proxy's certificate and log in inside TLS;
`required: true` refuses clients without it; a broken TLS handshake costs only its own
connection."""

from __future__ import annotations

import socket
import ssl
import subprocess

import pymysql
import pytest
import trustme

from fixtures.certs import write_cert
from fixtures.mysql_client import connect, one
from fixtures.procs import wait_for
from steelyard.mysql.protocol import handshake, messages
from steelyard.mysql.protocol.constants import Capability
from steelyard.mysql.protocol.packets import PacketReader, frame


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca, tmp_path):
    """A `tls:` section for the proxy's listener, and the CA file clients verify it with."""
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(cafile)
    cert = write_cert(ca, tmp_path, "localhost", "127.0.0.1")
    return {"certs": [cert]}, str(cafile)


def test_clients_log_in_over_tls(make_proxy, tls):
    section, cafile = tls
    port, *_ = make_proxy(tls=section)
    conn = wait_for(lambda: connect(port, ssl={"ca": cafile}), what="a TLS login")
    assert isinstance(conn._sock, ssl.SSLSocket)
    assert ("DNS", "localhost") in conn._sock.getpeercert()["subjectAltName"]
    assert one(conn, "SELECT 40 + 2") == 42
    conn.close()
    # the mariadb command-line client, verifying the certificate
    out = subprocess.run(
        ["mariadb", "-h", "127.0.0.1", "-P", str(port), "-u", "app", "-pproxy-secret",
         "--ssl", f"--ssl-ca={cafile}", "--ssl-verify-server-cert", "-N", "-e",
         "SELECT 'over tls'"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (out.returncode, out.stdout.strip()) == (0, "over tls"), out.stderr
    # plain clients are still welcome when TLS is not required
    plain = connect(port, ssl_disabled=True)
    assert not isinstance(plain._sock, ssl.SSLSocket)
    assert one(plain, "SELECT 1") == 1
    plain.close()


def test_mysql_connector_caching_sha2_over_tls(make_proxy, tls):
    import mysql.connector

    section, cafile = tls
    port, *_ = make_proxy(tls=section)
    wait_for(lambda: connect(port), what="the proxy accepting logins").close()
    conn = mysql.connector.connect(
        host="127.0.0.1", port=port, user="app", password="proxy-secret", use_pure=True,
        auth_plugin="caching_sha2_password", ssl_ca=cafile, ssl_verify_cert=True,
    )  # fmt: skip
    cur = conn.cursor()
    cur.execute("SELECT 'sha2 over tls'")
    assert cur.fetchall() == [("sha2 over tls",)]
    assert conn._socket.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.close()


def test_required_tls_refuses_plain_clients(make_proxy, tls):
    section, cafile = tls
    port, *_ = make_proxy(tls={**section, "required": True})
    wait_for(lambda: connect(port, ssl={"ca": cafile}), what="a TLS login").close()
    with pytest.raises(pymysql.err.OperationalError) as refused:
        connect(port, ssl_disabled=True)
    assert refused.value.args == (
        3159, "Connections using insecure transport are prohibited while "
        "--require_secure_transport=ON.",
    )  # fmt: skip
    conn = connect(port, ssl={"ca": cafile})
    assert one(conn, "SELECT 3") == 3
    conn.close()


def test_a_broken_tls_handshake_costs_only_its_connection(make_proxy, tls):
    section, cafile = tls
    port, *_ = make_proxy(tls=section)
    wait_for(lambda: connect(port, ssl={"ca": cafile}), what="a TLS login").close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        reader = PacketReader()
        (_, greeting), *_ = reader.feed(s.recv(4096))
        assert handshake.parse_greeting(greeting).capabilities & Capability.SSL
        request = handshake.Response(
            Capability.PROTOCOL_41 | Capability.SSL | Capability.SECURE_CONNECTION,
            16 << 20, 45, ssl_request=True,
        )  # fmt: skip
        # the SSLRequest and, in the same write, bytes that are no TLS ClientHello
        s.sendall(frame(handshake.build_response(request), 1)[0] + b"GET / HTTP/1.0\r\n\r\n")
        rest = b""
        while chunk := s.recv(4096):  # closed by the proxy (a TLS alert at most)
            rest += chunk
        assert not messages.is_ok(rest[4:])
    conn = connect(port, ssl={"ca": cafile})
    assert one(conn, "SELECT 4") == 4
    conn.close()
