"""PROXY protocol codec, versions 1 (text) and 2 (binary), sans-IO.

A proxy that relays a TCP connection loses the client's address: the server sees the proxy's.
HAProxy's PROXY protocol (doc/proxy-protocol.txt in the HAProxy tree) fixes that by prepending
one header to the stream that carries the original source and destination. steelyard speaks it
on both sides: `ProxyHeaderParser` reads the header a trusted front proxy put in front of a
connection, and `encode_v1` / `encode_v2` write one for the servers behind us.

Like every steelyard codec (sans-IO) this module does no I/O. The caller feeds
the bytes it read and writes the bytes it is given; the same code serves the asyncio proxy, the
tests and any tool. Addresses are validated with `ipaddress` and packed with `struct`.

Strictness: a PROXY header is trusted input that decides which client address the server logs
and filters on, so anything that does not match the spec exactly is refused, and refused as
early as the bytes allow (the spec asks receivers to abort quickly so that a misconfigured
sender notices). The one deliberate leniency the spec demands is `PROXY UNKNOWN`: whatever
follows it on the line is ignored.

Shape of the results: every header becomes one `ProxyInfo`. A v1 `UNKNOWN`, a v2 `LOCAL` and a
v2 `PROXY` with the unspecified family all mean "use the real connection's addresses", so they
come back with `family="UNKNOWN"` (or `command="LOCAL"`) and `src`/`dst` set to None. UNIX
socket addresses come back as `(path, 0)`: the path as text (undecodable bytes kept with
`surrogateescape`, like `os.fsdecode`), an abstract-namespace name with its leading NUL.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "PP2_TYPE_ALPN",
    "PP2_TYPE_AUTHORITY",
    "PP2_TYPE_CRC32C",
    "PP2_TYPE_NETNS",
    "PP2_TYPE_NOOP",
    "PP2_TYPE_SSL",
    "PP2_TYPE_UNIQUE_ID",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxyHeaderParser",
    "ProxyInfo",
    "ProxyProtocolError",
    "crc32c",
    "encode_v1",
    "encode_v2",
]

Command = Literal["PROXY", "LOCAL"]
Family = Literal["TCP4", "TCP6", "UDP4", "UDP6", "UNIX", "UNKNOWN"]
#: What the encoders take for one endpoint: an IP `(host, port)` (the 4-tuple an AF_INET6
#: `getpeername()` returns is accepted too), a UNIX socket path (`str`, or `bytes` for an
#: abstract name, as `getpeername()` gives them, or the `(path, 0)` of a parsed ProxyInfo),
#: or None when the address is not known.
Endpoint = tuple[str, int] | tuple[str, int, int, int] | str | bytes | None

#: 12-byte v2 signature. It contains a NUL and "QUIT" so that HTTP, TLS, SMTP, FTP... servers
#: reading it by mistake fail at once instead of waiting.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: Longest v1 line including CRLF: "PROXY UNKNOWN" + two full IPv6 addresses and ports.
V1_MAX_LENGTH = 107
#: Default cap on the v2 length field. The field allows 64 KiB, but a header is meant to fit a
#: single segment; a cap keeps a hostile peer from making us buffer 64 KiB per connection.
DEFAULT_MAX_V2_LENGTH = 4096

# Registered TLV types (spec section 2.2).
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_TYPE_NETNS = 0x30

_V2_HEADER = struct.Struct("!12sBBH")
_PORTS = struct.Struct("!HH")
_CMD_LOCAL = 0x0
_CMD_PROXY = 0x1
_UNIX_ADDR_SIZE = 108

# Family/protocol byte -> (family name, size of the address block). These seven are the only
# combinations the spec defines; anything else under the PROXY command is refused.
_V2_FAMILIES: dict[int, tuple[Family, int]] = {
    0x00: ("UNKNOWN", 0),
    0x11: ("TCP4", 12),
    0x12: ("UDP4", 12),
    0x21: ("TCP6", 36),
    0x22: ("UDP6", 36),
    0x31: ("UNIX", 2 * _UNIX_ADDR_SIZE),
    0x32: ("UNIX", 2 * _UNIX_ADDR_SIZE),
}

# v1 words after "PROXY ": each with the byte that must follow it, so that a wrong word is
# refused before the line ends.
_V1_PROTOCOLS = (b"TCP4 ", b"TCP6 ", b"UNKNOWN ", b"UNKNOWN\r")
# Bytes that may appear in the address/port part of a TCP4/TCP6 line. Checking them as they
# arrive rejects binary or text garbage long before the 107-byte limit.
_V1_ADDRESS_CHARS = b"0123456789abcdefABCDEF.: "
# Decimal, no sign, no heading zeroes (the spec forbids them to avoid octal confusion).
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header; the message says what was wrong."""


