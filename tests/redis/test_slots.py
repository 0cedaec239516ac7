"""Keys to slots exactly as Codis: IEEE crc32 of the hashtag (or the key) modulo 1024."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from steelyard.redis.slots import SLOTS, hashkey, slot_of


def crc32_reference(data: bytes) -> int:
    """Bitwise IEEE 802.3 CRC-32 (reflected, polynomial 0xEDB88320): independent of zlib."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_known_values():
    assert crc32_reference(b"123456789") == 0xCBF43926  # the CRC-32 check value
    assert slot_of(b"foo") == 0x8C736521 % SLOTS
    assert slot_of(b"") == 0


def test_hashtags_as_codis():
    assert hashkey(b"user:{42}:name") == b"42"
    assert hashkey(b"{a}{b}") == b"a"  # the first tag
    assert hashkey(b"a{}b") == b""  # an empty tag is a tag (Redis Cluster would hash the key)
    assert slot_of(b"a{}b") == slot_of(b"c{}d") == 0
    assert hashkey(b"no}tag{here") == b"no}tag{here"  # '{' must come first
    assert hashkey(b"open{only") == b"open{only"
    assert slot_of(b"x{k}y") == slot_of(b"k")


@given(st.binary(max_size=64))
def test_slot_is_crc32_of_the_hashkey(key):
    assert slot_of(key) == crc32_reference(hashkey(key)) % SLOTS
    assert 0 <= slot_of(key) < SLOTS
