"""VRRP on the wire: a raw socket for protocol 112 bound to one interface, multicast to
224.0.0.18 / ff02::12 (or unicast to peers), always with TTL / hop limit 255.

IPv4 packets arrive with their IP header: the TTL must be 255 (RFC 9568: a packet that crossed
a router is not from this link), the payload must parse; anything else is dropped and handed to
`on_drop(reason, source)` for the counters and the rate-limited log. IPv6 raw sockets give no
header: the hop limit and the destination come as ancillary data (IPV6_RECVHOPLIMIT,
IPV6_RECVPKTINFO), and adverts leave from the interface's link-local address, named in each
send (IPV6_PKTINFO) because the checksum covers it.

One wakeup reads at most READ_BURST packets, then gives the event loop back (the socket is
still readable, so the reader runs again on the next turn): a flood on the link cannot keep
the supervisor's loop, which also runs the health checks and the admin API, in this reader.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import Callable

from steelyard.vrrp.packet import MULTICAST_V4, MULTICAST_V6, PROTOCOL, Advert, BadAdvert, parse

IP_MTU = 65535
READ_BURST = 32  # packets read per wakeup; a router sends one advert per interval
# ancillary space for a hop limit (an int) and a packet info (in6_pktinfo: 16 + 4 bytes)
CMSG_SPACE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20)

OnAdvert = Callable[[Advert, str, str], None]  # advert, source, destination
OnDrop = Callable[[str, str], None]  # reason, source


class VrrpSocket:
    def __init__(
        self, interface: str, ifindex: int, on_advert: OnAdvert, on_drop: OnDrop,
        loop: asyncio.AbstractEventLoop, multicast: bool = True, source6: str | None = None,
    ) -> None:  # fmt: skip
        """`multicast`: join the group (unicast instances do not listen to it). `source6`: an
        IPv6 instance, sending from this link-local address."""
        self.on_advert = on_advert
        self.on_drop = on_drop
        self.loop = loop
        self.ifindex = ifindex
        self.source6 = source6
        if source6 is not None:
            self.sock = self._open6(interface, ifindex, multicast)
            loop.add_reader(self.sock.fileno(), self._read6)
            return
        s = self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, PROTOCOL)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            mreqn = struct.pack("4s4si", socket.inet_aton(MULTICAST_V4), bytes(4), ifindex)
            if multicast:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        loop.add_reader(s.fileno(), self._read)

    def _read(self) -> None:
        for _ in range(READ_BURST):
            try:
                data, (src, _) = self.sock.recvfrom(IP_MTU)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) < 20:
                self.on_drop("length", src)
                continue
            header = (data[0] & 0x0F) * 4
            ttl = data[8]
            dst = socket.inet_ntoa(data[16:20])
            if ttl != 255:
                self.on_drop("ttl", src)
                continue
            try:
                ad = parse(data[header:], src, dst)
            except BadAdvert as exc:
                self.on_drop(exc.reason, src)
                continue
            self.on_advert(ad, src, dst)

    @staticmethod
    def _open6(interface: str, ifindex: int, multicast: bool) -> socket.socket:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, PROTOCOL)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            if multicast:
                mreq = socket.inet_pton(socket.AF_INET6, MULTICAST_V6) + struct.pack("@I", ifindex)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        return s

    def _read6(self) -> None:
        for _ in range(READ_BURST):
            try:
                data, ancillary, _, peer = self.sock.recvmsg(IP_MTU, CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            src = peer[0].split("%")[0]
            hops, dst = None, None
            for level, kind, value in ancillary:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                    hops = int.from_bytes(value[:4], sys.byteorder)
                elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                    dst = socket.inet_ntop(socket.AF_INET6, value[:16])
            if hops != 255 or dst is None:
                self.on_drop("ttl", src)
                continue
            try:
                ad = parse(data, src, dst)
            except BadAdvert as exc:
                self.on_drop(exc.reason, src)
                continue
            self.on_advert(ad, src, dst)

    def send(self, payload: bytes, destination: str = MULTICAST_V4) -> OSError | None:
        """Send one advert; the error when the link refused it (the caller counts it)."""
        try:
            if self.source6 is None:
                self.sock.sendto(payload, (destination, 0))
            else:
                info = socket.inet_pton(socket.AF_INET6, self.source6)
                info += struct.pack("@I", self.ifindex)
                self.sock.sendmsg([payload], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)],
                                  0, (destination, 0, 0, self.ifindex))  # fmt: skip
        except OSError as exc:
            return exc
        return None

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
