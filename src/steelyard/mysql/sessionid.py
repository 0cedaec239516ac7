"""The proxy's own session ids, and `CONNECTION_ID()` made to mean them, sans-IO.

A client's session borrows backend connections (pooled, shared), so the server's
CONNECTION_ID() changes from statement to statement and means nothing to the client. The proxy
gives each session an id of its own instead: the thread id of its greeting, what CONNECTION_ID()
answers, what SHOW PROCESSLIST lists and what KILL takes.

An id is 32 bits (the greeting's field): the worker process's index in the top 8 bits (a
listener runs in up to 256 workers, each with its own sessions), a counter in the other 24. So
any worker can tell from an id which worker owns the session, and the ids of one worker are
1, 2, 3, ... as a server's. The counter wraps after 16M sessions, skipping ids still in use.

`rewrite()` replaces each call of CONNECTION_ID() in a statement's text by the id (as
`CAST(id AS UNSIGNED)`: unsigned as the function, and no column position in ORDER BY), outside
string literals, quoted names and comments (code in executable comments counts), as the
server's lexer reads it. A call that is a whole item of a select list keeps its column name
(`SELECT CONNECTION_ID()` answers a column named `CONNECTION_ID()`, as the server would).
Whether a backslash escapes in a literal depends on the session's sql_mode, which the proxy does
not follow: a text with a backslash is rewritten only where both readings find the call.
"""

from __future__ import annotations

import re

LOCAL_BITS = 24
LOCAL_MASK = (1 << LOCAL_BITS) - 1
MAX_WORKERS = 256


def compose(worker: int, n: int) -> int:
    """The id of the `n`th session of a worker (n in 1 .. 2**24 - 1)."""
    return (worker << LOCAL_BITS) | (n & LOCAL_MASK)


def owner(session_id: int) -> int:
    """The index of the worker that owns a session id."""
    return session_id >> LOCAL_BITS


def mentions(sql: bytes) -> bool:
    """The cheap test first: can the text call CONNECTION_ID() at all (any case)?"""
    return b"_ID" in sql or b"_id" in sql or b"_Id" in sql or b"_iD" in sql


_CALL = re.compile(rb"(?<![\w.$@`])CONNECTION_ID\s*\(\s*\)", re.I)
# Literals, quoted names and comments (not executable ones: their inside is code), as split.py
# reads them; an unterminated one runs to the end of the text.
_NAMES_COMMENTS = rb"|`(?:[^`]|``)*(?:`|$)|/\*(?!M?!).*?(?:\*/|$)|--[\x00-\x20][^\n]*|--$|#[^\n]*"
_SKIP = {
    True: re.compile(
        rb"""'(?:[^'\\]|\\.|'')*(?:'|$)|"(?:[^"\\]|\\.|"")*(?:"|$)""" + _NAMES_COMMENTS, re.S
    ),
    False: re.compile(rb"""'(?:[^']|'')*(?:'|$)|"(?:[^"]|"")*(?:"|$)""" + _NAMES_COMMENTS, re.S),
}
_WORD = re.compile(rb"[A-Za-z_][A-Za-z_0-9$]*")
# Words that may stand between SELECT and its first item.
_SELECT_OPTIONS = frozenset({
    b"SELECT", b"ALL", b"DISTINCT", b"DISTINCTROW", b"HIGH_PRIORITY", b"STRAIGHT_JOIN",
    b"SQL_SMALL_RESULT", b"SQL_BIG_RESULT", b"SQL_BUFFER_RESULT", b"SQL_CACHE", b"SQL_NO_CACHE",
    b"SQL_CALC_FOUND_ROWS",
})  # fmt: skip
# Words that start a clause where a comma at the same depth separates something other than
# select items (commas in CASE, IN (...), OVER (...) are inside parentheses or absent).
_CLAUSES = frozenset({
    b"FROM", b"WHERE", b"BY", b"HAVING", b"LIMIT", b"SET", b"VALUES", b"VALUE", b"ON", b"USING",
    b"INTO", b"WINDOW", b"RETURNING", b"CALL", b"DO", b"UPDATE", b"TABLE", b"KILL",
})  # fmt: skip
# What may follow a whole select item.
_AFTER_ITEM = frozenset({
    b"FROM", b"INTO", b"UNION", b"EXCEPT", b"INTERSECT", b"WHERE", b"GROUP", b"HAVING",
    b"ORDER", b"LIMIT", b"FOR", b"LOCK", b"WINDOW", b"OFFSET",
})  # fmt: skip


def _code(sql: bytes, backslash: bool) -> bytes:
    """The text with literals as `0`s and comments as spaces, offsets kept."""
    out = bytearray(sql)
    for m in _SKIP[backslash].finditer(sql):
        start, end = m.span()
        fill = b"0" if sql[start] in b"'\"`" else b" "
        out[start:end] = fill * (end - start)
    return bytes(out)


def _calls(sql: bytes, backslash: bool) -> tuple[bytes, list[tuple[int, int]]]:
    code = _code(sql, backslash)
    return code, [m.span() for m in _CALL.finditer(code)]


def rewrite(sql: bytes, session_id: int) -> bytes:
    """The text with CONNECTION_ID() calls replaced by `session_id` (the text itself when it
    has none)."""
    code, spans = _calls(sql, True)
    if b"\\" in sql and spans:
        other = set(_calls(sql, False)[1])
        spans = [s for s in spans if s in other]
    if not spans:
        return sql
    literal = b"CAST(%d AS UNSIGNED)" % session_id
    out = bytearray()
    pos = 0
    for start, end in spans:
        out += sql[pos:start] + literal
        if _whole_item(code, start, end):
            out += b" AS `" + sql[start:end] + b"`"
        pos = end
    out += sql[pos:]
    return bytes(out)


def _whole_item(code: bytes, start: int, end: int) -> bool:
    """Whether the call at code[start:end] is a whole item of a select list (its column is
    named by its text, which the id literal must keep)."""
    after = code[end:].lstrip()
    if after[:1] not in (b"", b",", b")", b";"):
        m = _WORD.match(after)
        if m is None or m.group().upper() not in _AFTER_ITEM:
            return False
    before = code[:start].rstrip()
    if not before:
        return False
    if before[-1:] != b",":
        return _last_word(before) in _SELECT_OPTIONS
    # after a comma: a select item if the nearest clause word at this depth is SELECT
    depth = 0
    i = len(before) - 1
    while i >= 0:
        ch = before[i]
        if ch == 0x29:  # )
            depth += 1
        elif ch == 0x28:  # (
            if depth == 0:
                return False  # the arguments of a function, a VALUES row, ...
            depth -= 1
        elif ch == 0x3B:  # ;
            return False
        elif depth == 0 and (ch == 0x5F or 0x41 <= ch <= 0x5A or 0x61 <= ch <= 0x7A):
            j = i
            while j > 0 and (before[j - 1] == 0x5F or before[j - 1 : j].isalnum()):
                j -= 1
            word = before[j : i + 1].upper()
            if word == b"SELECT":
                return True
            if word in _CLAUSES:
                return False
            i = j
        i -= 1
    return False


def _last_word(text: bytes) -> bytes:
    j = len(text)
    while j > 0 and (text[j - 1] == 0x5F or text[j - 1 : j].isalnum()):
        j -= 1
    return text[j:].upper()
