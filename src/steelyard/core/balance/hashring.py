"""Consistent hashing on a ketama ring, compatible with nginx `hash $key consistent`.

The ring is built exactly as ngx_http_upstream_init_chash does (compatible with
Cache::Memcached::Fast): each server gets `160 * weight` points; the first point is
crc32(host "\\0" port prev) with prev = four zero bytes, and every next point feeds the previous
point's value (little-endian) back in. Points are sorted and duplicate hashes dropped. A key maps
to the first point >= crc32(key), wrapping at the end. So the same config gives the same
key -> server mapping as nginx, and a server leaving moves only the keys it owned.

When the owner of a key is skipped (tried already, full), the pick walks forward along the ring,
point by point, like ngx_http_upstream_get_chash_peer, so a key always falls over to the same next
server, which is also where the key goes once its server is removed. One deliberate difference:
nginx (since 1.13.6) gives up after 20 points and picks by round robin; here the walk goes on
round the whole ring (each server's skip() is asked once), so the fall-over stays a function of
the key even when most servers are skipped. The two differ only when more than 20 points in a
row belong to skipped servers.

A missing or empty key is spread by smooth weighted round robin, as nginx does since 1.17.1
(all keyless requests on one server would make it a hot spot).
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING

from steelyard.core.balance.base import Balancer, Skip
from steelyard.core.balance.round_robin import RoundRobin

if TYPE_CHECKING:
    from steelyard.core.backend import Server

POINTS_PER_WEIGHT = 160


def nginx_server_name(address: str) -> tuple[bytes, bytes]:
    """Split a server name the way init_chash does: (host, port) as hashed bytes.

    nginx hashes the name as written in the config, so `[::1]:80` keeps its brackets in the
    host, `unix:/path` has no port, and a name without a trailing `:digits` is all host.
    """
    raw = address.encode()
    if raw[:5].lower() == b"unix:":
        return raw[5:], b""
    host, sep, port = raw.rpartition(b":")
    if sep and (port == b"" or port.isdigit()):
        return host, port
    return raw, b""


def server_points(address: str, weight: int) -> list[int]:
    """The ring points nginx computes for one server (before sorting)."""
    host, port = nginx_server_name(address)
    base = zlib.crc32(host + b"\0" + port)
    points = []
    prev = 0
    for _ in range(POINTS_PER_WEIGHT * weight):
        # zlib.crc32(b, crc32(a)) == crc32(a + b): continuing from the base hash is nginx's
        # "hash = base_hash; crc32_update(prev, 4); crc32_final".
        prev = zlib.crc32(prev.to_bytes(4, "little"), base)
        points.append(prev)
    return points


def build_ring(servers: Sequence[Server]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sorted point hashes and, for each, the index of its server.

    Equal hashes keep only the first (by server order); nginx does the same dedup after an
    unstable qsort, so which server keeps a colliding point there is unspecified anyway.
    """
    pairs = []
    for index, server in enumerate(servers):
        weight = server.effective_weight
        if weight > 0:
            pairs.extend((h, index) for h in server_points(server.address, weight))
    pairs.sort()
    hashes: list[int] = []
    owners: list[int] = []
    for h, index in pairs:
        if hashes and hashes[-1] == h:
            continue
        hashes.append(h)
        owners.append(index)
    return tuple(hashes), tuple(owners)


class KetamaHash(Balancer):
    name = "hash"
    keyed = True

    def __init__(self, servers: Sequence[Server]) -> None:
        super().__init__(servers)
        self._hashes, self._owners = build_ring(self.servers)
        self._members = len(set(self._owners))
        self._keyless = RoundRobin([s for s in self.servers if s.effective_weight > 0])

    @property
    def points(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(sorted point hashes, index into `servers` of each point's owner): a read-only view."""
        return self._hashes, self._owners

    def point_for(self, key: bytes) -> int:
        """Index of the first ring point >= crc32(key) (may equal len(ring): wraps to 0)."""
        return bisect_left(self._hashes, zlib.crc32(key))

    def pick(self, key: bytes | None = None, skip: Skip = None) -> Server | None:
        if not key:
            return self._keyless.pick(None, skip)
        if not self._hashes:
            return None
        return self._walk(self.point_for(key), skip)

    def _walk(self, start: int, skip: Skip) -> Server | None:
        owners = self._owners
        servers = self.servers
        npoints = len(owners)
        if skip is None:
            return servers[owners[start % npoints]]
        # A skipped server usually owns many points; remember the verdict so that skip() runs
        # once per server and the walk stops as soon as every member is known to be skipped.
        skipped: set[int] = set()
        for step in range(npoints):
            index = owners[(start + step) % npoints]
            if index in skipped:
                continue
            if not skip(servers[index]):
                return servers[index]
            skipped.add(index)
            if len(skipped) == self._members:
                return None
        return None
