"""RESP2 and RESP3, sans-IO: client requests in, backend replies framed, replies encoded.

Requests: `FastRequestParser` (the one sessions use) lets hiredis read the common case, a
canonical RESP array of bulk strings, and hands anything else (inline commands, malformed or
large commands, a client before AUTH) to `RequestParser`, which frames requests itself because
the proxy must refuse oversized or malformed input *before* buffering it (a `$99999999999`
header is answered at once, as Redis does), which needs the position of every header; its
errors carry Redis's own texts, inline commands follow Redis's quoting rules. Both count the
arguments already read of the command under way in `buffered()`, the client's query buffer.

Replies from backends are only framed (`ReplyFramer` finds where each reply ends and returns its
raw bytes) so that the proxy forwards them without rebuilding them; the head of a long reply
still on its way can be taken out (`take_head`) and forwarded before its end arrives. The
framer knows every RESP3 type too (a client that said `HELLO 3` is served by backend
connections that said it as well): they take its slower branches, so RESP2 replies cost what
they did. Replies that must be read (summing DBSIZE, SCAN cursors, INFO) are parsed with hiredis
(`parse`); merges that move elements around (MGET) take them as raw bytes (`elements`), which
keeps each one exactly as its server wrote it, in either protocol.
"""

from __future__ import annotations

import re

import hiredis

MAX_INLINE = 64 * 1024  # Redis's PROTO_INLINE_MAX_SIZE
MAX_MULTIBULK = 1024 * 1024  # Redis refuses more arguments than this
DEFAULT_MAX_BULK = 512 * 1024 * 1024  # Redis's proto-max-bulk-len
# What Redis 7 accepts from a client that has not authenticated yet: a stranger cannot make
# it buffer more than a few small arguments.
UNAUTH_MAX_MULTIBULK = 10
UNAUTH_MAX_BULK = 16 * 1024

Command = list[bytes]


class ProtocolError(Exception):
    """Malformed input: answered with `-ERR Protocol error: ...`, then the connection closes."""


