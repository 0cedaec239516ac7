"""Byte-vector tests for the PROXY protocol codec (steelyard.tcp.proxy_protocol).

Every valid vector is fed three ways (whole, one byte at a time, with trailing data that must
come out in `parser.rest`), every bad vector must raise ProxyProtocolError, and the bad vectors
that can be recognised early must raise at the exact byte that gives them away. Expected bytes
are written out literally from the spec (HAProxy doc/proxy-protocol.txt); the vectors marked
"captured from HAProxy 2.6" were produced by a real haproxy and are kept as literals so the
suite checks interoperability without needing haproxy. When haproxy is installed, a last group
of tests runs it as a peer.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steelyard.tcp.proxy_protocol import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP,
    PP2_TYPE_UNIQUE_ID,
    V2_SIGNATURE,
    ProxyHeaderParser,
    ProxyInfo,
    ProxyProtocolError,
    crc32c,
    encode_v1,
    encode_v2,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
GARBAGE = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff"


def feed_three_ways(data: bytes, expected: ProxyInfo, **kwargs: object) -> None:
    """Whole, byte by byte, and followed by application data: all must give `expected`."""
    parser = ProxyHeaderParser(**kwargs)  # type: ignore[arg-type]
    assert parser.feed(data) == expected
    assert parser.rest == b""
    assert parser.info == expected

    parser = ProxyHeaderParser(**kwargs)  # type: ignore[arg-type]
    for i in range(len(data) - 1):
        assert parser.feed(data[i : i + 1]) is None, f"complete after only {i + 1} bytes"
    assert parser.feed(data[-1:]) == expected
    assert parser.rest == b""

    parser = ProxyHeaderParser(**kwargs)  # type: ignore[arg-type]
    assert parser.feed(data + GARBAGE) == expected
    assert parser.rest == GARBAGE

    # The last header byte and the application data arriving in the same read.
    parser = ProxyHeaderParser(**kwargs)  # type: ignore[arg-type]
    assert parser.feed(data[:-1]) is None
    assert parser.feed(data[-1:] + GARBAGE) == expected
    assert parser.rest == GARBAGE


def assert_rejected(data: bytes, match: str, at: int | None = None, **kwargs: object) -> None:
    """`data` must raise whole and byte by byte (at byte `at`, 1-based, when given)."""
    parser = ProxyHeaderParser(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ProxyProtocolError, match=match):
        parser.feed(data)
    # Once broken, always broken: no later input can resurrect the connection.
    with pytest.raises(ProxyProtocolError, match=match):
        parser.feed(b"PROXY UNKNOWN\r\n")
    with pytest.raises(ProxyProtocolError, match=match):
        parser.eof()

    parser = ProxyHeaderParser(**kwargs)  # type: ignore[arg-type]
    failed_at = None
    for i in range(len(data)):
        try:
            assert parser.feed(data[i : i + 1]) is None, "bad vector parsed as valid"
        except ProxyProtocolError as exc:
            assert exc.args[0] == str(exc)
            failed_at = i + 1
            break
    assert failed_at is not None, "never rejected when fed byte by byte"
    if at is not None:
        assert failed_at == at
    with pytest.raises(ProxyProtocolError, match=match):
        parser.feed(b"x")


def v4(src: str, dst: str, sport: int, dport: int, version: int = 1, **kw: object) -> ProxyInfo:
    return ProxyInfo(version, "PROXY", "TCP4", (src, sport), (dst, dport), **kw)  # type: ignore[arg-type]


def v6(src: str, dst: str, sport: int, dport: int, version: int = 1, **kw: object) -> ProxyInfo:
    return ProxyInfo(version, "PROXY", "TCP6", (src, sport), (dst, dport), **kw)  # type: ignore[arg-type]


UNKNOWN_V1 = ProxyInfo(1, "PROXY", "UNKNOWN", None, None)
LOCAL_V2 = ProxyInfo(2, "LOCAL", "UNKNOWN", None, None)
IPV6_MAX = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


# ---------------------------------------------------------------------------------------------
# CRC32c


def test_crc32c_check_values() -> None:
    # The standard check value and the iSCSI vectors of RFC 3720 B.4.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(b"6789", crc32c(b"12345")) == 0xE3069283


# ---------------------------------------------------------------------------------------------
# Version 1: valid vectors

V1_VALID = [
    pytest.param(
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        v4("192.168.0.1", "192.168.0.11", 56324, 443),
        id="tcp4-spec-example",
    ),
    pytest.param(
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        v4("255.255.255.255", "255.255.255.255", 65535, 65535),
        id="tcp4-longest-56-bytes",
    ),
    pytest.param(
        b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
        v4("0.0.0.0", "0.0.0.0", 0, 0),
        id="tcp4-zeroes",
    ),
    pytest.param(
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n",
        v6("2001:db8::1", "2001:db8::2", 1234, 443),
        id="tcp6",
    ),
    pytest.param(
        b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 1 2\r\n",
        v6("2001:db8::1", "::1", 1, 2),
        id="tcp6-uppercase-uncompressed",
    ),
    pytest.param(
        b"PROXY TCP6 " + IPV6_MAX.encode() + b" " + IPV6_MAX.encode() + b" 65535 65535\r\n",
        v6(IPV6_MAX, IPV6_MAX, 65535, 65535),
        id="tcp6-longest-104-bytes",
    ),
    pytest.param(b"PROXY UNKNOWN\r\n", UNKNOWN_V1, id="unknown-short"),
    pytest.param(
        b"PROXY UNKNOWN " + IPV6_MAX.encode() + b" " + IPV6_MAX.encode() + b" 65535 65535\r\n",
        UNKNOWN_V1,
        id="unknown-worst-case-107-bytes",
    ),
    pytest.param(b"PROXY UNKNOWN anything ~at all!\r\n", UNKNOWN_V1, id="unknown-rest-ignored"),
    pytest.param(
        # Captured from HAProxy 2.6 `send-proxy`.
        b"PROXY TCP4 127.0.0.1 127.0.0.1 59606 49693\r\n",
        v4("127.0.0.1", "127.0.0.1", 59606, 49693),
        id="tcp4-haproxy",
    ),
]


@pytest.mark.parametrize(("data", "expected"), V1_VALID)
def test_v1_valid(data: bytes, expected: ProxyInfo) -> None:
    feed_three_ways(data, expected)


def test_v1_length_limits_from_the_spec() -> None:
    assert len(V1_VALID[1].values[0]) == 56
    assert len(V1_VALID[5].values[0]) == 104
    assert len(V1_VALID[7].values[0]) == 107


# ---------------------------------------------------------------------------------------------
# Version 1: bad input

V1_BAD = [
    # (bytes, message regex, byte at which it must already fail or None)
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", "not a PROXY protocol header", 1, id="http"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01", "not a PROXY protocol header", 1, id="tls"),
    pytest.param(b"SSH-2.0-OpenSSH_9.2\r\n", "not a PROXY protocol header", 1, id="ssh"),
    pytest.param(b"proxy TCP4 ", "not a PROXY protocol header", 1, id="lowercase"),
    pytest.param(b"PROXZ TCP4 ", "not a PROXY protocol header", 5, id="bad-prefix"),
    pytest.param(b"PROXY  TCP4 ", "unsupported protocol", 7, id="double-space"),
    # 'U' could still begin "UNKNOWN"; the 'D' gives it away.
    pytest.param(b"PROXY UDP4 1.2.3.4 ", "unsupported protocol", 8, id="udp4"),
    pytest.param(b"PROXY TCP5 1.2.3.4", "unsupported protocol", 10, id="tcp5"),
    pytest.param(b"PROXY TCP4\r\n", "unsupported protocol", 11, id="tcp4-no-addresses"),
    pytest.param(b"PROXY UNKNOWNX\r\n", "unsupported protocol", 14, id="unknown-glued"),
    pytest.param(b"PROXY TCP4 localhost 1.2.3.4 1 2\r\n", "invalid character", 12, id="hostname"),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 443\r\n", "invalid character", 28, id="port-plus"
    ),
    pytest.param(b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "invalid character", 19, id="ipv6-zone"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\x00\r\n", "invalid character", 34, id="nul"),
    pytest.param(
        b"PROXY TCP4 192.168.0.256 192.168.0.1 1 2\r\n",
        "invalid TCP4 source address",
        None,
        id="ipv4-octet-256",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 010.0.0.1 1 2\r\n",
        "invalid TCP4 destination address",
        None,
        id="ipv4-heading-zero",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "invalid TCP4 source address", None, id="ipv4-short"
    ),
    pytest.param(
        b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "invalid TCP4 source address", None, id="ipv6-in-tcp4"
    ),
    pytest.param(
        b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n",
        "invalid TCP6 destination address",
        None,
        id="ipv4-in-tcp6",
    ),
    pytest.param(
        b"PROXY TCP6 1::2::3 ::1 1 2\r\n", "invalid TCP6 source address", None, id="two-dcolons"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 443\r\n",
        "invalid source port b'70000'",
        None,
        id="port-70000",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 80 65536\r\n",
        "invalid destination port",
        None,
        id="port-65536",
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 0443 80\r\n", "invalid source port", None, id="port-zero-lead"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 ab 80\r\n", "invalid source port", None, id="port-hex"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n", "expected 6 .* got 5", None, id="five-fields"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 1\r\n", "expected 6 .* got 7", None, id="seven-fields"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4  5.6.7.8 80 443\r\n", "expected 6 .* got 7", None, id="two-spaces"
    ),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 \r\n", "expected 6 .* got 7", None, id="trailing-sp"
    ),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n", "LF without CR", 34, id="missing-cr"),
    pytest.param(b"PROXY UNKNOWN\n", "LF without CR", 14, id="unknown-missing-cr"),
    pytest.param(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\rX", "CR not followed by LF", 35, id="cr-alone"
    ),
    pytest.param(b"PROXY UNKNOWN\r\r\n", "CR not followed by LF", 15, id="cr-cr-lf"),
    pytest.param(
        b"PROXY UNKNOWN " + b"a" * 100 + b"\r\n", "no CRLF in the first 107", 107, id="too-long"
    ),
    pytest.param(
        b"PROXY TCP6 " + b"1" * 200 + b"\r\n", "no CRLF in the first 107", 107, id="too-long-tcp6"
    ),
    pytest.param(
        # One byte over the spec's worst case: the CRLF would end at byte 108.
        b"PROXY UNKNOWN " + IPV6_MAX.encode() + b" " + IPV6_MAX.encode() + b" 65535 655355\r\n",
        "no CRLF in the first 107",
        107,
        id="108-bytes",
    ),
]


@pytest.mark.parametrize(("data", "match", "at"), V1_BAD)
def test_v1_rejected(data: bytes, match: str, at: int | None) -> None:
    assert_rejected(data, match, at)


def test_v1_refused_when_only_v2_is_accepted() -> None:
    assert_rejected(b"PROXY UNKNOWN\r\n", "only v2 accepted", 1, accept_v1=False)


# ---------------------------------------------------------------------------------------------
# Version 2: valid vectors

TCP4_BLOCK = b"\xc0\xa8\x00\x01" + b"\xc0\xa8\x00\x0b" + b"\xdc\x04" + b"\x01\xbb"
TCP6_BLOCK = (
    b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01"  # 2001:db8::1
    b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x02"  # 2001:db8::2
    b"\x04\xd2" + b"\x01\xbb"  # 1234, 443
)
UNIX_BLOCK = b"/run/a.sock".ljust(108, b"\x00") + b"/run/b.sock".ljust(108, b"\x00")
ALPN_H2 = b"\x01\x00\x02h2"
AUTHORITY = b"\x02\x00\x0bexample.com"

V2_VALID = [
    pytest.param(
        SIG + b"\x21\x11\x00\x0c" + TCP4_BLOCK,
        v4("192.168.0.1", "192.168.0.11", 56324, 443, version=2),
        id="tcp4",
    ),
    pytest.param(
        SIG + b"\x21\x12\x00\x0c" + TCP4_BLOCK,
        ProxyInfo(2, "PROXY", "UDP4", ("192.168.0.1", 56324), ("192.168.0.11", 443)),
        id="udp4",
    ),
    pytest.param(
        SIG + b"\x21\x21\x00\x24" + TCP6_BLOCK,
        v6("2001:db8::1", "2001:db8::2", 1234, 443, version=2),
        id="tcp6",
    ),
    pytest.param(
        SIG + b"\x21\x22\x00\x24" + TCP6_BLOCK,
        ProxyInfo(2, "PROXY", "UDP6", ("2001:db8::1", 1234), ("2001:db8::2", 443)),
        id="udp6",
    ),
    pytest.param(
        SIG + b"\x21\x31\x00\xd8" + UNIX_BLOCK,
        ProxyInfo(2, "PROXY", "UNIX", ("/run/a.sock", 0), ("/run/b.sock", 0)),
        id="unix-stream",
    ),
    pytest.param(
        SIG + b"\x21\x32\x00\xd8" + b"\x00abstract".ljust(108, b"\x00") + bytes(108),
        ProxyInfo(2, "PROXY", "UNIX", ("\x00abstract", 0), ("", 0)),
        id="unix-dgram-abstract-and-unnamed",
    ),
    pytest.param(SIG + b"\x20\x00\x00\x00", LOCAL_V2, id="local"),
    pytest.param(
        # LOCAL must be accepted whatever it carries; the addresses are discarded.
        SIG + b"\x20\x11\x00\x0c" + TCP4_BLOCK,
        LOCAL_V2,
        id="local-with-addresses",
    ),
    pytest.param(SIG + b"\x20\x7f\x00\x03abc", LOCAL_V2, id="local-family-ignored"),
    pytest.param(
        SIG + b"\x21\x00\x00\x00",
        ProxyInfo(2, "PROXY", "UNKNOWN", None, None),
        id="proxy-unspec",
    ),
    pytest.param(
        SIG + b"\x21\x11\x00\x1f" + TCP4_BLOCK + ALPN_H2 + AUTHORITY,
        v4(
            "192.168.0.1",
            "192.168.0.11",
            56324,
            443,
            version=2,
            tlvs=((PP2_TYPE_ALPN, b"h2"), (PP2_TYPE_AUTHORITY, b"example.com")),
        ),
        id="tcp4-tlvs",
    ),
    pytest.param(
        SIG + b"\x21\x11\x00\x12" + TCP4_BLOCK + b"\x04\x00\x00" + b"\xe0\x00\x00",
        v4(
            "192.168.0.1",
            "192.168.0.11",
            56324,
            443,
            version=2,
            tlvs=((PP2_TYPE_NOOP, b""), (0xE0, b"")),
        ),
        id="tcp4-empty-tlvs",
    ),
    pytest.param(
        # encode_v2(("192.168.0.1", 56324), ("192.168.0.11", 443), checksum=True)
        SIG + b"\x21\x11\x00\x13" + TCP4_BLOCK + b"\x03\x00\x04\x1c\x1a\xe9\xc6",
        v4(
            "192.168.0.1",
            "192.168.0.11",
            56324,
            443,
            version=2,
            tlvs=((PP2_TYPE_CRC32C, b"\x1c\x1a\xe9\xc6"),),
        ),
        id="tcp4-crc32c",
    ),
    pytest.param(
        # Captured from HAProxy 2.6 `send-proxy-v2 proxy-v2-options crc32c,unique-id`: the CRC
        # comes first and the unique ID (no unique-id-format set) is empty.
        SIG + b"!\x11\x00\x16\x7f\x00\x00\x01\x7f\x00\x00\x01\xe4\xca\x99\xff"
        b"\x03\x00\x04n\xddv\x8e\x05\x00\x00",
        v4(
            "127.0.0.1",
            "127.0.0.1",
            58570,
            39423,
            version=2,
            tlvs=((PP2_TYPE_CRC32C, b"n\xddv\x8e"), (PP2_TYPE_UNIQUE_ID, b"")),
        ),
        id="tcp4-haproxy-crc32c",
    ),
    pytest.param(
        # Captured from HAProxy 2.6 `send-proxy-v2` for a client on [::1].
        SIG + b"!!\x00$" + b"\x00" * 15 + b"\x01" + b"\x00" * 15 + b"\x01\xd7\xa0\xcd5",
        v6("::1", "::1", 55200, 52533, version=2),
        id="tcp6-haproxy",
    ),
    pytest.param(
        # Captured from HAProxy 2.6 health check with `check-send-proxy` and crc32c.
        SIG + b" \x00\x00\x07\x03\x00\x04\xa9\xb8~\x8f",
        ProxyInfo(2, "LOCAL", "UNKNOWN", None, None, ((PP2_TYPE_CRC32C, b"\xa9\xb8~\x8f"),)),
        id="local-haproxy-check-crc32c",
    ),
]


@pytest.mark.parametrize(("data", "expected"), V2_VALID)
def test_v2_valid(data: bytes, expected: ProxyInfo) -> None:
    feed_three_ways(data, expected)


def test_v2_signature_constant() -> None:
    assert V2_SIGNATURE == SIG == bytes.fromhex("0D0A0D0A000D0A515549540A")


def test_v2_length_limit_is_configurable() -> None:
    data = SIG + b"\x21\x11\x00\x1f" + TCP4_BLOCK + ALPN_H2 + AUTHORITY
    feed_three_ways(data, ProxyHeaderParser().feed(data), max_v2_length=31)  # type: ignore[arg-type]
    assert_rejected(data, "length 31 exceeds the limit of 30", 16, max_v2_length=30)


def test_info_tlv_lookup() -> None:
    info = ProxyHeaderParser().feed(SIG + b"\x21\x11\x00\x1f" + TCP4_BLOCK + ALPN_H2 + AUTHORITY)
    assert info is not None
    assert info.tlv(PP2_TYPE_AUTHORITY) == b"example.com"
    assert info.tlv(PP2_TYPE_UNIQUE_ID) is None


# ---------------------------------------------------------------------------------------------
# Version 2: bad input

V2_BAD = [
    pytest.param(SIG[:5] + b"\x01", "not a PROXY protocol header", 6, id="bad-signature"),
    pytest.param(SIG[:11] + b"\r", "not a PROXY protocol header", 12, id="bad-signature-end"),
    pytest.param(SIG + b"\x11\x11\x00\x0c", "unsupported version 1", 13, id="version-1"),
    pytest.param(SIG + b"\x31\x11\x00\x0c", "unsupported version 3", 13, id="version-3"),
    pytest.param(SIG + b"\x22\x11\x00\x0c", "unknown command 0x2", 13, id="command-2"),
    pytest.param(SIG + b"\x2f\x11\x00\x0c", "unknown command 0xf", 13, id="command-f"),
    pytest.param(SIG + b"\x21\x41\x00\x0c", "family/protocol 0x41", 14, id="family-4"),
    pytest.param(SIG + b"\x21\x13\x00\x0c", "family/protocol 0x13", 14, id="protocol-3"),
    pytest.param(SIG + b"\x21\x10\x00\x0c", "family/protocol 0x10", 14, id="inet-unspec"),
    pytest.param(
        SIG + b"\x21\x11\x00\x0b" + TCP4_BLOCK[:11],
        "length 11 too short for TCP4 addresses \\(12 bytes\\)",
        16,
        id="tcp4-len-11",
    ),
    pytest.param(
        SIG + b"\x21\x21\x00\x0c" + TCP4_BLOCK,
        "length 12 too short for TCP6",
        16,
        id="tcp6-len-12",
    ),
    pytest.param(
        SIG + b"\x21\x31\x00\x24" + TCP6_BLOCK, "length 36 too short for UNIX", 16, id="unix-36"
    ),
    pytest.param(
        SIG + b"\x21\x11\x10\x01", "length 4097 exceeds the limit of 4096", 16, id="len-4097"
    ),
    pytest.param(SIG + b"\x21\x11\xff\xff", "length 65535 exceeds", 16, id="len-65535"),
    pytest.param(
        SIG + b"\x21\x11\x00\x0e" + TCP4_BLOCK + b"\x01\x00",
        "truncated TLV at offset 28 \\(2 bytes left\\)",
        None,
        id="tlv-header-cut",
    ),
    pytest.param(
        SIG + b"\x21\x11\x00\x10" + TCP4_BLOCK + b"\x01\x00\x02h",
        "TLV 0x01 of length 2 at offset 28 overruns the header \\(1 bytes left\\)",
        None,
        id="tlv-value-cut",
    ),
    pytest.param(
        SIG + b"\x20\x00\x00\x02\x04\x00",
        "truncated TLV",
        None,
        id="local-tlv-cut",
    ),
    pytest.param(
        SIG + b"\x21\x11\x00\x13" + TCP4_BLOCK + b"\x03\x00\x04\x1c\x1a\xe9\xc7",
        "CRC32c mismatch \\(header says 0x1c1ae9c7, computed 0x1c1ae9c6\\)",
        None,
        id="crc-mismatch",
    ),
    pytest.param(
        # A valid header whose source address was altered in transit.
        SIG
        + b"\x21\x11\x00\x13\xc0\xa8\x00\x02"
        + TCP4_BLOCK[4:]
        + b"\x03\x00\x04\x1c\x1a\xe9\xc6",
        "CRC32c mismatch",
        None,
        id="crc-tampered",
    ),
    pytest.param(
        SIG + b" \x00\x00\x07\x03\x00\x04\xa9\xb8~\x8e",
        "CRC32c mismatch",
        None,
        id="crc-mismatch-local",
    ),
    pytest.param(
        SIG + b"\x21\x11\x00\x12" + TCP4_BLOCK + b"\x03\x00\x03abc",
        "CRC32c TLV has length 3",
        None,
        id="crc-length-3",
    ),
    pytest.param(
        SIG
        + b"\x21\x11\x00\x1a"
        + TCP4_BLOCK
        + b"\x03\x00\x04\x00\x00\x00\x00"
        + b"\x03\x00\x04\x00\x00\x00\x00",
        "more than one CRC32c TLV",
        None,
        id="crc-twice",
    ),
]


@pytest.mark.parametrize(("data", "match", "at"), V2_BAD)
def test_v2_rejected(data: bytes, match: str, at: int | None) -> None:
    assert_rejected(data, match, at)


def test_v2_refused_when_only_v1_is_accepted() -> None:
    assert_rejected(SIG + b"\x20\x00\x00\x00", "only v1 accepted", 1, accept_v2=False)


def test_truncated_header_waits_then_eof_rejects() -> None:
    # A partial header is not an error by itself (TCP may split it); the peer closing is.
    for partial in (SIG + b"\x21\x11\x00", SIG + b"\x21\x11\x00\x0c" + TCP4_BLOCK[:-1]):
        parser = ProxyHeaderParser()
        assert parser.feed(partial) is None
        assert parser.buffered == len(partial)
        with pytest.raises(ProxyProtocolError, match=f"closed after {len(partial)} bytes"):
            parser.eof()
        with pytest.raises(ProxyProtocolError, match="closed after"):
            parser.feed(TCP4_BLOCK)
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyProtocolError, match="closed after 0 bytes"):
        parser.eof()


def test_eof_after_complete_header_is_fine() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY UNKNOWN\r\n") == UNKNOWN_V1
    parser.eof()


def test_feed_after_success_is_a_caller_bug() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY UNKNOWN\r\nabc") == UNKNOWN_V1
    with pytest.raises(RuntimeError):
        parser.feed(b"def")
    assert parser.rest == b"abc"


def test_parser_accepts_bytearray_and_memoryview() -> None:
    data = SIG + b"\x21\x11\x00\x0c" + TCP4_BLOCK
    parser = ProxyHeaderParser()
    assert parser.feed(bytearray(data[:10])) is None
    assert parser.feed(memoryview(data)[10:]) == V2_VALID[0].values[1]


def test_parser_constructor_checks() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ProxyHeaderParser(accept_v1=False, accept_v2=False)
    with pytest.raises(ValueError, match="max_v2_length"):
        ProxyHeaderParser(max_v2_length=70000)


def test_error_message_is_one_short_line() -> None:
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyProtocolError) as caught:
        parser.feed(b"\x16\x03\x01" + b"\n" * 500)
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 120
    assert message.startswith("not a PROXY protocol header: starts with b'\\x16\\x03\\x01\\n")


# ---------------------------------------------------------------------------------------------
# Encoders: literal output


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        (
            ("192.168.0.1", 56324),
            ("192.168.0.11", 443),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ),
        (
            ("2001:db8::1", 1234),
            ("2001:db8::2", 443),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n",
        ),
        (
            ("2001:DB8:0:0:0:0:0:1", 1, 0, 0),  # getpeername() of an AF_INET6 socket
            ("fe80::1%eth0", 2, 0, 2),
            b"PROXY TCP6 2001:db8::1 fe80::1 1 2\r\n",
        ),
        (("::ffff:1.2.3.4", 5), ("::ffff:5.6.7.8", 6), b"PROXY TCP4 1.2.3.4 5.6.7.8 5 6\r\n"),
        (("::ffff:1.2.3.4", 5), ("5.6.7.8", 6), b"PROXY TCP4 1.2.3.4 5.6.7.8 5 6\r\n"),
        (("::ffff:1.2.3.4", 5), ("::1", 6), b"PROXY TCP6 ::ffff:102:304 ::1 5 6\r\n"),
        (None, ("1.2.3.4", 1), b"PROXY UNKNOWN\r\n"),
        (("1.2.3.4", 1), None, b"PROXY UNKNOWN\r\n"),
        (None, None, b"PROXY UNKNOWN\r\n"),
        (("1.2.3.4", 1), ("::1", 2), b"PROXY UNKNOWN\r\n"),
        ("/run/a.sock", "/run/b.sock", b"PROXY UNKNOWN\r\n"),
        (("/run/a.sock", 0), ("/run/b.sock", 0), b"PROXY UNKNOWN\r\n"),
    ],
)
def test_encode_v1(src: object, dst: object, expected: bytes) -> None:
    assert encode_v1(src, dst) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"src": ("192.168.0.1", 56324), "dst": ("192.168.0.11", 443)},
            SIG + b"\x21\x11\x00\x0c" + TCP4_BLOCK,
        ),
        (
            {"src": ("192.168.0.1", 56324), "dst": ("192.168.0.11", 443), "protocol": "UDP"},
            SIG + b"\x21\x12\x00\x0c" + TCP4_BLOCK,
        ),
        (
            {"src": ("2001:db8::1", 1234), "dst": ("2001:db8::2", 443)},
            SIG + b"\x21\x21\x00\x24" + TCP6_BLOCK,
        ),
        (
            {"src": ("2001:db8::1", 1234), "dst": ("2001:db8::2", 443), "protocol": "UDP"},
            SIG + b"\x21\x22\x00\x24" + TCP6_BLOCK,
        ),
        (
            {"src": ("::ffff:192.168.0.1", 56324), "dst": ("::ffff:192.168.0.11", 443)},
            SIG + b"\x21\x11\x00\x0c" + TCP4_BLOCK,
        ),
        ({"src": "/run/a.sock", "dst": "/run/b.sock"}, SIG + b"\x21\x31\x00\xd8" + UNIX_BLOCK),
        (
            {"src": ("/run/a.sock", 0), "dst": ("/run/b.sock", 0), "protocol": "UDP"},
            SIG + b"\x21\x32\x00\xd8" + UNIX_BLOCK,
        ),
        ({"src": None, "dst": None}, SIG + b"\x20\x00\x00\x00"),
        ({"src": None, "dst": ("1.2.3.4", 1)}, SIG + b"\x20\x00\x00\x00"),
        (
            {"src": ("1.2.3.4", 1), "dst": ("5.6.7.8", 2), "command": "LOCAL"},
            SIG + b"\x20\x00\x00\x00",
        ),
        ({"src": ("1.2.3.4", 1), "dst": ("::2", 2)}, SIG + b"\x21\x00\x00\x00"),
        ({"src": ("1.2.3.4", 1), "dst": "/run/b.sock"}, SIG + b"\x21\x00\x00\x00"),
        (
            {
                "src": ("192.168.0.1", 56324),
                "dst": ("192.168.0.11", 443),
                "tlvs": [(PP2_TYPE_ALPN, b"h2"), (PP2_TYPE_AUTHORITY, b"example.com")],
            },
            SIG + b"\x21\x11\x00\x1f" + TCP4_BLOCK + ALPN_H2 + AUTHORITY,
        ),
        (
            {"src": ("192.168.0.1", 56324), "dst": ("192.168.0.11", 443), "checksum": True},
            SIG + b"\x21\x11\x00\x13" + TCP4_BLOCK + b"\x03\x00\x04\x1c\x1a\xe9\xc6",
        ),
        (
            # What HAProxy sends for its health checks (captured above), byte for byte.
            {"src": None, "dst": None, "checksum": True},
            SIG + b" \x00\x00\x07\x03\x00\x04\xa9\xb8~\x8f",
        ),
    ],
)
def test_encode_v2(kwargs: dict[str, object], expected: bytes) -> None:
    assert encode_v2(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: encode_v1(("localhost", 80), ("1.2.3.4", 80)), "IP address literal"),
        (lambda: encode_v1(("1.2.3.4", 70000), ("1.2.3.4", 80)), "port must be"),
        (lambda: encode_v1(("1.2.3.4", -1), ("1.2.3.4", 80)), "port must be"),
        (lambda: encode_v1(("1.2.3.4", "80"), ("1.2.3.4", 80)), "port must be"),
        (lambda: encode_v1(("1.2.3.4", True), ("1.2.3.4", 80)), "port must be"),
        (lambda: encode_v1(("1.2.3.4",), ("1.2.3.4", 80)), "must be \\(host, port\\)"),
        (lambda: encode_v2(("localhost", 80), ("1.2.3.4", 80)), "IP address literal"),
        (lambda: encode_v2("/x" * 60, "/y"), "UNIX path is 120 bytes"),
        (lambda: encode_v2(None, None, command="BOGUS"), "command must be"),
        (lambda: encode_v2(None, None, protocol="SCTP"), "protocol must be"),
        (lambda: encode_v2(None, None, tlvs=[(256, b"")]), "TLV type"),
        (lambda: encode_v2(None, None, tlvs=[(1, b"x" * 65536)]), "limit is 65535"),
        (lambda: encode_v2(None, None, tlvs=[(1, b"x" * 40000)] * 2), "header body is"),
        (
            lambda: encode_v2(None, None, tlvs=[(PP2_TYPE_CRC32C, bytes(4))], checksum=True),
            "not both",
        ),
    ],
)
def test_encoders_refuse_bad_arguments(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize(
    ("src", "dst", "family"),
    [
        (("10.0.0.1", 40000), ("10.0.0.2", 80), "TCP4"),
        (("2001:db8::1", 40000), ("2001:db8::2", 80), "TCP6"),
        (("::ffff:10.0.0.1", 1), ("::ffff:10.0.0.2", 2), "TCP4"),
    ],
)
def test_round_trip_ip(src: tuple[str, int], dst: tuple[str, int], family: str) -> None:
    unmapped = [(a.removeprefix("::ffff:"), p) for a, p in (src, dst)]
    for encode, version in ((encode_v1, 1), (encode_v2, 2)):
        info = ProxyInfo(version, "PROXY", family, unmapped[0], unmapped[1])  # type: ignore[arg-type]
        feed_three_ways(encode(src, dst), info)


def test_round_trip_v1_unknown() -> None:
    feed_three_ways(encode_v1(None, None), UNKNOWN_V1)


def test_round_trip_v2_others() -> None:
    tlvs = ((PP2_TYPE_ALPN, b"http/1.1"), (PP2_TYPE_UNIQUE_ID, bytes(range(128))), (0xEF, b""))
    unix = ProxyInfo(2, "PROXY", "UNIX", ("/tmp/a", 0), ("\x00ns\udcff", 0))
    feed_three_ways(encode_v2("/tmp/a", b"\x00ns\xff"), unix)
    # A parsed header can be re-encoded as received (a proxy in a chain relays it).
    assert encode_v2(unix.src, unix.dst) == encode_v2("/tmp/a", b"\x00ns\xff")
    feed_three_ways(encode_v2(None, None), LOCAL_V2)
    feed_three_ways(
        encode_v2(None, None, tlvs=tlvs), ProxyInfo(2, "LOCAL", "UNKNOWN", None, None, tlvs)
    )
    data = encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), tlvs=tlvs, protocol="UDP", checksum=True)
    expected = ProxyInfo(
        2, "PROXY", "UDP4", ("1.2.3.4", 1), ("5.6.7.8", 2), (*tlvs, (PP2_TYPE_CRC32C, data[-4:]))
    )
    feed_three_ways(data, expected)
    # Every single-bit flip in a checksummed header is caught (by the CRC or a field check).
    crc_type_at = len(data) - 7
    for bit in range(len(data) * 8):
        if bit // 8 == crc_type_at:
            # Turning the CRC TLV into another type removes the check itself: a limit of the
            # protocol, not of the parser.
            continue
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ProxyProtocolError):
            parser = ProxyHeaderParser()
            if parser.feed(bytes(flipped)) is None:
                parser.eof()


ip_endpoints = st.tuples(
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),  # what dual-stack sockets report
    ),
    st.integers(0, 65535),
)


def _expected(src: tuple[str, int], dst: tuple[str, int], version: int) -> ProxyInfo:
    def norm(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        addr = ipaddress.ip_address(host)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        return addr

    s, d = norm(src[0]), norm(dst[0])
    if s.version == d.version == 4:
        return ProxyInfo(version, "PROXY", "TCP4", (str(s), src[1]), (str(d), dst[1]))
    raw_s, raw_d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if raw_s.version == raw_d.version == 6:
        return ProxyInfo(version, "PROXY", "TCP6", (str(raw_s), src[1]), (str(raw_d), dst[1]))
    return ProxyInfo(version, "PROXY", "UNKNOWN", None, None)


@settings(max_examples=300, deadline=None)
@given(
    src=ip_endpoints,
    dst=ip_endpoints,
    version=st.sampled_from([1, 2]),
    checksum=st.booleans(),
    splits=st.lists(st.integers(0, 300), max_size=6),
    trailer=st.binary(max_size=20),
)
def test_round_trip_property(
    src: tuple[str, int],
    dst: tuple[str, int],
    version: int,
    checksum: bool,
    splits: list[int],
    trailer: bytes,
) -> None:
    data = encode_v1(src, dst) if version == 1 else encode_v2(src, dst, checksum=checksum)
    expected = _expected(src, dst, version)
    if version == 2 and checksum:
        expected = ProxyInfo(
            2, "PROXY", expected.family, expected.src, expected.dst, ((PP2_TYPE_CRC32C, data[-4:]),)
        )
    stream = data + trailer
    cuts = sorted({min(c, len(stream)) for c in splits} | {0, len(stream)})
    parser = ProxyHeaderParser()
    result = None
    for start, end in itertools.pairwise(cuts):
        result = parser.feed(stream[start:end])
        if result is not None:
            # The header ends inside this chunk: the rest of it, and every later byte, is data.
            assert end >= len(data)
            assert parser.rest + stream[end:] == trailer
            break
        assert end < len(data)
    assert result == expected


# ---------------------------------------------------------------------------------------------
# Interoperability with a real HAProxy (`make test` installs it).
#
# Our header goes into an `accept-proxy` listener, HAProxy relays the connection to us with
# `send-proxy-v2 ... crc32c`, and our parser must read back the addresses we sent: HAProxy
# understood our encoder, and we understand (and CRC-check) its.

HAPROXY = shutil.which("haproxy")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def haproxy_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, socket.socket]]:
    assert HAPROXY is not None, "haproxy is not installed: run `make deps-system`"
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen(16)
    backend.settimeout(3)
    front = _free_port()
    cfg = Path(tmp_path_factory.mktemp("haproxy")) / "haproxy.cfg"
    cfg.write_text(
        "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 3s\n  timeout server 3s\n"
        f"frontend f\n  bind 127.0.0.1:{front} accept-proxy\n  default_backend b\n"
        f"backend b\n  server s 127.0.0.1:{backend.getsockname()[1]} "
        "send-proxy-v2 proxy-v2-options crc32c\n"
    )
    proc = subprocess.Popen(
        [HAPROXY, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 3
        while True:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(
                        f"haproxy did not start: {proc.stderr.read() if proc.stderr else ''}"
                    )
                time.sleep(0.02)
        # The probe connection sent no header; HAProxy drops it without reaching the backend.
        yield front, backend
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        backend.close()


@pytest.mark.parametrize(
    ("encode", "src", "dst", "family"),
    [
        (encode_v1, ("203.0.113.7", 51000), ("198.51.100.1", 443), "TCP4"),
        (encode_v1, ("2001:db8::7", 51000), ("2001:db8::1", 443), "TCP6"),
        (encode_v2, ("203.0.113.7", 51000), ("198.51.100.1", 443), "TCP4"),
        (encode_v2, ("2001:db8::7", 65535), ("2001:db8::1", 0), "TCP6"),
    ],
)
def test_haproxy_interop(
    haproxy_chain: tuple[int, socket.socket],
    encode: object,
    src: tuple[str, int],
    dst: tuple[str, int],
    family: str,
) -> None:
    front, backend = haproxy_chain
    header = encode(src, dst)  # type: ignore[operator]
    if encode is encode_v2:
        header = encode_v2(src, dst, checksum=True)
    with socket.create_connection(("127.0.0.1", front), timeout=3) as client:
        client.sendall(header + b"hello")
        conn, _ = backend.accept()
        with conn:
            conn.settimeout(3)
            parser = ProxyHeaderParser()
            info = None
            while info is None:
                chunk = conn.recv(4096)
                if not chunk:
                    parser.eof()
                info = parser.feed(chunk)
            rest = parser.rest
            with contextlib.suppress(TimeoutError):
                while len(rest) < 5:
                    rest += conn.recv(4096)
    assert (info.version, info.command, info.family, info.src, info.dst) == (
        2,
        "PROXY",
        family,
        src,
        dst,
    )
    assert info.tlv(PP2_TYPE_CRC32C) is not None
    assert rest == b"hello"
