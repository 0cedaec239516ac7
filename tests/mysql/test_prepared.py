"""Prepared statements through the proxy: statement ids of the session's own, prepared again on
each server a statement runs on, reads to the replicas and writes to the primary, parameter
types and long data that follow the statement, cursors, and the errors MariaDB itself gives for
statements that do not exist (compared with a MariaDB answering directly)."""

from __future__ import annotations

import pytest

from fixtures.mariadb import PASSWORD, USER
from fixtures.mysql_client import RawClient, connect, one
from fixtures.procs import wait_for
from steelyard.mysql.protocol import messages
from steelyard.mysql.protocol.constants import Capability, Command, Status
from steelyard.mysql.protocol.response import ResponseTracker
from steelyard.mysql.protocol.wire import Cursor, lenenc_str

VAR_STRING = b"\xfd\x00"


def client(port: int) -> RawClient:
    return wait_for(lambda: RawClient(port, "app", "proxy-secret"), what="a proxy login")


def prepare(c: RawClient, sql: str) -> tuple[int, int, int]:
    t, _ = c.exchange(Command.STMT_PREPARE, sql.encode())
    assert t.error is None and t.statement is not None, t.error
    return t.statement


def execute_body(stmt_id: int, values: list[str | None], bound: bool = True, flags: int = 0,
                 params: int | None = None) -> bytes:  # fmt: skip
    """COM_STMT_EXECUTE's body: string parameters (None: sent as long data), types only when
    `bound`."""
    n = len(values) if params is None else params
    body = stmt_id.to_bytes(4, "little") + bytes((flags,)) + (1).to_bytes(4, "little")
    if n:
        body += bytes((n + 7) // 8)
        body += b"\x01" + VAR_STRING * n if bound else b"\x00"
        body += b"".join(lenenc_str(v.encode()) for v in values if v is not None)
    return body


def rows(packets: list[bytes], caps: int, count: int | None = None) -> list[list[str | None]]:
    """The binary rows of an answer whose columns are all strings."""
    start = 0
    if count is None:  # a result set: its column count and definitions come first
        if not packets or packets[0][:1] in (b"\x00", b"\xff"):
            return []
        count = Cursor(packets[0]).lenenc_int() or 0
        start = 1 + count + (0 if caps & Capability.DEPRECATE_EOF else 1)
    out = []
    for p in packets[start:]:
        if p[:1] in (b"\xfe", b"\xff"):
            break
        bitmap = p[1 : 1 + (count + 9) // 8]
        cur = Cursor(p, 1 + len(bitmap))
        row: list[str | None] = []
        for i in range(count):
            null = bitmap[(i + 2) // 8] & (1 << ((i + 2) % 8))
            row.append(None if null else (cur.lenenc_str() or b"").decode())
        out.append(row)
    return out


def execute(c: RawClient, stmt_id: int, values: list[str | None], **kw) -> tuple:
    t, packets = c.exchange(Command.STMT_EXECUTE, execute_body(stmt_id, values, **kw))
    return t, rows(packets, c.capabilities)


def test_reads_rotate_over_replicas_writes_go_to_the_primary(proxy):
    port, primary, replicas, _ = proxy
    primary.sql("CREATE DATABASE IF NOT EXISTS pst; CREATE TABLE IF NOT EXISTS pst.t "
                "(id INT PRIMARY KEY, v VARCHAR(20))")  # fmt: skip
    for r in replicas:
        r.wait_for(primary)
    c = client(port)
    sel, columns, params = prepare(c, "SELECT CAST(@@server_id AS CHAR), CAST(? AS CHAR)")
    assert (sel, columns, params) == (1, 2, 1)  # the session's own ids, from 1
    seen = set()
    for i in range(10):
        # types only with the first execution: the others may land on a server whose
        # statement never saw them, and must still mean strings
        t, got = execute(c, sel, [f"v{i}"], bound=i == 0)
        assert t.error is None, t.error
        assert got[0][1] == f"v{i}"
        seen.add(got[0][0])
    assert seen == {"2", "3"}  # both replicas, the statement prepared on each
    ins, _, _ = prepare(c, "INSERT INTO pst.t VALUES (CAST(? AS SIGNED), ?)")
    assert ins == 2
    for i in range(3):
        t, _ = execute(c, ins, [str(i), f"row{i}"])
        assert t.error is None, t.error
    assert primary.sql("SELECT COUNT(*) FROM pst.t").strip() == "3"
    other = client(port)  # another session: ids of its own, the statement's text its own
    assert prepare(other, "SELECT CAST(? AS CHAR)")[0] == 1
    assert execute(other, 1, ["mine"])[1] == [["mine"]]
    assert execute(c, sel, ["still"])[1][0][1] == "still"
    c.close()
    other.close()


def test_long_data_and_reset(proxy):
    port, *_ = proxy
    c = client(port)
    stmt, _, _ = prepare(c, "SELECT CAST(? AS CHAR), CAST(? AS CHAR)")
    for chunk in (b"abc", b"def"):  # no answer to either
        c.send(b"\x18" + stmt.to_bytes(4, "little") + (0).to_bytes(2, "little") + chunk)
    t, got = execute(c, stmt, [None, "x"], params=2)
    assert t.error is None and got == [["abcdef", "x"]]
    # an execution uses the long data up; a reset drops what was sent before it
    c.send(b"\x18" + stmt.to_bytes(4, "little") + (0).to_bytes(2, "little") + b"dropped")
    t, _ = c.exchange(Command.STMT_RESET, stmt.to_bytes(4, "little"))
    assert t.error is None
    assert execute(c, stmt, ["a", "b"])[1] == [["a", "b"]]
    # a statement closed is gone (no answer), the session still served
    c.send(b"\x19" + stmt.to_bytes(4, "little"))
    t, _ = execute(c, stmt, ["a", "b"])
    assert t.error is not None and t.error.code == 1243
    c.exchange(Command.PING)
    c.close()


@pytest.mark.parametrize("proxy", [{"max_allowed_packet": 4096}], indirect=True)
def test_long_data_over_max_allowed_packet(proxy):
    port, *_ = proxy
    c = client(port)
    stmt, _, _ = prepare(c, "SELECT CAST(? AS CHAR)")
    for _ in range(3):
        c.send(b"\x18" + stmt.to_bytes(4, "little") + b"\x00\x00" + b"x" * 2000)
    t, _ = execute(c, stmt, [None], params=1)
    assert (t.error.code, t.error.message) == (
        1153, "Parameter of prepared statement which is set through mysql_send_long_data() "
        "is longer than 'max_allowed_packet' bytes",
    )  # fmt: skip
    assert execute(c, stmt, ["fine"])[1] == [["fine"]]  # the next execution is clean
    c.close()


def test_cursors_keep_their_connection(proxy):
    port, *_ = proxy
    c = client(port)
    stmt, _, _ = prepare(c, "SELECT CAST(seq AS CHAR) FROM mysql.seq_1_to_5")
    t, got = execute(c, stmt, [], flags=1)  # CURSOR_TYPE_READ_ONLY: no rows yet
    assert t.error is None and got == [] and t.status & Status.CURSOR_EXISTS
    fetched = []
    while True:
        t, packets = c.exchange(Command.STMT_FETCH, stmt.to_bytes(4, "little") + b"\x02\0\0\0")
        assert t.error is None, t.error
        fetched += [r[0] for r in rows(packets, c.capabilities, count=1)]
        if t.status & Status.LAST_ROW_SENT:
            break
        # between fetches the session runs other statements on the cursor's connection
        t, _ = c.exchange(Command.QUERY, b"SELECT 1")
        assert t.error is None
    assert fetched == ["1", "2", "3", "4", "5"]
    t, _ = c.exchange(Command.STMT_FETCH, stmt.to_bytes(4, "little") + b"\x02\0\0\0")
    assert (t.error.code, t.error.message) == (1421, f"The statement ({stmt}) has no open cursor.")
    c.close()


def test_prepared_errors_are_mariadbs_own(proxy):
    """Bad statement ids, a bad prepare and a short execute packet: the proxy answers what
    MariaDB answers, and the session goes on."""
    port, primary, *_ = proxy
    direct = RawClient(primary.port, USER, PASSWORD)
    via = client(port)
    bad = [
        (Command.STMT_EXECUTE, execute_body(99, ["x"])),
        (Command.STMT_RESET, (99).to_bytes(4, "little")),
        (Command.STMT_PREPARE, b"SELEC nonsense"),
        (Command.STMT_EXECUTE, b"\x01\x00"),  # too short to be one
        (Command.STMT_FETCH, (99).to_bytes(4, "little") + b"\x01\0\0\0"),
    ]
    for command, body in bad:
        answers = []
        for c in (direct, via):
            t, _ = c.exchange(command, body)
            assert t.error is not None
            answers.append((t.error.code, t.error.sqlstate, t.error.message))
        assert answers[0] == answers[1], (command, answers)
    for c in (direct, via):  # STMT_CLOSE of an unknown id: no answer at all, then served
        c.send(b"\x19" + (99).to_bytes(4, "little"))
        t, packets = c.exchange(Command.PING)
        assert t.error is None and messages.is_ok(packets[0])
    direct.close()
    via.close()


def test_the_last_prepared_statement_id(proxy):
    """MariaDB's id -1: the statement prepared last (prepare and execute sent together)."""
    port, *_ = proxy
    c = client(port)
    c.send(b"\x16SELECT CAST(? AS CHAR)")
    c.send(b"\x17" + execute_body(0xFFFFFFFF, ["last"]))
    tracker = ResponseTracker(Command.STMT_PREPARE, c.capabilities)
    while not tracker.done:
        tracker.feed(c.read()[1])
    assert tracker.statement is not None
    tracker = ResponseTracker(Command.STMT_EXECUTE, c.capabilities)
    packets = []
    while not tracker.done:
        packets.append(c.read()[1])
        tracker.feed(packets[-1])
    assert rows(packets, c.capabilities) == [["last"]]
    c.close()


def test_mysql_connector_with_caching_sha2_and_prepared_statements(proxy):
    import mysql.connector

    port, primary, replicas, _ = proxy
    wait_for(lambda: connect(port), what="the proxy accepting logins").close()
    conn = mysql.connector.connect(
        host="127.0.0.1", port=port, user="app", password="proxy-secret", use_pure=True,
        auth_plugin="caching_sha2_password", autocommit=True,
    )  # fmt: skip
    cur = conn.cursor(prepared=True)  # COM_STMT_PREPARE / EXECUTE, binary rows
    cur.execute("CREATE DATABASE IF NOT EXISTS ps")
    cur.execute("CREATE TABLE IF NOT EXISTS ps.t (id INT PRIMARY KEY, v VARCHAR(10))")
    cur.execute("REPLACE INTO ps.t VALUES (?, ?)", (1, "one"))
    for r in replicas:
        r.wait_for(primary)
    servers = set()
    for _ in range(6):
        cur.execute("SELECT v, @@server_id FROM ps.t WHERE id = ?", (1,))
        (v, server), *_ = cur.fetchall()
        assert v == "one"
        servers.add(server)
    assert servers == {2, 3}  # prepared reads on the replicas, not pinned to the primary
    cur.close()
    plain = conn.cursor()
    plain.execute("SELECT @@server_id")
    assert plain.fetchall()[0][0] in (2, 3)
    conn.close()
    assert one(connect(port), "/*master*/ SELECT @@server_id") == 1


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_long_data_for_a_parameter_the_statement_lacks(proxy):
    """The attack (issue 12, before the fix): COM_STMT_SEND_LONG_DATA for parameter 5 of a
    statement without parameters was kept, unchecked; 30 x 10 MB of it grew the worker by
    320 MB. Now nothing of it is kept (the worker grows by the packet being read: +30 MB
    measured here), and the execution gets MariaDB's own answer (compared with a MariaDB
    answering directly): 1210, after which the statement runs again."""
    port, primary, _, sy = proxy
    via = client(port)
    direct = RawClient(primary.port, USER, PASSWORD)
    (worker,) = sy.worker_pids()
    answers = []
    for c in (direct, via):
        stmt, _, params = prepare(c, "SELECT 'no parameters'")
        assert params == 0
        c.send(b"\x18" + stmt.to_bytes(4, "little") + (5).to_bytes(2, "little") + b"x" * 100)
        for _ in range(2):  # until the statement is reset
            t, _ = execute(c, stmt, [])
            answers.append((t.error.code, t.error.sqlstate, t.error.message))
        t, _ = c.exchange(Command.STMT_RESET, stmt.to_bytes(4, "little"))
        assert t.error is None
        assert execute(c, stmt, [])[1] == [["no parameters"]]
    assert answers == [(1210, "HY000", "Incorrect arguments to mysqld_stmt_send_long_data")] * 4
    direct.close()
    stmt, _, _ = prepare(via, "SELECT 'no parameters'")
    before = rss_kib(worker)
    chunk = b"x" * (10 << 20)
    for _ in range(30):
        via.send(b"\x18" + stmt.to_bytes(4, "little") + (5).to_bytes(2, "little") + chunk)
    via.exchange(Command.PING)  # every long data packet was read by now
    grown = rss_kib(worker) - before
    assert grown < 100 << 10, f"the worker grew by {grown} KiB"
    t, _ = execute(via, stmt, [])
    assert t.error is not None and t.error.code == 1210
    via.exchange(Command.PING)
    via.close()


@pytest.mark.parametrize("proxy", [{"max_allowed_packet": 4096}], indirect=True)
def test_long_data_of_all_statements_together_is_capped(proxy):
    """Long data is kept until the execution: a session's statements together keep at most
    max_allowed_packet of it; the one going over is refused at its execution (1153)."""
    port, *_ = proxy
    c = client(port)
    first, _, _ = prepare(c, "SELECT CAST(? AS CHAR)")
    second, _, _ = prepare(c, "SELECT CAST(? AS CHAR)")
    for stmt in (first, second):
        c.send(b"\x18" + stmt.to_bytes(4, "little") + b"\x00\x00" + b"x" * 3000)
    t, _ = execute(c, second, [None], params=1)
    assert (t.error.code, t.error.message) == (
        1153, "Parameter of prepared statement which is set through mysql_send_long_data() "
        "is longer than 'max_allowed_packet' bytes",
    )  # fmt: skip
    t, got = execute(c, first, [None], params=1)
    assert t.error is None and got == [["x" * 3000]]
    c.close()


@pytest.mark.parametrize("proxy", [{"max_prepared_stmt_count": 3}], indirect=True)
def test_prepared_statements_per_session_are_capped(proxy):
    """max_prepared_stmt_count per session: the one over it gets MariaDB's 1461; a statement
    closed makes room; another session has its own count."""
    port, *_ = proxy
    c = client(port)
    ids = [prepare(c, f"SELECT {i}")[0] for i in range(3)]
    t, _ = c.exchange(Command.STMT_PREPARE, b"SELECT 4")
    assert (t.error.code, t.error.sqlstate, t.error.message) == (
        1461, "42000",
        "Can't create more than max_prepared_stmt_count statements (current value: 3)",
    )  # fmt: skip
    c.send(b"\x19" + ids[0].to_bytes(4, "little"))  # COM_STMT_CLOSE: no answer
    assert prepare(c, "SELECT 4")[0] > ids[-1]
    other = client(port)
    assert prepare(other, "SELECT 1")[0] == 1
    other.close()
    c.close()
