"""Session ids through the MySQL proxy: the greeting's thread id, CONNECTION_ID(), SHOW
PROCESSLIST and KILL all speak of the proxy's own sessions (real mariadbd, real clients), in one
worker and across two."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from fixtures.mariadb import PASSWORD, USER, MariaDB
from fixtures.mysql_client import CAPS, RawClient
from fixtures.procs import Steelyard, base_config, free_port, wait_for
from steelyard.config.mysql_model import MysqlUserConfig
from steelyard.mysql import processlist, sessionid
from steelyard.mysql.classify import classify
from steelyard.mysql.protocol.constants import Capability, Command
from steelyard.mysql.protocol.messages import parse_err
from steelyard.mysql.protocol.resultset import column_name, text_row

USERS = [
    {"name": "app", "password": "app-pw"},
    {"name": "low", "password": "low-pw"},
    {"name": "ops", "password": "ops-pw", "process": True},
]
PASSWORDS = {u["name"]: u["password"] for u in USERS}

# sans-IO --------------------------------------------------------------------------------------

REWRITES = [
    (b"SELECT CONNECTION_ID()", b"SELECT CAST(7 AS UNSIGNED) AS `CONNECTION_ID()`"),
    (b"select connection_id ( ), 1 from t",
     b"select CAST(7 AS UNSIGNED) AS `connection_id ( )`, 1 from t"),
    (b"SELECT a, CONNECTION_ID() FROM t ORDER BY a, CONNECTION_ID()",
     b"SELECT a, CAST(7 AS UNSIGNED) AS `CONNECTION_ID()` FROM t ORDER BY a, CAST(7 AS UNSIGNED)"),
    (b"INSERT INTO t VALUES (1, CONNECTION_ID())",
     b"INSERT INTO t VALUES (1, CAST(7 AS UNSIGNED))"),
    (b"SELECT IF(1, CONNECTION_ID(), 0)", b"SELECT IF(1, CAST(7 AS UNSIGNED), 0)"),
    (b"SELECT CONNECTION_ID()+1", b"SELECT CAST(7 AS UNSIGNED)+1"),
    (b"SELECT (SELECT CONNECTION_ID())",
     b"SELECT (SELECT CAST(7 AS UNSIGNED) AS `CONNECTION_ID()`)"),
    (b"/*!SELECT CONNECTION_ID() */", b"/*!SELECT CAST(7 AS UNSIGNED) */"),
    (b"KILL CONNECTION_ID()", b"KILL CAST(7 AS UNSIGNED)"),
    (b"SELECT CASE WHEN a IN (1, 2) THEN 3 END, CONNECTION_ID() cid, f(CONNECTION_ID())",
     b"SELECT CASE WHEN a IN (1, 2) THEN 3 END, CAST(7 AS UNSIGNED) cid, f(CAST(7 AS UNSIGNED))"),
    (b"SELECT a, b IN (1, 2), CONNECTION_ID() FROM t",
     b"SELECT a, b IN (1, 2), CAST(7 AS UNSIGNED) AS `CONNECTION_ID()` FROM t"),
    (b"SELECT CASE WHEN 1 THEN 2 END, CONNECTION_ID()",
     b"SELECT CASE WHEN 1 THEN 2 END, CAST(7 AS UNSIGNED) AS `CONNECTION_ID()`"),
    (b"UPDATE t SET a = 1, b = CONNECTION_ID() WHERE c IN (CONNECTION_ID(), 1)",
     b"UPDATE t SET a = 1, b = CAST(7 AS UNSIGNED) WHERE c IN (CAST(7 AS UNSIGNED), 1)"),
    # not calls: literals, quoted names, comments, another schema's function
    (b"SELECT 'CONNECTION_ID()' -- CONNECTION_ID()", None),
    (b'SELECT "CONNECTION_ID()" # CONNECTION_ID()', None),
    (b"SELECT `CONNECTION_ID()`, /* CONNECTION_ID() */ 1", None),
    (b"SELECT db.CONNECTION_ID(), MY_CONNECTION_ID()", None),
    # a backslash: only where both readings (NO_BACKSLASH_ESCAPES or not) see the call
    (b"SELECT 'a\\'', CONNECTION_ID()", None),
    (b"SELECT 'a\\\\', CONNECTION_ID()",
     b"SELECT 'a\\\\', CAST(7 AS UNSIGNED) AS `CONNECTION_ID()`"),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "want"), REWRITES)
def test_connection_id_rewrite(sql, want):
    assert sessionid.mentions(sql) or want is None
    assert sessionid.rewrite(sql, 7) == (want if want is not None else sql)


CALLS = [
    (b"SELECT CONNECTION_ID()", True),
    (b"SET @me = connection_id ()", True),
    (b"SELECT 1; SELECT CONNECTION_ID()", True),
    (b"/*!SELECT CONNECTION_ID() */", True),
    (b"SELECT " + b"1, " * 3000 + b"CONNECTION_ID()", True),  # past the 4 KiB digest
    (b"SELECT user_id FROM t WHERE user_id = 1", False),
    (b"SELECT 'CONNECTION_ID()' FROM t /* CONNECTION_ID() */", False),
]


@pytest.mark.parametrize(("sql", "calls"), CALLS)
def test_the_classifier_says_who_may_call_connection_id(sql, calls):
    assert classify(sql).connection_id is calls


def test_rewritten_statements_share_their_digest():
    """The rewrite changes a number only: the classifier's cache still has one entry."""
    sql = b"SELECT a, CONNECTION_ID() FROM t WHERE b = 'x'"
    assert classify(sessionid.rewrite(sql, 5)) is classify(sessionid.rewrite(sql, 16777300))


