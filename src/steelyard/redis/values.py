"""Whole RESP2 / RESP3 replies as typed values, read and written back byte for byte, sans-IO.

A merge of several servers' answers (FUNCTION LIST, FUNCTION STATS, SCRIPT EXISTS, ...) must
answer in the client's protocol, and its parts come in that protocol: RESP2 arrays of pairs, or
RESP3 maps (`%`), sets (`~`), nulls (`_`), verbatim strings (`=`), doubles, booleans. hiredis
reads a map as a dict and a verbatim string as plain bytes, so what it returns can no longer be
written back as the server wrote it. `read` keeps each element's type and its exact text, and
`write` gives the same bytes back, so a merge edits the tree of one server's answer and sends
the rest untouched.
"""

from __future__ import annotations

# Aggregates: the count is of elements (a map's is of pairs: twice as many elements follow).
AGGREGATES = frozenset(b"*%~>|")
BLOBS = frozenset(b"$=!")  # length-prefixed; `$-1` is RESP2's null bulk
LINES = frozenset(b"+-:_,#(")  # the rest of the line is the value


class Value:
    """One reply element: its type byte, and its text (bytes) or its elements (list); a RESP2
    null (`$-1`, `*-1`) has None. A map keeps its keys and values in one flat list."""

    __slots__ = ("items", "kind", "text")

    def __init__(
        self, kind: int, text: bytes | None = None, items: list[Value] | None = None
    ) -> None:
        self.kind = kind
        self.text = text
        self.items = items

    def __repr__(self) -> str:
        inner = self.items if self.items is not None else self.text
        return f"Value({chr(self.kind)!r}, {inner!r})"

    @property
    def is_null(self) -> bool:
        return self.kind == ord("_") or (self.text is None and self.items is None)

    @property
    def is_error(self) -> bool:
        return self.kind in (ord("-"), ord("!"))

    def pairs(self) -> list[tuple[bytes, Value]]:
        """A map, or a RESP2 array of alternating names and values: (name, value) pairs."""
        items = self.items or []
        return [(items[i].text or b"", items[i + 1]) for i in range(0, len(items) - 1, 2)]

    def get(self, name: bytes) -> Value | None:
        for key, value in self.pairs():
            if key == name:
                return value
        return None


class Incomplete(Exception):
    """The bytes end before the reply does."""


def read(raw: bytes) -> Value:
    """The one reply in `raw` (ValueError when it is malformed or followed by more bytes)."""
    value, end = read_at(raw, 0)
    if end != len(raw):
        raise ValueError(f"{len(raw) - end} bytes after the reply")
    return value


def read_at(raw: bytes, pos: int) -> tuple[Value, int]:
    """The reply starting at `pos` and where it ends (Incomplete when the bytes stop short)."""
    if pos >= len(raw):
        raise Incomplete
    kind = raw[pos]
    eol = raw.find(b"\r\n", pos)
    if eol < 0:
        raise Incomplete
    head = raw[pos + 1 : eol]
    pos = eol + 2
    if kind in LINES:
        return Value(kind, head), pos
    if kind in BLOBS:
        size = int(head)
        if size < 0:
            return Value(kind), pos
        end = pos + size
        if len(raw) < end + 2:
            raise Incomplete
        if raw[end : end + 2] != b"\r\n":
            raise ValueError("a blob without its CRLF")
        return Value(kind, raw[pos:end]), end + 2
    if kind in AGGREGATES:
        count = int(head)
        if count < 0:
            return Value(kind), pos
        if kind in b"%|":
            count *= 2
        items: list[Value] = []
        for _ in range(count):
            item, pos = read_at(raw, pos)
            items.append(item)
        return Value(kind, items=items), pos
    raise ValueError(f"unknown reply type {chr(kind)!r}")


def write(value: Value) -> bytes:
    out: list[bytes] = []
    _write(value, out)
    return b"".join(out)


def _write(value: Value, out: list[bytes]) -> None:
    kind = value.kind
    if kind in LINES:
        out.append(b"%c%b\r\n" % (kind, value.text or b""))
    elif kind in BLOBS:
        if value.text is None:
            out.append(b"%c-1\r\n" % kind)
        else:
            out.append(b"%c%d\r\n%b\r\n" % (kind, len(value.text), value.text))
    elif value.items is None:
        out.append(b"%c-1\r\n" % kind)
    else:
        count = len(value.items) // 2 if kind in b"%|" else len(value.items)
        out.append(b"%c%d\r\n" % (kind, count))
        for item in value.items:
            _write(item, out)


def split(data: bytes) -> tuple[list[bytes], int]:
    """The whole replies at the start of `data`, raw, and how many bytes they take."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        try:
            _, end = read_at(data, pos)
        except Incomplete:
            break
        out.append(data[pos:end])
        pos = end
    return out, pos
