"""What a VRRP instance does to its interface: read its index, MAC and primary address, add and
remove the virtual IPs (netlink, through pyroute2), and announce them with gratuitous ARP
(a raw Ethernet frame per address, as keepalived sends them)."""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

SIOCGIFADDR = 0x8915
SIOCGIFHWADDR = 0x8927
ETH_P_ARP = 0x0806
IFA_F_NODAD = 0x02
ALL_NODES = "ff02::1"
BROADCAST = b"\xff" * 6


def _ioctl(interface: str, request: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return fcntl.ioctl(s.fileno(), request, struct.pack("256s", interface.encode()[:15]))


def index(interface: str) -> int:
    return socket.if_nametoindex(interface)


def mac(interface: str) -> bytes:
    return _ioctl(interface, SIOCGIFHWADDR)[18:24]


def primary_address(interface: str) -> str:
    """The interface's first IPv4 address (the source of adverts and the VRRP tie-break)."""
    return socket.inet_ntoa(_ioctl(interface, SIOCGIFADDR)[20:24])


def link_local(interface: str) -> str | None:
    """The interface's usable IPv6 link-local address (the source of IPv6 adverts): not
    tentative (still in duplicate address detection) nor failed; None without one."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hexaddr, _, _, scope, flags, name = line.split()
        # scope 0x20: link; flags: IFA_F_TENTATIVE 0x40, IFA_F_DADFAILED 0x08
        if name == interface and int(scope, 16) == 0x20 and not int(flags, 16) & 0x48:
            return str(ipaddress.IPv6Address(bytes.fromhex(hexaddr)))
    return None


def addresses() -> set[str]:
    """Every IPv4 address on this host's interfaces."""
    found: set[str] = set()

    def read() -> None:
        with IPRoute() as ipr:
            found.update(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET))

    _in_thread(read)
    return found


def _in_thread(fn: Callable[[], None]) -> None:
    """pyroute2 runs its own asyncio loop, and uvloop has no netlink datagram endpoints: its
    calls go to a thread of their own (a few milliseconds, on state changes only)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(fn).result()


def add_addresses(interface: str, cidrs: list[str]) -> None:
    """Add the virtual IPs (already present: fine)."""
    _in_thread(lambda: _change("add", interface, cidrs, {errno.EEXIST}))


def remove_addresses(interface: str, cidrs: list[str]) -> None:
    """Remove the virtual IPs (already gone: fine)."""
    _in_thread(lambda: _change("del", interface, cidrs, {errno.EADDRNOTAVAIL, errno.ENODEV}))


def _change(op: str, interface: str, cidrs: list[str], fine: set[int]) -> None:
    """`op` ("add" or "del") each address; the netlink errors in `fine` mean it is done."""
    with IPRoute() as ipr:
        for cidr in cidrs:
            iface = ipaddress.ip_interface(cidr)  # a bare address is a /32 (/128)
            extra = {}
            if iface.version == 6:
                # no duplicate address detection: the address moves between nodes on purpose,
                # and a tentative address could not be used for a second (as keepalived)
                extra = {"family": socket.AF_INET6, "flags": IFA_F_NODAD}
            try:
                ipr.addr(op, index=index(interface), address=str(iface.ip),
                         prefixlen=iface.network.prefixlen, **extra)  # fmt: skip
            except NetlinkError as exc:
                if exc.code not in fine:
                    raise


def garp_frame(source_mac: bytes, address: str) -> bytes:
    """A gratuitous ARP request for `address`: sender and target IP both the address."""
    ip = socket.inet_aton(address)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + source_mac + ip + b"\0" * 6 + ip
    return BROADCAST + source_mac + ETH_P_ARP.to_bytes(2, "big") + arp


def send_garp(interface: str, addresses: list[str]) -> int:
    """One gratuitous ARP per address; the number sent."""
    src = mac(interface)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((interface, ETH_P_ARP))
        for address in addresses:
            s.send(garp_frame(src, address))
    return len(addresses)


def unsolicited_na(source_mac: bytes, address: str) -> bytes:
    """An unsolicited neighbour advertisement for `address` (RFC 4861 7.2.6), the IPv6 form of
    a gratuitous ARP: override set, solicited not, with the target link-layer address option.
    The checksum is left 0: the kernel fills it for ICMPv6 raw sockets."""
    flags = 0x20000000  # O (override)
    message = struct.pack("!BBHI", 136, 0, 0, flags) + ipaddress.IPv6Address(address).packed
    return message + bytes((2, 1)) + source_mac  # option 2: target link-layer address


def send_unsolicited_na(interface: str, addresses: list[str]) -> int:
    """One unsolicited NA per address to all nodes, hop limit 255; the number sent."""
    src = mac(interface)
    ifindex = index(interface)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        for address in addresses:
            s.sendto(unsolicited_na(src, address), (ALL_NODES, 0, 0, ifindex))
    return len(addresses)
