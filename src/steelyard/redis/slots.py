"""Keys to slots, as Codis: `crc32(hashkey) % 1024`, where the hash key is the hashtag if any.

The hashtag is the text between the first `{` and the first `}` after it. Unlike Redis Cluster,
an empty tag (`{}`) is a tag: it hashes the empty string, so `a{}b` and `c{}d` share slot 0.
zlib's crc32 is the IEEE polynomial Codis uses (Go's crc32.ChecksumIEEE).
"""

from __future__ import annotations

from collections.abc import Iterable
from zlib import crc32

SLOTS = 1024


def hashkey(key: bytes) -> bytes:
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end >= 0:
            return key[start + 1 : end]
    return key


def slot_of(key: bytes) -> int:
    return crc32(hashkey(key)) % SLOTS


def slots_of(keys: Iterable[bytes]) -> list[int]:
    """The distinct slots of `keys`, in the order first named."""
    return list(dict.fromkeys(slot_of(k) for k in keys))
