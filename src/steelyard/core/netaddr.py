"""Whether a client address is in a list of networks, the same way in every tier.

Allow lists (MySQL `allow`), trusted PROXY protocol sources (`accept_proxy_protocol.from`) and
the Redis admin's `server_networks` all ask it. A dual-stack listener sees an IPv4 client as
`::ffff:a.b.c.d`; it is matched as the IPv4 address it is, so an IPv4 network in a list means
the same on every listener.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def in_networks(ip: str, networks: Iterable[IPNetwork]) -> bool:
    """Whether the IP literal `ip` is in one of `networks` (False for anything else)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)
