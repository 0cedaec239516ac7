"""What a SQL statement means for routing and pooling, from its first words, sans-IO.

Parsing every statement would cost far more than forwarding it (fast paths stay lean), so a
small lexer skips comments and whitespace, reads the leading keywords and looks for the few
markers that matter:

- where it may run: `Route.REPLICA` for plain reads (SELECT, SHOW, DESC, EXPLAIN of a SELECT,
  and a `/*slave*/` hint), `Route.PRIMARY` for everything else (writes, DDL, SELECT ... FOR
  UPDATE / LOCK IN SHARE MODE / INTO, a `/*master*/` hint, SELECTs calling functions that have
  side effects or depend on the session: GET_LOCK, LAST_INSERT_ID, FOUND_ROWS, NEXTVAL, ...);
- what it does to the session: a transaction begins or ends, autocommit or the database
  changes, a variable is SET;
- KILL, SHOW PROCESSLIST and CONNECTION_ID() speak of the proxy's sessions (processlist.py,
  sessionid.py): a multi-statement with a KILL is named by it, so the session refuses it rather
  than pass it to a server; `connection_id` says a statement may call CONNECTION_ID(), found
  with the rest and cached with it, so only such statements pay for the rewrite;
- what pins the session to its backend connection (state that cannot move to another one):
  temporary tables, GET_LOCK, user variables (`@x`), LOCK TABLES, SQL_CALC_FOUND_ROWS, a text
  PREPARE. The session layer applies the rules; this module only names the facts.

Results are cached by the statement's first 4 KiB with its literals blanked (the same
statements recur with other values); SET and USE, whose values matter, by their first 4 KiB
as they are.

A text that may hold several statements (a `;` or an executable comment `/*! ... */` outside
literals, see split.py), or whose reading depends on NO_BACKSLASH_ESCAPES (a backslash), is
classified by every statement in it: a replica only if all of them are plain reads, the
firewall's concern if any of them is, and pinned to its connection if any of them changes the
session (MaxScale's strict_multi_stmt): the proxy cannot follow which of them ran.

`dirties` names what the proxy cannot follow: state a statement may leave on the connection
that the session does not track (user variables, temporary tables, text PREPARE, stored
routines, unknown statements, a multi-statement changing the session). Such a connection
stays with its session and is reset before another client gets it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from functools import lru_cache

from steelyard.mysql.sessionid import mentions
from steelyard.mysql.split import mask, split


class Route(Enum):
    PRIMARY = "primary"
    REPLICA = "replica"


class Tx(Enum):
    NONE = 0
    BEGIN = 1  # BEGIN, START TRANSACTION, SET autocommit=0 starts one implicitly on next stmt
    END = 2  # COMMIT, ROLLBACK (not TO SAVEPOINT)


@dataclass(frozen=True, slots=True)
class Statement:
    route: Route
    keyword: str  # the first keyword, upper case ("" when there is none)
    tx: Tx = Tx.NONE
    autocommit: bool | None = None  # SET autocommit = 0 / 1
    database: str | None = None  # USE db
    sets: bool = False  # SET of session variables (tracked and replayed on other connections)
    pins: str | None = None  # why the session must keep its connection, if it must
    unpins: bool = False  # UNLOCK TABLES, DROP TEMPORARY TABLE ..., RELEASE_ALL_LOCKS
    unbounded_write: bool = False  # UPDATE or DELETE without WHERE (the firewall's concern)
    dirties: bool = False  # may leave state on the connection the session does not track
    several: bool = False  # a multi-statement
    careful: bool = False  # (the digest has a `;`, a backslash or an executable comment)
    connection_id: bool = False  # may call CONNECTION_ID() (the session rewrites it: sessionid.py)

    @property
    def changes_session(self) -> bool:
        """Whether running it changes what the session tracks (database, SETs, pins)."""
        return self.database is not None or self.sets or self.unpins


READS = frozenset({"SELECT", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "HELP", "WITH"})
# Statements that leave no session state but what the session tracks itself (transactions and
# autocommit by the status flags, USE and SET by their text, LOCK and GET_LOCK by their pins);
# anything else may (CALL, EXECUTE, DO, HANDLER, XA, a keyword not listed here).
FOLLOWED = READS | frozenset({
    "INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT",
    "RELEASE", "CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "ANALYZE", "OPTIMIZE", "CHECK",
    "CHECKSUM", "REPAIR", "GRANT", "REVOKE", "LOCK", "UNLOCK", "USE", "SET", "VALUES", "TABLE",
})  # fmt: skip
# pins whose state cannot move to another connection nor be undone by the session's text
DIRTY_PINS = frozenset({"a temporary table", "a user variable", "a text PREPARE",
                        "SQL_CALC_FOUND_ROWS", "session tracking turned off"})  # fmt: skip
_COMMENTS = re.compile(rb"/\*.*?\*/|--[\x00-\x20][^\n]*|--$|#[^\n]*", re.S)
_COMMENT_OR_SPACE = re.compile(rb"(?:\s+|/\*.*?\*/|--[ \t][^\n]*(?:\n|$)|#[^\n]*(?:\n|$))*", re.S)
_WORD = re.compile(rb"[A-Za-z_]+")
_HINT = re.compile(rb"/\*\s*(master|slave)\s*\*/", re.I)
# Markers found anywhere in the text (outside quotes: see _strip_literals).
_PRIMARY_READS = re.compile(
    rb"\bFOR\s+UPDATE\b|\bLOCK\s+IN\s+SHARE\s+MODE\b|\bFOR\s+SHARE\b|\bINTO\s+(?:@|OUTFILE|DUMPFILE)"
    rb"|\b(?:GET_LOCK|RELEASE_LOCK|RELEASE_ALL_LOCKS|IS_USED_LOCK|IS_FREE_LOCK|LAST_INSERT_ID"
    rb"|FOUND_ROWS|ROW_COUNT|NEXTVAL|LASTVAL|SETVAL|MASTER_GTID_WAIT|MASTER_POS_WAIT"
    rb"|SLEEP|BENCHMARK)\s*\(|\bNEXT\s+VALUE\s+FOR\b",
    re.I,
)
_USER_VAR = re.compile(rb"(?<![\w@.`])@(?!@)[A-Za-z_$`'\"]")
_GET_LOCK = re.compile(rb"\bGET_LOCK\s*\(", re.I)
_RELEASE_ALL = re.compile(rb"\bRELEASE_ALL_LOCKS\s*\(", re.I)
_CALC = re.compile(rb"\bSQL_CALC_FOUND_ROWS\b", re.I)
_WHERE = re.compile(rb"\bWHERE\b", re.I)
_SESSION_TRACK = re.compile(rb"\bsession_track_", re.I)
_AUTOCOMMIT = re.compile(rb"^\s*(?:@@(?:SESSION\.|LOCAL\.)?|SESSION\s+|LOCAL\s+)?autocommit\s*"
                         rb"(?::?=)\s*(\w+)\s*$", re.I)  # fmt: skip
_CONNECTION_ID = re.compile(rb"(?<![\w.$@`])CONNECTION_ID\s*\(", re.I)
_LITERAL = re.compile(rb"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`[^`]*`", re.S)


def _strip_literals(sql: bytes) -> bytes:
    """The text with string literals and quoted names blanked and comments removed, so markers
    inside them don't count (`SELECT 'FOR UPDATE'` is a plain read, `DELETE FROM t /* WHERE */`
    has no WHERE)."""
    return _COMMENTS.sub(b" ", mask(sql))


_NUMBER = re.compile(rb"\b\d+\b")


def classify(sql: bytes) -> Statement:
    """What a statement (or several) means for routing and pooling. Whether the text may hold
    several statements is part of what is cached for its digest, so the common case pays no
    scan for it."""
    head = sql[:4096]
    if b"'" in head or b'"' in head or b"`" in head:
        if len(head.translate(None, b"\\/#-")) == len(head):  # (one pass for four scans)
            key = _NUMBER.sub(b"0", _LITERAL.sub(b"''", head))
        elif b"\\" in head:
            return _careful(sql)  # a literal whose end depends on NO_BACKSLASH_ESCAPES
        elif b"/*" in head or b"#" in head or b"--" in head:
            key = _NUMBER.sub(b"0", mask(head))  # a quote in a comment is no literal
        else:
            key = _NUMBER.sub(b"0", _LITERAL.sub(b"''", head))
    else:
        # No quotes: dropping every digit (in C) is enough, and no routing marker has one.
        key = head.translate(None, b"0123456789")
    st = _classify(key)
    if st.careful or (len(sql) > 4096 and _careful_needed(sql)):
        return _careful(sql)  # several statements, or code in an executable comment
    if st.keyword == "SET" or st.keyword == "USE":
        st = _classify(head)  # by their text, whose values matter, but never beyond 4 KiB
    if len(sql) > 4096 and not st.connection_id and mentions(sql):
        return replace(st, connection_id=True)  # (past the digest: the rewrite looks closer)
    return st


def _careful_needed(sql: bytes) -> bool:
    return b";" in sql or b"\\" in sql or b"/*!" in sql or b"/*M!" in sql


def _one(sql: bytes) -> Statement:
    """One statement, cached by its digest: literals never change the answer, so `WHERE id=1`
    and `WHERE id=2` are one cache entry (SET and USE, whose values matter, are classified
    from their own text)."""
    sql = sql[:4096]
    if b"'" in sql or b'"' in sql or b"`" in sql:
        if b"/*" in sql or b"#" in sql or b"--" in sql:
            key = _NUMBER.sub(b"0", mask(sql))  # a quote in a comment is no literal
        else:
            key = _NUMBER.sub(b"0", _LITERAL.sub(b"''", sql))
    else:
        # No quotes: dropping every digit (in C) is enough, and no routing marker has one.
        key = sql.translate(None, b"0123456789")
    st = _classify(key)
    if st.keyword == "SET" or st.keyword == "USE":
        return _classify(sql)
    return st


def _careful(sql: bytes) -> Statement:
    """Several statements, or one whose reading depends on the session's sql_mode: every
    statement of every reading counts (see split.py)."""
    parts = split(sql)
    found = [_one(p) for p in parts]
    several = len(parts) > 1
    calls = any(s.connection_id for s in found) or (len(sql) > 4096 and mentions(sql))
    if b"\\" in sql:  # the reading without backslash escapes (NO_BACKSLASH_ESCAPES)
        other = split(sql, backslash=False)
        several = several or len(other) > 1
        found += [_classify(_NUMBER.sub(b"0", mask(p[:4096], backslash=False))) for p in other]
    if not found:
        return _one(b"")
    if not several:
        first = found[0]  # one statement: its own session effects, the strictest of its readings
        return Statement(
            _route(found), first.keyword, tx=first.tx, autocommit=first.autocommit,
            database=first.database, sets=first.sets,
            pins=next((s.pins for s in found if s.pins), None), unpins=first.unpins,
            unbounded_write=any(s.unbounded_write for s in found),
            dirties=any(s.dirties for s in found), connection_id=calls,
        )  # fmt: skip
    changes = any(
        s.dirties or s.pins or s.unpins or s.sets or s.database is not None
        or s.autocommit is not None or s.tx is not Tx.NONE
        for s in found
    )  # fmt: skip
    offending = next((s for s in found if s.unbounded_write), found[0])
    if any(s.keyword == "KILL" for s in found):
        offending = next(s for s in found if s.keyword == "KILL")  # the proxy's to answer
    pins = next((s.pins for s in found if s.pins), None)
    if changes and pins is None:
        pins = "a multi-statement changing the session"
    return Statement(
        _route(found), offending.keyword, pins=pins,
        unbounded_write=offending.unbounded_write, dirties=changes, several=True,
        connection_id=calls,
    )  # fmt: skip


def _route(found: list[Statement]) -> Route:
    return Route.REPLICA if all(s.route is Route.REPLICA for s in found) else Route.PRIMARY


@lru_cache(maxsize=4096)
def _classify(sql: bytes) -> Statement:
    st = _classify_text(sql)
    if _CONNECTION_ID.search(sql) and _CONNECTION_ID.search(_strip_literals(sql)):
        st = replace(st, connection_id=True)
    if _careful_needed(sql):
        return replace(st, careful=True)
    return st


def _classify_text(sql: bytes) -> Statement:
    hint_match = _HINT.match(sql, _leading_space_end(sql))
    hint = hint_match.group(1).lower().decode() if hint_match else None
    pos = _COMMENT_OR_SPACE.match(sql).end()  # type: ignore[union-attr]
    m = _WORD.match(sql, pos)
    keyword = m.group().upper().decode() if m else ""
    rest_at = m.end() if m else pos
    body = _strip_literals(sql)
    words = _words(sql, rest_at, 3)

    if keyword in ("BEGIN", "START") and (keyword == "BEGIN" or words[:1] == ["TRANSACTION"]):
        return Statement(Route.PRIMARY, keyword, tx=Tx.BEGIN)
    if keyword in ("COMMIT", "ROLLBACK"):
        to_savepoint = "TO" in words[:2]
        return Statement(Route.PRIMARY, keyword, tx=Tx.NONE if to_savepoint else Tx.END)
    if keyword == "USE":
        name = sql[rest_at:].strip().rstrip(b";").strip().strip(b"`").decode("utf-8", "replace")
        return Statement(Route.PRIMARY, keyword, database=name)
    if keyword == "SET":
        return _set(sql, rest_at, body)
    if keyword == "LOCK":
        return Statement(Route.PRIMARY, keyword, pins="LOCK TABLES")
    if keyword == "UNLOCK":
        return Statement(Route.PRIMARY, keyword, unpins=True)
    if keyword == "PREPARE":
        return Statement(Route.PRIMARY, keyword, pins="a text PREPARE", dirties=True)
    if keyword == "CREATE" and words[:1] == ["TEMPORARY"]:
        return Statement(Route.PRIMARY, keyword, pins="a temporary table", dirties=True)
    if keyword == "DROP" and words[:1] == ["TEMPORARY"]:
        return Statement(Route.PRIMARY, keyword, unpins=True)

    pins = None
    if _GET_LOCK.search(body):
        pins = "GET_LOCK"
    elif _USER_VAR.search(body):
        pins = "a user variable"
    elif _CALC.search(body):
        pins = "SQL_CALC_FOUND_ROWS"
    unpins = bool(_RELEASE_ALL.search(body))
    unbounded = keyword in ("UPDATE", "DELETE") and not _WHERE.search(body)

    route = Route.PRIMARY
    if keyword in READS and not _PRIMARY_READS.search(body):
        if keyword in ("EXPLAIN", "DESC", "DESCRIBE") and words[:1] and words[0] in (
            "INSERT", "UPDATE", "DELETE", "REPLACE"
        ):  # fmt: skip
            route = Route.PRIMARY  # EXPLAIN of a write: its table may be primary-only
        else:
            route = Route.REPLICA
    if hint == "master":
        route = Route.PRIMARY
    elif hint == "slave" and keyword in READS:
        route = Route.REPLICA
    if pins is not None:
        route = Route.PRIMARY
    dirties = pins in DIRTY_PINS or keyword not in FOLLOWED
    return Statement(
        route, keyword, pins=pins, unpins=unpins, unbounded_write=unbounded, dirties=dirties
    )


def _leading_space_end(sql: bytes) -> int:
    i = 0
    while i < len(sql) and sql[i] in b" \t\r\n":
        i += 1
    return i


def _words(sql: bytes, pos: int, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        pos = _COMMENT_OR_SPACE.match(sql, pos).end()  # type: ignore[union-attr]
        m = _WORD.match(sql, pos)
        if not m:
            break
        out.append(m.group().upper().decode())
        pos = m.end()
    return out


def _set(sql: bytes, rest_at: int, body: bytes) -> Statement:
    rest = sql[rest_at:].strip().rstrip(b";")
    words = _words(sql, rest_at, 2)
    if words[:1] == ["TRANSACTION"] or words[:2] in (["SESSION", "TRANSACTION"],):
        return Statement(Route.PRIMARY, "SET", sets=True)  # isolation level / read only
    m = _AUTOCOMMIT.match(rest)
    if m:
        value = m.group(1).upper()
        if value in (b"0", b"OFF", b"FALSE"):
            return Statement(Route.PRIMARY, "SET", autocommit=False, sets=True)
        if value in (b"1", b"ON", b"TRUE"):
            return Statement(Route.PRIMARY, "SET", autocommit=True, sets=True)
    if _SESSION_TRACK.search(body):  # the server's proof of state changes, turned off or on
        return Statement(Route.PRIMARY, "SET", pins="session tracking turned off", dirties=True)
    if _USER_VAR.search(body):
        return Statement(Route.PRIMARY, "SET", sets=True, pins="a user variable", dirties=True)
    return Statement(Route.PRIMARY, "SET", sets=True)