def test_process_is_off_by_default():
    assert MysqlUserConfig(name="x").process is False
    assert MysqlUserConfig.model_validate({"name": "x", "process": True}).process is True


def test_ids_carry_their_worker():
    for worker in (0, 1, 255):
        sid = sessionid.compose(worker, 5)
        assert sessionid.owner(sid) == worker and sid < 1 << 32
    assert sessionid.compose(0, 5) == 5  # one worker: ids as a server's
    assert not sessionid.mentions(b"SELECT 1 FROM t WHERE a = 2")


def test_mysql_processlist_columns():
    """A listener that reports a MySQL version answers MySQL's column set: no Progress."""
    row = [5, "app", "127.0.0.1:1", None, "Query", 0, "starting", "x" * 150]
    answer = processlist.result_set([row], False, False, int(CAPS), 2)
    assert answer[0] == b"\x08" and len(answer) == 1 + 8 + 1 + 1 + 1
    assert [column_name(p) for p in answer[1:9]][-1] == "Info"
    assert text_row(answer[10], 8) == [b"5", b"app", b"127.0.0.1:1", None, b"Query", b"0",
                                       b"starting", b"x" * 100]  # fmt: skip
    full = processlist.result_set([row], True, True, int(CAPS | Capability.DEPRECATE_EOF), 2)
    assert len(full) == 1 + 9 + 1 + 1 and text_row(full[10], 9)[7] == b"x" * 150


def test_show_processlist_is_recognised():
    assert processlist.show_full(b"SHOW PROCESSLIST") is False
    assert processlist.show_full(b" /* x */ show  full\nprocesslist ; ") is True
    assert processlist.show_full(b"SHOW PROCESSLIST LIKE 'x'") is None
    assert processlist.show_full(b"SHOW TABLES") is None


# a proxy in one worker, and in two -----------------------------------------------------------


def start_proxy(work: Path, db: MariaDB, workers: int) -> tuple[int, Steelyard]:
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    cfg = base_config(
        work,
        workers=workers,
        pools={"primary": {"servers": [{"address": db.address}]}},
        mysql={"listeners": [{
            "listen": f"127.0.0.1:{port}", "users": USERS, "backend_user": USER,
            "backend_password": PASSWORD, "primary": "primary", "backend_pool_size": 4,
        }]},
    )  # fmt: skip
    return port, Steelyard(work, cfg)


@pytest.fixture(scope="module")
def proxy(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port, sy = start_proxy(Path(tmp_path_factory.mktemp("one")), mariadb, 1)
    yield port
    sy.stop(timeout=10)


@pytest.fixture(scope="module")
def proxy2(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Steelyard]]:
    port, sy = start_proxy(Path(tmp_path_factory.mktemp("two")), mariadb, 2)
    yield port, sy
    sy.stop(timeout=10)


def login(port: int, user: str = "app", **kw: Any) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user=user, password=PASSWORDS[user],
                           autocommit=True, **kw)  # fmt: skip


def rows(conn: pymysql.Connection, sql: str) -> list[tuple]:
    with conn.cursor() as c:
        c.execute(sql)
        return list(c.fetchall())


