"""LOAD DATA LOCAL INFILE through the MySQL proxy (`local_infile`), over real MariaDB servers and
real clients: files several times the listener's max_allowed_packet streamed up, the rows
counted on the primary itself; the client is read no more while the server does not read (the
proxy never holds the file); the refusals, with MariaDB's own error, and the next statement and
client served; a server that asks for a file the statement did not name (a fake server: no
real one does) gets an empty packet, never the client's file."""

from __future__ import annotations

import itertools
import socket
import socketserver
import ssl
import subprocess
import threading
from pathlib import Path

import mysql.connector
import pymysql
import pytest
import trustme

from fixtures.certs import write_cert
from fixtures.mariadb import PASSWORD, USER
from fixtures.mysql_client import CAPS, RawClient, connect, one, primary_proxy
from fixtures.procs import wait_for
from steelyard.mysql.classify import Route, classify, local_file_names
from steelyard.mysql.protocol import handshake, messages
from steelyard.mysql.protocol.constants import MAX_PAYLOAD, Capability, Command, Status
from steelyard.mysql.protocol.infile import FileStream
from steelyard.mysql.protocol.packets import HEADER, PacketReader, frame
from steelyard.mysql.protocol.wire import Malformed

DISABLED = (
    4166,
    "The used command is not allowed because the MariaDB server or client has disabled the "
    "local infile capability",
)
LISTENER_PACKET = 1024 * 1024  # the listener's max_allowed_packet in these tests
PAD = "x" * 100


def write_rows(path: Path, rows: int) -> Path:
    with open(path, "w") as f:
        for i in range(rows):
            f.write(f"{i}\t{PAD}\n")
    return path


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """About 8 MiB of rows: eight times the listener's max_allowed_packet."""
    rows = 80_000
    path = write_rows(tmp_path_factory.mktemp("infile") / "rows.tsv", rows)
    assert path.stat().st_size > 7 * LISTENER_PACKET
    return path, rows


def fresh_table(primary, name: str, trigger: str = "") -> str:
    primary.sql(
        "CREATE DATABASE IF NOT EXISTS loads;"
        f"DROP TABLE IF EXISTS loads.{name};"
        f"CREATE TABLE loads.{name} (id INT PRIMARY KEY, pad VARCHAR(200)) ENGINE=InnoDB;" + trigger
    )
    return f"loads.{name}"


def count(primary, table: str) -> int:
    return int(primary.sql(f"SELECT COUNT(*) FROM {table}"))


def load(table: str, path: Path) -> str:
    return f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {table}"


# through the read/write split: the primary gets the rows ---------------------------------------


@pytest.mark.parametrize(
    "proxy", [{"local_infile": True, "max_allowed_packet": LISTENER_PACKET}], indirect=True
)
def test_real_clients_load_files_bigger_than_max_allowed_packet(proxy, big_file, tmp_path):
    port, primary, replicas, _ = proxy
    path, rows = big_file
    # PyMySQL, opted in (every client asks its user to, by design)
    table = fresh_table(primary, "pymysql")
    conn = wait_for(lambda: connect(port, local_infile=True), what="the proxy accepting logins")
    with conn.cursor() as c:
        assert c.execute(load(table, path)) == rows
    assert count(primary, table) == rows  # on the primary itself
    for r in replicas:
        r.wait_for(primary)  # replicated as any write, read from the replicas as any table
    assert one(conn, f"SELECT COUNT(*) FROM {table} WHERE id < 10") == 10  # the session goes on
    conn.close()
    # mysql-connector, opted in
    table = fresh_table(primary, "connector")
    cn = mysql.connector.connect(
        host="127.0.0.1", port=port, user="app", password="proxy-secret",
        allow_local_infile=True, autocommit=True,
    )  # fmt: skip
    cur = cn.cursor()
    cur.execute(load(table, path))
    assert cur.rowcount == rows
    cur.execute("SELECT 41 + 1")
    assert cur.fetchall() == [(42,)]
    cn.close()
    assert count(primary, table) == rows
    # the mariadb command-line client
    table = fresh_table(primary, "cli")
    out = mariadb_cli(port, "--local-infile=1", f"{load(table, path)}; SELECT ROW_COUNT()")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(rows)]
    assert count(primary, table) == rows
    for r in replicas:
        r.wait_for(primary)
        assert count(r, table) == rows  # replicated as any write