class RequestParser:
    """Client bytes -> commands (argv lists). Resumes mid-command without rescanning.

    `raws[i]` is the i-th command of the last `feed` exactly as the client sent it (a RESP
    array), so the proxy forwards those bytes instead of encoding argv again; it is None for
    inline commands and for a command too big to keep whole in the buffer.
    """

    def __init__(self, max_bulk: int = DEFAULT_MAX_BULK) -> None:
        self.max_bulk = max_bulk
        self._buf = bytearray()
        self._pos = 0
        self._argc = -1  # arguments still to read in the current multibulk, -1 outside one
        self._args: Command = []
        self._argbytes = 0  # bytes of the command under way already moved into _args
        self._bulk = -1  # length of the bulk being waited for, -1 when reading a header
        self._start = -1  # where the current multibulk starts in the buffer (-1: not kept)
        self.raws: list[bytes | None] = []
        # Before AUTH: Redis's small limits, and one command per feed, so that the commands
        # after an AUTH are read with the limits the AUTH lifted (Redis reads them in turn).
        self.guard = False

    error: ProtocolError | None = None  # set once input was malformed; feed returns [] after

    def feed(self, data: bytes) -> list[Command]:
        """Complete commands in order. Malformed input sets `error`: the commands before it
        are still returned (to be answered first), then the connection is to be closed."""
        self.raws = raws = []
        if self.error is not None:
            return []
        buf = self._buf
        # Only between commands: the one under way must stay whole for `raws`.
        if self._pos and self._pos == len(buf) and self._argc < 0:
            buf.clear()
            self._pos = 0
        buf += data
        out: list[Command] = []
        pos = self._pos
        n = len(buf)
        find = buf.find
        try:
            while pos < n:
                if self._argc < 0:
                    if buf[pos] == 0x2A:  # '*'
                        end = find(b"\r\n", pos)
                        if end < 0:
                            if n - pos > MAX_INLINE:
                                raise ProtocolError("too big mbulk count string")
                            break
                        count = _number(buf, pos + 1, end, "invalid multibulk length")
                        if count > MAX_MULTIBULK:
                            raise ProtocolError("invalid multibulk length")
                        if count > UNAUTH_MAX_MULTIBULK and self.guard:
                            raise ProtocolError("unauthenticated multibulk length")
                        self._start = pos
                        pos = end + 2
                        if count <= 0:
                            continue  # *0 and *-1: nothing to run, as Redis
                        self._argc = count
                        self._args = []
                        self._argbytes = pos - self._start  # its `*N` header
                    else:
                        end = find(b"\n", pos)
                        if end < 0:
                            if n - pos > MAX_INLINE:
                                raise ProtocolError("too big inline request")
                            break
                        if end - pos > MAX_INLINE:
                            raise ProtocolError("too big inline request")
                        line = bytes(
                            buf[pos : end - 1 if end > pos and buf[end - 1] == 13 else end]
                        )
                        pos = end + 1
                        args = split_inline(line)
                        if args:
                            out.append(args)
                            raws.append(None)
                            if self.guard:
                                break
                        continue
                args = self._args
                while True:
                    size = self._bulk
                    if size < 0:
                        if pos >= n:
                            break
                        if buf[pos] != 0x24:  # '$'
                            got = chr(buf[pos])
                            raise ProtocolError(f"expected '$', got '{got}'")
                        end = find(b"\r\n", pos)
                        if end < 0:
                            if n - pos > MAX_INLINE:
                                raise ProtocolError("too big bulk count string")
                            break
                        digits = buf[pos + 1 : end]
                        if not digits.isdigit():
                            raise ProtocolError("invalid bulk length")
                        size = int(digits)
                        if size > self.max_bulk:
                            raise ProtocolError("invalid bulk length")
                        if size > UNAUTH_MAX_BULK and self.guard:
                            raise ProtocolError("unauthenticated bulk length")
                        self._bulk = size
                        self._argbytes += end + 2 - pos
                        pos = end + 2
                    if n - pos < size + 2:
                        break
                    if buf[pos + size] != 13 or buf[pos + size + 1] != 10:
                        raise ProtocolError("expected CRLF after a bulk string")
                    args.append(bytes(buf[pos : pos + size]))
                    self._argbytes += size + 2
                    pos += size + 2
                    self._bulk = -1
                    self._argc -= 1
                    if self._argc == 0:
                        break
                if self._argc != 0:
                    break  # waiting for more bytes
                out.append(args)
                raws.append(bytes(buf[self._start : pos]) if self._start >= 0 else None)
                self._args = []
                self._argbytes = 0
                self._argc = -1
                if self.guard:
                    break
        except ProtocolError as exc:
            self.error = exc
        self._pos = pos
        # Keep the buffer from growing without bound when a client streams a big value.
        if pos > 65536 and pos * 2 > n:
            del buf[:pos]
            self._pos = 0
            self._start = -1  # the command under way is no longer whole: it is encoded again
        return out

    def buffered(self) -> int:
        """Bytes received and not yet read as commands: the client's query buffer. The
        arguments of the command under way already read count too (Redis counts argv in its
        client-query-buffer-limit): the buffer is trimmed as they are read, so a command of a
        million small arguments would otherwise grow without showing here."""
        return len(self._buf) - self._pos + self._argbytes

    def between_commands(self) -> bool:
        """Nothing of a command is buffered: another parser may take over from here."""
        return self._argc < 0 and self._pos == len(self._buf) and self.error is None


