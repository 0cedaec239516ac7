"""The protocol's basic types: fixed and length-encoded integers, and strings (NUL-ended,
length-encoded, or to the end of the packet), read with a cursor over one payload and written
as bytes. A short or malformed payload raises `Malformed`, answered as MySQL answers it
(ER_MALFORMED_PACKET) by the layer that reads."""

from __future__ import annotations

import struct


class Malformed(ValueError):
    """A payload that does not hold what its type says."""


def lenenc_int(n: int) -> bytes:
    if n < 0xFB:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def lenenc_str(data: bytes) -> bytes:
    return lenenc_int(len(data)) + data


class Cursor:
    """Reads one payload front to back."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise Malformed(f"needs {n} bytes at offset {self.pos}, has {self.remaining()}")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise Malformed(f"needs 1 byte at offset {self.pos}")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u16(self) -> int:
        return int(struct.unpack_from("<H", self._take(2))[0])

    def u24(self) -> int:
        return int.from_bytes(self._take(3), "little")

    def u32(self) -> int:
        return int(struct.unpack_from("<I", self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack_from("<Q", self._take(8))[0])

    def fixed(self, n: int) -> bytes:
        return self._take(n)

    def lenenc_int(self) -> int | None:
        """None for 0xFB (NULL in a text row)."""
        first = self.u8()
        if first < 0xFB:
            return first
        if first == 0xFB:
            return None
        if first == 0xFC:
            return self.u16()
        if first == 0xFD:
            return self.u24()
        if first == 0xFE:
            return self.u64()
        raise Malformed(f"0xff is not a length-encoded integer (offset {self.pos - 1})")

    def lenenc_str(self) -> bytes | None:
        n = self.lenenc_int()
        return None if n is None else self._take(n)

    def nul_str(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise Malformed(f"no NUL after offset {self.pos}")
        out = self.data[self.pos : end]
        self.pos = end + 1
        return out

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out