@dataclass(frozen=True)
class ProxyInfo:
    """One parsed PROXY header.

    `src`/`dst` are None when the header carries no usable address (v1 UNKNOWN, v2 LOCAL, v2
    unspecified family): the caller then uses the real connection's endpoints. For UNIX
    sockets they are `(path, 0)`. `tlvs` holds the v2 type-length-value extensions in wire
    order, raw, including the CRC32c one (already verified) and NOOP padding.
    """

    version: int
    command: Command
    family: Family
    src: tuple[str, int] | None
    dst: tuple[str, int] | None
    tlvs: tuple[tuple[int, bytes], ...] = ()

    def tlv(self, type_: int) -> bytes | None:
        """The value of the first TLV of `type_`, or None when there is none."""
        for t, value in self.tlvs:
            if t == type_:
                return value
        return None


# ----------------------------------------------------------------------------------------
# CRC32c (Castagnoli), for the PP2_TYPE_CRC32C TLV.
#
# The stdlib only has zlib's CRC-32 (a different polynomial), and a header is at most a few
# KiB, so a table-driven pure-Python loop is fast enough and keeps us dependency-free.


def _make_crc32c_table() -> tuple[int, ...]:
    poly = 0x82F63B78  # 0x1EDC6F41 bit-reversed: the CRC is computed LSB-first (RFC 4960 B)
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32c of `data` (continuing from `crc` to checksum in pieces)."""
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ----------------------------------------------------------------------------------------
# Parser


class ProxyHeaderParser:
    """Incremental parser for one PROXY header at the start of a connection.

    Call `feed()` with each chunk read from the connection. It returns None while the header
    is incomplete, the `ProxyInfo` once it is complete, and raises `ProxyProtocolError` as soon
    as the bytes cannot be a valid header. Bytes that followed the header in the last chunk are
    application data and are left in `rest` for the caller to forward. Once an error has been
    raised every later `feed()` raises it again, so a caller cannot accidentally carry on.

    The receiver must be configured to expect the header (the spec forbids guessing whether
    one is present), so data that is not a header is always an error, never passed through.
    """

    def __init__(
        self,
        *,
        accept_v1: bool = True,
        accept_v2: bool = True,
        max_v2_length: int = DEFAULT_MAX_V2_LENGTH,
    ) -> None:
        if not (accept_v1 or accept_v2):
            raise ValueError("at least one of accept_v1 and accept_v2 must be true")
        if not 0 <= max_v2_length <= 0xFFFF:
            raise ValueError(f"max_v2_length must be in 0..65535, got {max_v2_length}")
        self.accept_v1 = accept_v1
        self.accept_v2 = accept_v2
        self.max_v2_length = max_v2_length
        self._buf = bytearray()
        self._info: ProxyInfo | None = None
        self._error: str | None = None
        self._rest = b""

    @property
    def info(self) -> ProxyInfo | None:
        """The parsed header, once `feed()` has returned it."""
        return self._info

    @property
    def rest(self) -> bytes:
        """Bytes received after the header (application data); empty until it is parsed."""
        return self._rest

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete header are held (for "timed out after N bytes")."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> ProxyInfo | None:
        """Add received bytes: None while more are needed, the ProxyInfo once complete."""
        if self._error is not None:
            raise ProxyProtocolError(self._error)
        if self._info is not None:
            # The header is parsed; later bytes are the application's and never ours to see.
            raise RuntimeError("PROXY header already parsed; forward later data directly")
        self._buf += data
        try:
            result = self._parse()
        except ProxyProtocolError as exc:
            self._error = str(exc)
            self._buf.clear()
            raise
        if result is None:
            return None
        info, header_length = result
        self._rest = bytes(self._buf[header_length:])
        self._buf = bytearray()
        self._info = info
        return info

    def eof(self) -> None:
        """Tell the parser the peer closed; raises if that cut a header short.

        A connection that ends before its header is complete is invalid (the spec asks
        receivers to reject partial headers); this turns that into the same error type.
        """
        if self._error is not None:
            raise ProxyProtocolError(self._error)
        if self._info is None:
            self._error = (
                f"connection closed after {len(self._buf)} bytes of an incomplete PROXY header"
            )
            self._buf.clear()
            raise ProxyProtocolError(self._error)

    # -- dispatch -------------------------------------------------------------------------

    def _parse(self) -> tuple[ProxyInfo, int] | None:
        buf = self._buf
        if not buf:
            return None
        first = buf[0]
        # The two formats differ in their first byte ('P' vs CR), so one byte picks the format
        # and a byte that matches neither is refused on the spot.
        if first == V1_PREFIX[0] and self.accept_v1:
            return self._parse_v1()
        if first == V2_SIGNATURE[0] and self.accept_v2:
            return self._parse_v2()
        if first == V1_PREFIX[0]:
            raise ProxyProtocolError("PROXY protocol v1 header received, but only v2 accepted")
        if first == V2_SIGNATURE[0]:
            raise ProxyProtocolError("PROXY protocol v2 header received, but only v1 accepted")
        raise ProxyProtocolError(f"not a PROXY protocol header: starts with {_show(buf)}")

    # -- version 1 ------------------------------------------------------------------------

    def _parse_v1(self) -> tuple[ProxyInfo, int] | None:
        buf = self._buf
        n = len(buf)
        if buf[: len(V1_PREFIX)] != V1_PREFIX[:n]:
            raise ProxyProtocolError(f"not a PROXY protocol header: starts with {_show(buf)}")
        if n <= len(V1_PREFIX):
            return None

        # Only the first 107 bytes may hold the line; never look further.
        window = buf[:V1_MAX_LENGTH]
        lf = window.find(b"\n")
        cr = window.find(b"\r")
        # A lone CR or LF must not end the line (a receiver that accepts one would read the
        # header differently from one that does not).
        if cr != -1 and cr + 1 < len(window) and window[cr + 1] != 0x0A:
            raise ProxyProtocolError("PROXY v1: CR not followed by LF")
        if lf != -1 and (lf == 0 or window[lf - 1] != 0x0D):
            raise ProxyProtocolError("PROXY v1: line ends in LF without CR")
        end = lf - 1 if lf != -1 else (cr if cr != -1 else len(window))

        word = bytes(buf[len(V1_PREFIX) : len(V1_PREFIX) + 8])
        if not any(p.startswith(word) or word.startswith(p) for p in _V1_PROTOCOLS):
            raise ProxyProtocolError(
                f"PROXY v1: unsupported protocol {_show(word)} (expected TCP4, TCP6 or UNKNOWN)"
            )
        unknown = word.startswith(b"UNKNOWN")
        tcp = word.startswith(b"TCP")

        if tcp:
            addr_start = len(V1_PREFIX) + 5  # after "TCP4 "
            bad = bytes(window[addr_start:end]).translate(None, _V1_ADDRESS_CHARS)
            if bad:
                raise ProxyProtocolError(
                    f"PROXY v1: invalid character {_show(bad[:1])} in the address fields"
                )

        if lf == -1:
            if n >= V1_MAX_LENGTH:
                raise ProxyProtocolError(f"PROXY v1: no CRLF in the first {V1_MAX_LENGTH} bytes")
            return None

        line = bytes(window[:end])
        if unknown:
            # The spec: "the receiver must ignore anything presented before the CRLF".
            return ProxyInfo(1, "PROXY", "UNKNOWN", None, None), lf + 1
        return _parse_v1_addresses(line), lf + 1

    # -- version 2 ------------------------------------------------------------------------

    def _parse_v2(self) -> tuple[ProxyInfo, int] | None:
        buf = self._buf
        n = len(buf)
        sig_len = len(V2_SIGNATURE)
        if buf[:sig_len] != V2_SIGNATURE[:n]:
            raise ProxyProtocolError(f"not a PROXY protocol header: starts with {_show(buf)}")
        # Check each fixed byte as soon as it arrives, so garbage fails early.
        if n <= sig_len:
            return None
        ver_cmd = buf[sig_len]
        if ver_cmd >> 4 != 2:
            raise ProxyProtocolError(f"PROXY v2: unsupported version {ver_cmd >> 4}")
        command = ver_cmd & 0x0F
        if command not in (_CMD_LOCAL, _CMD_PROXY):
            raise ProxyProtocolError(f"PROXY v2: unknown command 0x{command:x}")
        if n <= sig_len + 1:
            return None
        fam = buf[sig_len + 1]
        known = _V2_FAMILIES.get(fam)
        # LOCAL tells the receiver to ignore the family altogether, so only PROXY is checked.
        if known is None and command == _CMD_PROXY:
            raise ProxyProtocolError(f"PROXY v2: unsupported address family/protocol 0x{fam:02x}")
        if n < _V2_HEADER.size:
            return None
        (length,) = struct.unpack_from("!H", buf, sig_len + 2)
        if length > self.max_v2_length:
            raise ProxyProtocolError(
                f"PROXY v2: header length {length} exceeds the limit of {self.max_v2_length}"
            )
        family, addr_len = known if known is not None else ("UNKNOWN", 0)
        if command == _CMD_PROXY and length < addr_len:
            raise ProxyProtocolError(
                f"PROXY v2: length {length} too short for {family} addresses ({addr_len} bytes)"
            )
        total = _V2_HEADER.size + length
        if n < total:
            return None
        header = bytes(buf[:total])

        if command == _CMD_LOCAL:
            # Addresses of a LOCAL header are discarded. TLVs are still read (and the CRC
            # checked) when we can tell where they start; otherwise the block is skipped.
            if known is None or length < addr_len:
                return ProxyInfo(2, "LOCAL", "UNKNOWN", None, None), total
            tlvs = _parse_tlvs(header, _V2_HEADER.size + addr_len)
            return ProxyInfo(2, "LOCAL", "UNKNOWN", None, None, tlvs), total

        src, dst = _parse_v2_addresses(family, header[_V2_HEADER.size : _V2_HEADER.size + addr_len])
        tlvs = _parse_tlvs(header, _V2_HEADER.size + addr_len)
        return ProxyInfo(2, "PROXY", family, src, dst, tlvs), total


def _show(data: bytes | bytearray, limit: int = 16) -> str:
    """Short repr of untrusted bytes for an error message (log lines stay one line)."""
    shown = repr(bytes(data[:limit]))
    return shown + ("..." if len(data) > limit else "")


def _parse_v1_addresses(line: bytes) -> ProxyInfo:
    fields = line.split(b" ")
    if len(fields) != 6:
        raise ProxyProtocolError(
            f"PROXY v1: expected 6 space-separated fields, got {len(fields)} in {_show(line, 64)}"
        )
    _, proto, src_addr, dst_addr, src_port, dst_port = fields
    family: Family = "TCP4" if proto == b"TCP4" else "TCP6"
    src = (_v1_address(family, src_addr, "source"), _v1_port(src_port, "source"))
    dst = (_v1_address(family, dst_addr, "destination"), _v1_port(dst_port, "destination"))
    return ProxyInfo(1, "PROXY", family, src, dst)


def _v1_address(family: Family, raw: bytes, which: str) -> str:
    text = raw.decode("ascii")  # only address characters got this far
    # ipaddress refuses heading zeroes in IPv4 ("010.0.0.1"), as the spec requires.
    version = ipaddress.IPv4Address if family == "TCP4" else ipaddress.IPv6Address
    try:
        addr = version(text)
    except ValueError:
        raise ProxyProtocolError(
            f"PROXY v1: invalid {family} {which} address {_show(raw, 48)}"
        ) from None
    return str(addr)


def _v1_port(raw: bytes, which: str) -> int:
    if _V1_PORT.fullmatch(raw) is None or int(raw) > 0xFFFF:
        raise ProxyProtocolError(f"PROXY v1: invalid {which} port {_show(raw)}")
    return int(raw)


def _parse_v2_addresses(
    family: Family, block: bytes
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    if family in ("TCP4", "UDP4"):
        src_port, dst_port = _PORTS.unpack_from(block, 8)
        return (
            (str(ipaddress.IPv4Address(block[0:4])), src_port),
            (str(ipaddress.IPv4Address(block[4:8])), dst_port),
        )
    if family in ("TCP6", "UDP6"):
        src_port, dst_port = _PORTS.unpack_from(block, 32)
        return (
            (str(ipaddress.IPv6Address(block[0:16])), src_port),
            (str(ipaddress.IPv6Address(block[16:32])), dst_port),
        )
    if family == "UNIX":
        return (
            (_unix_path(block[:_UNIX_ADDR_SIZE]), 0),
            (_unix_path(block[_UNIX_ADDR_SIZE:]), 0),
        )
    return None, None  # UNKNOWN: the spec says to ignore any address information


def _unix_path(raw: bytes) -> str:
    if raw[:1] == b"\x00":
        # Linux abstract namespace: the name follows a leading NUL; the padding is NULs.
        name = b"\x00" + raw[1:].rstrip(b"\x00")
        return name.decode("utf-8", "surrogateescape") if name != b"\x00" else ""
    return raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _parse_tlvs(header: bytes, start: int) -> tuple[tuple[int, bytes], ...]:
    tlvs: list[tuple[int, bytes]] = []
    crc_offset = -1
    pos = start
    end = len(header)
    while pos < end:
        if end - pos < 3:
            raise ProxyProtocolError(
                f"PROXY v2: truncated TLV at offset {pos} ({end - pos} bytes left)"
            )
        tlv_type = header[pos]
        (tlv_len,) = struct.unpack_from("!H", header, pos + 1)
        value_at = pos + 3
        if value_at + tlv_len > end:
            raise ProxyProtocolError(
                f"PROXY v2: TLV 0x{tlv_type:02x} of length {tlv_len} at offset {pos} "
                f"overruns the header ({end - value_at} bytes left)"
            )
        if tlv_type == PP2_TYPE_CRC32C:
            if tlv_len != 4:
                raise ProxyProtocolError(f"PROXY v2: CRC32c TLV has length {tlv_len}, not 4")
            if crc_offset != -1:
                raise ProxyProtocolError("PROXY v2: more than one CRC32c TLV")
            crc_offset = value_at
        tlvs.append((tlv_type, header[value_at : value_at + tlv_len]))
        pos = value_at + tlv_len
    if crc_offset != -1:
        # Spec 2.2.3: checksum the whole header with the checksum field zeroed.
        (sent,) = struct.unpack_from("!I", header, crc_offset)
        zeroed = header[:crc_offset] + b"\x00\x00\x00\x00" + header[crc_offset + 4 :]
        computed = crc32c(zeroed)
        if computed != sent:
            raise ProxyProtocolError(
                f"PROXY v2: CRC32c mismatch (header says 0x{sent:08x}, computed 0x{computed:08x})"
            )
    return tuple(tlvs)


# ----------------------------------------------------------------------------------------
# Encoders

_Inet = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def _endpoint(value: Endpoint, which: str) -> _Inet | bytes | None:
    """Validate one endpoint: an (address, port) pair, UNIX path bytes, or None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return _unix_bytes(value, which)
    if isinstance(value, str):
        return _unix_bytes(value.encode("utf-8", "surrogateescape"), which)
    if not isinstance(value, tuple) or len(value) not in (2, 4):
        raise ValueError(f"{which} must be (host, port), a UNIX path or None, got {value!r}")
    host, port = value[0], value[1]
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"{which} port must be an int in 0..65535, got {port!r}")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        if isinstance(host, str) and port == 0 and len(value) == 2:
            # The `(path, 0)` a parsed UNIX ProxyInfo carries, so a header can be relayed.
            return _unix_bytes(host.encode("utf-8", "surrogateescape"), which)
        raise ValueError(f"{which} host must be an IP address literal, got {host!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        # The header has no room for a zone ("%eth0"); it means nothing to the receiver anyway.
        addr = ipaddress.IPv6Address(addr.packed)
    return addr, port


def _unix_bytes(path: bytes, which: str) -> bytes:
    if len(path) > _UNIX_ADDR_SIZE:
        raise ValueError(f"{which} UNIX path is {len(path)} bytes, the limit is 108")
    return path


def _inet_pair(src: _Inet, dst: _Inet) -> tuple[Literal[4, 6], _Inet, _Inet] | None:
    """Choose the IP version both ends can be written in, or None if they cannot share one.

    A dual-stack listener reports IPv4 clients as IPv4-mapped IPv6 (::ffff:a.b.c.d); those
    are sent as plain IPv4 when both ends are IPv4 underneath, because that is what the
    client really used and what servers expect to log.
    """
    src4, dst4 = _as_ipv4(src[0]), _as_ipv4(dst[0])
    if src4 is not None and dst4 is not None:
        return 4, (src4, src[1]), (dst4, dst[1])
    if src[0].version == 6 and dst[0].version == 6:
        return 6, src, dst
    return None


def _as_ipv4(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if isinstance(addr, ipaddress.IPv4Address):
        return addr
    return addr.ipv4_mapped


def encode_v1(src: Endpoint, dst: Endpoint) -> bytes:
    """The v1 text header for a connection from `src` to `dst`.

    Gives `PROXY UNKNOWN\\r\\n` when an end is None, a UNIX path (v1 only knows TCP over IP)
    or the two ends are of different IP families; the receiver then uses the real endpoints.
    Raises ValueError for an address that is not an IP literal or a bad port.
    """
    s = _endpoint(src, "src")
    d = _endpoint(dst, "dst")
    if not isinstance(s, tuple) or not isinstance(d, tuple):
        return b"PROXY UNKNOWN\r\n"
    pair = _inet_pair(s, d)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    version, (src_addr, src_port), (dst_addr, dst_port) = pair
    line = f"PROXY TCP{version} {src_addr} {dst_addr} {src_port} {dst_port}\r\n"
    return line.encode("ascii")


def encode_v2(
    src: Endpoint,
    dst: Endpoint,
    command: Command = "PROXY",
    tlvs: Iterable[tuple[int, bytes]] = (),
    protocol: Literal["TCP", "UDP"] = "TCP",
    *,
    checksum: bool = False,
) -> bytes:
    """The v2 binary header for a connection from `src` to `dst`.

    A LOCAL header (no addresses) is written when `command` is "LOCAL" or an end is None: it
    is what a proxy sends for its own connections, such as health checks. Ends of different
    families (IPv4 vs IPv6, IP vs UNIX) give a PROXY header with the unspecified family, the
    v2 counterpart of v1's UNKNOWN. `tlvs` are appended in order; `checksum=True` adds a
    CRC32c TLV over the whole header. Raises ValueError for bad addresses, ports or TLVs.
    """
    if command not in ("PROXY", "LOCAL"):
        raise ValueError(f"command must be 'PROXY' or 'LOCAL', got {command!r}")
    if protocol not in ("TCP", "UDP"):
        raise ValueError(f"protocol must be 'TCP' or 'UDP', got {protocol!r}")
    s = _endpoint(src, "src")
    d = _endpoint(dst, "dst")

    ver_cmd = 0x21
    fam = 0x00
    addresses = b""
    transport = 0x1 if protocol == "TCP" else 0x2
    if command == "LOCAL" or s is None or d is None:
        ver_cmd = 0x20
    elif isinstance(s, bytes) and isinstance(d, bytes):
        fam = 0x30 | transport
        addresses = s.ljust(_UNIX_ADDR_SIZE, b"\x00") + d.ljust(_UNIX_ADDR_SIZE, b"\x00")
    elif isinstance(s, tuple) and isinstance(d, tuple):
        pair = _inet_pair(s, d)
        if pair is not None:
            version, (src_addr, src_port), (dst_addr, dst_port) = pair
            fam = (0x10 if version == 4 else 0x20) | transport
            addresses = src_addr.packed + dst_addr.packed + _PORTS.pack(src_port, dst_port)

    extensions = bytearray()
    for tlv_type, value in tlvs:
        if not isinstance(tlv_type, int) or not 0 <= tlv_type <= 0xFF:
            raise ValueError(f"TLV type must be an int in 0..255, got {tlv_type!r}")
        if checksum and tlv_type == PP2_TYPE_CRC32C:
            raise ValueError("pass checksum=True or a CRC32c TLV, not both")
        if len(value) > 0xFFFF:
            raise ValueError(f"TLV 0x{tlv_type:02x} value is {len(value)} bytes, limit is 65535")
        extensions += struct.pack("!BH", tlv_type, len(value)) + bytes(value)
    crc_at = -1
    if checksum:
        crc_at = len(addresses) + len(extensions) + 3
        extensions += struct.pack("!BHI", PP2_TYPE_CRC32C, 4, 0)

    length = len(addresses) + len(extensions)
    if length > 0xFFFF:
        raise ValueError(f"PROXY v2 header body is {length} bytes, limit is 65535")
    header = bytearray(_V2_HEADER.pack(V2_SIGNATURE, ver_cmd, fam, length))
    header += addresses
    header += extensions
    if checksum:
        crc_at += _V2_HEADER.size
        struct.pack_into("!I", header, crc_at, crc32c(header))
    return bytes(header)
