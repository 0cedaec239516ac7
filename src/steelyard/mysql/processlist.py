"""SHOW PROCESSLIST and KILL through the proxy: they speak of the proxy's sessions.

A client sees the proxy as its server, so the ids it gets (the greeting's thread id,
CONNECTION_ID(), see sessionid.py) are the proxy's session ids, and the statements that take
such ids are answered by the proxy, not passed to a backend where the id would name some pooled
connection of another client:

- `SHOW [FULL] PROCESSLIST` (and COM_PROCESS_INFO) lists the proxy's sessions of the listener,
  in every worker process, with MariaDB's columns (MySQL's when the listener reports a MySQL
  version): a user sees its own sessions, a user with `process: true` (MySQL's PROCESS
  privilege) sees all. The other workers are asked through the supervisor; one that does not
  answer in time is left out (and logged).
- `KILL [HARD|SOFT] [CONNECTION|QUERY] id` (and COM_PROCESS_KILL): a session may kill its
  user's sessions, a user with `process: true` any session. KILL QUERY stops the statement the
  session runs on a backend with a `KILL QUERY` of the backend connection's own thread id, sent
  on another connection to that server: the client gets the server's "Query execution was
  interrupted" and goes on. KILL CONNECTION closes the session at once (its client hears no
  more, as MariaDB's) and kills the thread of the backend connection it ran a statement on. A
  connection whose statement was killed is never lent to another session (a kill that comes as
  its statement ends could hit the next one): it stays with its session and is closed after it.
  The id names the worker that owns the session (sessionid.py): another worker's session is
  killed by that worker, the request relayed by the supervisor.
- `KILL [CONNECTION|QUERY] USER name` kills that user's sessions the caller may kill (in every
  worker) and answers how many; `KILL QUERY ID n` names a query id, which the proxy has none of.

The rows a worker sends for SHOW PROCESSLIST: [id, user, host, db, command, seconds, state,
info], Info cut to 100 characters without FULL.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from steelyard.log import log
from steelyard.mysql.classify import Statement
from steelyard.mysql.client import MySQLError
from steelyard.mysql.protocol import messages
from steelyard.mysql.protocol.constants import (
    ER_CONNECTION_KILLED,
    ER_KILL_DENIED_ERROR,
    ER_MALFORMED_PACKET,
    ER_NO_SUCH_QUERY,
    ER_NO_SUCH_THREAD,
    ER_NOT_SUPPORTED_YET,
    ER_QUERY_INTERRUPTED,
    Capability,
    Command,
    Status,
)
from steelyard.mysql.protocol.wire import Malformed, lenenc_int, lenenc_str
from steelyard.mysql.sessionid import owner
from steelyard.mysql.split import split

if TYPE_CHECKING:
    from steelyard.mysql.backend import BackendConn
    from steelyard.mysql.frontend import MysqlFrontend
    from steelyard.mysql.session import MysqlSession

KEYWORDS = frozenset({"KILL", "SHOW"})  # the first keywords worth a closer look
KILL_TIMEOUT = 2.0  # seconds for the side connection, and for its KILL QUERY (within RELAY_TIMEOUT)
INFO_LENGTH = 100  # characters of Info without FULL, as the server

_LEAD = re.compile(rb"(?:\s+|/\*.*?\*/|--[\x00-\x20][^\n]*(?:\n|$)|#[^\n]*(?:\n|$))*", re.S)
_TAIL = re.compile(rb"(?:\s+|/\*.*?\*/|--[\x00-\x20][^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|;)*\Z", re.S)
_SHOW = re.compile(rb"SHOW\s+(FULL\s+)?PROCESSLIST\Z", re.I)
_KILL = re.compile(
    rb"KILL(?:\s+(HARD|SOFT))?(?:\s+(CONNECTION|QUERY))?(?:\s+(ID|USER)\b)?\s*(.*)\Z", re.I | re.S
)
_NUMBER = re.compile(rb"(\d+)|CAST\((\d+) AS UNSIGNED\)|'(\d*)[^']*'", re.I)  # (see sessionid)
_USER = re.compile(rb"""(?:'((?:[^'\\]|\\.|'')*)'|"((?:[^"\\]|\\.|"")*)"|`((?:[^`]|``)*)`|"""
                   rb"""([\w$.-]+))(?:\s*@.*)?\Z""", re.S)  # fmt: skip