class FastRequestParser:
    """The request parser of the proxy: hiredis (C) reads the commands, and each is checked
    to be exactly the canonical RESP array of its arguments (what every client library sends),
    which is then what the proxy forwards. Anything else (an inline command, another RESP type
    inside an array, a malformed or very large command) hands the connection over to the exact
    `RequestParser` from that command on, so it gets Redis's own answer or error text.

    Same interface as RequestParser: `feed(data)` -> commands, `raws`, `error`.
    """

    # A command still incomplete past this many bytes (a big value on its way) is read by
    # RequestParser, which checks max_bulk at the bulk's header instead of buffering it.
    MAX_PENDING = 64 * 1024

    def __init__(self, max_bulk: int = DEFAULT_MAX_BULK) -> None:
        self.max_bulk = max_bulk
        self.reader = hiredis.Reader()
        self._buf = bytearray()
        self._pos = 0
        self.slow: RequestParser | None = None
        self.raws: list[bytes | None] = []

    @property
    def error(self) -> ProtocolError | None:
        return self.slow.error if self.slow is not None else None

    @property
    def guard(self) -> bool:
        return self.slow is not None and self.slow.guard

    @guard.setter
    def guard(self, on: bool) -> None:
        """Before AUTH the exact parser reads, with Redis's limits for strangers (see
        RequestParser.guard); once lifted, the fast one takes over between two commands."""
        if on and self.slow is None:
            self._hand_over(bytes(self._buf[self._pos :]), [], [])
        if self.slow is not None:
            self.slow.guard = on

    def buffered(self) -> int:
        """Bytes received and not yet read as commands: the client's query buffer. On the
        fast path the whole command under way stays in `_buf` (hiredis holds at most
        MAX_PENDING of it before RequestParser takes over), so this counts its arguments."""
        if self.slow is not None:
            return self.slow.buffered()
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[Command]:
        slow = self.slow
        if slow is not None and not slow.guard and slow.between_commands():
            self.slow = slow = None  # back on the fast path
        if slow is not None:
            out = slow.feed(data)
            self.raws = slow.raws
            return out
        if not data:
            self.raws = []
            return []
        buf = self._buf
        pos = self._pos
        if pos == len(buf):
            if pos:
                buf.clear()
                pos = 0
            if data[:1] != b"*":
                return self._hand_over(data, [], [])  # an inline command
        buf += data
        reader = self.reader
        reader.feed(data)
        out: list[Command] = []
        self.raws = raws = []
        while True:
            try:
                command = reader.gets()
            except hiredis.ProtocolError:
                break
            if command is False:
                self._pos = pos
                pending = len(buf) - pos
                if pending > self.MAX_PENDING or pending > self.max_bulk:
                    break
                if pending:
                    # hiredis waits for a bulk of any announced size, where Redis refuses one
                    # over its limit at once: the exact parser looks at the part received.
                    probe = RequestParser(self.max_bulk)
                    probe.feed(bytes(buf[pos:]))
                    if probe.error is not None:
                        break
                if pos > self.MAX_PENDING:
                    del buf[:pos]  # what hiredis has read: keep the buffer bounded
                    self._pos = 0
                return out
            # hiredis does not say how many bytes a command took; a command is accepted when
            # the bytes at `pos` are its canonical encoding, which then is what it took.
            if command.__class__ is not list or not command:
                empty = b"*-1\r\n" if command is None else b"*0\r\n" if command == [] else b""
                if empty and buf.startswith(empty, pos):
                    pos += len(empty)  # *-1 and *0: nothing to run, as Redis
                    continue
                break
            try:
                raw = encode_command(command)
            except TypeError:
                break  # an integer, array or null inside the array
            if len(raw) > self.max_bulk or not buf.startswith(raw, pos):
                break
            out.append(command)
            raws.append(raw)
            pos += len(raw)
        # Not the canonical form: RequestParser reads on from the start of this command.
        return self._hand_over(bytes(buf[pos:]), out, raws)

    def _hand_over(
        self, rest: bytes, out: list[Command], raws: list[bytes | None]
    ) -> list[Command]:
        slow = self.slow = RequestParser(self.max_bulk)
        self._buf = bytearray()
        self._pos = 0
        self.reader = hiredis.Reader()
        out += slow.feed(rest)
        raws += slow.raws
        self.raws = raws
        return out


