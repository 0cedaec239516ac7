"""TLS from the proxy to its MySQL servers (`backend_tls`, as ProxySQL's use_ssl).

Before (issue 12): the proxy logged in to its servers and sent every statement and row in
cleartext, whatever the clients used. Here a MariaDB with TLS whose backend users REQUIRE SSL
(or X509: a client certificate): they can log in only inside TLS, so the proxy serving them at
all, and the pool's health check keeping the server up, show both paths use it; the server
itself says the cipher of the connection the statements arrive on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import trustme

from fixtures.certs import write_cert
from fixtures.mariadb import MariaDB
from fixtures.procs import base_config, free_port, wait_for

TLS_USER, TLS_PASSWORD = "tls_app", "tls-secret"
X509_USER, X509_PASSWORD = "x509_app", "x509-secret"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_mariadb(tmp_path_factory: pytest.TempPathFactory, ca) -> Iterator[tuple[MariaDB, dict]]:
    """A MariaDB speaking TLS with a certificate for 127.0.0.1, and the files of a client
    certificate the same CA signed."""
    work = Path(tmp_path_factory.mktemp("tls-mariadb"))
    server = write_cert(ca, work, "127.0.0.1")
    client = write_cert(ca, work, "steelyard-client")
    ca.cert_pem.write_to_path(work / "ca.pem")
    db = MariaDB(work, options=(f"--ssl-ca={work / 'ca.pem'}", f"--ssl-cert={server['cert']}",
                                f"--ssl-key={server['key']}"))  # fmt: skip
    db.sql(
        f"CREATE USER '{TLS_USER}'@'%' IDENTIFIED BY '{TLS_PASSWORD}' REQUIRE SSL;"
        f"GRANT ALL ON *.* TO '{TLS_USER}'@'%';"
        f"CREATE USER '{X509_USER}'@'%' IDENTIFIED BY '{X509_PASSWORD}' REQUIRE X509;"
        f"GRANT ALL ON *.* TO '{X509_USER}'@'%';"
    )
    yield db, {"ca": str(work / "ca.pem"), **client}
    db.stop()


def start(tmp_path, steelyard, db: MariaDB, user: str, password: str, backend_tls: dict,
          health: dict | None = None):  # fmt: skip
    port = free_port()
    tmp_path.mkdir(exist_ok=True)
    cfg = base_config(
        tmp_path,
        pools={"primary": {"health": health or {"kind": "mysql", "interval": "500ms"},
                           "servers": [{"address": db.address}]}},
        mysql={"listeners": [{
            "listen": f"127.0.0.1:{port}", "users": [{"name": "app", "password": "pw"}],
            "backend_user": user, "backend_password": password, "primary": "primary",
            "backend_tls": backend_tls,
        }]},
    )  # fmt: skip
    return port, steelyard(cfg)


def login(port: int) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="app", password="pw",
                           autocommit=True)  # fmt: skip


def query(conn: pymysql.Connection, sql: str, *args) -> tuple:
    with conn.cursor() as c:
        c.execute(sql, args or None)
        return c.fetchone()


def refusal(port: int) -> tuple[int, str] | None:
    """The error a client gets logging in and running a statement (None: not listening yet)."""
    try:
        conn = login(port)
        try:
            query(conn, "SELECT 1")
        finally:
            conn.close()
    except pymysql.err.OperationalError as exc:
        return None if exc.args[0] == 2003 else exc.args
    raise AssertionError("served without its server")


def health(sy, db: MariaDB) -> str:
    return sy.server("primary", db.address)["health"]


def test_statements_reach_the_server_inside_tls(tmp_path, steelyard, tls_mariadb):
    db, files = tls_mariadb
    port, sy = start(tmp_path, steelyard, db, TLS_USER, TLS_PASSWORD, {"ca": files["ca"]})
    wait_for(lambda: health(sy, db) == "up", what="the TLS health check")
    conn = wait_for(lambda: login(port), what="the proxy")
    # the client's own connection is cleartext; the proxy's to the server is not
    variable, cipher = query(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    assert variable == "Ssl_cipher" and cipher, cipher
    assert query(conn, "SELECT CURRENT_USER()") == (f"{TLS_USER}@%",)
    # a large answer and a prepared-statement-free round trip of data through TLS
    assert query(conn, "SELECT LENGTH(REPEAT('x', %s))", 4 << 20) == (4 << 20,)
    value = "é" * 100_000
    assert query(conn, "SELECT %s", value) == (value,)
    conn.close()


def test_a_client_certificate_for_users_that_require_x509(tmp_path, steelyard, tls_mariadb):
    db, files = tls_mariadb
    port, sy = start(tmp_path, steelyard, db, X509_USER, X509_PASSWORD,
                     {"ca": files["ca"], "cert": files["cert"], "key": files["key"]})  # fmt: skip
    wait_for(lambda: health(sy, db) == "up", what="the TLS health check")
    conn = wait_for(lambda: login(port), what="the proxy")
    assert query(conn, "SELECT CURRENT_USER()") == (f"{X509_USER}@%",)
    _, cipher = query(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    assert cipher
    conn.close()


def test_a_server_certificate_that_does_not_verify_is_a_clear_error(
    tmp_path, steelyard, tls_mariadb
):
    """Verified against another CA: no login at all (the password never leaves), the health
    check down with the cause, and a client (of a listener whose pool has no check) told it;
    `verify: false` connects (and is still encrypted)."""
    db, _ = tls_mariadb
    wrong = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(wrong)
    _, sy = start(tmp_path / "checked", steelyard, db, TLS_USER, TLS_PASSWORD, {"ca": str(wrong)})
    sy.wait_log(r"event=health_flip .*state=down .*CERTIFICATE_VERIFY_FAILED")
    assert health(sy, db) == "down"
    port, _ = start(tmp_path / "unchecked", steelyard, db, TLS_USER, TLS_PASSWORD,
                    {"ca": str(wrong)}, {"kind": "none"})  # fmt: skip
    code, message = wait_for(lambda: refusal(port), what="the proxy's answer")
    assert code == 2013 and "CERTIFICATE_VERIFY_FAILED" in message, message
    port2, _ = start(tmp_path / "unverified", steelyard, db, TLS_USER, TLS_PASSWORD,
                     {"verify": False})  # fmt: skip
    conn = wait_for(lambda: login(port2), what="the unverified proxy")
    assert query(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")[1]
    conn.close()


def test_a_server_without_tls_is_not_used_in_cleartext(tmp_path, steelyard, replication):
    """backend_tls on, a server that offers no TLS: the proxy does not fall back to cleartext
    (no login is sent), and says why."""
    primary = replication[0]
    port, _ = start(tmp_path, steelyard, primary, "app", "secret", {"verify": False},
                    {"kind": "none"})  # fmt: skip
    code, message = wait_for(lambda: refusal(port), what="the proxy's answer")
    assert code == 2013 and "the server does not offer TLS" in message, message
