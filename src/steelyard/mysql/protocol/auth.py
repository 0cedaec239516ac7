"""Password scrambles of the two authentication plugins clients use today.

- mysql_native_password: SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))), 20 bytes.
- caching_sha2_password: SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble),
  32 bytes. Its "fast auth" is this scramble; "full auth" sends the password itself, over TLS,
  or over plain TCP encrypted with the server's RSA public key (XORed with the scramble first).

The proxy knows its users' passwords, so it verifies either scramble itself (`verify`), and
computes the backend's (`token`) when it logs in to a server.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

NATIVE = "mysql_native_password"
SHA2 = "caching_sha2_password"
PLUGINS = (NATIVE, SHA2)
SCRAMBLE_LEN = 20

# caching_sha2_password's single-byte replies inside an AuthMoreData packet (0x01 ...)
FAST_AUTH_SUCCESS = 0x03
PERFORM_FULL_AUTH = 0x04
REQUEST_PUBLIC_KEY = 0x02


def scramble() -> bytes:
    """20 random bytes, none of them NUL (the handshake carries them NUL-terminated)."""
    return bytes(secrets.randbelow(127) + 1 for _ in range(SCRAMBLE_LEN))


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def native_token(password: bytes, salt: bytes) -> bytes:
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    return _xor(stage1, hashlib.sha1(salt[:SCRAMBLE_LEN] + stage2).digest())


def sha2_token(password: bytes, salt: bytes) -> bytes:
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + salt[:SCRAMBLE_LEN]).digest())


def token(plugin: str, password: bytes, salt: bytes) -> bytes:
    if plugin == NATIVE:
        return native_token(password, salt)
    if plugin == SHA2:
        return sha2_token(password, salt)
    raise ValueError(f"unsupported authentication plugin {plugin!r}")


def verify(plugin: str, password: bytes, salt: bytes, response: bytes) -> bool:
    """Whether a client's scramble `response` proves it knows `password`."""
    if plugin not in PLUGINS:
        return False
    return hmac.compare_digest(token(plugin, password, salt), response)


def xor_password(password: bytes, salt: bytes) -> bytes:
    """What full auth over plain TCP encrypts: the NUL-ended password XOR the scramble."""
    data = password + b"\0"
    key = salt[:SCRAMBLE_LEN]
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))