def error_of(conn: pymysql.Connection, sql: str) -> tuple[int, str]:
    with pytest.raises(pymysql.MySQLError) as info:
        rows(conn, sql)
    return info.value.args[0], info.value.args[1]


def listed(conn: pymysql.Connection, full: bool = False) -> dict[int, tuple]:
    return {r[0]: r for r in rows(conn, "SHOW FULL PROCESSLIST" if full else "SHOW PROCESSLIST")}


class Running:
    """A statement run by a client in a thread; what it answered, or its error."""

    def __init__(self, conn: pymysql.Connection, sql: str) -> None:
        self.result: Any = None
        self.error: tuple[int, str] | None = None
        self.thread = threading.Thread(target=self._run, args=(conn, sql))
        self.thread.start()

    def _run(self, conn: pymysql.Connection, sql: str) -> None:
        try:
            self.result = rows(conn, sql)
        except pymysql.MySQLError as exc:
            self.error = (exc.args[0], exc.args[1])

    def join(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive()


def running_on_backend(watcher: pymysql.Connection, sid: int, text: str) -> bool:
    """The session `sid` runs `text` on a backend connection (SHOW PROCESSLIST says so)."""
    row = listed(watcher, full=True).get(sid)
    return row is not None and row[4] == "Query" and row[7] == text and row[6].startswith("on ")


def backend_sleeps(db: MariaDB, marker: str) -> int:
    return int(db.sql(
        f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' "
        "AND ID <> CONNECTION_ID()"
    ).strip())  # fmt: skip


# CONNECTION_ID() and the greeting ----------------------------------------------------------------


def test_thread_id_and_connection_id_agree_on_a_pooled_proxy(proxy):
    a, b = login(proxy), login(proxy)
    assert a.thread_id() != b.thread_id()
    for i in range(30):  # the two share the pool's connections, whose ids are others
        conn = a if i % 2 else b
        assert rows(conn, "SELECT CONNECTION_ID()") == [(conn.thread_id(),)]
    with a.cursor() as c:
        c.execute("SELECT connection_id (), 'CONNECTION_ID()' AS text, CONNECTION_ID() + 1")
        assert c.fetchone() == (a.thread_id(), "CONNECTION_ID()", a.thread_id() + 1)
        assert [d[0] for d in c.description][:2] == ["connection_id ()", "text"]
        c.execute("SELECT 1 FROM DUAL WHERE CONNECTION_ID() = %s", (a.thread_id(),))
        assert c.fetchall() == ((1,),)
        c.execute("SET @me = CONNECTION_ID()")  # a user variable: the session keeps its conn
        c.execute("SELECT @me, LENGTH(%s), CONNECTION_ID()", ("y" * 5000,))  # a long text
        assert c.fetchone() == (a.thread_id(), 5000, a.thread_id())
    a.close()
    b.close()


def test_mysql_connector_connection_id_and_prepared(proxy):
    conn = mysql.connector.connect(host="127.0.0.1", port=proxy, user="app", password="app-pw",
                                   autocommit=True)  # fmt: skip
    cur = conn.cursor(prepared=True)
    for _ in range(3):
        cur.execute("SELECT CONNECTION_ID(), ?", (5,))
        assert cur.fetchall() == [(conn.connection_id, 5)]
    plain = conn.cursor()
    plain.execute("SELECT CONNECTION_ID()")
    assert plain.fetchall() == [(conn.connection_id,)]
    conn.close()


def test_mariadb_cli(proxy):
    sleeper = login(proxy)
    running = Running(sleeper, "SELECT SLEEP(30)")
    watcher = login(proxy)
    wait_for(lambda: running_on_backend(watcher, sleeper.thread_id(), "SELECT SLEEP(30)"),
             what="the sleep on a backend")  # fmt: skip
    out = subprocess.run(
        ["mariadb", "-h127.0.0.1", f"-P{proxy}", "-uapp", "-papp-pw", "-N", "-B", "-e",
         f"SELECT CONNECTION_ID(); SHOW PROCESSLIST; KILL QUERY {sleeper.thread_id()}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [line.split("\t") for line in out.stdout.splitlines()]
    me = int(lines[0][0])
    shown = {int(line[0]): line for line in lines[1:]}
    assert shown[me][1:2] + shown[me][4:] == ["app", "Query", "0", "starting", "SHOW PROCESSLIST",
                                              "0.000"]  # fmt: skip
    assert shown[sleeper.thread_id()][4] == "Query"
    running.join()
    assert running.error == (1317, "Query execution was interrupted")
    assert rows(sleeper, "SELECT CONNECTION_ID()") == [(sleeper.thread_id(),)]
    sleeper.close()
    watcher.close()


# SHOW PROCESSLIST ---------------------------------------------------------------------------


def columns_of(port: int, user: str, password: str, caps: int, sql: bytes) -> tuple[list, list]:
    c = RawClient(port, user, password, caps)
    _, packets = c.exchange(Command.QUERY, sql)
    c.close()
    count = packets[0][0]
    row = text_row(packets[-2], count)
    return packets[1 : 1 + count], row


@pytest.mark.parametrize("caps", [CAPS, CAPS | Capability.DEPRECATE_EOF], ids=["eof", "no-eof"])
@pytest.mark.parametrize("sql", [b"SHOW PROCESSLIST", b"SHOW FULL PROCESSLIST"])
def test_processlist_columns_are_the_servers(proxy, mariadb, caps, sql):
    theirs, their_row = columns_of(mariadb.port, USER, PASSWORD, caps, sql)
    ours, our_row = columns_of(proxy, "low", "low-pw", caps, sql)
    assert ours == theirs
    assert our_row[1] == b"low" and our_row[4:] == [b"Query", b"0", b"starting", sql, b"0.000"]
    assert their_row[4:] == [b"Query", b"0", b"starting", sql, b"0.000"]


def test_processlist_rows_and_visibility(proxy):
    app, app2, low, ops = login(proxy), login(proxy), login(proxy, "low"), login(proxy, "ops")
    rows(app2, "CREATE DATABASE IF NOT EXISTS ids")
    rows(app2, "USE ids")
    mine = listed(app)
    assert set(mine) == {app.thread_id(), app2.thread_id()}  # its own user's sessions
    _, user, host, db, command, seconds, state, info, progress = mine[app2.thread_id()]
    assert (user, db, command, state, info, progress) == ("app", "ids", "Sleep", "", None, 0.0)
    assert host == f"127.0.0.1:{app2._sock.getsockname()[1]}" and seconds >= 0
    assert set(listed(low)) == {low.thread_id()}
    everyone = listed(ops)
    assert {app.thread_id(), app2.thread_id(), low.thread_id(), ops.thread_id()} <= set(everyone)
    # a statement under way: its text (100 characters without FULL), the backend it runs on
    text = "SELECT SLEEP(30) /* " + "x" * 120 + " */"
    running = Running(app2, text)
    wait_for(lambda: running_on_backend(ops, app2.thread_id(), text), what="the sleep")
    row = listed(app)[app2.thread_id()]
    assert row[4] == "Query" and row[7] == text[:100] and row[6].startswith("on 127.0.0.1:")
    assert rows(ops, f"KILL QUERY {app2.thread_id()}") == []
    running.join()
    assert running.error is not None and running.error[0] == 1317
    for c in (app, app2, low, ops):
        c.close()


def test_old_processlist_command(proxy):
    c = RawClient(proxy, "low", "low-pw")
    t, packets = c.exchange(Command.PROCESS_INFO)
    assert t.error is None and text_row(packets[-2], 9)[0] == str(c.greeting.connection_id).encode()
    c.close()


# KILL ---------------------------------------------------------------------------------------


def test_kill_query_stops_the_statement_and_the_session_goes_on(proxy, mariadb):
    victim, killer, other = login(proxy), login(proxy), login(proxy)
    running = Running(victim, "SELECT SLEEP(30) /* kill-query */")
    text = "SELECT SLEEP(30) /* kill-query */"
    wait_for(lambda: running_on_backend(killer, victim.thread_id(), text), what="the sleep")
    assert rows(killer, f"KILL QUERY {victim.thread_id()}") == []
    running.join()
    assert running.error == (1317, "Query execution was interrupted")
    wait_for(lambda: backend_sleeps(mariadb, "kill-query") == 0, what="the sleep killed")
    assert rows(victim, "SELECT CONNECTION_ID(), 1") == [(victim.thread_id(), 1)]
    assert rows(other, "SELECT 2") == [(2,)]
    # nothing running: nothing happens
    assert rows(killer, f"KILL QUERY {victim.thread_id()}") == []
    assert rows(victim, "SELECT 3") == [(3,)]
    for c in (victim, killer, other):
        c.close()


def test_kill_connection_closes_the_session(proxy, mariadb):
    idle, busy, killer = login(proxy), login(proxy), login(proxy, "ops")
    assert rows(killer, f"KILL {idle.thread_id()}") == []
    with pytest.raises(pymysql.err.OperationalError) as info:
        rows(idle, "SELECT 1")
    assert info.value.args[0] in (2006, 2013)
    running = Running(busy, "SELECT SLEEP(30) /* kill-conn */")
    text = "SELECT SLEEP(30) /* kill-conn */"
    wait_for(lambda: running_on_backend(killer, busy.thread_id(), text), what="the sleep")
    assert rows(killer, f"KILL CONNECTION {busy.thread_id()}") == []
    running.join()
    assert running.error is not None and running.error[0] in (2006, 2013)
    wait_for(lambda: backend_sleeps(mariadb, "kill-conn") == 0, what="the sleep killed")
    assert busy.thread_id() not in listed(killer)
    # the pool serves everyone else as before
    others = [login(proxy) for _ in range(6)]
    for c in others:
        assert rows(c, "SELECT CONNECTION_ID()") == [(c.thread_id(),)]
        c.close()
    killer.close()


def test_killing_oneself(proxy):
    c = login(proxy)
    assert error_of(c, "KILL QUERY CONNECTION_ID()") == (1317, "Query execution was interrupted")
    assert rows(c, "SELECT 1") == [(1,)]
    assert error_of(c, "KILL CONNECTION_ID()") == (1927, "Connection was killed")
    with pytest.raises(pymysql.err.OperationalError):
        rows(c, "SELECT 1")
    raw = RawClient(proxy, "app", "app-pw")  # COM_PROCESS_KILL of itself: closed, no answer
    raw.send(bytes((Command.PROCESS_KILL,)) + raw.greeting.connection_id.to_bytes(4, "little"))
    with pytest.raises(ConnectionError):
        raw.read()


def test_kill_errors(proxy):
    app, low, ops = login(proxy), login(proxy, "low"), login(proxy, "ops")
    target = app.thread_id()
    assert error_of(low, f"KILL {target}") == (1095, f"You are not owner of thread {target}")
    assert error_of(low, f"KILL QUERY {target}") == (1095, f"You are not owner of thread {target}")
    assert error_of(low, "KILL 999999") == (1094, "Unknown thread id: 999999")
    nowhere = sessionid.compose(7, 1)  # a worker this listener does not have
    assert error_of(low, f"KILL {nowhere}") == (1094, f"Unknown thread id: {nowhere}")
    assert error_of(low, "KILL 'abc'") == (1094, "Unknown thread id: 0")
    assert error_of(low, "KILL HARD QUERY 999999") == (1094, "Unknown thread id: 999999")
    assert error_of(low, "/* x */ kill soft connection 999999 ;") == (
        1094, "Unknown thread id: 999999"
    )  # fmt: skip
    assert error_of(low, "KILL QUERY ID 5") == (1957, "Unknown query id: 5")
    assert error_of(low, "KILL @x")[0] == 1235
    assert error_of(low, "SELECT 1; KILL 5")[0] == 1235  # never to a server
    # the next statement of the same client is served
    assert rows(low, "SELECT CONNECTION_ID()") == [(low.thread_id(),)]
    # COM_PROCESS_KILL
    raw = RawClient(proxy, "low", "low-pw")
    t, packets = raw.exchange(Command.PROCESS_KILL, target.to_bytes(4, "little"))
    assert parse_err(packets[0]).message == f"You are not owner of thread {target}"
    t, packets = raw.exchange(Command.PROCESS_KILL, (999999).to_bytes(4, "little"))
    assert parse_err(packets[0]).message == "Unknown thread id: 999999"
    t, packets = raw.exchange(Command.PROCESS_KILL, b"\x01")
    assert parse_err(packets[0]).code == 1835
    t, _ = raw.exchange(Command.PING)
    assert t.error is None
    raw.close()
    # a prepared KILL would name a backend's connection: refused
    conn = mysql.connector.connect(host="127.0.0.1", port=proxy, user="app", password="app-pw")
    with pytest.raises(mysql.connector.Error) as err:
        conn.cursor(prepared=True).execute("KILL 1")
    assert err.value.errno == 1295
    conn.close()
    # process: true may kill anyone
    assert rows(ops, f"KILL QUERY {target}") == []
    assert rows(app, "SELECT 1") == [(1,)]
    for c in (app, low, ops):
        c.close()


def test_kill_user(proxy):
    a1, a2, low = login(proxy, "low"), login(proxy, "low"), login(proxy)
    keep = login(proxy, "app")
    assert rows(low, "KILL USER low") == []  # app may not: nothing happens
    with low.cursor() as c:
        assert c.execute("KILL USER 'low'@'%'") == 0
    assert rows(a1, "SELECT 1") == [(1,)]
    with a1.cursor() as c:  # its own user: the other session, then itself
        assert c.execute("KILL CONNECTION USER low") == 2
    for c in (a1, a2):
        with pytest.raises(pymysql.err.OperationalError):
            rows(c, "SELECT 1")
    assert rows(keep, "SELECT 1") == [(1,)]
    low.close()
    keep.close()


# two workers --------------------------------------------------------------------------------


def in_two_workers(port: int, user: str = "app") -> tuple[pymysql.Connection, pymysql.Connection]:
    """Two sessions owned by different workers (the id says which)."""
    conns: dict[int, pymysql.Connection] = {}
    spare = []
    for _ in range(200):
        c = login(port, user)
        worker = sessionid.owner(c.thread_id())
        if worker in conns:
            spare.append(c)
        else:
            conns[worker] = c
        if len(conns) == 2:
            break
    for c in spare:
        c.close()
    assert len(conns) == 2, "SO_REUSEPORT never picked the other worker"
    return conns[0], conns[1]


def test_two_workers_list_and_kill_each_others_sessions(proxy2, mariadb):
    proxy2, _ = proxy2
    a, b = in_two_workers(proxy2)
    assert rows(a, "SELECT CONNECTION_ID()") == [(a.thread_id(),)]
    assert rows(b, "SELECT CONNECTION_ID()") == [(b.thread_id(),)]
    assert {a.thread_id(), b.thread_id()} <= set(listed(a))
    assert {a.thread_id(), b.thread_id()} <= set(listed(b))
    # KILL QUERY across workers
    running = Running(b, "SELECT SLEEP(30) /* across */")
    wait_for(lambda: running_on_backend(a, b.thread_id(), "SELECT SLEEP(30) /* across */"),
             what="the sleep in the other worker")  # fmt: skip
    assert rows(a, f"KILL QUERY {b.thread_id()}") == []
    running.join()
    assert running.error == (1317, "Query execution was interrupted")
    wait_for(lambda: backend_sleeps(mariadb, "across") == 0, what="the sleep killed")
    assert rows(b, "SELECT 1") == [(1,)]
    # errors of the other worker
    other = sessionid.compose(sessionid.owner(b.thread_id()), 0xFFFFFF)
    assert error_of(a, f"KILL {other}") == (1094, f"Unknown thread id: {other}")
    low = login(proxy2, "low")  # one of a and b is in another worker than low's session
    for target in (a.thread_id(), b.thread_id()):
        assert error_of(low, f"KILL {target}") == (1095, f"You are not owner of thread {target}")
    low.close()
    # KILL CONNECTION across workers
    assert rows(a, f"KILL {b.thread_id()}") == []
    with pytest.raises(pymysql.err.OperationalError):
        rows(b, "SELECT 1")
    wait_for(lambda: b.thread_id() not in listed(a), what="the killed session gone")
    a.close()


def test_a_worker_that_does_not_answer_is_left_out(proxy2):
    port, sy = proxy2
    a, b = in_two_workers(port)
    index = sessionid.owner(b.thread_id())
    pid = int(re.findall(rf"event=worker_start index={index} pid=(\d+)", sy.log())[-1])
    os.kill(pid, signal.SIGSTOP)
    try:
        shown = listed(a)  # after the supervisor's RELAY_TIMEOUT
        assert a.thread_id() in shown and b.thread_id() not in shown
        sy.wait_log(rf"event=worker_slow index={index} .*no answer to a list request")
        assert error_of(a, f"KILL {b.thread_id()}") == (
            1094, f"Unknown thread id: {b.thread_id()}"
        )  # fmt: skip
    finally:
        os.kill(pid, signal.SIGCONT)
    # the kill reported failed does not happen late
    sy.wait_log(r"event=relay_late .*what=kill")
    assert rows(b, "SELECT CONNECTION_ID()") == [(b.thread_id(),)]
    assert b.thread_id() in listed(a)
    a.close()
    b.close()
