"""Where one COM_QUERY holds several statements, as the server will see them, sans-IO.

With CLIENT_MULTI_STATEMENTS the server runs every statement of `SELECT 1; DELETE FROM t`, so
routing and the firewall must look at each of them, not at the first keyword. `split()` cuts a
text at the semicolons outside string literals, quoted names and comments, the way the server's
lexer reads it:

- `'...'` and `"..."` end at their unescaped quote (a doubled quote or a backslash escapes it),
  `` `...` `` at its backquote (doubled to escape, never a backslash);
- `-- ` (dashes then a space or a control character) and `#` run to the end of the line,
  `/* ... */` to its end;
- `/*! ... */` and `/*M! ... */` (with an optional version number) are code the server runs:
  their markers are blanked and what is inside is read as statement text.

Whether a backslash escapes depends on the session's sql_mode (NO_BACKSLASH_ESCAPES, and
ANSI_QUOTES for double quotes), which a statement of the same text may change. So a text with
a backslash is split both ways (`split(sql, backslash=False)`) and the classifier judges every
statement either reading finds: `SELECT '\\'; DELETE FROM t; -- '` is one statement with
escapes, three without.

An unterminated literal or comment runs to the end of the text, as it does for the server
(which then answers a syntax error for that statement).
"""

from __future__ import annotations

import re

# What can start a literal, a comment, an executable comment's end, or end a statement.
_SPECIAL = re.compile(rb"[;'\"`#]|/\*|\*/|--(?=[\x00-\x20]|$)")
_QUOTED = {
    (b"'", True): re.compile(rb"'(?:[^'\\]|\\.|'')*'", re.S),
    (b'"', True): re.compile(rb'"(?:[^"\\]|\\.|"")*"', re.S),
    (b"'", False): re.compile(rb"'(?:[^']|'')*'", re.S),
    (b'"', False): re.compile(rb'"(?:[^"]|"")*"', re.S),
    (b"`", True): re.compile(rb"`(?:[^`]|``)*`", re.S),
    (b"`", False): re.compile(rb"`(?:[^`]|``)*`", re.S),
}
_EXECUTABLE = re.compile(rb"/\*M?!\d*")
_BLANK = re.compile(rb"(?:\s+|/\*.*?\*/|--[\x00-\x20][^\n]*(?:\n|$)|--$|#[^\n]*(?:\n|$))*", re.S)
# literals (group 1) or comments, read left to right as the server does, for mask()
_LITERAL_OR_COMMENT = {
    True: re.compile(rb"""('(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`]|``)*`)"""
                     rb"|/\*.*?\*/|--[\x00-\x20][^\n]*|#[^\n]*", re.S),
    False: re.compile(rb"""('(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`)"""
                      rb"|/\*.*?\*/|--[\x00-\x20][^\n]*|#[^\n]*", re.S),
}  # fmt: skip


def _masked(m: re.Match[bytes]) -> bytes:
    return b"''" if m.group(1) is not None else m.group()


def mask(sql: bytes, backslash: bool = True) -> bytes:
    """The text with every literal and quoted name replaced by `''`, comments kept: what the
    classifier may search for markers without a literal or a comment fooling it."""
    return _LITERAL_OR_COMMENT[backslash].sub(_masked, sql)


def split(sql: bytes, backslash: bool = True) -> list[bytes]:
    """The statements of a text, executable comments unwrapped, empty ones left out."""
    parts: list[bytes] = []
    out = bytearray()
    pos = 0
    n = len(sql)
    in_code_comment = False  # inside /*! ... */
    while pos < n:
        m = _SPECIAL.search(sql, pos)
        if m is None:
            out += sql[pos:]
            break
        i = m.start()
        token = m.group()
        out += sql[pos:i]
        if token == b";":
            parts.append(bytes(out))
            out = bytearray()
            pos = i + 1
        elif token == b"*/":
            out += b"  " if in_code_comment else token
            in_code_comment = False
            pos = i + 2
        elif token == b"/*":
            code = _EXECUTABLE.match(sql, i)
            if code is not None and not in_code_comment:
                out += b" " * (code.end() - i)  # its content is statement text
                in_code_comment = True
                pos = code.end()
                continue
            end = sql.find(b"*/", i + 2)
            if end < 0:
                out += sql[i:]
                break
            out += sql[i : end + 2]
            pos = end + 2
        elif token == b"#" or token[:1] == b"-":
            end = sql.find(b"\n", i)
            if end < 0:
                out += sql[i:]
                break
            out += sql[i : end + 1]
            pos = end + 1
        else:
            q = _QUOTED[token, backslash].match(sql, i)
            if q is None:  # unterminated: the rest is the literal
                out += sql[i:]
                break
            out += q.group()
            pos = q.end()
    parts.append(bytes(out))
    return [p for p in parts if _BLANK.match(p).end() != len(p)]  # type: ignore[union-attr]
