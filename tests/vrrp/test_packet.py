"""VRRP advertisements: the checksum against RFC 1071's example, v3 with and without the IPv4
pseudo-header (keepalived's default and `v3_checksum_as_v2`), v2 from RFC 3768 peers, and every
malformed message dropped with its reason; an advert for other virtual addresses than ours
dropped as keepalived drops it."""

from __future__ import annotations

import pytest

from steelyard.vrrp.packet import (
    Advert,
    BadAdvert,
    build,
    canonical,
    check_addresses,
    checksum,
    parse,
)

SRC, DST = "10.0.0.1", "224.0.0.18"


def test_checksum_of_rfc1071s_example():
    # RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2; the checksum its complement
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    assert checksum(bytes.fromhex("0001f203f4f5f6f7") + (0xFFFF - 0xDDF2).to_bytes(2, "big")) == 0


def test_a_v3_advert_byte_by_byte():
    ad = Advert(vrid=51, priority=150, interval_cs=100, addresses=("10.0.0.100", "10.0.0.101"))
    data = build(ad, SRC, DST)
    # version 3 type 1, VRID 51, priority 150, 2 addresses, interval 100 cs, checksum, addresses
    assert data[:6] == bytes.fromhex("3133960200" + "64")
    assert data[8:] == bytes((10, 0, 0, 100, 10, 0, 0, 101))
    pseudo = bytes((10, 0, 0, 1, 224, 0, 0, 18, 0, 112, 0, len(data)))
    assert checksum(pseudo + data) == 0  # keepalived's default: the pseudo-header counts
    assert parse(data, SRC, DST) == ad
    # the same advert as RFC 9568 / Cisco / Juniper make it: no pseudo-header
    plain = build(Advert(51, 150, 100, ("10.0.0.100", "10.0.0.101"), checksum_as_v2=True))
    assert checksum(plain) == 0 and plain[:6] == data[:6] and plain[6:8] != data[6:8]
    assert parse(plain, SRC, DST).checksum_as_v2
    assert not parse(data, SRC, DST).checksum_as_v2


def test_a_v2_advert_is_read():
    data = build(Advert(7, 100, 300, ("192.168.1.10",), version=2, auth=b"secret"))
    assert data[:6] == bytes((0x21, 7, 100, 1, 0, 3)) and data[-8:] == b"secret\0\0"
    ad = parse(data)
    assert (ad.version, ad.vrid, ad.priority, ad.interval_cs, ad.addresses) == (
        2, 7, 100, 300, ("192.168.1.10",),
    )  # fmt: skip


def test_priority_zero_and_the_limits():
    resign = parse(build(Advert(1, 0, 4095, ()), SRC, DST), SRC, DST)
    assert (resign.priority, resign.interval_cs, resign.addresses) == (0, 4095, ())
    for bad in (Advert(0, 100, 100), Advert(1, 256, 100), Advert(1, 100, 0), Advert(1, 100, 4096)):
        with pytest.raises(ValueError):
            build(bad, SRC, DST)


def reason(data: bytes) -> str:
    with pytest.raises(BadAdvert) as dropped:
        parse(data, SRC, DST)
    return dropped.value.reason


def test_malformed_adverts_are_dropped_with_their_reason():
    good = build(Advert(51, 150, 100, ("10.0.0.100",)), SRC, DST)
    for n in range(len(good)):  # every truncation
        assert reason(good[:n]) == "length"
    assert reason(good + b"\0") == "length"  # trailing bytes
    assert reason(bytes((0x41,)) + good[1:]) == "version"
    assert reason(bytes((0x32,)) + good[1:]) == "type"
    assert reason(good[:3] + b"\x05" + good[4:]) == "length"  # a count the body does not hold
    flipped = bytearray(good)
    flipped[-1] ^= 1
    assert reason(bytes(flipped)) == "checksum"
    with pytest.raises(BadAdvert, match="checksum"):  # another source's pseudo-header
        parse(good, "10.0.0.9", DST)
    no_vrid = bytearray(build(Advert(51, 150, 100, (), checksum_as_v2=True)))
    no_vrid[1] = 0
    no_vrid[6:8] = b"\0\0"
    no_vrid[6:8] = checksum(bytes(no_vrid)).to_bytes(2, "big")
    assert reason(bytes(no_vrid)) == "vrid"
    zero = bytearray(build(Advert(51, 150, 100, (), checksum_as_v2=True)))
    zero[4:6] = b"\0\0"
    zero[6:8] = b"\0\0"
    zero[6:8] = checksum(bytes(zero)).to_bytes(2, "big")
    assert reason(bytes(zero)) == "interval"


