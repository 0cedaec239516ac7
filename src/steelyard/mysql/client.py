"""A small asyncio MySQL client on steelyard's codec: log in, run a statement, read its answer.

It serves the proxy's own needs (the `mysql` health check, replication lag, the causal-read
wait), and is the login half of the backend connection pool: one code path logs in to servers,
with mysql_native_password or caching_sha2_password (fast auth, or full auth with the server's
RSA key), following an auth switch; with a TLS context, inside TLS (an SSLRequest after the
greeting, then the login and everything after it encrypted).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from steelyard.config.mysql_model import MysqlBackendTlsConfig
from steelyard.core.tls import client_context
from steelyard.mysql.protocol import auth, handshake, messages
from steelyard.mysql.protocol.constants import UTF8MB4_GENERAL_CI, Capability, Command
from steelyard.mysql.protocol.packets import PacketReader, frame
from steelyard.mysql.protocol.response import ResponseTracker
from steelyard.mysql.protocol.resultset import ResultSet, column_name, text_row
from steelyard.mysql.protocol.wire import Cursor, Malformed

CAPABILITIES = (
    Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA | Capability.LONG_PASSWORD
    | Capability.TRANSACTIONS | Capability.MULTI_RESULTS | Capability.PS_MULTI_RESULTS
    | Capability.CONNECT_WITH_DB | Capability.DEPRECATE_EOF
)  # fmt: skip


class MySQLError(Exception):
    """An ERR from the server (or a refused login), with its code."""

    def __init__(self, code: int, sqlstate: str, message: str) -> None:
        super().__init__(f"({code}) {message}")
        self.code = code
        self.sqlstate = sqlstate
        self.message = message

    @classmethod
    def of(cls, err: messages.Err) -> MySQLError:
        """The error a server's ERR packet says."""
        return cls(err.code, err.sqlstate, err.message)

    @property
    def code_state(self) -> tuple[int, str]:
        """(code, SQLSTATE), as an error packet is built from."""
        return self.code, self.sqlstate


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.packets = PacketReader()
        self.pending: list[tuple[int, bytes]] = []
        self.greeting: handshake.Greeting | None = None
        self.capabilities = 0
        self.plugin = ""  # the plugin the login succeeded with
        self.switched = False  # the server asked for another plugin's answer
        self.tls: ssl.SSLContext | None = None
        self.server_name: str | None = None

    @classmethod
    async def connect(
        cls, address: str, user: str, password: str, database: str | None = None,
        timeout: float = 5.0, first_plugin: str | None = None, capabilities: int | None = None,
        tls: ssl.SSLContext | None = None, server_name: str | None = None,
    ) -> Client:  # fmt: skip
        """`tls`: log in inside TLS, the certificate checked for `server_name` (default: the
        host of `address`); ssl.SSLError when the server offers no TLS or fails the check."""
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), timeout
        )
        client = cls(reader, writer)
        if tls is not None:
            client.tls, client.server_name = tls, server_name or host.strip("[]")
        try:
            await asyncio.wait_for(
                client.login(user, password, database, first_plugin, capabilities), timeout
            )
        except BaseException:
            client.close()
            raise
        return client

    async def read(self) -> tuple[int, bytes]:
        while not self.pending:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.pending += self.packets.feed(data)
        return self.pending.pop(0)

    def send(self, payload: bytes, seq: int) -> int:
        data, nxt = frame(payload, seq)
        self.writer.write(data)
        return nxt

    async def login(
        self, user: str, password: str, database: str | None, first_plugin: str | None = None,
        capabilities: int | None = None,
    ) -> None:  # fmt: skip
        """The connection phase; `first_plugin` answers the greeting with another plugin than
        the one the server named (the server may then switch, as with any client);
        `capabilities` replaces the default set (the proxy asks for its client's)."""
        seq, payload = await self.read()
        if messages.is_err(payload):
            err = messages.parse_err(payload)
            raise MySQLError.of(err)
        g = self.greeting = handshake.parse_greeting(payload)
        caps = (CAPABILITIES if capabilities is None else capabilities) & g.capabilities
        if not database:
            caps &= ~Capability.CONNECT_WITH_DB
        if self.tls is not None:
            if not g.capabilities & Capability.SSL:
                raise ssl.SSLError("the server does not offer TLS (no CLIENT_SSL in its greeting)")
            caps |= Capability.SSL
            request = handshake.Response(caps, 16 * 1024 * 1024, UTF8MB4_GENERAL_CI,
                                         ssl_request=True)  # fmt: skip
            seq = self.send(handshake.build_response(request), seq + 1) - 1
            await self.writer.drain()
            await self.writer.start_tls(self.tls, server_hostname=self.server_name)
        self.capabilities = caps
        plugin = first_plugin or (g.plugin if g.plugin in auth.PLUGINS else auth.NATIVE)
        salt = g.salt
        response = handshake.Response(
            caps, 16 * 1024 * 1024, UTF8MB4_GENERAL_CI, user,
            auth.token(plugin, password.encode(), salt), database, plugin,
        )  # fmt: skip
        seq = self.send(handshake.build_response(response), seq + 1)
        while True:
            seq, payload = await self.read()
            seq += 1
            if messages.is_ok(payload):
                self.plugin = plugin
                return
            if messages.is_err(payload):
                err = messages.parse_err(payload)
                raise MySQLError.of(err)
            if payload[:1] == b"\xfe":  # auth switch: the server wants another plugin's answer
                plugin, salt = handshake.parse_auth_switch(payload)
                self.switched = True
                if plugin not in auth.PLUGINS:
                    raise MySQLError(1251, "08004", f"unsupported authentication plugin {plugin}")
                self.send(auth.token(plugin, password.encode(), salt), seq)
            elif payload[:1] == b"\x01" and plugin == auth.SHA2:
                if payload[1:2] == bytes((auth.FAST_AUTH_SUCCESS,)):
                    continue  # the OK follows
                if payload[1:2] == bytes((auth.PERFORM_FULL_AUTH,)):
                    self.send(bytes((auth.REQUEST_PUBLIC_KEY,)), seq)
                    seq, key = await self.read()
                    secret = rsa_encrypt(key[1:], auth.xor_password(password.encode(), salt))
                    self.send(secret, seq + 1)
                else:
                    raise Malformed(f"unexpected caching_sha2_password data {payload[:8]!r}")
            else:
                raise Malformed(f"unexpected packet during login: {payload[:8]!r}")
            await self.writer.drain()

    async def run(
        self, command: int, body: bytes, on_packet: Callable[[int, bytes], None]
    ) -> ResponseTracker:
        """Send one command; each packet of its answer goes to `on_packet(seq, payload)` as
        it arrives (no answer at all for COM_STMT_CLOSE and the like)."""
        self.send(bytes((command,)) + body, 0)
        await self.writer.drain()
        tracker = ResponseTracker(command, self.capabilities)
        while not tracker.done:
            seq, payload = await self.read()
            on_packet(seq, payload)
            tracker.feed(payload)
        return tracker

    async def execute(self, command: int, body: bytes = b"") -> tuple[ResponseTracker, list[bytes]]:
        """Send one command; its whole answer (packets) and what the tracker made of it."""
        packets: list[bytes] = []
        tracker = await self.run(command, body, lambda seq, payload: packets.append(payload))
        return tracker, packets

    async def query(self, sql: str) -> ResultSet:
        """A statement's (last) text result set; MySQLError on an error."""
        tracker, packets = await self.execute(Command.QUERY, sql.encode())
        if tracker.error is not None:
            e = tracker.error
            raise MySQLError.of(e)
        return read_result(packets, self.capabilities)

    async def ping(self) -> None:
        tracker, _ = await self.execute(Command.PING)
        if tracker.error is not None:
            e = tracker.error
            raise MySQLError.of(e)

    def close(self) -> None:
        if not self.writer.is_closing():
            try:
                self.send(bytes((Command.QUIT,)), 0)
            except (ConnectionError, RuntimeError):
                pass
            self.writer.close()


def backend_context(cfg: MysqlBackendTlsConfig | None) -> ssl.SSLContext | None:
    """The TLS context for a listener's `backend_tls` (None: cleartext)."""
    if cfg is None:
        return None
    return client_context(cfg.verify, cfg.ca, cert=cfg.cert, key=cfg.key)


def read_result(packets: list[bytes], capabilities: int) -> ResultSet:
    """The first result set among an answer's packets (empty for an OK)."""
    if not packets or packets[0][:1] in (b"\x00", b"\xfe", b"\xff"):
        return ResultSet()
    count = Cursor(packets[0]).lenenc_int() or 0
    result = ResultSet([column_name(p) for p in packets[1 : 1 + count]])
    start = 1 + count + (0 if capabilities & Capability.DEPRECATE_EOF else 1)
    for p in packets[start:]:
        if p[:1] == b"\xfe" or p[:1] == b"\xff":
            break
        result.rows.append(text_row(p, count))
    return result


def rsa_encrypt(pem: bytes, data: bytes) -> bytes:
    """caching_sha2_password's full auth over plain TCP: RSA-OAEP with the server's key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise Malformed("the server's public key is not an RSA key")
    return key.encrypt(data, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))