COMMANDS = {
    Command.QUERY: "Query", Command.STMT_EXECUTE: "Execute", Command.STMT_PREPARE: "Prepare",
    Command.STMT_FETCH: "Fetch", Command.STMT_RESET: "Reset stmt", Command.STMT_CLOSE:
    "Close stmt", Command.STMT_SEND_LONG_DATA: "Long Data", Command.INIT_DB: "Init DB",
    Command.FIELD_LIST: "Field List", Command.STATISTICS: "Statistics", Command.PING: "Ping",
    Command.SET_OPTION: "Set option", Command.CHANGE_USER: "Change user",
    Command.RESET_CONNECTION: "Reset connection", Command.PROCESS_KILL: "Kill",
    Command.PROCESS_INFO: "Processlist", Command.QUIT: "Quit",
}  # fmt: skip
_TEXT = {Command.QUERY, Command.STMT_PREPARE}  # commands whose payload is the statement


def _strip(sql: bytes) -> bytes:
    """The statement without leading and trailing comments, spaces and semicolons."""
    start = _LEAD.match(sql).end()  # type: ignore[union-attr]
    end = _TAIL.search(sql, start).start()  # type: ignore[union-attr]
    return sql[start:end]


def show_full(sql: bytes) -> bool | None:
    """For `SHOW [FULL] PROCESSLIST`: whether FULL; None for any other statement."""
    m = _SHOW.match(_strip(sql))
    return None if m is None else m.group(1) is not None


# columns -----------------------------------------------------------------------------------


def _column(name: bytes, charset: int, length: int, kind: int, flags: int, dec: int) -> bytes:
    return (
        lenenc_str(b"def") + b"\x00\x00\x00" + lenenc_str(name) + b"\x00\x0c"
        + charset.to_bytes(2, "little") + length.to_bytes(4, "little") + bytes((kind,))
        + flags.to_bytes(2, "little") + bytes((dec,)) + b"\x00\x00"
    )  # fmt: skip


_LONGLONG, _LONG, _DOUBLE, _BLOB, _VAR_STRING = 0x08, 0x03, 0x05, 0xFB, 0xFD
_NUM = 0x81  # NOT_NULL | BINARY, as the server flags these numbers
_BIN, _UTF8MB4, _UTF8MB3 = 63, 45, 33


def _columns(full: bool, mariadb: bool) -> list[bytes]:
    """MariaDB 10.11's own column definitions (checked against its answer); MySQL 8's set has
    no Progress and its names in utf8mb3."""
    cs, w = (_UTF8MB4, 4) if mariadb else (_UTF8MB3, 3)
    info = (
        _column(b"Info", cs, 0x0C000000, _BLOB, 0, 39) if full
        else _column(b"Info", cs, INFO_LENGTH * w, _VAR_STRING, 0, 39)
    )  # fmt: skip
    cols = [
        _column(b"Id", _BIN, 11 if mariadb else 21, _LONGLONG, _NUM, 0),
        _column(b"User", cs, (128 if mariadb else 32) * w, _VAR_STRING, 1, 39),
        _column(b"Host", cs, (64 if mariadb else 261) * w, _VAR_STRING, 1, 39),
        _column(b"db", cs, 64 * w, _VAR_STRING, 0, 39),
        _column(b"Command", cs, 16 * w, _VAR_STRING, 1, 39),
        _column(b"Time", _BIN, 7, _LONG, _NUM, 0),
        _column(b"State", cs, 30 * w, _VAR_STRING, 0, 39),
        info,
    ]
    if mariadb:
        cols.append(_column(b"Progress", _BIN, 7, _DOUBLE, _NUM, 3))
    return cols