def test_ipv6_adverts_carry_16_byte_addresses_and_the_ipv6_pseudo_header():
    from steelyard.vrrp.packet import MULTICAST_V6

    ad = Advert(51, 100, 100, ("fd00::100", "fd00::101"))
    data = build(ad, "fe80::1", MULTICAST_V6)
    assert len(data) == 8 + 2 * 16
    assert data[:6] == bytes((0x31, 51, 100, 2, 0, 100))
    assert data[8:24] == bytes.fromhex("fd000000000000000000000000000100")
    # RFC 8200 section 8.1: source, destination, upper-layer length (32 bits), 3 zero bytes,
    # next header 112
    pseudo = (
        bytes.fromhex("fe800000000000000000000000000001")
        + bytes.fromhex("ff020000000000000000000000000012")
        + len(data).to_bytes(4, "big") + bytes((0, 0, 0, 112))
    )  # fmt: skip
    assert checksum(pseudo + data) == 0
    assert parse(data, "fe80::1", MULTICAST_V6) == ad
    with pytest.raises(BadAdvert, match="checksum"):  # another source's pseudo-header
        parse(data, "fe80::2", MULTICAST_V6)
    with pytest.raises(BadAdvert, match="length"):  # IPv4-sized addresses over IPv6
        parse(build(Advert(51, 100, 100, ("10.0.0.1",)), "10.0.0.1"), "fe80::1", MULTICAST_V6)
    with pytest.raises(ValueError):
        build(Advert(51, 100, 100, ("fd00::1",), checksum_as_v2=True), "fe80::1", MULTICAST_V6)


def addresses_reason(ad: Advert, ours: tuple[str, ...]) -> str:
    with pytest.raises(BadAdvert) as info:
        check_addresses(ad, ours)
    assert info.value.reason == "addresses"
    return str(info.value)


def test_an_advert_must_carry_our_virtual_addresses():
    ours = ("10.0.0.100", "10.0.0.101")
    # the same set, in any order, read back from the wire: accepted
    for theirs in (ours, ours[::-1]):
        check_addresses(parse(build(Advert(51, 254, 100, theirs), SRC, DST), SRC, DST), ours)
    # keepalived: "received an invalid ip address count"
    assert addresses_reason(Advert(51, 254, 100, ("10.0.0.100",)), ours) == (
        "addresses: 1 addresses, expected 2"
    )
    assert addresses_reason(Advert(51, 254, 100, ()), ours) == "addresses: 0 addresses, expected 2"
    three = ("10.0.0.100", "10.0.0.101", "10.0.0.102")
    assert addresses_reason(Advert(51, 254, 100, three), ours) == (
        "addresses: 3 addresses, expected 2"
    )
    # keepalived: "ip address associated with VRID not present in MASTER advert"
    assert addresses_reason(Advert(51, 254, 100, ("10.0.0.100", "10.0.0.109")), ours) == (
        "addresses: 10.0.0.101 is not in the advert"
    )
    # a repeated address does not stand in for a missing one
    assert addresses_reason(Advert(51, 254, 100, ("10.0.0.100", "10.0.0.100")), ours) == (
        "addresses: 10.0.0.101 is not in the advert"
    )


def test_ipv6_addresses_are_compared_in_their_canonical_form():
    ours = canonical(["fd00:0::0100", "FD00::101"])
    assert ours == ("fd00::100", "fd00::101")
    ad = parse(build(Advert(51, 254, 100, ("fd00::101", "fd00::100")), "fe80::1", "ff02::12"),
               "fe80::1", "ff02::12")  # fmt: skip
    check_addresses(ad, ours)
    assert addresses_reason(ad, canonical(["fd00::100", "fd00::102"])) == (
        "addresses: fd00::102 is not in the advert"
    )
