"""VRRP on the wire: a raw IPv4 socket for protocol 112 bound to one interface, multicast to
224.0.0.18 (or unicast to peers), always with TTL 255.

Received packets carry their IP header: the TTL must be 255 (RFC 9568: a packet that crossed a
router is not from this link), the payload must parse; anything else is dropped and handed to
`on_drop(reason, source)` for the counters and the rate-limited log.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

from steelyard.vrrp.packet import MULTICAST_V4, PROTOCOL, Advert, BadAdvert, parse

IP_MTU = 65535

OnAdvert = Callable[[Advert, str, str], None]  # advert, source, destination
OnDrop = Callable[[str, str], None]  # reason, source


class VrrpSocket:
    def __init__(
        self, interface: str, ifindex: int, on_advert: OnAdvert, on_drop: OnDrop,
        loop: asyncio.AbstractEventLoop, multicast: bool = True,
    ) -> None:  # fmt: skip
        """`multicast`: join 224.0.0.18 (unicast instances do not listen to the group)."""
        self.on_advert = on_advert
        self.on_drop = on_drop
        self.loop = loop
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
        while True:
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

    def send(self, payload: bytes, destination: str = MULTICAST_V4) -> OSError | None:
        """Send one advert; the error when the link refused it (the caller counts it)."""
        try:
            self.sock.sendto(payload, (destination, 0))
        except OSError as exc:
            return exc
        return None

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