def result_set(
    rows: list[list[Any]], full: bool, mariadb: bool, caps: int, status: int
) -> list[bytes]:
    """The answer's packets, rows as text."""
    cols = _columns(full, mariadb)
    out = [lenenc_int(len(cols)), *cols]
    deprecate_eof = bool(caps & Capability.DEPRECATE_EOF)
    if not deprecate_eof:
        out.append(messages.eof(Status(status)))
    for sid, user, host, db, command, seconds, state, info in rows:
        if info is not None and not full:
            info = info[:INFO_LENGTH]
        row = b"".join(
            b"\xfb" if v is None else lenenc_str(str(v).encode("utf-8", "replace"))
            for v in (sid, user, host, db, command, seconds, state, info)
        )
        if mariadb:
            row += lenenc_str(b"0.000")
        out.append(row)
    if deprecate_eof:
        out.append(messages.ok(messages.Ok(status=Status(status)), caps, header=0xFE))
    else:
        out.append(messages.eof(Status(status)))
    return out


# the sessions of one worker ----------------------------------------------------------------


def _text(sql: bytes, full: bool) -> str:
    if not full:
        return sql[: 4 * INFO_LENGTH].decode("utf-8", "replace")[:INFO_LENGTH]
    return sql.decode("utf-8", "replace")


def row(s: MysqlSession, now: float, full: bool) -> list[Any]:
    """A session's row: [id, user, host, db, command, seconds, state, info]."""
    if not s.authed:
        return [s.id, "unauthenticated user", s.peer, None, "Connect", int(now - s.since),
                "login", None]  # fmt: skip
    if not s.busy:
        return [s.id, s.user, s.peer, s.db, "Sleep", int(now - s.since), "", None]
    doing = s.doing
    info = None
    if doing in _TEXT:
        info = _text(s.current[1:], full)
    elif doing == Command.STMT_EXECUTE or doing == Command.STMT_FETCH:
        stmt = s.statements.get(s.executing)
        info = _text(stmt.sql, full) if stmt is not None else None
    conn = s.active
    state = "starting" if conn is None else f"on {conn.address} id {conn.thread_id}"
    name = COMMANDS.get(doing, "Unknown")  # type: ignore[call-overload]
    return [s.id, s.user, s.peer, s.db, name, int(now - s.since), state, info]


def rows(fe: MysqlFrontend, user: str | None, full: bool) -> list[list[Any]]:
    """This worker's sessions of the listener: all of them, or `user`'s."""
    now = fe.now
    return [
        row(s, now, full)
        for s in fe.by_id.values()
        if user is None or (s.authed and s.user == user)
    ]


def privileged(s: MysqlSession) -> bool:
    """Whether the session's user has `process: true` (sees and kills every session)."""
    user = s.fe.users.get(s.user)
    return user is not None and user.process


# SHOW PROCESSLIST --------------------------------------------------------------------------


async def show(s: MysqlSession, full: bool) -> None:
    fe = s.fe
    user = None if privileged(s) else s.user
    found = rows(fe, user, full)
    for answer in await ask(fe, {"k": "list", "user": user, "full": full}):
        found += answer.get("rows", [])
    found.sort(key=lambda r: r[0])
    mariadb = "mariadb" in (await fe.server_version()).lower()
    seq = 1
    for payload in result_set(found, full, mariadb, s.caps, s.status()):
        seq = s.write(payload, seq)
    s.done()


async def ask(fe: MysqlFrontend, query: dict[str, Any]) -> list[dict[str, Any]]:
    """The other workers' answers for this listener (none without a supervisor)."""
    if fe.relay is None:
        return []
    query["listen"] = fe.cfg.listen
    return [a for a in await fe.relay(query) if isinstance(a, dict)]


# KILL --------------------------------------------------------------------------------------


