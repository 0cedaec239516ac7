"""Backend connections of the MySQL proxy: logged in as the backend user, pooled per server,
lent to one client session at a time.

A connection logs in through the asyncio `Client` (one login path for the whole tier), then
its transport is handed to `BackendConn`, a Protocol: the data path writes a client's command
and passes the server's answer to the client's transport as raw bytes, an `AnswerScanner`
finding its end, with no packet taken apart but the few that shape the answer. Commands whose
answer the proxy reads itself (state sync, prepares, the causal-read wait) go through `run()`.

A connection carries the state the last session left on it (current database, SET
statements, the statements prepared on it); `sync()` brings it to another session's state
with COM_INIT_DB and the session's SETs replayed. A connection on which a session may have
left state the proxy does not follow (`dirty`: user variables, temporary tables, a routine,
a multi-statement, or the server's SERVER_SESSION_STATE_CHANGED where the statement does not
explain it) is reset with COM_RESET_CONNECTION (its database read back, session tracking
turned on again) before it goes back to the pool; connections that broke are closed.

A server's LOCAL INFILE request (on a connection that offered CLIENT_LOCAL_FILES) pauses the
answer: `on_infile` gets the request and decides (infile.py); while the client's file goes up,
the connection's `upload` hears when the server reads slower than the file comes.

Where the client asked for CLIENT_SESSION_TRACK, its backend connections ask for it too and turn
on `session_track_state_change`: the server then flags every change of user variables,
temporary tables, prepared statements and session variables in its OK packets.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from steelyard.log import log
from steelyard.mysql.client import Client, MySQLError, read_result
from steelyard.mysql.protocol.constants import Capability, Command, Status
from steelyard.mysql.protocol.packets import HEADER, PacketReader, frame
from steelyard.mysql.protocol.response import ResponseTracker
from steelyard.mysql.protocol.scanner import AnswerScanner
from steelyard.mysql.protocol.wire import Malformed

OnPacket = Callable[[int, bytes], None]  # (sequence id, payload) of each answer packet
# (tracker, None) when the answer is complete; (None, cause) when the connection broke
OnAnswer = Callable[[ResponseTracker | None, Exception | None], None]


class Upload(Protocol):
    """A client's file going to the server: told when the server's socket is full."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...


# (connection, the request's bytes not yet passed on, whether its first bytes were)
OnInfile = Callable[["BackendConn", bytes, bool], None]
_CLEAN_MASK = int(Status.IN_TRANS | Status.AUTOCOMMIT)
_CLEAN = int(Status.AUTOCOMMIT)  # autocommit on, no transaction open
MAX_STATEMENTS = 64  # statements kept prepared on one connection (oldest closed first)
_SESSION_TRACK = int(Capability.SESSION_TRACK)
TRACK_CHANGES = b"SET SESSION session_track_state_change = ON"


class Prepared:
    """A statement prepared on one connection."""

    __slots__ = ("answer", "columns", "id", "params")

    def __init__(self, stmt_id: int, columns: int, params: int, answer: list[bytes]) -> None:
        self.id = stmt_id
        self.columns = columns
        self.params = params
        self.answer = answer  # the server's answer packets, to answer the next prepare of it


