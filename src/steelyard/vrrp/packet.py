"""VRRP advertisements (RFC 9568 / 5798 version 3, and version 2 to read RFC 3768 peers), sans-IO.

An advertisement is 8 bytes of header and the virtual addresses: version and type, VRID,
priority, address count, the advertisement interval (v3: 12 bits of centiseconds; v2: 8 bits
of seconds after an auth type) and a checksum, then the addresses (v2: and 8 bytes of
authentication data). The v3 checksum covers an IPv4 pseudo-header (source, destination,
protocol 112, length) by default; RFC 9568, Cisco and Juniper leave it out, which keepalived
calls `v3_checksum_as_v2`: both are built and checked here, and a peer's choice is found by
trying both. Over IPv6 (version 3 only, to ff02::12) the addresses are 16 bytes and the
checksum always covers the IPv6 pseudo-header; a message's family is its destination's.

`parse()` raises `BadAdvert` with a reason that names what is wrong (for the counters and the
rate-limited log); the IP-level checks (TTL 255, the source) belong to the receiver, which
sees the IP header. `check_addresses()` is the receiver's check that an advert speaks for the
same virtual addresses as ours (keepalived drops one whose count or list differs: a router
configured for other addresses, or a forged advert, must not move ours).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

PROTOCOL = 112
MULTICAST_V4 = "224.0.0.18"
MULTICAST_V6 = "ff02::12"
ADVERTISEMENT = 1
HEADER = 8
V2_AUTH = 8  # bytes of authentication data after the addresses (v2)
MAX_INTERVAL_CS = 0x0FFF  # 40.95 s


class BadAdvert(ValueError):
    """An advertisement to drop; `reason` is a short counter name ("checksum", "length", ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Advert:
    vrid: int
    priority: int
    interval_cs: int  # centiseconds (v2: whole seconds x 100)
    addresses: tuple[str, ...] = ()
    version: int = 3
    # how its checksum was made: with the IPv4 pseudo-header (False) or as v2 (True)
    checksum_as_v2: bool = False
    auth: bytes = field(default=b"", compare=False)  # v2 only, 8 bytes


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's-complement sum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _v6(dst: str) -> bool:
    """The family of a message is its destination's (a v6 instance sends to ff02::12)."""
    return ":" in dst


def _pseudo(src: str, dst: str, length: int) -> bytes:
    if _v6(dst):  # RFC 8200 8.1: 16 + 16 bytes of addresses, a 32-bit length, next header
        return (
            ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + length.to_bytes(4, "big") + bytes((0, 0, 0, PROTOCOL))
        )  # fmt: skip
    return (
        ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
        + bytes((0, PROTOCOL)) + length.to_bytes(2, "big")
    )  # fmt: skip


def build(advert: Advert, src: str = "0.0.0.0", dst: str = MULTICAST_V4) -> bytes:
    """The VRRP message (IP payload). `src`/`dst` feed the v3 pseudo-header checksum."""
    if not 0 <= advert.priority <= 255 or not 1 <= advert.vrid <= 255:
        raise ValueError("vrid 1..255 and priority 0..255")
    if len(advert.addresses) > 255:
        raise ValueError("at most 255 addresses")
    v6 = _v6(dst)
    kind = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    addrs = b"".join(kind(a).packed for a in advert.addresses)
    if v6 and (advert.version != 3 or advert.checksum_as_v2):
        raise ValueError("IPv6 is VRRPv3 with the pseudo-header checksum")
    if advert.version == 3:
        if not 1 <= advert.interval_cs <= MAX_INTERVAL_CS:
            raise ValueError("interval 1..4095 centiseconds")
        head = bytes((0x31, advert.vrid, advert.priority, len(advert.addresses)))
        head += (advert.interval_cs & MAX_INTERVAL_CS).to_bytes(2, "big")
        body = head + b"\0\0" + addrs
        covered = body if advert.checksum_as_v2 else _pseudo(src, dst, len(body)) + body
    else:
        seconds = max(1, advert.interval_cs // 100)
        auth = (advert.auth or b"").ljust(V2_AUTH, b"\0")[:V2_AUTH]
        head = bytes((0x21, advert.vrid, advert.priority, len(advert.addresses), 0, seconds))
        body = head + b"\0\0" + addrs + auth
        covered = body
    cks = checksum(covered)
    return body[:6] + cks.to_bytes(2, "big") + body[8:]


def parse(data: bytes, src: str = "0.0.0.0", dst: str = MULTICAST_V4) -> Advert:
    """An advertisement from a VRRP message (IP payload); BadAdvert when it must be dropped."""
    if len(data) < HEADER:
        raise BadAdvert("length", f"{len(data)} bytes, shorter than a VRRP header")
    version, kind = data[0] >> 4, data[0] & 0x0F
    if version not in (2, 3):
        raise BadAdvert("version", f"version {version}")
    if kind != ADVERTISEMENT:
        raise BadAdvert("type", f"type {kind}")
    vrid, priority, count = data[1], data[2], data[3]
    v6 = _v6(dst)
    if v6 and version != 3:
        raise BadAdvert("version", f"version {version} over IPv6")
    size = 16 if v6 else 4
    expected = HEADER + size * count + (V2_AUTH if version == 2 else 0)
    if len(data) != expected:
        raise BadAdvert("length", f"{len(data)} bytes for {count} addresses (expected {expected})")
    if vrid == 0:
        raise BadAdvert("vrid", "VRID 0")
    kind = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    addresses = tuple(
        str(kind(data[HEADER + size * i : HEADER + size * (i + 1)])) for i in range(count)
    )
    if version == 3:
        as_v2 = not v6 and checksum(data) == 0  # IPv6 always has the pseudo-header
        if not as_v2 and checksum(_pseudo(src, dst, len(data)) + data) != 0:
            raise BadAdvert("checksum", "with and without the pseudo-header")
        interval = int.from_bytes(data[4:6], "big") & MAX_INTERVAL_CS
        if interval == 0:
            raise BadAdvert("interval", "an advertisement interval of 0")
        return Advert(vrid, priority, interval, addresses, 3, as_v2)
    if checksum(data) != 0:
        raise BadAdvert("checksum", "v2")
    auth = data[HEADER + 4 * count :]
    return Advert(vrid, priority, data[5] * 100, addresses, 2, True, auth)


def canonical(addresses: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Addresses written as `parse()` gives them (`fd00::0100` -> `fd00::100`)."""
    return tuple(str(ipaddress.ip_address(a)) for a in addresses)


def check_addresses(advert: Advert, ours: tuple[str, ...]) -> None:
    """BadAdvert("addresses") unless `advert` carries as many addresses as `ours` (canonical
    text, as `parse()` gives them) and each of ours is among them, as keepalived checks ("received
    an invalid ip address count", "ip address associated with VRID not present in MASTER
    advert")."""
    if len(advert.addresses) != len(ours):
        raise BadAdvert("addresses", f"{len(advert.addresses)} addresses, expected {len(ours)}")
    theirs = set(advert.addresses)
    for address in ours:
        if address not in theirs:
            raise BadAdvert("addresses", f"{address} is not in the advert")
