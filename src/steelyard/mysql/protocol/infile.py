"""Where a client's LOAD DATA LOCAL INFILE upload ends in a raw byte stream, sans-IO.

After the server's LOCAL INFILE request (0xFB and a file name) the client sends its file as
packets of any size, then an empty packet. The proxy passes those bytes to the server as they
come, never holding the file: `FileStream.feed()` only walks packet headers across chunk
boundaries to find that empty packet, and checks their sequence ids (a client that sends
anything else than its file, a command, is out of step). An empty packet right after one of
16 MiB - 1 ends a long packet (it is its continuation), not the file.
"""

from __future__ import annotations

from steelyard.mysql.protocol.constants import MAX_PAYLOAD
from steelyard.mysql.protocol.wire import Malformed

HEADER = 4


class FileStream:
    __slots__ = ("_cont", "_head", "_skip", "bytes", "seq")

    def __init__(self, seq: int) -> None:
        """`seq`: the sequence id of the server's request (the file's packets follow it)."""
        self._head = b""  # the start of a packet header cut by the end of the last chunk
        self._skip = 0  # payload bytes of the last packet still to come in later chunks
        self._cont = False  # the last packet is continued by the next (16 MiB - 1 long)
        self.seq = seq  # sequence id of the last packet header read
        self.bytes = 0  # file bytes seen so far

    def _ends(self, header: bytes | bytearray, at: int) -> int:
        """The packet whose header starts at `at`: -1 if it is the file's end, else its length."""
        length = header[at] | header[at + 1] << 8 | header[at + 2] << 16
        seq = header[at + 3]
        if seq != (self.seq + 1) & 0xFF:
            raise Malformed(f"packet {seq} of the file after packet {self.seq}")
        self.seq = seq
        if not length and not self._cont:
            return -1
        self._cont = length == MAX_PAYLOAD
        self.bytes += length
        return length

    def feed(self, data: bytes) -> int:
        """The next bytes of the upload. Returns -1 while the file goes on, else the offset in
        `data` just past its empty packet (bytes after it are not part of the upload). Raises
        Malformed on a packet out of order."""
        n = len(data)
        pos = self._skip
        if self._head:
            take = HEADER - len(self._head)
            header = self._head + data[:take]
            if len(header) < HEADER:
                self._head = header
                return -1
            self._head = b""
            length = self._ends(header, 0)
            if length < 0:
                return take
            pos = take + length
        while pos < n:
            if n - pos < HEADER:
                self._head = data[pos:]
                self._skip = 0
                return -1
            length = self._ends(data, pos)
            pos += HEADER
            if length < 0:
                self._skip = 0
                return pos
            pos += length
        self._skip = pos - n
        return -1
