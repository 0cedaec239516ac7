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
from steelyard.mysql.protocol.response import ROWS, ResponseTracker

HEADER = 4


class AnswerScanner:
    __slots__ = ("_cont", "_partial", "_skip", "_whole", "tracker")

    def __init__(self, tracker: ResponseTracker) -> None:
        self.tracker = tracker
        self._partial = b""  # the start of a packet whose header or payload is still incomplete
        self._skip = 0  # bytes of a skipped packet still to come in later chunks
        self._cont = False  # the packet being skipped is followed by a continuation
        self._whole = bytearray()  # a shaping packet of 16 MiB or more being joined

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
            if tracker.feed(payload):
                return pos - base
        if pos > n:
            self._skip = pos - n  # a skipped packet goes on in the next chunk
        return -1