def mariadb_cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    sql = args[-1]
    return subprocess.run(
        ["mariadb", "-h127.0.0.1", f"-P{port}", "-uapp", "-pproxy-secret", "-N", "-B",
         *args[:-1], "-e", sql],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("proxy", [{"local_infile": True}], indirect=True)
def test_clients_that_did_not_opt_in_are_refused_as_mariadb_refuses_them(proxy, tmp_path):
    port, primary, _, _ = proxy
    table = fresh_table(primary, "refused")
    path = write_rows(tmp_path / "few.tsv", 3)
    conn = wait_for(lambda: connect(port), what="the proxy accepting logins")  # no local_infile
    with pytest.raises(pymysql.err.OperationalError) as refused, conn.cursor() as c:
        c.execute(load(table, path))
    assert refused.value.args == DISABLED
    assert one(conn, "SELECT 7") == 7  # the session goes on
    conn.close()
    # mysql-connector announces CLIENT_LOCAL_FILES whatever its user says, and refuses the
    # server's request itself: through the proxy as from MariaDB directly
    for at in (port, primary.port):
        user, password = ("app", "proxy-secret") if at == port else (USER, PASSWORD)
        cn = mysql.connector.connect(host="127.0.0.1", port=at, user=user, password=password)
        cur = cn.cursor()
        with pytest.raises(mysql.connector.Error) as err:
            cur.execute(load(table, path))
        assert (err.value.errno, err.value.msg) == (
            2068, "LOAD DATA LOCAL INFILE file request rejected due to restrictions on access."
        )  # fmt: skip
        cur.execute("SELECT 8")
        assert cur.fetchall() == [(8,)]
        cn.close()
    out = mariadb_cli(port, "--local-infile=0", load(table, path))
    assert out.returncode == 1
    assert f"ERROR {DISABLED[0]} (HY000) at line 1: {DISABLED[1]}" in out.stderr
    assert count(primary, table) == 0
    # the same refusals from the server itself, for comparison
    direct = pymysql.connect(host="127.0.0.1", port=primary.port, user=USER, password=PASSWORD)
    with pytest.raises(pymysql.err.OperationalError) as refused, direct.cursor() as c:
        c.execute(load(table, path))
    assert refused.value.args == DISABLED
    direct.close()


def test_a_listener_without_local_infile_offers_none(tmp_path, steelyard, mariadb):
    port, _ = primary_proxy(tmp_path, steelyard, mariadb)  # local_infile: false, the default
    table = fresh_table(mariadb, "off")
    path = write_rows(tmp_path / "few.tsv", 3)
    raw = wait_for(lambda: RawClient(port, "app", "pw", CAPS | Capability.LOCAL_FILES))
    assert not raw.greeting.capabilities & Capability.LOCAL_FILES
    t, packets = raw.exchange(Command.QUERY, load(table, path).encode())
    err = messages.parse_err(packets[0])
    assert (err.code, err.message) == DISABLED and len(packets) == 1
    t, _ = raw.exchange(Command.PING)
    assert t.error is None  # the session goes on
    raw.close()
    # a client that opted in is refused all the same, and the next client served
    conn = pymysql.connect(host="127.0.0.1", port=port, user="app", password="pw",
                           local_infile=True)  # fmt: skip
    with pytest.raises(pymysql.err.OperationalError) as refused, conn.cursor() as c:
        c.execute(load(table, path))
    assert refused.value.args == DISABLED
    conn.close()
    conn = pymysql.connect(host="127.0.0.1", port=port, user="app", password="pw")
    assert one(conn, "SELECT 9") == 9
    conn.close()
    assert count(mariadb, table) == 0


# flow: the proxy never holds the file -----------------------------------------------------------

GATE = (
    "CREATE TRIGGER loads.{0}_gate BEFORE INSERT ON loads.{0} "
    "FOR EACH ROW SET @g = GET_LOCK('{0}', 3600);"
)


def gate(mariadb, name: str) -> pymysql.Connection:
    """A connection of the server's own holding the lock the table's insert trigger waits for:
    the server stops reading the file at its first row until the connection lets go."""
    holder = pymysql.connect(host="127.0.0.1", port=mariadb.port, user=USER, password=PASSWORD)
    with holder.cursor() as c:
        c.execute(f"SELECT GET_LOCK('{name}', 0)")
        assert c.fetchone() == (1,)
    return holder


def high_water_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def loader(port: int, sql: str) -> tuple[threading.Thread, dict[str, object]]:
    got: dict[str, object] = {}

    def run() -> None:
        try:
            conn = pymysql.connect(host="127.0.0.1", port=port, user="app", password="pw",
                                   local_infile=True, autocommit=True)  # fmt: skip
            got["conn"] = conn
            with conn.cursor() as c:
                got["rows"] = c.execute(sql)
        except Exception as exc:
            got["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


@pytest.fixture
def infile_proxy(tmp_path, steelyard, mariadb):
    port, sy = primary_proxy(
        tmp_path, steelyard, mariadb, local_infile=True, max_allowed_packet=LISTENER_PACKET
    )
    wait_for(lambda: connect_pw(port), what="the proxy accepting logins").close()
    return port, sy


def connect_pw(port: int, **kw: object) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="app", password="pw",
                           autocommit=True, **kw)  # fmt: skip


def test_the_client_waits_while_the_server_does_not_read(infile_proxy, mariadb, tmp_path):
    port, sy = infile_proxy
    rows = 240_000  # about 25 MiB: far more than the sockets between client and server buffer
    path = write_rows(tmp_path / "big.tsv", rows)
    size = path.stat().st_size
    table = fresh_table(mariadb, "flow", GATE.format("flow"))
    (worker,) = sy.worker_pids()
    before = high_water_kib(worker)
    holder = gate(mariadb, "flow")
    thread, got = loader(port, load(table, path))
    # the server reads nothing past the first row: the proxy stops reading the client
    sy.wait_log(r"event=mysql_infile_paused .*bytes=\d+", timeout=60, what="reading paused")
    paused_at = high_water_kib(worker)
    holder.close()  # the server reads again, the proxy with it
    thread.join(120)
    assert got.get("rows") == rows, got
    assert count(mariadb, table) == rows
    # the proxy never held more than a small part of the file
    assert (paused_at - before) * 1024 < size / 4
    assert (high_water_kib(worker) - before) * 1024 < size / 4
    got["conn"].close()  # type: ignore[attr-defined]


def test_a_file_over_tls_waits_for_the_server_too(tmp_path, steelyard, mariadb):
    """The client's TLS connection is read no more while the server does not read, too."""
    ca = trustme.CA()
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(cafile)
    tls = {"certs": [write_cert(ca, tmp_path, "localhost", "127.0.0.1")]}
    port, sy = primary_proxy(tmp_path, steelyard, mariadb, local_infile=True, tls=tls)
    rows = 240_000
    path = write_rows(tmp_path / "big.tsv", rows)
    table = fresh_table(mariadb, "tls", GATE.format("tls"))
    holder = gate(mariadb, "tls")
    got: dict[str, object] = {}

    def run() -> None:
        conn = wait_for(lambda: connect_pw(port, local_infile=True, ssl={"ca": str(cafile)}))
        assert isinstance(conn._sock, ssl.SSLSocket)
        with conn.cursor() as c:
            got["rows"] = c.execute(load(table, path))
        got["next"] = one(conn, "SELECT 15")
        conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    sy.wait_log(r"event=mysql_infile_paused", timeout=60, what="reading paused")
    holder.close()
    thread.join(120)
    assert got == {"rows": rows, "next": 15}
    assert count(mariadb, table) == rows


def test_a_server_lost_mid_upload_is_an_error_and_the_session_goes_on(
    infile_proxy, mariadb, tmp_path
):
    port, sy = infile_proxy
    path = write_rows(tmp_path / "big.tsv", 240_000)
    table = fresh_table(mariadb, "lost", GATE.format("lost"))
    holder = gate(mariadb, "lost")
    thread, got = loader(port, load(table, path))
    sy.wait_log(r"event=mysql_infile_paused", timeout=60, what="reading paused")
    with holder.cursor() as c:

        def waiting() -> tuple[int] | None:  # the loading thread, in its trigger, at the gate
            c.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE STATE = 'User lock'")
            return c.fetchone()

        (thread_id,) = wait_for(waiting, what="the server waiting at the gate")
        c.execute(f"KILL {thread_id}")
    holder.close()
    thread.join(120)
    err = got.get("error")
    assert isinstance(err, pymysql.err.OperationalError), got
    assert err.args[0] == 2013
    assert err.args[1].startswith(
        f"Lost connection to backend server {mariadb.address} during query"
    )
    conn = got["conn"]
    assert one(conn, "SELECT 11") == 11  # the same session, on another connection
    conn.close()  # type: ignore[attr-defined]
    assert count(mariadb, table) == 0
    sy.wait_log(r"event=mysql_infile_failed", what="the failure logged")


def test_a_client_that_leaves_mid_upload_takes_its_connection_along(
    infile_proxy, mariadb, tmp_path
):
    port, _ = infile_proxy
    table = fresh_table(mariadb, "left")
    raw = RawClient(port, "app", "pw", CAPS | Capability.LOCAL_FILES)
    raw.send(b"\x03" + load(table, Path("rows.tsv")).encode())
    seq, request = raw.read()
    assert (seq, request) == (1, b"\xfbrows.tsv")  # passed on as the server sent it
    raw.send(b"1\tone\n", 2)  # some of the file

    def loading() -> list[str]:
        return mariadb.sql(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'LOAD DATA%'"
        ).split()

    (thread_id,) = wait_for(loading, what="the server reading the file")
    raw.close()
    # the connection is closed, not pooled: the server ends its statement and its thread
    wait_for(
        lambda: (
            not mariadb.sql(
                f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID = {thread_id}"
            ).strip()
        ),
        what="the backend connection closed",
    )
    assert count(mariadb, table) == 0
    conn = connect_pw(port)
    assert one(conn, "SELECT 12") == 12
    conn.close()


def test_a_command_where_the_file_goes_on_is_out_of_step(infile_proxy, mariadb):
    port, _ = infile_proxy
    table = fresh_table(mariadb, "step")
    raw = RawClient(port, "app", "pw", CAPS | Capability.LOCAL_FILES)
    raw.send(b"\x03" + load(table, Path("step.tsv")).encode())
    assert raw.read() == (1, b"\xfbstep.tsv")
    raw.send(b"1\tone\n", 2)
    raw.send(bytes((Command.PING,)), 0)  # a command, as if the file were done with
    seq, answer = raw.read()
    err = messages.parse_err(answer)
    assert (seq, err.code, err.message) == (3, 1156, "Got packets out of order")
    with pytest.raises(ConnectionError):
        raw.read()  # closed, as for any client out of step
    assert count(mariadb, table) == 0
    conn = connect_pw(port)
    assert one(conn, "SELECT 13") == 13
    conn.close()


def test_two_files_in_one_multi_statement(infile_proxy, mariadb, tmp_path):
    port, _ = infile_proxy
    table = fresh_table(mariadb, "multi")
    first = write_rows(tmp_path / "first.tsv", 5)
    second = tmp_path / "second.tsv"
    second.write_text("".join(f"{i}\t{PAD}\n" for i in range(5, 12)))
    conn = connect_pw(
        port, local_infile=True, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS
    )
    with conn.cursor() as c:
        c.execute(f"{load(table, first)}; {load(table, second)}; SELECT COUNT(*) FROM {table}")
        assert c.rowcount == 5
        assert c.nextset() and c.rowcount == 7
        assert c.nextset() and c.fetchall() == ((12,),)
        assert not c.nextset()
    assert one(conn, "SELECT 14") == 14
    conn.close()
    assert count(mariadb, table) == 12


def test_sequence_ids_and_a_file_in_odd_packets(infile_proxy, mariadb):
    """A file sent in packets cut anywhere: the server gets them as they were, the client its
    answer with the right sequence id."""
    port, _ = infile_proxy
    table = fresh_table(mariadb, "odd")
    raw = RawClient(port, "app", "pw", CAPS | Capability.LOCAL_FILES)
    raw.send(b"\x03" + load(table, Path("odd.tsv")).encode())
    assert raw.read() == (1, b"\xfbodd.tsv")
    data = b"".join(f"{i}\tr{i}\n".encode() for i in range(1000))
    packets = frame(data[:10], 2)[0] + frame(data[10:], 3)[0]
    for i in range(0, len(packets), 7):  # in 7-byte writes: headers cut too
        raw.sock.sendall(packets[i : i + 7])
    raw.send(b"", 4)
    seq, answer = raw.read()
    assert seq == 5 and messages.is_ok(answer), answer
    assert count(mariadb, table) == 1000
    t, _ = raw.exchange(Command.PING)
    assert t.error is None
    raw.close()


# a server that asks for a file nobody named -----------------------------------------------------


class FakeServer(socketserver.ThreadingTCPServer):
    """A MySQL server as small as can be: logs anyone in, answers OK, and answers a statement
    with `evil` in it, or a LOAD DATA, by asking for /etc/passwd (what a malicious server would
    do)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.port = self.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.after_request: list[tuple[int, bytes]] = []  # what came back for the request
        threading.Thread(target=self.serve_forever, daemon=True).start()


class FakeHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        reader = PacketReader()
        pending: list[tuple[int, bytes]] = []

        def read() -> tuple[int, bytes] | None:
            while not pending:
                data = sock.recv(65536)
                if not data:
                    return None
                pending.extend(reader.feed(data))
            return pending.pop(0)

        caps = (
            Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
            | Capability.LONG_PASSWORD | Capability.TRANSACTIONS | Capability.LOCAL_FILES
            | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA | Capability.CONNECT_WITH_DB
        )  # fmt: skip
        greeting = handshake.Greeting("10.11.0-fake", 1, b"a" * 20, int(caps))
        sock.sendall(frame(handshake.build_greeting(greeting), 0)[0])
        if read() is None:
            return
        ok = messages.ok(messages.Ok(status=Status.AUTOCOMMIT))
        sock.sendall(frame(ok, 2)[0])
        while (got := read()) is not None:
            _, payload = got
            if payload[:1] == b"\x01":
                return
            if payload[:1] == b"\x03" and (b"evil" in payload or b"LOAD DATA" in payload):
                sock.sendall(frame(b"\xfb/etc/passwd", 1)[0])
                answer = read()
                if answer is None:
                    return
                self.server.after_request.append(answer)  # type: ignore[attr-defined]
                sock.sendall(frame(ok, answer[0] + 1)[0])
                continue
            sock.sendall(frame(ok, 1)[0])


def test_a_request_for_a_file_the_statement_did_not_name_gets_none(tmp_path, steelyard):
    fake = FakeServer()
    try:
        port, sy = primary_proxy(tmp_path, steelyard, fake, local_infile=True)
        raw = wait_for(lambda: RawClient(port, "app", "pw", CAPS | Capability.LOCAL_FILES))
        assert raw.greeting.capabilities & Capability.LOCAL_FILES
        for sql in (b"SELECT 'evil'", b"LOAD DATA LOCAL INFILE 'mine.tsv' INTO TABLE t"):
            t, packets = raw.exchange(Command.QUERY, sql)
            # the client never sees the request: it gets MariaDB's refusal, where its answer
            # starts
            assert len(packets) == 1
            err = messages.parse_err(packets[0])
            assert (err.code, err.message) == DISABLED
        assert fake.after_request == [(2, b"")] * 2  # the server got an empty file
        t, _ = raw.exchange(Command.QUERY, b"SELECT 1")
        assert t.error is None  # the session goes on
        raw.close()
        sy.wait_log(
            r"event=mysql_infile_refused .*file=/etc/passwd .*why=\"the statement names another",
            what="the refusal logged",
        )
    finally:
        fake.shutdown()
        fake.server_close()


def test_a_name_with_a_quote_in_it_is_the_file_the_server_asks_for(infile_proxy, mariadb, tmp_path):
    port, _ = infile_proxy
    table = fresh_table(mariadb, "quoted")
    path = write_rows(tmp_path / "it's.tsv", 3)
    conn = connect_pw(port, local_infile=True)
    with conn.cursor() as c:
        quoted = str(path).replace("'", "''")
        assert c.execute(f"LOAD DATA LOCAL INFILE '{quoted}' INTO TABLE {table}") == 3
    conn.close()


def test_classify_names_load_data_local_and_its_files():
    for sql, names in [
        (b"LOAD DATA LOCAL INFILE 'x.tsv' INTO TABLE t", {b"x.tsv"}),
        (b"load data low_priority local infile 'it''s' into table t", {b"it's"}),
        (b"/* c */ LOAD DATA CONCURRENT LOCAL INFILE 'a' INTO TABLE t", {b"a"}),
        (b'LOAD XML LOCAL INFILE "a" INTO TABLE t', {b"a"}),
        (
            b"LOAD DATA LOCAL INFILE 'a' INTO t; LOAD DATA LOCAL INFILE _utf8mb4'b' INTO u",
            {b"a", b"b"},
        ),
        # cannot be read for sure: any file the statement's server asks for
        (b"LOAD DATA LOCAL INFILE 'a\\\\b' INTO TABLE t", None),  # NO_BACKSLASH_ESCAPES?
        (b"LOAD DATA LOCAL INFILE 'a' 'b' INTO TABLE t", None),
        (b"LOAD DATA LOCAL /* c */ INFILE 'a' INTO TABLE t", None),
        (b"LOAD DATA LOCAL INFILE 'a' INTO TABLE t FIELDS TERMINATED BY 'INFILE'", None),
    ]:
        st = classify(sql)
        assert st.local_file and st.route is Route.PRIMARY and not st.dirties, sql
        assert local_file_names(sql) == (None if names is None else frozenset(names)), sql
    # user variables it sets stay on the connection: pinned, as anywhere
    st = classify(b"LOAD DATA LOCAL INFILE 'f' INTO TABLE t (@a, b) SET c = @a")
    assert st.local_file and st.pins == "a user variable" and st.dirties
    for sql in (b"LOAD DATA INFILE 'x' INTO TABLE t", b"SELECT 'LOAD DATA LOCAL INFILE'",
                b"LOAD INDEX INTO CACHE t", b"SELECT 1"):  # fmt: skip
        assert not classify(sql).local_file, sql


def test_codec_file_stream_finds_the_end_across_chunks():
    small = frame(b"12", 2)[0] + frame(b"tail", 3)[0] + frame(b"", 4)[0]
    for step in range(1, len(small) + 1):
        assert ends(small + b"next", [step], 1) == (len(small), 4, 6), step
    # 16 MiB - 1 is continued by the next packet, here an empty one that is not the end
    big = frame(b"12", 1)[0] + frame(b"a" * MAX_PAYLOAD, 2)[0] + frame(b"", 4)[0]
    assert big[-8:] == b"\x00\x00\x00\x03\x00\x00\x00\x04"
    for steps in ([1 << 16], [1 << 20], [HEADER + 2, HEADER + 1, 1 << 24, 2, 1, 1 << 20]):
        assert ends(big, steps, 0) == (len(big), 4, 2 + MAX_PAYLOAD), steps
    with pytest.raises(Malformed):  # a command where the file goes on: out of step
        FileStream(1).feed(frame(b"12", 2)[0] + frame(b"\x0e", 0)[0])


def ends(stream: bytes, steps: list[int], seq: int) -> tuple[int, int, int]:
    """Where a FileStream after a request of sequence id `seq`, fed `stream` in chunks of
    `steps` (the last one repeated), finds the end, and its last sequence id and byte count."""
    fs = FileStream(seq)
    at = 0
    for i in itertools.count():
        chunk = stream[at : at + steps[min(i, len(steps) - 1)]]
        assert chunk, "no end found"
        end = fs.feed(chunk)
        if end >= 0:
            return at + end, fs.seq, fs.bytes
        at += len(chunk)
    raise AssertionError("unreachable")


def test_a_client_that_stalls_mid_upload_is_cut_at_read_timeout(tmp_path, steelyard, mariadb):
    """A client that starts its file and then sends nothing is closed at read_timeout (the
    server's net_read_timeout), its statement rolled back, rather than holding its session and
    a server connection for as long as it likes."""
    port, sy = primary_proxy(tmp_path, steelyard, mariadb, local_infile=True, read_timeout="1s")
    wait_for(lambda: connect_pw(port), what="the proxy accepting logins").close()
    table = fresh_table(mariadb, "stall")
    raw = RawClient(port, "app", "pw", CAPS | Capability.LOCAL_FILES)
    raw.send(b"\x03" + load(table, Path("stall.tsv")).encode())
    assert raw.read() == (1, b"\xfbstall.tsv")
    raw.send(b"1\tone\n", 2)  # some of the file, then nothing
    sy.wait_log(r"event=mysql_timeout .*timeout=read_timeout")
    with pytest.raises(ConnectionError):
        raw.read()
    assert count(mariadb, table) == 0
    conn = connect_pw(port)
    assert one(conn, "SELECT 14") == 14
    conn.close()
