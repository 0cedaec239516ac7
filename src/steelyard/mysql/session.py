"""One client connection to the MySQL proxy: the login, then its commands, one at a time.

The proxy authenticates the client itself (its `users`), then runs each command on a backend
connection borrowed for it: a replica for plain reads, the primary for everything else (see
classify.py). The session's state (database, autocommit, transaction, SET statements) is kept
here and brought to whichever connection it borrows. A connection stays with the session while
a transaction is open, autocommit is off, a cursor is open, or state that cannot move pins it
(temporary tables, GET_LOCK, user variables, LOCK TABLES, a text PREPARE, ...); otherwise it
goes back to the pool after each answer. A connection on which the session may have left state
it does not follow (classify.py's `dirties`, or the server's SERVER_SESSION_STATE_CHANGED for a
statement that does not explain it) stays with the session, and is reset before it goes back to
the pool (backend.py); so is whatever connection the session kept when it ends.

Prepared statements belong to the session, not to a connection: the client gets the proxy's
own statement ids, and a statement is prepared on each connection it runs on (connections
keep what was prepared on them, see backend.py), the id mapped on the way. Parameter types
are sent with every execution and long data is kept until the execution, so neither depends
on which connection ran the statement before.

A LOAD DATA LOCAL INFILE (the listener's `local_infile`) keeps its connection while the client's
file goes up; which requests for a file reach the client, and how the file streams, is
infile.py's.

Before login a client may send 16 KiB packets at most and must log in within login_timeout;
once logged in, one idle for idle_timeout is closed (both without a word, as MariaDB does), and
one that pipelines commands behind a slow one is read at most 1 MiB ahead. The listener checks
the timeouts every second: no timer per connection.

The common case takes no coroutine: a command whose connection is at hand (held, or idle in
the pool and already in the session's state) is written at once and its answer passed through
as raw bytes. Anything that must wait (a new connection, a state sync, a prepare, the
causal-read wait) runs as a task; commands that arrive meanwhile queue up.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from steelyard.log import log
from steelyard.mysql import infile, processlist, sessionid
from steelyard.mysql.backend import BackendConn, Prepared, ServerPool
from steelyard.mysql.classify import Route, Statement, classify
from steelyard.mysql.client import MySQLError
from steelyard.mysql.protocol import auth, handshake, messages
from steelyard.mysql.protocol.constants import (
    CR_SERVER_LOST,
    ER_ACCESS_DENIED_ERROR,
    ER_CON_COUNT_ERROR,
    ER_HANDSHAKE_ERROR,
    ER_HOST_NOT_PRIVILEGED,
    ER_MALFORMED_PACKET,
    ER_MAX_PREPARED_STMT_COUNT_REACHED,
    ER_NET_PACKET_TOO_LARGE,
    ER_NET_PACKETS_OUT_OF_ORDER,
    ER_SECURE_TRANSPORT_REQUIRED,
    ER_STMT_HAS_NO_OPEN_CURSOR,
    ER_TOO_MANY_USER_CONNECTIONS,
    ER_UNKNOWN_COM_ERROR,
    ER_UNKNOWN_ERROR,
    ER_UNKNOWN_STMT_HANDLER,
    ER_UNSUPPORTED_PS,
    ER_WRONG_ARGUMENTS,
    MAX_PAYLOAD,
    UTF8MB4_GENERAL_CI,
    Capability,
    Command,
    Status,
)
from steelyard.mysql.protocol.packets import HEADER, PacketReader, PacketTooLarge, frame
from steelyard.mysql.protocol.response import ResponseTracker
from steelyard.mysql.protocol.wire import Malformed
from steelyard.mysql.tls import upgrade

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
    | Capability.SESSION_TRACK
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
SHAPING = int(
    Capability.FOUND_ROWS
    | Capability.LONG_FLAG
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.SESSION_TRACK
    | Capability.DEPRECATE_EOF
)
CONNECT_ATTEMPTS = 3  # servers tried for a new backend connection before the client is told
# Commands run on a backend connection as they are (the rest is the session's own).
PASSED = frozenset({Command.INIT_DB, Command.FIELD_LIST, Command.STATISTICS, Command.SET_OPTION})
SSL_REQUEST_HEADER = b"\x20\x00\x00\x01"  # a 32-byte packet, sequence id 1: an SSLRequest
LAST_PREPARED = 0xFFFFFFFF  # MariaDB: "the statement prepared last" (prepare + execute at once)
CURSOR_FLAGS = 0x07  # COM_STMT_EXECUTE flags asking for a cursor
# The largest packet read before the client has logged in: a login (attributes included) is a
# few hundred bytes, and nothing else is buffered for a client nobody knows yet.
LOGIN_PACKET_LIMIT = 16 * 1024
# Commands read ahead of the one under way (pipelined) before the client is read no more.
QUEUE_LIMIT = 1 << 20

# Status flags as plain ints: IntFlag arithmetic costs microseconds on the data path.
AUTOCOMMIT, IN_TRANS = int(Status.AUTOCOMMIT), int(Status.IN_TRANS)
CURSOR_EXISTS, LAST_ROW_SENT = int(Status.CURSOR_EXISTS), int(Status.LAST_ROW_SENT)
LOCAL_FILES = int(Capability.LOCAL_FILES)

After = Callable[[BackendConn, ResponseTracker], None]


class ClientStatement:
    """A statement the client prepared: what it takes to run it on any connection."""

    __slots__ = (
        "bad_param", "db", "dirties", "long_data", "params", "route", "sql", "too_long", "types"
    )  # fmt: skip

    def __init__(
        self, sql: bytes, db: str | None, route: Route, params: int, dirties: bool = False
    ) -> None:
        self.sql = sql
        self.db = db  # the database it was prepared in (its table names mean tables there)
        self.route = route
        self.dirties = dirties  # running it may leave state the session does not follow
        self.params = params
        self.types: bytes | None = None  # parameter types from the last execution that sent them
        self.long_data: dict[int, bytearray] = {}  # COM_STMT_SEND_LONG_DATA, until executed
        self.too_long = False
        self.bad_param = False  # long data for a parameter it does not have (told at execute)


class MysqlSession(asyncio.Protocol):
    def __init__(self, fe: MysqlFrontend) -> None:
        self.fe = fe
        self.cfg = fe.cfg
        self.id = 0  # the proxy's id of the session (sessionid.py)
        # what SHOW PROCESSLIST shows: the command under way, since when (the listener's clock)
        self.doing = 0
        self.current = b""
        self.since = fe.now
        self.transport: asyncio.Transport | None = None
        self.packets = PacketReader(LOGIN_PACKET_LIMIT)  # max_allowed_packet once logged in
        self.started = self.last_active = time.monotonic()  # (the login and idle timeouts)
        self.heard = False  # bytes came since the last sweep (no clock read per read)
        self.last_heard = self.started  # when a sweep last saw bytes had come
        self.write_paused = 0.0  # since when the client reads nothing of its answer (0: it does)
        self.salt = auth.scramble()
        self.peer = "-"
        self.host = ""
        self.user = ""
        self.caps = 0
        self.authed = False
        self.lost = False
        # commands waiting: payload, and the packet as it came when it came whole in one read
        self.queue: deque[tuple[bytes, bytes | None]] = deque()
        self.queued = 0  # bytes in the queue
        self.read_paused = False
        self.whole_limit = min(MAX_PAYLOAD, self.cfg.max_allowed_packet + 1)
        self.framed: bytes | None = None  # the command under way, as it came
        self.busy = True  # a command is under way (or the login): the next ones wait
        self.pumping = False
        self.task: asyncio.Task[None] | None = None
        # session state, brought to every connection it borrows
        self.db: str | None = None
        self.sets: tuple[bytes, ...] = ()
        self.autocommit = True
        self.in_tx = False
        self.pinned: str | None = None  # why the session keeps its connection
        self.held: BackendConn | None = None
        self.active: BackendConn | None = None  # running this session's command now
        self.statements: dict[int, ClientStatement] = {}
        self.long_bytes = 0  # long data kept for all its statements (max_allowed_packet at most)
        self.stmt_ids = itertools.count(1)
        self.last_prepared = 0
        self.cursors: set[int] = set()  # statements with an open cursor (on the held connection)
        self.last_gtid = ""  # the GTID of this session's last write (causal_reads)
        # the command under way
        self.route = Route.PRIMARY
        self.after: After | None = None
        self.statement: Statement | None = None
        self.executing = 0  # the client statement id being executed or fetched
        # the command under way may leave state on its connection the session cannot follow
        self.dirtying = False
        self.explained = False  # ... or changes state the session follows (USE, SET)

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
        self.id = self.fe.next_id()
        self.fe.by_id[self.id] = self
        self.spawn(self.greet())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.transport = None
        self.fe.sessions.discard(self)
        if self.fe.by_id.get(self.id) is self:
            del self.fe.by_id[self.id]
        if self.authed:
            self.fe.users_left(self.user)
        if self.task is not None:
            self.task.cancel()
        active, held = self.active, self.held
        self.held = self.active = None
        if active is not None:
            active.close()  # mid-answer: what is left on the wire is unknown
        if held is not None and held is not active:
            self.recycle(held)  # a transaction, locks, session state: undone before reuse

    def pause_writing(self) -> None:
        self.write_paused = time.monotonic()
        if self.active is not None:
            self.active.pause_answer()

    def resume_writing(self) -> None:
        self.write_paused = 0.0
        if self.active is not None:
            self.active.resume_answer()

    def write(self, payload: bytes, seq: int) -> int:
        data, nxt = frame(payload, seq)
        if self.transport is not None:
            self.transport.write(data)
        return nxt

    def close_now(self, abort: bool = False) -> None:
        """Closed by a KILL (processlist.py); `abort`: without sending what is written."""
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()  # (its own KILL's answer goes out first)
        self.connection_lost(None)

    def refuse(self, code: tuple[int, str], message: str, seq: int) -> None:
        log("mysql_refused", "warn", peer=self.peer, user=self.user or None, error=message)
        self.fe.stats.refused += 1
        self.write(messages.error(code, message), seq)
        if self.transport is not None:
            self.transport.close()

    def expired(self, now: float) -> str | None:
        """Which timeout the session ran out of, if any (checked every second by the
        listener, so no timer is kept per connection)."""
        if self.heard:
            self.heard = False
            self.last_active = self.last_heard = now
        if self.write_paused and now - self.write_paused > self.cfg.write_timeout:
            return "write_timeout"  # answered or not, its answer sits here unread
        if self.busy and self.authed:
            self.last_active = now  # a command under way is no idle time
            if self.upload is not None and now - self.last_heard > self.cfg.read_timeout:
                return "read_timeout"
            return None
        if not self.authed and self.changing_from is None:
            if now - self.started > self.cfg.login_timeout:  # a trickle of bytes counts not
                return "login_timeout"
        elif self.cfg.idle_timeout and now - self.last_active > self.cfg.idle_timeout:
            return "idle_timeout"
        return None

    def time_out(self, which: str) -> None:
        """Closed without a word, as MariaDB does on connect_timeout and wait_timeout."""
        log("mysql_timeout", "info", peer=self.peer, user=self.user or None, timeout=which)
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(None)

    def data_received(self, data: bytes) -> None:
        self.heard = True
        if self.upload is not None:  # a file the server asked for: it goes up as it comes
            self.upload.feed(data)
            return
        if not self.authed and data[:4] == SSL_REQUEST_HEADER and not self.packets.buffered():
            # The client's TLS ClientHello may be in this read too: it is not a packet.
            end = HEADER + handshake.SSL_REQUEST_LEN
            self.login(1, data[HEADER:end], data[end:])
            return
        if self.authed and len(data) > HEADER and not data[3] and not self.packets.buffered():
            length = data[0] | data[1] << 8 | data[2] << 16
            if length + HEADER == len(data) and length < self.whole_limit:
                # One whole command, as clients send them: it goes on as it came.
                if self.busy or self.queue:
                    self.queue.append((data[HEADER:], data))
                    self.queued += length
                    if not self.busy:
                        self.pump()
                    self.check_queue()
                elif self.transport is not None:
                    self.busy = True
                    self.framed = data
                    self.command(data[HEADER:])
                return
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
                tls = self.tls
                self.login(seq, payload)
                if self.tls != tls:
                    return  # what followed the SSLRequest went to TLS
            elif seq != 0:
                # A command starts a new exchange at 0: anything else is out of step.
                self.refuse(ER_NET_PACKETS_OUT_OF_ORDER, "Got packets out of order", seq + 1)
                return
            else:
                self.queue.append((payload, None))
                self.queued += len(payload)
        if not self.busy:
            self.pump()
        self.check_queue()

    def check_queue(self) -> None:
        """Stop reading a client whose pipelined commands pile up behind a slow one; read it
        again once they have run."""
        if self.queued > QUEUE_LIMIT:
            if not self.read_paused and self.transport is not None:
                self.read_paused = True
                self.transport.pause_reading()
        elif self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a step that must wait; it ends the command itself (done(), or a handover to a
        backend connection whose answer does)."""
        self.task = self.fe.loop.create_task(self._guard(coro))

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug must not leave the client hanging
            log("mysql_session_error", "error", peer=self.peer, cause=repr(exc))
            if self.transport is not None:
                self.transport.close()

    def pump(self) -> None:
        if self.pumping:
            return  # done() inside a command started here: this loop goes on
        self.pumping = True
        try:
            while self.queue and not self.busy and self.transport is not None:
                self.busy = True
                payload, self.framed = self.queue.popleft()
                self.queued -= len(payload)
                self.command(payload)
        finally:
            self.pumping = False
        if self.read_paused:
            self.check_queue()

    def done(self) -> None:
        """The command under way is answered: the next one may start."""
        self.busy = False
        self.since = self.fe.now  # asleep
        self.current = b""
        self.after = self.statement = None
        self.dirtying = self.explained = False
        if self.queue:
            self.pump()

    def reply_error(self, code: tuple[int, str], message: str) -> None:
        self.fe.stats.proxy_errors += 1
        self.write(messages.error(code, message), 1)
        self.done()

    def reply_ok(self) -> None:
        self.write(messages.ok(messages.Ok(status=self.status()), self.caps), 1)
        self.done()

    # login ------------------------------------------------------------------------------------

    pending_switch: handshake.Response | None = None  # asked for another scramble of it
    pending_plugin = auth.NATIVE
    login_seq = 0

    async def greet(self) -> None:
        """The greeting names the backends' own server version, so clients pick what that
        server knows (a MySQL 8 client sends utf8mb4_0900_ai_ci to a MySQL 8, not to MariaDB),
        and its default authentication plugin, which clients then answer with (no switch)."""
        greeting = handshake.Greeting(
            await self.fe.server_version(), self.id, self.salt,
            SERVER_CAPS | self.fe.local_files | (Capability.SSL if self.fe.tls_context else 0),
            UTF8MB4_GENERAL_CI, Status.AUTOCOMMIT, self.fe.plugin,
        )  # fmt: skip
        self.write(handshake.build_greeting(greeting), 0)

    def login(self, seq: int, payload: bytes, read_on: bytes = b"") -> None:
        """A packet of the login; `read_on`: bytes read behind it (a TLS ClientHello)."""
        if self.pending_switch is not None:
            response, self.pending_switch = self.pending_switch, None
            self.check_password(response, self.pending_plugin, payload, seq + 1)
            return
        try:
            response = handshake.parse_response(payload)
        except Malformed:
            self.refuse(ER_HANDSHAKE_ERROR, "Bad handshake", seq + 1)
            return
        if response.ssl_request:
            self.start_tls(seq, read_on + self.packets.take_rest())
            return
        if self.fe.tls_required and not self.tls:
            self.refuse(
                ER_SECURE_TRANSPORT_REQUIRED,
                "Connections using insecure transport are prohibited while "
                "--require_secure_transport=ON.",
                seq + 1,
            )
            return
        # a plain int: used per command
        self.caps = int(response.capabilities & (SERVER_CAPS | self.fe.local_files))
        self.user = response.user
        self.db = response.database or None
        plugin = response.plugin or auth.NATIVE
        if plugin not in auth.PLUGINS:
            # Ask for a scramble we can check, on a fresh salt (as a server does).
            self.salt = auth.scramble()
            self.pending_switch, self.pending_plugin = response, auth.NATIVE
            self.write(handshake.auth_switch(auth.NATIVE, self.salt), seq + 1)
            return
        self.check_password(response, plugin, response.auth, seq + 1)

    def start_tls(self, seq: int, read_on: bytes) -> None:
        context = self.fe.tls_context
        if context is None or self.tls or self.transport is None:
            self.refuse(ER_HANDSHAKE_ERROR, "Bad handshake: TLS is not offered", seq + 1)
            return
        self.tls = True
        self.transport, handshake_done = upgrade(self.transport, self, context, read_on)
        self.spawn(self.tls_handshake(handshake_done))

    async def tls_handshake(self, done: asyncio.Future[None]) -> None:
        try:
            await done
        except Exception as exc:  # the TLS layer closed the connection
            log("mysql_tls_failed", "warn", peer=self.peer, cause=str(exc) or repr(exc))
            self.connection_lost(exc)

    tls = False  # the connection carries TLS

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
            self.login_failed(
                ER_ACCESS_DENIED_ERROR,
                f"Access denied for user '{response.user}'@'{self.host}' (using password: {using})",
                seq,
            )
            return
        assert user is not None
        if self.changing_from is not None:
            self.fe.users_left(self.changing_from[0])
        if not self.fe.users_take(user.name, user.max_connections):
            if self.changing_from is not None:
                self.fe.users_take(self.changing_from[0], 0)
            self.login_failed(
                ER_TOO_MANY_USER_CONNECTIONS,
                f"User {user.name} already has more than 'max_user_connections' active connections",
                seq,
            )
            return
        self.authed = True
        self.packets.max_packet = self.cfg.max_allowed_packet
        if plugin == auth.SHA2:
            seq = self.write(handshake.more_data(bytes((auth.FAST_AUTH_SUCCESS,))), seq)
        self.login_seq = seq
        if response.charset:
            self.charset = response.charset
        if self.db or self.charset != UTF8MB4_GENERAL_CI:
            self.spawn(self.finish_login())  # the database must exist, the charset be known
        else:
            self.changing_from = None
            self.write(messages.ok(messages.Ok(), self.caps), seq)
            self.done()

    def login_failed(self, code: tuple[int, str], message: str, seq: int) -> None:
        """A login is refused and the connection closed; a failed COM_CHANGE_USER leaves the
        connection to the user it had (as MariaDB does), in a fresh session."""
        if self.changing_from is None:
            self.refuse(code, message, seq)
            return
        log("mysql_refused", "warn", peer=self.peer, user=self.user or None, error=message)
        if self.authed:  # the password was right, the database not: the counts go back
            self.fe.users_left(self.user)
            self.fe.users_take(self.changing_from[0], 0)
        (self.user, self.db), self.changing_from = self.changing_from, None
        self.authed = True
        self.write(messages.error(code, message), seq)
        self.done()

    changing_from: tuple[str, str | None] | None = None  # COM_CHANGE_USER: the user and db before

    def change_user(self, payload: bytes) -> None:
        """COM_CHANGE_USER: a new login on the same connection, and a fresh session (as
        COM_RESET_CONNECTION) for the new user. As MariaDB, the proxy always asks for a
        scramble of a fresh salt (clients differ on which salt the command's own answers)."""
        try:
            response = handshake.parse_change_user(payload, self.caps)
        except Malformed:  # MariaDB's own answer to a COM_CHANGE_USER it cannot read
            self.reply_error(ER_UNKNOWN_COM_ERROR, "Unknown command")
            return
        self.changing_from = (self.user, self.db)
        self.reset_state()
        self.authed = False
        self.last_gtid = ""
        self.user = response.user
        self.db = response.database
        plugin = response.plugin if response.plugin in auth.PLUGINS else auth.NATIVE
        self.salt = auth.scramble()
        self.pending_switch, self.pending_plugin = response, plugin
        self.write(handshake.auth_switch(plugin, self.salt), 1)

    async def finish_login(self) -> None:
        try:
            conn = await self.borrow(Route.PRIMARY)
            try:
                self.sets = self.login_sets = await self.charset_sets(conn)
                await conn.sync(self.db, self.sets)
            except BaseException:
                conn.close()
                raise
            self.give_back(conn, Status.AUTOCOMMIT)
        except MySQLError as exc:
            self.login_failed(exc.code_state, exc.message, self.login_seq)
            return
        except (OSError, ConnectionError, TimeoutError) as exc:
            self.login_failed(
                CR_SERVER_LOST, f"No backend server is reachable: {exc}", self.login_seq
            )
            return
        self.changing_from = None
        self.write(messages.ok(messages.Ok(), self.caps), self.login_seq)
        self.done()

    async def charset_sets(self, conn: BackendConn) -> tuple[bytes, ...]:
        """The client's character set (its login's collation id) as a SET NAMES every
        connection it borrows runs: backend connections log in as utf8mb4."""
        if self.charset == UTF8MB4_GENERAL_CI:
            return ()
        names = self.fe.collations.get(self.charset)
        if names is None:
            row = await conn.row(
                b"SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS "
                b"WHERE ID = %d" % self.charset
            )
            names = (row[0] or b"", row[1] or b"") if row else (b"", b"")
            self.fe.collations[self.charset] = names
        if not names[0]:
            return ()  # an id the server does not know: the server's default, as direct
        return (b"SET NAMES '%s' COLLATE '%s'" % names,)

    charset = UTF8MB4_GENERAL_CI  # the collation id the client logged in with
    login_sets: tuple[bytes, ...] = ()  # what its login implies (SET NAMES)

    # commands ---------------------------------------------------------------------------------

    def command(self, payload: bytes) -> None:
        if not payload:
            self.reply_error(ER_MALFORMED_PACKET, "Malformed communication packet")
            return
        command = payload[0]
        self.doing, self.current, self.since = command, payload, self.fe.now
        if command == Command.QUERY:
            self.query(payload)
        elif command == Command.STMT_EXECUTE:
            self.execute(payload)
        elif command == Command.PING:
            self.reply_ok()
        elif command == Command.QUIT:
            if self.transport is not None:
                self.transport.close()
        elif command in PASSED:
            if command == Command.SET_OPTION:
                # multi-statements on or off: a connection's own setting, it cannot move
                self.pinned = self.pinned or "COM_SET_OPTION"
            self.after = (
                self.after_init_db if command == Command.INIT_DB
                else self.after_set_option if command == Command.SET_OPTION
                else None
            )  # fmt: skip
            self.dirtying = command == Command.SET_OPTION
            self.explained = command == Command.INIT_DB
            self.start(payload, Route.PRIMARY)
        elif command == Command.STMT_PREPARE:
            self.prepare_now(payload[1:])
        elif command in (Command.STMT_CLOSE, Command.STMT_RESET, Command.STMT_SEND_LONG_DATA):
            self.statement_local(command, payload)
        elif command == Command.STMT_FETCH:
            self.fetch(payload)
        elif command == Command.CHANGE_USER:
            self.change_user(payload)
        elif command == Command.RESET_CONNECTION:
            self.reset_state()
            self.reply_ok()
        elif command == Command.PROCESS_KILL:
            processlist.process_kill(self, payload)
        elif command == Command.PROCESS_INFO:
            self.spawn(processlist.show(self, False))
        else:
            # Replication, shutdown and the like have no place through a pooling proxy.
            self.reply_error(ER_UNKNOWN_COM_ERROR, "Unknown command")

    def reset_state(self) -> None:
        self.sets, self.autocommit, self.in_tx, self.pinned = self.login_sets, True, False, None
        self.statements.clear()
        self.long_bytes = 0
        self.cursors.clear()
        if self.held is not None:
            held, self.held = self.held, None
            self.recycle(held)

    def query(self, payload: bytes) -> None:
        st = classify(payload[1:])
        if st.connection_id:  # CONNECTION_ID() is the session's id (the route stays)
            payload, self.framed = b"\x03" + sessionid.rewrite(payload[1:], self.id), None
        if st.keyword in processlist.KEYWORDS and processlist.statement(self, payload[1:], st):
            return  # SHOW PROCESSLIST, KILL: the proxy's sessions
        if self.cfg.firewall.block_unbounded_writes and st.unbounded_write:
            self.reply_error(
                ER_UNKNOWN_ERROR,
                f"{st.keyword} without WHERE is refused by the proxy "
                "(firewall.block_unbounded_writes)",
            )
            return
        self.local_file = payload[1:] if st.local_file else None
        if st.local_file and not self.caps & LOCAL_FILES:
            infile.refuse_now(self)
            return
        if st.pins:
            self.pinned = self.pinned or st.pins
        self.dirtying = st.dirties
        self.explained = st.changes_session or st.autocommit is not None
        if st.changes_session:
            self.statement = st
            self.sql = payload[1:]
            self.after = self.after_query
        self.start(payload, st.route)

    def after_query(self, conn: BackendConn, t: ResponseTracker) -> None:
        st = self.statement
        assert st is not None
        if t.error is not None:
            return
        if st.database is not None:
            self.db = conn.db = st.database
        if st.sets and st.autocommit is None:
            self.sets = conn.sets = (*self.sets, self.sql)
        if st.unpins and st.pins is None:
            self.pinned = None

    def after_init_db(self, conn: BackendConn, t: ResponseTracker) -> None:
        if t.error is None:
            self.db = conn.db = self.sent_db

    def after_set_option(self, conn: BackendConn, t: ResponseTracker) -> None:
        # COM_RESET_CONNECTION leaves the option as it is: the connection is never reused
        conn.reusable = False

    sent_db: str | None = None
    sql = b""  # the text of the query under way
    local_file: bytes | None = None  # the query under way, when a LOAD DATA / XML LOCAL
    upload: infile.LocalInfile | None = None  # the client's file going up to the server

    def infile_asked(self, conn: BackendConn, request: bytes, cut: bool) -> None:
        infile.asked(self, conn, request, cut)

    def status(self) -> int:
        return (AUTOCOMMIT if self.autocommit else 0) | (IN_TRANS if self.in_tx else 0)

    def keeps(self) -> bool:
        """Whether the session keeps its connection between commands."""
        return (
            self.in_tx or not self.autocommit or self.pinned is not None or bool(self.cursors)
            or (self.held is not None and self.held.dirty)
        )  # fmt: skip

    # running a command on a connection ---------------------------------------------------------

    def ready(self, route: Route) -> BackendConn | None:
        """A connection for `route` that needs no waiting: the one held, or an idle one already
        in the session's state; None when one must be made ready (a task)."""
        conn = self.held
        if conn is not None:
            return conn
        if self.keeps():
            route = Route.PRIMARY
        elif route is Route.REPLICA and self.last_gtid:
            return None  # causal reads: the replica must catch up first
        try:
            pool = self.fe.server_pool(route, self.caps)
        except ConnectionError:
            return None  # the task reports it
        conn = pool.take(self.db, self.sets)
        if conn is None:
            self.picked = pool  # the server chosen: the task borrows there (rotation kept)
        return conn

    picked: ServerPool | None = None

    def start(self, payload: bytes, route: Route) -> None:
        """Run a client command, its answer passed through, on the connection at hand or on one
        made ready for it."""
        if payload[0] == Command.INIT_DB:
            self.sent_db = payload[1:].decode("utf-8", "replace")
        conn = self.ready(route)
        if conn is None:
            self.spawn(self.start_later(payload, route))
        else:
            self.send(conn, self.framed or frame(payload, 0)[0], payload[0], route)

    async def start_later(self, payload: bytes, route: Route) -> None:
        conn = await self.borrow_ready(route)
        if conn is not None:
            self.send(conn, frame(payload, 0)[0], payload[0], route)

    async def borrow_ready(self, route: Route) -> BackendConn | None:
        """A connection in the session's state for `route` (waiting for a new one, a sync, the
        causal-read wait); None after answering the client with the error that prevented it."""
        if self.held is not None:
            return self.held
        if self.keeps():
            route = Route.PRIMARY
        self.fe.stats.waits += 1  # no connection at hand in the session's state
        try:
            pool, self.picked = self.picked, None
            conn = await self.connect(route, pool)
            try:
                await conn.sync(self.db, self.sets)
                if route is Route.REPLICA and self.last_gtid and conn.replica:
                    conn = await self.caught_up(conn)
            except BaseException:
                conn.close()
                raise
        except MySQLError as exc:
            self.reply_error(exc.code_state, exc.message)
            return None
        except (OSError, ConnectionError, TimeoutError) as exc:
            self.reply_error(CR_SERVER_LOST, f"Lost connection to backend server: {exc}")
            return None
        return conn

    def send(self, conn: BackendConn, data: bytes, command: int, route: Route) -> None:
        assert self.transport is not None
        self.active = conn
        self.route = route
        stats = self.fe.stats
        if conn.replica:
            stats.replica += 1
        else:
            stats.primary += 1
        conn.on_infile = self.infile_asked
        conn.pass_answer(data, command, self.transport, self.answered)

    def answered(self, t: ResponseTracker | None, exc: Exception | None) -> None:
        """A backend connection finished (or lost) the answer of the command under way."""
        conn, self.active = self.active, None
        if conn is None or self.transport is None:
            return  # the client left; its connections were closed
        if t is None:
            conn.close()
            self.held = None
            self.in_tx = False
            if conn.sent:  # part of the answer went out: the client cannot be told in-band
                self.transport.close()
                return
            self.reply_error(
                CR_SERVER_LOST,
                f"Lost connection to backend server {conn.address} during query: {exc}",
            )
            return
        if t.status is not None:
            self.in_tx = bool(t.status & IN_TRANS)
            self.autocommit = bool(t.status & AUTOCOMMIT)
        if t.error is not None:
            self.fe.stats.server_errors += 1
        if self.dirtying or (t.changed and not self.explained):
            # state the session cannot bring to another connection: this one stays with it,
            # and is reset before anyone else gets it
            conn.dirty = True
        if self.after is not None:
            self.after(conn, t)
        if (
            self.cfg.causal_reads and not conn.replica and t.error is None
            and self.route is Route.PRIMARY and not self.in_tx
        ):  # fmt: skip
            self.spawn(self.track_gtid(conn, t.status))
            return
        self.settle(conn, t.status)
        self.done()

    def settle(self, conn: BackendConn, status: int | None = None) -> None:
        """Keep the connection for the session's next command, or give it back."""
        if conn.dirty and conn.replica:
            # A replica's connection cannot serve the session's writes: what the session left
            # on it (a routine's side effect) is reset rather than kept.
            if self.held is conn:
                self.held = None
            self.recycle(conn)
            return
        if conn.dirty or self.keeps():
            self.held = conn
        else:
            self.held = None
            self.give_back(conn, status if status is not None else self.status())

    async def track_gtid(self, conn: BackendConn, status: int | None) -> None:
        """What this session wrote (if it wrote): its reads on replicas wait for it."""
        try:
            gtid = await conn.value(b"SELECT @@last_gtid")
        except (OSError, ConnectionError, Malformed, MySQLError):
            gtid = None
            conn.close()
        if gtid:
            self.last_gtid = gtid.decode()
        self.settle(conn, status)
        self.done()

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

    async def borrow(self, route: Route) -> BackendConn:
        return await self.fe.server_pool(route, self.caps).acquire(self.db)

    async def connect(self, route: Route, pool: ServerPool | None) -> BackendConn:
        """A connection from `pool` (or the server the route picks); a server that cannot be
        reached is reported and the next one tried: nothing was sent, any command may move."""
        for attempt in range(CONNECT_ATTEMPTS):
            if pool is None:
                pool = self.fe.server_pool(route, self.caps)
            try:
                return await pool.acquire(self.db)
            except (OSError, ConnectionError, TimeoutError):
                if attempt == CONNECT_ATTEMPTS - 1:
                    raise
                pool = None
        raise AssertionError("unreachable")

    def give_back(self, conn: BackendConn, status: int | None) -> None:
        if conn.pool is None:
            conn.close()
        else:
            conn.pool.release(conn, status)

    def recycle(self, conn: BackendConn) -> None:
        """A connection the session kept, reset before it serves anyone else."""
        if conn.pool is None:
            conn.close()
        else:
            conn.pool.recycle(conn)

    # prepared statements ----------------------------------------------------------------------

    def prepare_now(self, sql: bytes) -> None:
        """A statement already prepared on the connection at hand is answered at once."""
        limit = self.cfg.max_prepared_stmt_count
        if len(self.statements) >= limit:
            self.reply_error(
                ER_MAX_PREPARED_STMT_COUNT_REACHED,
                "Can't create more than max_prepared_stmt_count statements "
                f"(current value: {limit})",
            )
            return
        st = classify(sql)
        if st.connection_id:
            sql = sessionid.rewrite(sql, self.id)
        if st.keyword == "KILL":  # its id would name a backend's connection
            self.reply_error(
                ER_UNSUPPORTED_PS,
                "This command is not supported in the prepared statement protocol yet",
            )
            return
        conn = self.ready(st.route)
        if conn is not None:
            prepared = conn.statements.get((conn.db, sql))
            if prepared is not None:
                conn.statements.move_to_end((conn.db, sql))
                self.prepared(conn, sql, st, prepared)
                return
        self.spawn(self.prepare(sql, st, conn))

    async def prepare(self, sql: bytes, st: Statement, conn: BackendConn | None) -> None:
        if conn is None:
            conn = await self.borrow_ready(st.route)
            if conn is None:
                return
        self.active = conn
        try:
            prepared = await conn.prepare(sql)
        except MySQLError as exc:
            self.active = None
            self.settle(conn)
            self.reply_error(exc.code_state, exc.message)
            return
        except (OSError, ConnectionError, Malformed) as exc:
            self.active = None
            self.held = None
            self.reply_error(CR_SERVER_LOST, f"Lost connection to backend server: {exc}")
            return
        self.active = None
        self.prepared(conn, sql, st, prepared)

    def prepared(self, conn: BackendConn, sql: bytes, st: Statement, prepared: Prepared) -> None:
        """Answer a prepare as the server did, under the session's own statement id."""
        cid = next(self.stmt_ids) & 0xFFFFFFFF
        if st.pins:  # the statement's text pins when it runs, as it would as a query
            self.pinned = self.pinned or st.pins
        self.statements[cid] = ClientStatement(
            sql, conn.db, st.route, prepared.params, st.dirties or st.changes_session
        )
        self.last_prepared = cid
        first, *rest = prepared.answer
        seq = self.write(first[:1] + cid.to_bytes(4, "little") + first[5:], 1)
        for payload in rest:
            seq = self.write(payload, seq)
        self.settle(conn)
        self.done()

    def client_statement(self, payload: bytes, name: str) -> tuple[int, ClientStatement] | None:
        """The statement a COM_STMT_* names; None after answering the client's error."""
        if len(payload) < 5:
            self.reply_error(ER_MALFORMED_PACKET, "Malformed communication packet")
            return None
        cid = int.from_bytes(payload[1:5], "little")
        if cid == LAST_PREPARED:
            cid = self.last_prepared
        stmt = self.statements.get(cid)
        if stmt is None:
            self.reply_error(
                ER_UNKNOWN_STMT_HANDLER,
                f"Unknown prepared statement handler ({cid}) given to {name}",
            )
            return None
        return cid, stmt

    def execute(self, payload: bytes) -> None:
        found = self.client_statement(payload, "mysqld_stmt_execute")
        if found is None:
            return
        cid, stmt = found
        body = bind(stmt, payload)
        if body is None:
            self.reply_error(ER_MALFORMED_PACKET, "Malformed communication packet")
            return
        if stmt.bad_param:  # until COM_STMT_RESET, as MariaDB
            self.drop_long_data(stmt)
            stmt.bad_param = True
            self.reply_error(
                ER_WRONG_ARGUMENTS, "Incorrect arguments to mysqld_stmt_send_long_data"
            )
            return
        if stmt.too_long:
            self.drop_long_data(stmt)
            self.reply_error(
                ER_NET_PACKET_TOO_LARGE,
                "Parameter of prepared statement which is set through mysql_send_long_data() "
                "is longer than 'max_allowed_packet' bytes",
            )
            return
        self.executing = cid
        self.after = self.after_execute
        self.dirtying = stmt.dirties
        self.cursor_asked = bool(body[0] & CURSOR_FLAGS)
        # a cursor keeps its connection, on which the session's writes must work too
        route = Route.PRIMARY if self.cursor_asked else stmt.route
        conn = self.ready(route)
        if conn is not None:
            prepared = conn.statements.get((stmt.db, stmt.sql))
            if prepared is not None:
                data = (
                    self.long_data(stmt, prepared.id)
                    + frame(b"\x17" + prepared.id.to_bytes(4, "little") + body, 0)[0]
                )
                self.send(conn, data, Command.STMT_EXECUTE, route)
                return
        self.spawn(self.execute_later(stmt, body, route, conn))

    cursor_asked = False

    async def execute_later(
        self, stmt: ClientStatement, body: bytes, route: Route, conn: BackendConn | None
    ) -> None:
        """Execute on a connection that must be made ready, or that lacks the statement."""
        if conn is None:
            conn = await self.borrow_ready(route)
            if conn is None:
                return
        try:
            if conn.db != stmt.db and stmt.db:
                await conn.sync(stmt.db, self.sets)
            prepared = await conn.prepare(stmt.sql)
            await conn.sync(self.db, self.sets)
        except MySQLError as exc:
            self.settle(conn)
            self.reply_error(exc.code_state, exc.message)
            return
        except (OSError, ConnectionError, Malformed) as exc:
            conn.close()
            self.held = None
            self.reply_error(CR_SERVER_LOST, f"Lost connection to backend server: {exc}")
            return
        data = self.long_data(stmt, prepared.id)
        data += frame(b"\x17" + prepared.id.to_bytes(4, "little") + body, 0)[0]
        self.send(conn, data, Command.STMT_EXECUTE, route)

    def long_data(self, stmt: ClientStatement, stmt_id: int) -> bytes:
        """The long data sent for the statement, for the connection about to execute it (the
        server answers none of it; an execution uses it up)."""
        if not stmt.long_data:
            return b""
        head = b"\x18" + stmt_id.to_bytes(4, "little")
        out = b"".join(
            frame(head + param.to_bytes(2, "little") + bytes(data), 0)[0]
            for param, data in stmt.long_data.items()
        )
        self.drop_long_data(stmt)
        return out

    def drop_long_data(self, stmt: ClientStatement) -> None:
        for data in stmt.long_data.values():
            self.long_bytes -= len(data)
        stmt.long_data.clear()
        stmt.too_long = stmt.bad_param = False

    def after_execute(self, conn: BackendConn, t: ResponseTracker) -> None:
        if self.cursor_asked and t.error is None and t.status and t.status & CURSOR_EXISTS:
            self.cursors.add(self.executing)
        elif self.executing in self.cursors:
            self.cursors.discard(self.executing)  # executed again: its old cursor is gone

    def fetch(self, payload: bytes) -> None:
        found = self.client_statement(payload, "mysqld_stmt_fetch")
        if found is None:
            return
        cid, stmt = found
        conn = self.held
        prepared = conn.statements.get((stmt.db, stmt.sql)) if conn is not None else None
        if cid not in self.cursors or conn is None or prepared is None:
            self.reply_error(
                ER_STMT_HAS_NO_OPEN_CURSOR, f"The statement ({cid}) has no open cursor."
            )
            return
        self.executing = cid
        self.after = self.after_fetch
        data = frame(b"\x1c" + prepared.id.to_bytes(4, "little") + payload[5:], 0)[0]
        self.send(conn, data, Command.STMT_FETCH, Route.PRIMARY)

    def after_fetch(self, conn: BackendConn, t: ResponseTracker) -> None:
        if t.error is not None or (t.status is not None and t.status & LAST_ROW_SENT):
            self.cursors.discard(self.executing)

    def statement_local(self, command: int, payload: bytes) -> None:
        """COM_STMT_CLOSE, _RESET and _SEND_LONG_DATA act on the session's statement; only
        an open cursor is closed on the server."""
        if command == Command.STMT_SEND_LONG_DATA:
            cid = int.from_bytes(payload[1:5], "little")
            stmt = self.statements.get(cid)
            if stmt is not None and len(payload) >= 7:  # no answer; errors wait for execute
                param = int.from_bytes(payload[5:7], "little")
                size = len(payload) - 7
                if param >= stmt.params:
                    self.drop_long_data(stmt)  # the execution is refused: nothing is kept
                    stmt.bad_param = True
                elif stmt.too_long or self.long_bytes + size > self.cfg.max_allowed_packet:
                    bad = stmt.bad_param
                    self.drop_long_data(stmt)
                    stmt.too_long, stmt.bad_param = True, bad
                elif not stmt.bad_param:
                    stmt.long_data.setdefault(param, bytearray()).extend(payload[7:])
                    self.long_bytes += size
            self.done()
            return
        if command == Command.STMT_CLOSE:
            cid = int.from_bytes(payload[1:5], "little")
            stmt = self.statements.pop(cid, None)
            if stmt is not None:
                self.drop_long_data(stmt)
            if stmt is not None and cid in self.cursors:
                self.spawn(self.close_cursor(cid, stmt, answer=False))
                return
            self.done()  # no answer, as a server gives none
            return
        found = self.client_statement(payload, "mysqld_stmt_reset")
        if found is None:
            return
        cid, stmt = found
        self.drop_long_data(stmt)
        if cid in self.cursors:
            self.spawn(self.close_cursor(cid, stmt, answer=True))
            return
        self.reply_ok()

    async def close_cursor(self, cid: int, stmt: ClientStatement, answer: bool) -> None:
        self.cursors.discard(cid)
        conn = self.held
        prepared = conn.statements.get((stmt.db, stmt.sql)) if conn is not None else None
        if conn is not None and prepared is not None:
            try:
                await conn.quiet(Command.STMT_RESET, prepared.id.to_bytes(4, "little"))
            except (OSError, ConnectionError, Malformed, MySQLError):
                conn.close()
                self.held = None
            if self.held is not None and not self.keeps():
                self.settle(conn)
        if answer:
            self.reply_ok()
        else:
            self.done()


def bind(stmt: ClientStatement, payload: bytes) -> bytes | None:
    """COM_STMT_EXECUTE's body after the statement id, with the parameter types always
    included (the connection that runs it may not have seen the execution that sent them);
    None when it is too short to be one."""
    body = payload[5:]
    if len(body) < 5:
        return None
    if not stmt.params:
        return body
    at = 5 + (stmt.params + 7) // 8  # the new-params-bound flag, after the NULL bitmap
    if len(body) <= at:
        return None
    if body[at] == 1:
        stmt.types = body[at + 1 : at + 1 + 2 * stmt.params]
        return body
    if stmt.types is None:
        return body  # the server names what is missing
    return body[:at] + b"\x01" + stmt.types + body[at + 1 :]