class BackendConn(asyncio.Protocol):
    def __init__(self, address: str, capabilities: int, transport: asyncio.Transport) -> None:
        self.address = address
        self.capabilities = int(capabilities)  # a plain int: IntFlag arithmetic is slow
        self.transport = transport
        self.server_version = ""
        self.server_plugin = ""  # the authentication plugin its greeting named
        self.db: str | None = None
        self.sets: tuple[bytes, ...] = ()  # the SET statements run on it, in order
        # (database, SQL) -> the statement prepared on it for that text
        self.statements: OrderedDict[tuple[str | None, bytes], Prepared] = OrderedDict()
        self.broken = False
        self.dirty = False  # may carry state a session left that the proxy does not follow
        self.thread_id = 0  # the server's id of the connection (CONNECTION_ID())
        self.reusable = True  # False: closed, not reset, when its session is done with it
        self.replica = False  # a connection to a server of the replicas pool
        # the exchange under way: raw bytes to `sink`, or packets to `on_packet`
        self.scanner: AnswerScanner | None = None  # set while an answer passes through
        self._scanner = AnswerScanner(ResponseTracker(0, capabilities))  # reused for each
        self.sink: asyncio.Transport | None = None
        self.sent = 0  # answer bytes passed to the sink so far
        self.on_answer: OnAnswer | None = None
        self.on_infile: OnInfile | None = None  # where a LOCAL INFILE request goes
        self.upload: Upload | None = None  # a client's file being written to the server
        self.reader: PacketReader | None = None
        self.tracker: ResponseTracker | None = None
        self.on_packet: OnPacket | None = None
        self.waiter: asyncio.Future[ResponseTracker] | None = None
        self.login_stream: asyncio.StreamWriter | None = None
        self.pool: ServerPool | None = None  # where it goes back to
        self.counted_out = False  # its pool no longer counts it open

    @classmethod
    async def connect(
        cls, address: str, user: str, password: str, capabilities: int,
        tls: ssl.SSLContext | None = None, server_name: str | None = None,
    ) -> BackendConn:  # fmt: skip
        client = await Client.connect(
            address, user, password, capabilities=capabilities, tls=tls, server_name=server_name
        )
        transport = client.writer.transport
        conn = cls(address, client.capabilities, transport)  # type: ignore[arg-type]
        conn.server_version = client.greeting.server_version if client.greeting else ""
        conn.thread_id = client.greeting.connection_id if client.greeting else 0
        conn.server_plugin = client.greeting.plugin if client.greeting else ""
        if client.capabilities & _SESSION_TRACK:
            try:
                await client.query(TRACK_CHANGES.decode())
            except BaseException:
                client.close()
                raise
        transport.set_protocol(conn)  # the stream reader has nothing buffered after the OK
        # A StreamWriter closes its transport when it is collected: it lives as long as we do.
        conn.login_stream = client.writer
        return conn

    # the data path ----------------------------------------------------------------------------

    def pass_answer(
        self, data: bytes, command: int, sink: asyncio.Transport, on_answer: OnAnswer
    ) -> None:
        """Write a framed command; its answer goes to `sink` unchanged, then `on_answer`."""
        if self.broken:
            on_answer(None, ConnectionError("the server connection is closed"))
            return
        self.transport.write(data)
        scanner = self._scanner
        scanner.reset(command)
        if scanner.tracker.done:  # COM_STMT_CLOSE, SEND_LONG_DATA: no answer comes
            on_answer(scanner.tracker, None)
            return
        self.scanner = scanner
        self.sink = sink
        self.sent = 0
        self.on_answer = on_answer

    async def run(self, command: int, body: bytes, on_packet: OnPacket) -> ResponseTracker:
        """Send one command; every packet of the answer goes to `on_packet` as it arrives."""
        if self.broken:
            raise ConnectionError("the server connection is closed")
        tracker = ResponseTracker(command, self.capabilities)
        self.transport.write(frame(bytes((command,)) + body, 0)[0])
        if tracker.done:
            return tracker
        self.tracker = tracker
        self.on_packet = on_packet
        self.reader = PacketReader(1 << 40)
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            return await self.waiter
        except BaseException:
            self.close()  # mid-answer (or cancelled): what is left on the wire is unknown
            raise

    def data_received(self, data: bytes) -> None:
        scanner = self.scanner
        if scanner is not None:
            try:
                end = scanner.feed(data)
            except Malformed as exc:
                self._fail(exc)
                return
            if end < 0:
                self.sent += len(data)
                self.sink.write(data)  # type: ignore[union-attr]
                return
            if end != len(data):
                self._fail(Malformed(f"{len(data) - end} bytes after the end of the answer"))
                return
            if scanner.tracker.infile is not None:
                self._infile_asked(scanner.tracker.infile, data, end)
                return
            self.sink.write(data)  # type: ignore[union-attr]
            on_answer = self.on_answer
            self.scanner = self.sink = self.on_answer = None
            on_answer(scanner.tracker, None)  # type: ignore[misc]
            return
        reader = self.reader
        if reader is None:
            self._fail(Malformed("the server sent bytes no command asked for"))
            return
        tracker = self.tracker
        assert tracker is not None and self.on_packet is not None and self.waiter is not None
        try:
            packets = reader.feed(data)
            for i, (seq, payload) in enumerate(packets):
                self.on_packet(seq, payload)
                if tracker.feed(payload):
                    if tracker.infile is not None:
                        raise Malformed("a LOCAL INFILE request for a statement of the proxy's")
                    if i != len(packets) - 1 or reader.buffered():
                        raise Malformed("bytes after the end of the answer")
                    waiter = self.waiter
                    self.reader = self.tracker = self.on_packet = self.waiter = None
                    if not waiter.done():
                        waiter.set_result(tracker)
                    return
        except Malformed as exc:
            self._fail(exc)

    def _infile_asked(self, name: bytes, data: bytes, end: int) -> None:
        """The server asks for a local file: what came before the request goes on, the request
        itself waits for `on_infile` to decide whether the client sees it."""
        start = end - HEADER - 1 - len(name)  # where the request starts in `data`
        if start > 0:
            self.sent += start
            self.sink.write(data[:start])  # type: ignore[union-attr]
        on_infile = self.on_infile
        if on_infile is None:
            self._fail(Malformed("LOCAL INFILE was not offered to the server"))
            return
        on_infile(self, data[max(start, 0) : end], start < 0)

    def _fail(self, exc: Exception) -> None:
        self.close()
        self._end_exchange(exc)

    def _end_exchange(self, exc: Exception) -> None:
        on_answer, waiter = self.on_answer, self.waiter
        self.scanner = self.sink = self.on_answer = None
        self.reader = self.tracker = self.on_packet = self.waiter = None
        if on_answer is not None:
            on_answer(None, exc)
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        self._gone()
        self._end_exchange(ConnectionError(f"the server closed the connection ({exc or 'EOF'})"))

    def eof_received(self) -> bool:
        """The server closed its side: the connection is gone now. (A plain close would first
        wait for what is still to be written, which a server that closed never reads: a
        client's file going up would wait for TCP to give up, minutes.)"""
        self.transport.abort()
        return False

    def pause_writing(self) -> None:
        """The server reads slower than it is written to (a client's file going up)."""
        if self.upload is not None:
            self.upload.pause()

    def resume_writing(self) -> None:
        if self.upload is not None:
            self.upload.resume()

    def pause_answer(self) -> None:
        """The client reads slower than the server answers: stop reading the server."""
        if not self.broken:
            self.transport.pause_reading()

    def resume_answer(self) -> None:
        if not self.broken:
            self.transport.resume_reading()

    # commands the proxy reads itself ----------------------------------------------------------

    async def quiet(self, command: int, body: bytes) -> ResponseTracker:
        """A command whose answer the client does not see; MySQLError on an error."""
        t = await self.run(command, body, lambda seq, payload: None)
        if t.error is not None:
            raise MySQLError.of(t.error)
        return t

    async def row(self, sql: bytes) -> list[bytes | None] | None:
        """The first row of a statement the client does not see (None: no row)."""
        packets: list[bytes] = []
        t = await self.run(Command.QUERY, sql, lambda seq, payload: packets.append(payload))
        if t.error is not None:
            raise MySQLError.of(t.error)
        result = read_result(packets, self.capabilities)
        return result.rows[0] if result.rows else None

    async def value(self, sql: bytes) -> bytes | None:
        """The first column of the first row of a statement the client does not see."""
        row = await self.row(sql)
        return row[0] if row else None

    def in_sync(self, db: str | None, sets: tuple[bytes, ...]) -> bool:
        # exactly the session's database: one without any must not see the last session's
        return db == self.db and sets == self.sets and not self.dirty

    async def reset(self) -> None:
        """Undo whatever a session left (COM_RESET_CONNECTION: user variables, temporary
        tables, prepared statements, session variables, locks, an open transaction); the
        database stays, and is read back as it may have changed unseen."""
        await self.quiet(Command.RESET_CONNECTION, b"")
        self.statements.clear()
        self.sets = ()
        db = await self.value(b"SELECT DATABASE()")
        self.db = db.decode() if db else None
        if self.capabilities & _SESSION_TRACK:
            await self.quiet(Command.QUERY, TRACK_CHANGES)
        self.dirty = False

    async def sync(self, db: str | None, sets: tuple[bytes, ...]) -> None:
        """Bring this connection to a session's database and session variables."""
        if self.dirty:
            await self.reset()
        if db and db != self.db:
            await self.quiet(Command.INIT_DB, db.encode())
            self.db = db
        if sets != self.sets:
            if self.sets[: len(sets)] != sets[: len(self.sets)] or len(sets) < len(self.sets):
                # Other SETs than the session's: start from a clean session (database kept),
                # which also closes the statements prepared on it.
                await self.reset()
            for stmt in sets[len(self.sets) :]:
                await self.quiet(Command.QUERY, stmt)
            self.sets = sets

    async def prepare(self, sql: bytes) -> Prepared:
        """The statement for `sql` on this connection, prepared now if it is not yet."""
        key = (self.db, sql)
        stmt = self.statements.get(key)
        if stmt is not None:
            self.statements.move_to_end(key)
            return stmt
        answer: list[bytes] = []
        t = await self.run(Command.STMT_PREPARE, sql, lambda seq, payload: answer.append(payload))
        if t.error is not None:
            raise MySQLError.of(t.error)
        assert t.statement is not None
        stmt = Prepared(*t.statement, answer)
        self.statements[key] = stmt
        if len(self.statements) > MAX_STATEMENTS:
            _, old = self.statements.popitem(last=False)
            self.transport.write(frame(b"\x19" + old.id.to_bytes(4, "little"), 0)[0])
        return stmt

    def close(self) -> None:
        if not self.broken:
            self.broken = True
            self.transport.write(frame(bytes((Command.QUIT,)), 0)[0])
            self.transport.close()
        self._gone()

    def _gone(self) -> None:
        if self.pool is not None and not self.counted_out:
            self.counted_out = True
            self.pool.open -= 1