def _number(buf: bytearray, start: int, end: int, message: str) -> int:
    text = bytes(buf[start:end])
    if not text or not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
        raise ProtocolError(message)
    return int(text)


_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> Command:
    """Split an inline command as Redis's sdssplitargs does (quotes, escapes)."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: Command = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\r\n\x0b\x0c":
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        in_dq = in_sq = False
        while True:
            if in_dq:
                if i >= n:
                    raise ProtocolError("unbalanced quotes in request")
                c = line[i]
                if (
                    c == 0x5C
                    and i + 3 < n
                    and line[i + 1] == ord("x")
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    cur.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    cur.append(_ESCAPES.get(line[i], line[i]))
                elif c == 0x22:
                    # a closing quote must be followed by a space or the end
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\x0b\x0c":
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    cur.append(c)
            elif in_sq:
                if i >= n:
                    raise ProtocolError("unbalanced quotes in request")
                c = line[i]
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    cur.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\x0b\x0c":
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    cur.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in b" \t\r\n\x0b\x0c":
                    break
                if c == 0x22:
                    in_dq = True
                elif c == 0x27:
                    in_sq = True
                else:
                    cur.append(c)
            i += 1
        args.append(bytes(cur))


class ReplyFramer:
    """Backend bytes -> raw replies (bytes), one per reply, nested arrays included.

    Resumable: a reply that is not complete yet keeps its scan state (where it starts, how far
    the scan got, how many elements are still to come) and the next `feed` goes on from there,
    so a reply of N elements costs O(N) however many reads it arrives in. A rescan from the
    reply's start on every read was quadratic: a 1M-element LRANGE held the worker for seconds.
    Nested arrays need no stack: each array header adds its count to the elements still due.
    A big bulk string (BIG_BULK or more) is read through as it comes, its end remembered, so
    that its head too can be handed out (`take_head`) before the rest has arrived.
    """

    __slots__ = (
        "_buf", "_bulk_end", "_cool", "_miss", "_pending", "_pos", "_start", "pushes", "under_way",
    )  # fmt: skip

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # where scanning resumes: the next element (or reply) to read
        self._start = -1  # where the reply under way starts, -1 between replies
        self._pending = 0  # elements of the reply under way still to read
        self._cool = 0  # elements to read one by one before the run fast path is tried again
        self._miss = RUN_MIN  # the next cooling spell: doubles while tries keep failing
        self._bulk_end = -1  # where the big bulk being read through ends, -1 outside one
        # Bytes of the reply under way read (whole elements, or into a big bulk) and not
        # handed out yet: an attribute, read by the backend after every read.
        self.under_way = 0
        # RESP3 push frames (`>`) begun so far: a backend that sees this move looks at its
        # replies one by one, since a push is no answer to a request (see backend.py).
        self.pushes = 0

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        if self._start < 0 and self._pos and self._pos == len(buf):
            buf.clear()
            self._pos = 0
        buf += data
        out: list[bytes] = []
        pos = self._pos
        start = self._start
        pending = self._pending
        n = len(buf)
        find = buf.find
        while pos < n:
            if start < 0:
                # Bulk strings and one-line replies inline (most replies); arrays walk on.
                kind = buf[pos]
                if kind == 0x24:  # '$'
                    end = find(b"\r\n", pos)
                    if end < 0:
                        break
                    size = _length(buf, pos, end, "bulk")
                    stop = end + 4 + size if size >= 0 else end + 2
                    if stop <= n:
                        out.append(bytes(buf[pos:stop]))
                        pos = stop
                        continue
                    if size < BIG_BULK:
                        break  # resumes at this header: reading it again is O(1)
                    # else a big value: read through like an array's element, as it comes
                elif kind == 0x2B or kind == 0x3A or kind == 0x2D:  # + : -
                    end = find(b"\r\n", pos)
                    if end < 0:
                        break
                    out.append(bytes(buf[pos : end + 2]))
                    pos = end + 2
                    continue
                elif kind != 0x2A:  # '*'
                    # RESP3: one-line types here, everything else walks on like an array.
                    if kind not in _RESP3_KINDS:
                        raise ProtocolError(f"unexpected reply type {chr(kind)!r} from the server")
                    if kind in _ONE_LINE3:
                        end = find(b"\r\n", pos)
                        if end < 0:
                            break
                        _check_line(buf, pos, end)
                        out.append(bytes(buf[pos : end + 2]))
                        pos = end + 2
                        continue
                    if kind == 0x3E:  # '>'
                        self.pushes += 1
                start = pos
                pending = 1
            pos, pending = self._elements(buf, pos, pending)
            if pending:
                break
            out.append(bytes(buf[start:pos]))
            start = -1
        # Keep the buffer bounded: drop what was forwarded, never the reply under way.
        keep = start if start >= 0 else pos
        if keep > 65536 and keep * 2 > n:
            del buf[:keep]
            pos -= keep
            if start >= 0:
                start = 0
            if self._bulk_end >= 0:
                self._bulk_end -= keep
        self._pos = pos
        self._start = start
        self._pending = pending
        self.under_way = pos - start if start >= 0 else 0
        return out

    def take_head(self) -> bytes:
        """The part of the reply under way read so far (its header first), to be forwarded
        before the rest arrives; the reply `feed` returns later is then only what follows.
        Lets a long reply or a big value flow through instead of piling up whole."""
        start = self._start
        if start < 0 or self._pos == start:
            return b""
        self._start = self._pos
        self.under_way = 0
        return bytes(self._buf[start : self._pos])

    def _elements(self, buf: bytearray, pos: int, pending: int) -> tuple[int, int]:
        """Read elements from `pos` until none is due or the bytes run out (at an element's
        start, or inside a big bulk), so the next feed resumes there: (position, elements
        still due)."""
        n = len(buf)
        find = buf.find
        if self._bulk_end >= 0:  # inside a big bulk
            if self._bulk_end > n:
                return n, pending
            pos = self._bulk_end
            self._bulk_end = -1
            pending -= 1
        while pending:
            if pos >= n:
                break
            kind = buf[pos]
            if kind == 0x24 and pending >= RUN_MIN:
                if self._cool:
                    self._cool -= 1
                else:
                    pos, skipped = _skip_bulks(buf, pos, pending)
                    pending -= skipped
                    if skipped < RUN_MIN:
                        # Not a run of plain bulks here (nested arrays, nulls, CR in values,
                        # the reply's last elements): element by element for a while, longer
                        # after each miss, so tries on a reply of another shape cost little.
                        self._cool = self._miss
                        self._miss = min(self._miss * 2, RUN_MAX)
                    else:
                        self._miss = RUN_MIN
                    if not pending or pos >= n:
                        break
                    kind = buf[pos]
            end = find(b"\r\n", pos)
            if end < 0:
                break
            if kind == 0x24:  # '$'
                size = _length(buf, pos, end, "bulk")
                if size >= 0:
                    if end + 4 + size > n:
                        if size >= BIG_BULK:
                            self._bulk_end = end + 4 + size
                            pos = n
                        break
                    pos = end + 4 + size
                else:
                    pos = end + 2
            elif kind == 0x2A:  # '*'
                count = _length(buf, pos, end, "array")
                pos = end + 2
                if count > 0:
                    pending += count
            elif kind == 0x2B or kind == 0x3A or kind == 0x2D:  # + : -
                pos = end + 2
            elif kind in _ONE_LINE3:  # _ # , (
                _check_line(buf, pos, end)
                pos = end + 2
            elif kind == 0x3D or kind == 0x21:  # = !  (sized like a bulk string)
                size = _length(buf, pos, end, "bulk")
                if size < 0:
                    raise ProtocolError("invalid bulk length from the server")
                if end + 4 + size > n:
                    if size >= BIG_BULK:
                        self._bulk_end = end + 4 + size
                        pos = n
                    break
                pos = end + 4 + size
            elif kind == 0x25 or kind == 0x7C:  # % |  (pairs)
                count = _length(buf, pos, end, "aggregate")
                pos = end + 2
                if count > 0:
                    pending += 2 * count
                if kind == 0x7C:
                    # An attribute annotates the element that follows: that one is still due.
                    pending += 1
            elif kind == 0x7E or kind == 0x3E:  # ~ >
                count = _length(buf, pos, end, "aggregate")
                pos = end + 2
                if count > 0:
                    pending += count
            else:
                raise ProtocolError(f"unexpected reply type {chr(kind)!r} from the server")
            pending -= 1
        return pos, pending


RUN_MIN = 16  # the run fast path is worth its call from this many bulks on
BIG_BULK = 64 * 1024  # a bulk this big is read through as it comes, not held until whole
RUN_MAX = 8192  # bulks per try at most: one try holds the loop for well under a millisecond
RUN_DIGITS = 3  # bulks of up to 999 bytes are run; bigger ones are read one by one anyway


def _length_trie(digits: str) -> str:
    """The regex for the rest of a bulk whose length starts with `digits`: either the length
    ends here (CRLF, then exactly that many bytes, none a CR) or another digit follows. A
    trie, so that matching a header costs a step per digit, not a try per length."""
    branches = [rf"\r\n[^\r]{{{int(digits)}}}"]
    if digits != "0" and len(digits) < RUN_DIGITS:
        branches += [d + _length_trie(digits + d) for d in "0123456789"]
    return "(?:" + "|".join(branches) + ")"


# Up to RUN_MAX whole bulk strings in a row, matched in C. A match is exactly a bulk (its
# header, that many bytes, CRLF); without CR in the bodies each bulk holds two CRLFs, so
# counting CRLFs over the match counts the bulks.
_BULK_RUN = re.compile(
    (r"(?:\$(?:" + "|".join(d + _length_trie(d) for d in "0123456789") + r")\r\n)"
     + f"{{0,{RUN_MAX}}}").encode()
)  # fmt: skip


def _skip_bulks(buf: bytearray, pos: int, count: int) -> tuple[int, int]:
    """Skip the complete bulk strings in a row from `pos`, at most `count` (the elements the
    reply still has: what follows belongs to the next replies), without a Python step per
    bulk. Returns (position after them, how many)."""
    end = _BULK_RUN.match(buf, pos).end()  # type: ignore[union-attr]  # {0,N} always matches
    skipped = buf.count(b"\r\n", pos, end) >> 1
    if skipped > count:
        return pos, 0  # the run goes on into the next replies: the rest one by one
    return end, skipped


# RESP3 types: `_` null, `#` boolean, `,` double, `(` big number (one line each); `=` verbatim
# string and `!` blob error (sized); `%` map, `~` set, `>` push, `|` attribute (aggregates).
_ONE_LINE3 = frozenset(b"_#,(")
_RESP3_KINDS = frozenset(b"_#,(=!%~>|")


def _check_line(buf: bytearray, pos: int, end: int) -> None:
    """The one-line RESP3 types hold what their type says (a stray byte here means the stream
    is out of step, and every reply after it would go to the wrong client)."""
    kind = buf[pos]
    body = buf[pos + 1 : end]
    if kind == 0x5F:  # '_'
        ok = not body
    elif kind == 0x23:  # '#'
        ok = body == b"t" or body == b"f"
    else:  # , (
        ok = bool(body) and b"\r" not in body
    if not ok:
        raise ProtocolError(f"invalid {chr(kind)!r} reply from the server")


def _length(buf: bytearray, pos: int, end: int, what: str) -> int:
    try:
        return int(buf[pos + 1 : end])
    except ValueError:
        raise ProtocolError(f"invalid {what} length from the server") from None


def parse(raw: bytes) -> object:
    """A whole raw reply -> Python value (bytes, int, list, hiredis.ReplyError).

    RESP3 as hiredis 3.5 reads it: a map is a dict, a set a list, a push a list
    (hiredis.PushNotification), a double a float, a big number and a verbatim string bytes
    (the latter without its `txt:` format), a null None, a boolean a bool. Two it does not
    read: an attribute (it returns the attribute alone) and a blob error (ProtocolError); no
    merge of the proxy parses either kind.
    """
    reader = hiredis.Reader()
    reader.feed(raw)
    return reader.gets()


def elements(raw: bytes) -> list[bytes]:
    """The elements of a whole aggregate reply (array, set, map, push), each as the raw bytes
    its server wrote: merges move them without decoding them, in either protocol."""
    pos = raw.index(b"\r\n") + 2
    n = len(raw)
    find = raw.find
    out: list[bytes] = []
    # Bulk strings, nulls and one-line elements here (MGET's values, names); anything nested
    # is left to a framer.
    while pos < n:
        kind = raw[pos]
        end = find(b"\r\n", pos)
        if kind == 0x24:  # '$'
            size = int(raw[pos + 1 : end])
            stop = end + 4 + size if size >= 0 else end + 2
        elif kind in _FLAT_LINES:
            stop = end + 2
        else:
            return out + ReplyFramer().feed(raw[pos:])
        out.append(raw[pos:stop])
        pos = stop
    return out


_FLAT_LINES = frozenset(b"+-:_#,(")


# encoders ----------------------------------------------------------------------------------


def encode_command(args: Command) -> bytes:
    # The usual shapes in one formatting operation each (GET k; SET k v): the hot path.
    n = len(args)
    if n == 2:
        a, b = args
        return b"*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(a), a, len(b), b)
    if n == 3:
        a, b, c = args
        return b"*3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
            len(a), a, len(b), b, len(c), c,
        )  # fmt: skip
    parts = [b"*%d\r\n" % n]
    for a in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(parts)


def error(message: str) -> bytes:
    """An error reply; `message` starts with its code, as `ERR ...` or `CROSSSLOT ...`."""
    return b"-" + message.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def bulk(value: bytes | None) -> bytes:
    if value is None:
        return b"$-1\r\n"
    return b"$%d\r\n%b\r\n" % (len(value), value)


def null(protocol: int) -> bytes:
    """A null reply: RESP2's null bulk string, RESP3's null."""
    return b"_\r\n" if protocol == 3 else b"$-1\r\n"


def null_array(protocol: int) -> bytes:
    """A null where Redis 7 sends a null array in RESP2 (EXEC after a failed WATCH)."""
    return b"_\r\n" if protocol == 3 else b"*-1\r\n"


def text(value: bytes, protocol: int) -> bytes:
    """A text Redis sends as a verbatim string in RESP3 (INFO), a bulk string in RESP2."""
    if protocol == 3:
        return b"=%d\r\ntxt:%b\r\n" % (len(value) + 4, value)
    return b"$%d\r\n%b\r\n" % (len(value), value)


def mapping(raw_pairs: list[bytes], protocol: int) -> bytes:
    """A map (RESP3) or a flat array (RESP2) of already-encoded keys and values, in turn."""
    if protocol == 3:
        return b"%%%d\r\n" % (len(raw_pairs) // 2) + b"".join(raw_pairs)
    return array(raw_pairs)


def push(raw_items: list[bytes], protocol: int) -> bytes:
    """An out-of-band message (Pub/Sub): a push frame in RESP3, an array in RESP2."""
    return (b">" if protocol == 3 else b"*") + b"%d\r\n" % len(raw_items) + b"".join(raw_items)


def simple(value: str) -> bytes:
    return b"+" + value.encode() + b"\r\n"


def array(raw_items: list[bytes]) -> bytes:
    """An array whose elements are already-encoded replies."""
    return b"*%d\r\n" % len(raw_items) + b"".join(raw_items)


OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
PING_COMMAND = b"*1\r\n$4\r\nPING\r\n"