def statement(s: MysqlSession, sql: bytes, st: Statement) -> bool:
    """Answer the statement if it is one of the proxy's (SHOW PROCESSLIST, KILL); False for
    any other."""
    if st.keyword == "SHOW":
        full = show_full(sql)
        if full is None:
            return False
        s.spawn(show(s, full))
        return True
    if st.several:
        s.reply_error(ER_NOT_SUPPORTED_YET, "This version of MariaDB doesn't yet support "
                      "'KILL in a multi-statement through the proxy'")  # fmt: skip
        return True
    parts = split(sql)  # executable comments unwrapped
    m = _KILL.match(_strip(parts[0] if parts else sql))
    if m is None:
        s.reply_error(ER_NOT_SUPPORTED_YET, "This version of MariaDB doesn't yet support "
                      "'this form of KILL through the proxy'")  # fmt: skip
        return True
    query = (m.group(2) or b"").upper() == b"QUERY"
    which, arg = (m.group(3) or b"").upper(), m.group(4).strip()
    if which == b"ID":
        if not query:
            s.reply_error(ER_NOT_SUPPORTED_YET, "This version of MariaDB doesn't yet support "
                          "'KILL CONNECTION ID'")  # fmt: skip
            return True
        n = _NUMBER.fullmatch(arg)
        s.reply_error(ER_NO_SUCH_QUERY, f"Unknown query id: {int(n.group(1) or 0) if n else 0}")
        return True
    if which == b"USER":
        u = _USER.match(arg)
        if u is None:
            s.reply_error(ER_NOT_SUPPORTED_YET, "This version of MariaDB doesn't yet support "
                          "'KILL USER with this name through the proxy'")  # fmt: skip
            return True
        name = next(g for g in u.groups() if g is not None).decode("utf-8", "replace")
        s.spawn(kill_user(s, name, query))
        return True
    n = _NUMBER.fullmatch(arg)
    if n is None:
        s.reply_error(ER_NOT_SUPPORTED_YET, "This version of MariaDB doesn't yet support "
                      "'KILL with an expression through the proxy: give the id'")  # fmt: skip
        return True
    target = next((int(g or 0) for g in n.groups() if g is not None), 0)
    s.spawn(kill(s, target, query, quiet=False))
    return True


def process_kill(s: MysqlSession, payload: bytes) -> None:
    """COM_PROCESS_KILL: KILL CONNECTION of the 4-byte id."""
    if len(payload) < 5:
        s.reply_error(ER_MALFORMED_PACKET, "Malformed communication packet")
        return
    s.spawn(kill(s, int.from_bytes(payload[1:5], "little"), False, quiet=True))


async def kill(s: MysqlSession, target: int, query: bool, quiet: bool) -> None:
    """KILL [QUERY] target, answered as MariaDB does (`quiet`: COM_PROCESS_KILL, after which
    a session killing itself is closed without an answer)."""
    fe = s.fe
    if target == s.id:
        if query:
            s.reply_error(ER_QUERY_INTERRUPTED, "Query execution was interrupted")
            return
        log("mysql_killed", "info", peer=s.peer, user=s.user, id=s.id, by=s.id)
        if not quiet:
            s.write(messages.error(ER_CONNECTION_KILLED, "Connection was killed"), 1)
        s.close_now()
        return
    allowed = privileged(s)
    if owner(target) == fe.worker:
        verdict = await kill_here(fe, target, query, s.user, allowed, s.id)
    else:
        q = {"k": "kill", "worker": owner(target), "id": target, "query": query,
             "user": s.user, "all": allowed, "by": s.id}  # fmt: skip
        answers = await ask(fe, q)
        verdict = answers[0].get("r", "unknown") if answers else "unknown"
    if verdict == "ok":
        s.reply_ok()
    elif verdict == "denied":
        s.reply_error(ER_KILL_DENIED_ERROR, f"You are not owner of thread {target}")
    else:
        s.reply_error(ER_NO_SUCH_THREAD, f"Unknown thread id: {target}")


