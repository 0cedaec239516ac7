"""Packet framing: 3-byte length, 1-byte sequence id, payload; a payload of 16 MiB - 1 or more
continues in the next packets (the last one shorter, possibly empty).

`PacketReader` turns a byte stream into whole payloads with the sequence id of their first
packet, enforcing `max_allowed_packet` on the joined payload before buffering it (the check
MySQL makes, ER_NET_PACKET_TOO_LARGE). `frame()` does the reverse. Sequence ids are checked by
the session layer, which knows where an exchange starts.
"""

from __future__ import annotations

from steelyard.mysql.protocol.constants import MAX_PAYLOAD

HEADER = 4


class PacketTooLarge(ValueError):
    """A payload over max_allowed_packet is on its way."""


def frame(payload: bytes, seq: int) -> tuple[bytes, int]:
    """The packets carrying `payload`, first sequence id `seq`; returns them and the next id."""
    if len(payload) < MAX_PAYLOAD:
        return len(payload).to_bytes(3, "little") + bytes((seq & 0xFF,)) + payload, (seq + 1) & 0xFF
    parts = []
    for start in range(0, len(payload) + 1, MAX_PAYLOAD):
        chunk = payload[start : start + MAX_PAYLOAD]
        parts.append(len(chunk).to_bytes(3, "little") + bytes((seq & 0xFF,)) + chunk)
        seq = (seq + 1) & 0xFF
        if len(chunk) < MAX_PAYLOAD:
            break
    return b"".join(parts), seq


class PacketReader:
    """Bytes in, (sequence id, payload) out, in order."""

    def __init__(self, max_packet: int = 64 * 1024 * 1024) -> None:
        self.max_packet = max_packet
        self._buf = bytearray()
        self._parts: list[bytes] = []  # pieces of a payload split over several packets
        self._seq = -1  # sequence id of the payload's first packet
        self.last_seq = -1  # sequence id of the last packet read

    def buffered(self) -> int:
        """Bytes read but not yet part of a whole packet."""
        if self._parts:
            return len(self._buf) + sum(len(p) for p in self._parts)
        return len(self._buf)

    def take_rest(self) -> bytes:
        """The bytes read but not yet part of a packet, taken out (they belong to another
        protocol: TLS after an SSLRequest)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        n = len(buf)
        while n - pos >= HEADER:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            seq = buf[pos + 3]
            joined = sum(len(p) for p in self._parts) + length
            if joined > self.max_packet:
                raise PacketTooLarge(f"a packet of more than {self.max_packet} bytes")
            if n - pos - HEADER < length:
                break
            payload = bytes(buf[pos + HEADER : pos + HEADER + length])
            pos += HEADER + length
            self.last_seq = seq
            if not self._parts:
                self._seq = seq
            if length == MAX_PAYLOAD:
                self._parts.append(payload)
                continue
            if self._parts:
                self._parts.append(payload)
                payload = b"".join(self._parts)
                self._parts = []
            out.append((self._seq, payload))
        if pos:
            del buf[:pos]
        return out
