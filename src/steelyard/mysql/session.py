"""One client connection to the MySQL proxy: the login, then its commands, one at a time.

The proxy authenticates the client itself (its `users`), then runs each command on a backend
connection borrowed for it: a replica for plain reads, the primary for everything else (see
classify.py). The session's state (database, autocommit, transaction, SET statements) is kept
here and brought to whichever connection it borrows. A connection stays with the session while
a transaction is open, autocommit is off, or state that cannot move pins it (temporary
tables, GET_LOCK, user variables, LOCK TABLES, prepared statements, ...); otherwise it goes back
to the pool after each answer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from steelyard.log import log
from steelyard.mysql.backend import BackendConn
from steelyard.mysql.classify import Route, Tx, classify
from steelyard.mysql.client import MySQLError
from steelyard.mysql.protocol import auth, handshake, messages
from steelyard.mysql.protocol.constants import (
    ER_ACCESS_DENIED_ERROR,
    ER_CON_COUNT_ERROR,
    ER_HANDSHAKE_ERROR,
    ER_HOST_NOT_PRIVILEGED,
    ER_MALFORMED_PACKET,
    ER_NET_PACKET_TOO_LARGE,
    ER_NET_PACKETS_OUT_OF_ORDER,
    ER_TOO_MANY_USER_CONNECTIONS,
    ER_UNKNOWN_COM_ERROR,
    UTF8MB4_GENERAL_CI,
    Capability,
    Command,
    Status,
)
from steelyard.mysql.protocol.packets import PacketReader, PacketTooLarge, frame
from steelyard.mysql.protocol.response import ResponseTracker
from steelyard.mysql.protocol.wire import Malformed

if TYPE_CHECKING:
    from steelyard.mysql.frontend import MysqlFrontend

# What the proxy offers clients; the answer-shaping ones are asked of the backends in turn.
SERVER_CAPS = (
    Capability.LONG_PASSWORD
    | Capability.FOUND_ROWS
    | Capability.LONG_FLAG
    | Capability.CONNECT_WITH_DB
    | Capability.PROTOCOL_41
    | Capability.TRANSACTIONS
    | Capability.SECURE_CONNECTION
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.PLUGIN_AUTH
    | Capability.CONNECT_ATTRS
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.DEPRECATE_EOF
)
BACKEND_BASE = (
    Capability.PROTOCOL_41
    | Capability.SECURE_CONNECTION
    | Capability.PLUGIN_AUTH
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.LONG_PASSWORD
    | Capability.TRANSACTIONS
)
SHAPING = (
    Capability.FOUND_ROWS
    | Capability.LONG_FLAG
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.DEPRECATE_EOF
)
ER_UNKNOWN_ERROR = (1105, "HY000")
# Commands run on a backend connection, and those the session answers itself.
FORWARDED = frozenset({
    Command.QUERY, Command.INIT_DB, Command.FIELD_LIST, Command.STATISTICS,
    Command.STMT_PREPARE, Command.STMT_EXECUTE, Command.STMT_SEND_LONG_DATA,
    Command.STMT_CLOSE, Command.STMT_RESET, Command.STMT_FETCH, Command.SET_OPTION,
})  # fmt: skip
LOCAL = frozenset({Command.QUIT, Command.PING, Command.RESET_CONNECTION})
ER_LOST_BACKEND = (2013, "HY000")


class MysqlSession(asyncio.Protocol):
    def __init__(self, fe: MysqlFrontend) -> None:
        self.fe = fe
        self.cfg = fe.cfg
        self.transport: asyncio.Transport | None = None
        self.packets = PacketReader(self.cfg.max_allowed_packet)
        self.salt = auth.scramble()
        self.peer = "-"
        self.host = ""
        self.user = ""
        self.caps = 0
        self.authed = False
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.runner: asyncio.Task[None] | None = None
        # session state, brought to every connection it borrows
        self.db: str | None = None
        self.sets: tuple[bytes, ...] = ()
        self.autocommit = True
        self.in_tx = False
        self.pinned: str | None = None  # why the session keeps its connection
        self.held: BackendConn | None = None
        self.active: BackendConn | None = None  # running this session's command now

    # connection -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.host = peer[0] if peer else ""
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "-"
        if not self.fe.allowed(self.host):
            self.refuse(
                ER_HOST_NOT_PRIVILEGED,
                f"Host '{self.host}' is not allowed to connect to this MySQL server",
                0,
            )
            return
        if len(self.fe.sessions) >= self.cfg.max_clients:
            self.refuse(ER_CON_COUNT_ERROR, "Too many connections", 0)
            return
        self.fe.sessions.add(self)
        self.runner = self.fe.loop.create_task(self.run())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.fe.sessions.discard(self)
        if self.authed:
            self.fe.users_left(self.user)
        if self.runner is not None:
            self.runner.cancel()
        for conn in (self.held, self.active):
            if conn is not None:
                conn.close()  # mid-answer, or holding a transaction: it dies with its client
        self.held = self.active = None

    def write(self, payload: bytes, seq: int) -> int:
        data, nxt = frame(payload, seq)
        if self.transport is not None:
            self.transport.write(data)
        return nxt

    def refuse(self, code: tuple[int, str], message: str, seq: int) -> None:
        log("mysql_refused", "warn", peer=self.peer, user=self.user or None, error=message)
        self.write(messages.error(code, message), seq)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.packets.feed(data)
        except PacketTooLarge:
            self.refuse(
                ER_NET_PACKET_TOO_LARGE,
                "Got a packet bigger than 'max_allowed_packet' bytes",
                self.packets.last_seq + 1,
            )
            return
        for seq, payload in packets:
            if not self.authed:
                self.login(seq, payload)
            elif seq != 0:
                # A command starts a new exchange at 0: anything else is out of step.
                self.refuse(ER_NET_PACKETS_OUT_OF_ORDER, "Got packets out of order", seq + 1)
                return
            else:
                self.inbox.put_nowait(payload)

    # login ------------------------------------------------------------------------------------

    pending_switch: handshake.Response | None = None

    def login(self, seq: int, payload: bytes) -> None:
        if self.pending_switch is not None:
            response, self.pending_switch = self.pending_switch, None
            self.check_password(response, auth.NATIVE, payload, seq + 1)
            return
        try:
            response = handshake.parse_response(payload)
        except Malformed:
            self.refuse(ER_HANDSHAKE_ERROR, "Bad handshake", seq + 1)
            return
        if response.ssl_request:
            self.refuse(ER_HANDSHAKE_ERROR, "Bad handshake: TLS is not offered", seq + 1)
            return
        self.caps = response.capabilities & SERVER_CAPS
        self.user = response.user
        self.db = response.database or None
        plugin = response.plugin or auth.NATIVE
        if plugin not in auth.PLUGINS:
            # Ask for a scramble we can check, on a fresh salt (as a server does).
            self.salt = auth.scramble()
            self.pending_switch = response
            self.write(handshake.auth_switch(auth.NATIVE, self.salt), seq + 1)
            return
        self.check_password(response, plugin, response.auth, seq + 1)

    def check_password(
        self, response: handshake.Response, plugin: str, answer: bytes, seq: int
    ) -> None:
        user = self.fe.users.get(response.user)
        ok = user is not None and (
            auth.verify(plugin, user.password.encode(), self.salt, answer)
            if user.password
            else answer == b""
        )
        if not ok:
            using = "YES" if answer else "NO"
            self.refuse(
                ER_ACCESS_DENIED_ERROR,
                f"Access denied for user '{response.user}'@'{self.host}' (using password: {using})",
                seq,
            )
            return
        assert user is not None
        if not self.fe.users_take(user.name, user.max_connections):
            self.refuse(
                ER_TOO_MANY_USER_CONNECTIONS,
                f"User {user.name} already has more than 'max_user_connections' active connections",
                seq,
            )
            return
        self.authed = True
        if plugin == auth.SHA2:
            seq = self.write(handshake.more_data(bytes((auth.FAST_AUTH_SUCCESS,))), seq)
        self.login_seq = seq
        self.inbox.put_nowait(None)  # the runner finishes the login (the database, if any)

    login_seq = 0

    # commands ---------------------------------------------------------------------------------

    async def greet(self) -> None:
        """The greeting names the backends' own server version, so clients pick what that
        server knows (a MySQL 8 client sends utf8mb4_0900_ai_ci to a MySQL 8, not to MariaDB)."""
        greeting = handshake.Greeting(
            await self.fe.server_version(), self.fe.next_id(), self.salt, SERVER_CAPS,
            UTF8MB4_GENERAL_CI, Status.AUTOCOMMIT, auth.SHA2,
        )  # fmt: skip
        self.write(handshake.build_greeting(greeting), 0)

    async def run(self) -> None:
        try:
            await self.greet()
            await self.inbox.get()  # None: the password was right, the login goes on here
            await self.finish_login()
            while self.transport is not None:
                payload = await self.inbox.get()
                assert payload is not None
                await self.command(payload)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug must not leave the client hanging
            log("mysql_session_error", "error", peer=self.peer, cause=repr(exc))
            if self.transport is not None:
                self.transport.close()

    async def finish_login(self) -> None:
        if self.db:
            try:
                conn = await self.borrow(Route.PRIMARY)
                await conn.sync(self.db, self.sets)
                self.give_back(conn, Status.AUTOCOMMIT)
            except MySQLError as exc:
                self.refuse((exc.code, exc.sqlstate), exc.message, self.login_seq)
                return
            except (OSError, ConnectionError, TimeoutError) as exc:
                self.refuse(
                    ER_LOST_BACKEND, f"No backend server is reachable: {exc}", self.login_seq
                )
                return
        self.write(messages.ok(messages.Ok(), self.caps), self.login_seq)

    async def command(self, payload: bytes) -> None:
        if not payload:
            self.write(messages.error(ER_MALFORMED_PACKET, "Malformed communication packet"), 1)
            return
        command = payload[0]
        if command not in FORWARDED and command not in LOCAL:
            # Replication, shutdown, kill and the like have no place through a pooling proxy.
            self.write(messages.error(ER_UNKNOWN_COM_ERROR, "Unknown command"), 1)
            return
        if command == Command.QUIT:
            if self.transport is not None:
                self.transport.close()
            return
        if command == Command.PING:
            self.write(messages.ok(messages.Ok(status=self.status()), self.caps), 1)
            return
        if command == Command.QUERY:
            await self.query(payload)
            return
        if command == Command.RESET_CONNECTION:
            self.sets, self.autocommit, self.in_tx, self.pinned = (), True, False, None
            if self.held is not None:
                held, self.held = self.held, None
                held.close()
            self.write(messages.ok(messages.Ok(status=self.status()), self.caps), 1)
            return
        if command == Command.INIT_DB:
            st = await self.forward(payload, Route.PRIMARY)
            if st is not None and st.error is None:
                self.db = payload[1:].decode("utf-8", "replace")
                if self.held is not None:
                    self.held.db = self.db
            return
        if command == Command.STMT_PREPARE:
            self.pinned = self.pinned or "prepared statements"
        await self.forward(payload, Route.PRIMARY)

    async def query(self, payload: bytes) -> None:
        st = classify(payload[1:])
        if self.cfg.firewall.block_unbounded_writes and st.unbounded_write:
            self.write(
                messages.error(
                    ER_UNKNOWN_ERROR,
                    f"{st.keyword} without WHERE is "
                    "refused by the proxy (firewall.block_unbounded_writes)",
                ),
                1,
            )
            return
        route = st.route
        if st.pins:
            self.pinned = self.pinned or st.pins
        t = await self.forward(payload, route)
        if t is None or t.error is not None:
            return
        if st.database is not None:
            self.db = st.database
            if self.held is not None:
                self.held.db = st.database
        if st.sets and st.autocommit is None:
            self.sets = (*self.sets, payload[1:])
            if self.held is not None:
                self.held.sets = self.sets
        if st.unpins and st.pins is None:
            self.pinned = None
        if st.tx is Tx.END and self.held is not None and not self.pinned:
            self.release_held()

    def status(self) -> Status:
        s = Status(0)
        if self.autocommit:
            s |= Status.AUTOCOMMIT
        if self.in_tx:
            s |= Status.IN_TRANS
        return s

    async def forward(self, payload: bytes, route: Route) -> ResponseTracker | None:
        """Run a client command on a backend connection, its answer straight to the client."""
        keep = self.in_tx or not self.autocommit or self.pinned is not None
        conn = self.held
        if conn is None:
            if keep:
                route = Route.PRIMARY
            try:
                conn = await self.borrow(route)
                await conn.sync(self.db, self.sets)
                if route is Route.REPLICA and self.last_gtid and conn.replica:
                    conn = await self.caught_up(conn)
            except MySQLError as exc:
                self.write(messages.error((exc.code, exc.sqlstate), exc.message), 1)
                return None
            except (OSError, ConnectionError, TimeoutError) as exc:
                self.write(
                    messages.error(ER_LOST_BACKEND, f"Lost connection to backend server: {exc}"), 1
                )
                return None
        self.active = conn
        try:
            t = await conn.run(payload[0], payload[1:], lambda seq, p: self.write(p, seq))
        except (OSError, ConnectionError, Malformed) as exc:
            self.active = None
            conn.close()
            self.held = None
            self.in_tx = False
            self.write(
                messages.error(
                    ER_LOST_BACKEND,
                    f"Lost connection to backend server {conn.address} during query: {exc}",
                ),
                1,
            )
            return None
        self.active = None
        if t.status is not None:
            self.in_tx = bool(t.status & Status.IN_TRANS)
            self.autocommit = bool(t.status & Status.AUTOCOMMIT)
        if (
            self.cfg.causal_reads and not conn.replica and t.error is None
            and route is Route.PRIMARY and not self.in_tx
        ):  # fmt: skip
            # What this session wrote (if it wrote): its reads on replicas wait for it.
            try:
                gtid = await conn.value(b"SELECT @@last_gtid")
            except (OSError, ConnectionError, Malformed, MySQLError):
                gtid = None
                conn.close()
            if gtid:
                self.last_gtid = gtid.decode()
        if self.in_tx or not self.autocommit or self.pinned is not None:
            self.held = conn
        else:
            self.held = None
            self.give_back(conn, t.status if t.status is not None else self.status())
        return t

    async def caught_up(self, conn: BackendConn) -> BackendConn:
        """Causal reads: a replica answers once it has applied this session's last write
        (MASTER_GTID_WAIT); one that cannot within causal_reads_timeout gives way to the
        primary."""
        timeout = self.cfg.causal_reads_timeout
        got = await conn.value(
            b"SELECT MASTER_GTID_WAIT('%s', %.3f)" % (self.last_gtid.encode(), timeout)
        )
        if got == b"0":
            return conn
        self.give_back(conn, Status.AUTOCOMMIT)
        primary = await self.borrow(Route.PRIMARY)
        await primary.sync(self.db, self.sets)
        return primary

    last_gtid = ""  # the GTID of this session's last write (causal_reads)

    async def borrow(self, route: Route) -> BackendConn:
        return await self.fe.server_pool(route, self.caps).acquire()

    def give_back(self, conn: BackendConn, status: Status | None) -> None:
        pool = self.fe.backend_pools.get((conn.address, self.caps & SHAPING))
        if pool is None:
            conn.close()
        else:
            pool.release(conn, status)

    def release_held(self) -> None:
        conn, self.held = self.held, None
        if conn is not None:
            self.give_back(conn, self.status())
