"""The connection phase: the server's HandshakeV10, the client's SSLRequest and
HandshakeResponse41, AuthSwitchRequest and AuthMoreData, built and parsed.

The proxy plays both sides: server to its clients (build the greeting, parse the response),
client to its backends (parse their greeting, build a response).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steelyard.mysql.protocol.constants import UTF8MB4_GENERAL_CI, Capability, Status
from steelyard.mysql.protocol.wire import Cursor, Malformed, lenenc_int, lenenc_str

PROTOCOL_VERSION = 10
SSL_REQUEST_LEN = 32  # an SSLRequest is the first 32 bytes of a HandshakeResponse41


@dataclass(frozen=True)
class Greeting:
    """HandshakeV10."""

    server_version: str
    connection_id: int
    salt: bytes  # the 20-byte scramble
    capabilities: int
    charset: int = UTF8MB4_GENERAL_CI
    status: int = Status.AUTOCOMMIT
    plugin: str = "mysql_native_password"


@dataclass(frozen=True)
class Response:
    """HandshakeResponse41 (or, with `ssl_request`, the SSLRequest that precedes TLS)."""

    capabilities: int
    max_packet: int
    charset: int
    user: str = ""
    auth: bytes = b""
    database: str | None = None
    plugin: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    ssl_request: bool = False


def build_greeting(g: Greeting) -> bytes:
    caps = g.capabilities
    salt = g.salt
    out = bytes((PROTOCOL_VERSION,)) + g.server_version.encode() + b"\0"
    out += g.connection_id.to_bytes(4, "little") + salt[:8] + b"\0"
    out += (caps & 0xFFFF).to_bytes(2, "little") + bytes((g.charset,))
    out += int(g.status).to_bytes(2, "little") + ((caps >> 16) & 0xFFFF).to_bytes(2, "little")
    out += bytes((len(salt) + 1,)) if caps & Capability.PLUGIN_AUTH else b"\0"
    out += b"\0" * 10
    if caps & Capability.SECURE_CONNECTION:
        out += salt[8:] + b"\0"
    if caps & Capability.PLUGIN_AUTH:
        out += g.plugin.encode() + b"\0"
    return out


def parse_greeting(payload: bytes) -> Greeting:
    c = Cursor(payload)
    version = c.u8()
    if version != PROTOCOL_VERSION:
        raise Malformed(f"handshake protocol {version}, not 10")
    server_version = c.nul_str().decode("utf-8", "replace")
    conn_id = c.u32()
    salt = c.fixed(8)
    c.u8()
    caps = c.u16()
    charset = status = 0
    plugin = "mysql_native_password"
    if c.remaining():
        charset = c.u8()
        status = c.u16()
        caps |= c.u16() << 16
        salt_len = c.u8()
        c.fixed(10)
        if caps & Capability.SECURE_CONNECTION:
            salt += c.fixed(max(13, salt_len - 8))[:-1]  # the part that ends with a NUL
        if caps & Capability.PLUGIN_AUTH:
            rest = c.rest()
            plugin = rest.split(b"\0", 1)[0].decode("ascii", "replace")
    return Greeting(server_version, conn_id, salt, caps, charset, status, plugin)


def build_response(r: Response) -> bytes:
    caps = r.capabilities
    out = caps.to_bytes(4, "little") + r.max_packet.to_bytes(4, "little")
    out += bytes((r.charset,)) + b"\0" * 23
    if r.ssl_request:
        return out
    out += r.user.encode() + b"\0"
    if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
        out += lenenc_str(r.auth)
    elif caps & Capability.SECURE_CONNECTION:
        out += bytes((len(r.auth),)) + r.auth
    else:
        out += r.auth + b"\0"
    if caps & Capability.CONNECT_WITH_DB:
        out += (r.database or "").encode() + b"\0"
    if caps & Capability.PLUGIN_AUTH:
        out += (r.plugin or "").encode() + b"\0"
    if caps & Capability.CONNECT_ATTRS:
        out += _attributes(r.attributes)
    return out


def parse_response(payload: bytes) -> Response:
    """A HandshakeResponse41, or an SSLRequest (32 bytes). Raises Malformed."""
    c = Cursor(payload)
    caps = c.u32()
    if not caps & Capability.PROTOCOL_41:
        raise Malformed("a client without CLIENT_PROTOCOL_41")
    max_packet = c.u32()
    charset = c.u8()
    c.fixed(23)
    if len(payload) == SSL_REQUEST_LEN:
        if not caps & Capability.SSL:
            raise Malformed("a 32-byte response without CLIENT_SSL")
        return Response(caps, max_packet, charset, ssl_request=True)
    user = c.nul_str().decode("utf-8", "replace")
    if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth = c.lenenc_str() or b""
    elif caps & Capability.SECURE_CONNECTION:
        auth = c.fixed(c.u8())
    else:
        auth = c.nul_str()
    database = None
    if caps & Capability.CONNECT_WITH_DB and c.remaining():
        database = c.nul_str().decode("utf-8", "replace")
    plugin = None
    if caps & Capability.PLUGIN_AUTH and c.remaining():
        plugin = c.nul_str().decode("ascii", "replace")
    attributes: dict[str, str] = {}
    if caps & Capability.CONNECT_ATTRS and c.remaining():
        size = c.lenenc_int() or 0
        attrs = Cursor(c.fixed(size))
        while attrs.remaining():
            key = (attrs.lenenc_str() or b"").decode("utf-8", "replace")
            attributes[key] = (attrs.lenenc_str() or b"").decode("utf-8", "replace")
    return Response(caps, max_packet, charset, user, auth, database, plugin, attributes)


def parse_change_user(payload: bytes, capabilities: int) -> Response:
    """COM_CHANGE_USER (its payload, command byte included): user, scramble, database,
    character set, plugin, attributes, read with the capabilities agreed at login. Raises
    Malformed."""
    c = Cursor(payload, 1)
    user = c.nul_str().decode("utf-8", "replace")
    auth = c.fixed(c.u8()) if capabilities & Capability.SECURE_CONNECTION else c.nul_str()
    database = c.nul_str().decode("utf-8", "replace") if c.remaining() else ""
    charset = c.u16() & 0xFF if c.remaining() >= 2 else 0
    plugin = None
    if capabilities & Capability.PLUGIN_AUTH and c.remaining():
        plugin = c.nul_str().decode("ascii", "replace")
    return Response(capabilities, 0, charset, user, auth, database or None, plugin)


def build_change_user(r: Response) -> bytes:
    out = b"\x11" + r.user.encode() + b"\0" + bytes((len(r.auth),)) + r.auth
    out += (r.database or "").encode() + b"\0" + r.charset.to_bytes(2, "little")
    out += (r.plugin or "").encode() + b"\0"
    if r.capabilities & Capability.CONNECT_ATTRS:
        out += _attributes(r.attributes)
    return out


def _attributes(attributes: dict[str, str]) -> bytes:
    attrs = b"".join(lenenc_str(k.encode()) + lenenc_str(v.encode()) for k, v in attributes.items())
    return lenenc_int(len(attrs)) + attrs


def auth_switch(plugin: str, salt: bytes) -> bytes:
    """AuthSwitchRequest: the server asks for `plugin`'s scramble of a new salt."""
    return b"\xfe" + plugin.encode() + b"\0" + salt + b"\0"


def parse_auth_switch(payload: bytes) -> tuple[str, bytes]:
    c = Cursor(payload, 1)
    plugin = c.nul_str().decode("ascii", "replace")
    data = c.rest()
    return plugin, data[:-1] if data.endswith(b"\0") else data


def more_data(data: bytes) -> bytes:
    """AuthMoreData (caching_sha2_password's fast-auth verdict, its public key)."""
    return b"\x01" + data
