"""Client-address affinity: the same client address goes to the same server.

The key is the client address as bytes, without the port (`b"10.0.0.1"`, `b"2001:db8::1"`).
It is placed on the same weighted ketama ring as `hash` (see hashring.py) rather than hashed
modulo the server count as nginx `ip_hash` and HAProxy `balance source` (map-based) do: with a
modulo, one server leaving or joining remaps almost every client, dropping their sessions and
caches; on the ring only the clients of the server that left move, and a server that joins
takes only its own share. Ring lookups also keep nginx's fall-over order, so a client whose
server is skipped always lands on the same second choice.

Without a client address (`None` or `b""`: a Unix socket peer, say), picks fall back to smooth
weighted round robin, inherited from the ring, so that such traffic still spreads by weight.
"""

from __future__ import annotations

from steelyard.core.balance.hashring import KetamaHash


class SourceHash(KetamaHash):
    name = "source_hash"
    keyed = True
