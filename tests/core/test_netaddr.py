"""in_networks: IPv4, IPv6, IPv4-mapped clients of a dual-stack listener, and non-addresses."""

from __future__ import annotations

import ipaddress

import pytest

from steelyard.core.netaddr import in_networks

NETS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("ip", "inside"),
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("::ffff:10.1.2.3", True),  # an IPv4 client seen by a dual-stack listener
        ("::ffff:11.0.0.1", False),
        ("fd00::1", True),
        ("fe80::1", False),
        ("localhost", False),  # not an address: never inside
        ("", False),
    ],
)
def test_in_networks(ip: str, inside: bool) -> None:
    assert in_networks(ip, NETS) is inside


def test_no_networks_hold_nothing() -> None:
    assert not in_networks("10.1.2.3", ())