class ServerPool:
    """Idle connections to one server; logs in new ones as needed."""

    def __init__(
        self, address: str, user: str, password: str, size: int, capabilities: int
    ) -> None:
        self.address = address
        self.user = user
        self.password = password
        self.size = size
        self.capabilities = int(capabilities)  # a plain int: IntFlag arithmetic is slow
        self.idle: list[BackendConn] = []
        self.replica = False  # its server is in the replicas pool
        self.closed = False
        self.open = 0  # connections open: idle, or lent to a session
        self.failing = False  # the last login attempt failed
        self.pool_name = ""  # the config pool its server is in
        self.tls: ssl.SSLContext | None = None  # TLS to the server (backend_tls)
        self.server_name: str | None = None
        self.on_result: Callable[[bool, str], None] | None = None  # passive health reports
        self.connects = 0  # logins made, ever

    resetting: set[asyncio.Task[None]] | None = None  # connections being reset in the background

    def take(self, db: str | None, sets: tuple[bytes, ...]) -> BackendConn | None:
        """An idle connection already in a session's state, without waiting; or None."""
        idle = self.idle
        while idle:
            conn = idle[-1]
            if conn.broken:
                idle.pop()
                continue
            if conn.in_sync(db, sets):
                return idle.pop()
            return None
        return None

    async def acquire(self, db: str | None = None) -> BackendConn:
        """An idle connection that can be brought to `db` (COM_INIT_DB cannot leave a database:
        a session without one gets a connection without one), else a new one."""
        idle = self.idle
        for i in range(len(idle) - 1, -1, -1):
            conn = idle[i]
            if conn.broken:
                del idle[i]
            elif db is not None or conn.db is None:
                del idle[i]
                return conn
        if idle and len(idle) >= self.size:
            idle.pop(0).close()  # all in other databases: make room for the one made now
        try:
            conn = await BackendConn.connect(
                self.address, self.user, self.password, self.capabilities, self.tls,
                self.server_name,
            )  # fmt: skip
        except (OSError, ConnectionError, TimeoutError) as exc:
            # a passive failure: enough in a row and the server is ejected, as every tier's
            self.failing = True
            if self.on_result is not None:
                self.on_result(False, f"connect: {exc or type(exc).__name__}")
            raise
        if self.failing:
            self.failing = False
            if self.on_result is not None:
                self.on_result(True, "")
        conn.replica = self.replica
        conn.pool = self
        self.open += 1
        self.connects += 1
        return conn

    def release(self, conn: BackendConn, status: int | None) -> None:
        """Back to the pool, if it is clean: no transaction left open, autocommit on."""
        if conn.dirty:
            self.recycle(conn)
            return
        clean = status is not None and status & _CLEAN_MASK == _CLEAN
        if conn.broken or not clean or len(self.idle) >= self.size or self.closed:
            conn.close()
            return
        self.idle.append(conn)

    def recycle(self, conn: BackendConn) -> None:
        """Back to the pool after a reset (in the background), whatever its session left on
        it; closed if it breaks, or if the pool has no room for it."""
        if conn.broken or self.closed or len(self.idle) >= self.size or not conn.reusable:
            conn.close()
            return
        if self.resetting is None:
            self.resetting = set()
        task = asyncio.get_running_loop().create_task(self._recycle(conn))
        self.resetting.add(task)
        task.add_done_callback(self.resetting.discard)

    async def _recycle(self, conn: BackendConn) -> None:
        try:
            await conn.reset()
        except (OSError, ConnectionError, Malformed, MySQLError) as exc:
            log("mysql_reset_failed", "warn", server=self.address, cause=str(exc))
            conn.close()
            return
        log("mysql_connection_reset", "debug", server=self.address, id=conn.thread_id)
        if conn.broken or self.closed or len(self.idle) >= self.size:
            conn.close()
            return
        self.idle.append(conn)

    def close_idle(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    def close(self) -> None:
        self.closed = True
        self.close_idle()
