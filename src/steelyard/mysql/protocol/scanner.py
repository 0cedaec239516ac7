"""Where a server's answer ends in a raw byte stream, without taking its packets apart, sans-IO.

The proxy's data path passes a server's bytes to the client as they arrive, unchanged (the
sequence ids are already right: a command and its answer are one exchange on both sides), and
only needs to know where the answer ends and what its last status says. `AnswerScanner.feed()`
walks packet headers across chunk boundaries; rows are skipped after a look at their first
byte, and only the small packets that shape the answer (column count, definitions, OK, ERR,
EOF) are handed whole to a `ResponseTracker`. A payload of 16 MiB - 1 continues in the next
packet: such a row is skipped with its continuations.
"""

from __future__ import annotations

from steelyard.mysql.protocol.constants import MAX_PAYLOAD
from steelyard.mysql.protocol.response import (
    CURSOR_EXISTS,
    FIRST,
    MORE_RESULTS,
    RESULT_COMMANDS,
    ROWS,
    ResponseTracker,
)

HEADER = 4


class AnswerScanner:
    __slots__ = ("_cont", "_partial", "_skip", "_whole", "seq", "tracker")

    def __init__(self, tracker: ResponseTracker) -> None:
        self.tracker = tracker
        self._partial = b""  # the start of a packet whose header or payload is still incomplete
        self._skip = 0  # bytes of a skipped packet still to come in later chunks
        self._cont = False  # the packet being skipped is followed by a continuation
        self._whole = bytearray()  # a shaping packet of 16 MiB or more being joined
        self.seq = 0  # the sequence id of the last packet handed to the tracker

    def _whole_answer(self, data: bytes) -> int:
        """The common case, in one pass: an OK, or one result set whose end is in `data`
        (nothing more to follow). Returns where it ends, or -1 to leave the answer to the
        general path (which starts over: nothing was changed here)."""
        n = len(data)
        if n < HEADER + 1:
            return -1
        length = data[0] | data[1] << 8 | data[2] << 16
        head = data[HEADER]
        pos = HEADER + length
        if head == 0x00:  # OK
            if pos != n:
                return -1
            status = ResponseTracker.status_of(data[HEADER:pos])
            if status & MORE_RESULTS:
                return -1
            self.tracker.finish(status)
            return pos
        if head >= 0xFB or length >= MAX_PAYLOAD:
            return -1  # ERR, LOCAL INFILE, a long count: the general path says what it is
        for _ in range(head):  # the column definitions: counted, not read
            if pos + HEADER > n:
                return -1
            pos += HEADER + (data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16)
        if self.tracker.eof_follows:  # an EOF after them; with a cursor, no rows follow
            if pos + HEADER + 5 > n or data[pos + HEADER] != 0xFE:
                return -1
            if (data[pos + HEADER + 3] | data[pos + HEADER + 4] << 8) & CURSOR_EXISTS:
                return -1
            pos += HEADER + (data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16)
        while pos + HEADER < n:
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            first = data[pos + HEADER]
            end = pos + HEADER + length
            if not length or length >= MAX_PAYLOAD:
                return -1  # long rows (continued) and anything odd: the general path
            if first < 0xFE:
                pos = end  # a row
                continue
            if first == 0xFF or end != n:
                return -1  # an error ends the rows, or more follows: the general path
            status = ResponseTracker.status_of(data[pos + HEADER : end])
            if status & (MORE_RESULTS | CURSOR_EXISTS):
                return -1
            self.tracker.finish(status)
            return end
        return -1

    def reset(self, command: int) -> None:
        """Scan the answer to another command (after the last one ended)."""
        self.tracker.reset(command)
        self._partial = b""
        self._skip = 0
        self._cont = False
        self._whole.clear()

    @property
    def done(self) -> bool:
        return self.tracker.done

    def feed(self, data: bytes) -> int:
        """The next bytes of the answer. Returns -1 while the answer goes on, else the offset
        in `data` just past its last byte (bytes after it are not part of this answer).
        Raises Malformed."""
        tracker = self.tracker
        if tracker.done:
            return 0
        if tracker.state == FIRST and tracker.command in RESULT_COMMANDS and not self._partial:
            end = self._whole_answer(data)
            if end >= 0:
                return end
        base = len(self._partial)
        if base:
            data = self._partial + data
            self._partial = b""
        n = len(data)
        pos = self._skip  # the rest of a row begun in an earlier chunk
        if pos > n:
            self._skip = pos - n
            return -1
        self._skip = 0
        whole = self._whole
        while pos < n:
            if n - pos < HEADER:
                self._partial = data[pos:]
                return -1
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            start = pos + HEADER
            if self._cont:
                # the continuation of a long row: skipped, and itself continued at full size
                self._cont = length == MAX_PAYLOAD
                pos = start + length
                continue
            if tracker.state == ROWS and length and not whole:
                if length == MAX_PAYLOAD:
                    self._cont = True  # a row of 16 MiB or more (its first byte may be 0xFE)
                    pos = start + length
                    continue
                if start == n:
                    self._partial = data[pos:]
                    return -1
                if data[start] < 0xFE:
                    pos = start + length  # a row: never looked into
                    continue
            end = start + length
            if end > n:
                self._partial = data[pos:]
                return -1
            payload = data[start:end]
            pos = end
            if length == MAX_PAYLOAD or whole:
                whole += payload
                if length == MAX_PAYLOAD:
                    continue
                payload = bytes(whole)
                whole.clear()
            self.seq = data[start - 1]
            if tracker.feed(payload):
                return pos - base
        if pos > n:
            self._skip = pos - n  # a skipped packet goes on in the next chunk
        return -1
