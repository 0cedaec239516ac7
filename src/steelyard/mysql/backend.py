"""Backend connections of the MySQL proxy: logged in as the backend user, pooled per server,
lent to one client session at a time.

A connection carries the state the last session left on it (current database, SET
statements); before a command runs for another session, `sync()` brings it to that session's
state with COM_INIT_DB and the session's SETs replayed. Connections that broke or whose state
cannot be known are closed rather than returned.
"""

from __future__ import annotations

from collections.abc import Callable

from steelyard.mysql.client import Client, MySQLError, read_result
from steelyard.mysql.protocol.constants import Command, Status
from steelyard.mysql.protocol.response import ResponseTracker

Forward = Callable[[int, bytes], None]  # (sequence id, payload) of each answer packet


class BackendConn:
    def __init__(self, address: str, client: Client) -> None:
        self.address = address
        self.client = client
        self.db: str | None = None
        self.sets: tuple[bytes, ...] = ()  # the SET statements run on it, in order
        self.broken = False
        self.replica = False  # a connection to a server of the replicas pool

    @property
    def capabilities(self) -> int:
        return self.client.capabilities

    async def run(self, command: int, body: bytes, forward: Forward) -> ResponseTracker:
        """Send one command; every packet of the answer goes to `forward` as it arrives."""
        try:
            return await self.client.run(command, body, forward)
        except BaseException:
            self.broken = True  # mid-answer: what is left on the wire is unknown
            raise

    async def quiet(self, command: int, body: bytes) -> ResponseTracker:
        """A command whose answer the client does not see (state sync)."""
        return await self.run(command, body, lambda seq, payload: None)

    async def value(self, sql: bytes) -> bytes | None:
        """The first column of the first row of a statement the client does not see."""
        packets: list[bytes] = []
        t = await self.run(Command.QUERY, sql, lambda seq, payload: packets.append(payload))
        if t.error is not None:
            raise MySQLError(t.error.code, t.error.sqlstate, t.error.message)
        result = read_result(packets, self.client.capabilities)
        return result.rows[0][0] if result.rows else None

    async def sync(self, db: str | None, sets: tuple[bytes, ...]) -> None:
        """Bring this connection to a session's database and session variables."""
        if db and db != self.db:
            t = await self.quiet(Command.INIT_DB, db.encode())
            if t.error is not None:
                raise MySQLError(t.error.code, t.error.sqlstate, t.error.message)
            self.db = db
        if sets != self.sets:
            if self.sets[: len(sets)] != sets[: len(self.sets)] or len(sets) < len(self.sets):
                # Other SETs than the session's: start from a clean session (database kept).
                t = await self.quiet(Command.RESET_CONNECTION, b"")
                if t.error is not None:
                    raise MySQLError(t.error.code, t.error.sqlstate, t.error.message)
                self.sets = ()
            for stmt in sets[len(self.sets) :]:
                t = await self.quiet(Command.QUERY, stmt)
                if t.error is not None:
                    raise MySQLError(t.error.code, t.error.sqlstate, t.error.message)
            self.sets = sets

    def close(self) -> None:
        self.broken = True
        self.client.close()


class ServerPool:
    """Idle connections to one server; logs in new ones as needed."""

    def __init__(
        self, address: str, user: str, password: str, size: int, capabilities: int
    ) -> None:
        self.address = address
        self.user = user
        self.password = password
        self.size = size
        self.capabilities = capabilities
        self.idle: list[BackendConn] = []
        self.replica = False  # its server is in the replicas pool

    async def acquire(self) -> BackendConn:
        while self.idle:
            conn = self.idle.pop()
            if not conn.broken and not conn.client.writer.is_closing():
                return conn
        client = await Client.connect(
            self.address, self.user, self.password, capabilities=self.capabilities
        )
        conn = BackendConn(self.address, client)
        conn.replica = self.replica
        return conn

    def release(self, conn: BackendConn, status: Status | None) -> None:
        """Back to the pool, if it is clean: no transaction left open, autocommit on."""
        clean = status is not None and not status & Status.IN_TRANS and status & Status.AUTOCOMMIT
        if conn.broken or not clean or len(self.idle) >= self.size:
            conn.close()
            return
        self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