async def kill_user(s: MysqlSession, name: str, query: bool) -> None:
    """KILL [QUERY] USER name: the ones the caller may kill, in every worker; the answer says
    how many (the caller's own session last, after the answer, as MariaDB)."""
    fe = s.fe
    allowed = privileged(s)
    n = 0
    if allowed or name == s.user:
        n = await kill_user_here(fe, name, query, s.id)
        for answer in await ask(fe, {"k": "kill_user", "name": name, "query": query,
                                     "user": s.user, "all": allowed, "by": s.id}):  # fmt: skip
            n += int(answer.get("n", 0))
    myself = name == s.user
    s.write(
        messages.ok(messages.Ok(affected_rows=n + myself, status=Status(s.status())), s.caps), 1
    )
    if myself and not query:
        s.close_now()
        return
    s.done()


async def kill_here(
    fe: MysqlFrontend, target: int, query: bool, user: str, allowed: bool, by: int
) -> str:
    """Kill a session of this worker: "ok", "unknown" or "denied"."""
    t = fe.by_id.get(target)
    if t is None:
        return "unknown"
    if not allowed and not (t.authed and t.user == user):
        return "denied"
    await stop(t, query, by)
    return "ok"


async def kill_user_here(fe: MysqlFrontend, name: str, query: bool, by: int) -> int:
    found = [t for t in fe.by_id.values() if t.authed and t.user == name and t.id != by]
    await asyncio.gather(*(stop(t, query, by) for t in found))
    return len(found)


async def stop(t: MysqlSession, query: bool, by: int) -> None:
    """Stop what the session runs on a backend, and close it unless only its query goes."""
    conn = t.active
    log("mysql_killed", "info", peer=t.peer, user=t.user, id=t.id, by=by,
        what="query" if query else "connection", running=conn is not None)  # fmt: skip
    if not query:
        t.close_now(abort=True)  # the client hears no more (as MariaDB's), its connections close
    if conn is not None:
        await kill_backend(conn, query)


async def kill_backend(conn: BackendConn, query: bool) -> None:
    """`KILL [QUERY]` of a backend connection's thread, on another connection to its server.
    The connection is never lent to anyone else afterwards: the kill may come as its statement
    ends and hit the next one."""
    conn.dirty = True  # its session keeps it, and it is closed, not reset, after the session
    conn.reusable = False
    pool = conn.pool
    if pool is None or not conn.thread_id:
        return
    side = None
    try:
        side = await asyncio.wait_for(pool.acquire(), KILL_TIMEOUT)
        await asyncio.wait_for(
            side.quiet(Command.QUERY, b"KILL %s%d" % (b"QUERY " * query, conn.thread_id)),
            KILL_TIMEOUT,
        )
    except MySQLError as exc:  # its thread is gone (the connection closed meanwhile)
        log("mysql_kill_backend", "info", server=conn.address, id=conn.thread_id, cause=exc.message)
    except (OSError, ConnectionError, TimeoutError, Malformed) as exc:
        log("mysql_kill_backend_failed", "warn", server=conn.address, id=conn.thread_id,
            cause=str(exc) or type(exc).__name__)  # fmt: skip
        if side is not None:
            side.close()
        return
    if side is not None:
        pool.release(side, Status.AUTOCOMMIT)


# requests from other workers (through the supervisor) --------------------------------------


async def serve(fe: MysqlFrontend, q: dict[str, Any]) -> dict[str, Any]:
    """Answer another worker's request about this worker's sessions of the listener."""
    kind = q.get("k")
    if kind == "list":
        return {"rows": rows(fe, q.get("user"), bool(q.get("full")))}
    if kind == "kill":
        verdict = await kill_here(
            fe, int(q["id"]), bool(q["query"]), str(q["user"]), bool(q["all"]), int(q["by"])
        )
        return {"r": verdict}
    if kind == "kill_user":
        name = str(q["name"])
        if not q["all"] and name != q["user"]:
            return {"n": 0}
        return {"n": await kill_user_here(fe, name, bool(q["query"]), int(q["by"]))}
    return {}
