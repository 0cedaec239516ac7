"""LOAD DATA LOCAL INFILE through the proxy: a server's request for a client's file, passed on
to the client or answered by the proxy itself, and the file streamed up.

A server answers a statement with a LOCAL INFILE request (0xFB and a file name) when it wants a
file of the client's, and may name any file. The proxy passes the request on only when its
listener allows it (`local_infile`), the client announced CLIENT_LOCAL_FILES, and the statement
it sent is a LOAD DATA / LOAD XML LOCAL (classify.py) naming that file (when the name can be
read for sure): a server cannot make a client give away a file for a SELECT, nor another file
than the one it named. Otherwise the proxy answers the server with an empty packet (no file:
the server loads nothing and says OK, which is thrown away) and tells the client MariaDB's own
refusal, ER_LOAD_INFILE_CAPABILITY_DISABLED.

A file passed on goes up as it comes, never held whole: the client is read no more while the
server's socket is over its high-water mark, and again once it drains. The connection stays with
the session for the exchange. If the server fails mid-upload, the rest of the file is read and
dropped and the client gets the error after its last packet (sequence ids right), so the
session goes on; if the client leaves mid-upload, the connection is closed, never pooled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steelyard.log import log
from steelyard.mysql.backend import BackendConn
from steelyard.mysql.classify import local_file_names
from steelyard.mysql.protocol import messages
from steelyard.mysql.protocol.constants import (
    CR_SERVER_LOST,
    ER_LOAD_INFILE_CAPABILITY_DISABLED,
    ER_NET_PACKETS_OUT_OF_ORDER,
    Capability,
    Command,
)
from steelyard.mysql.protocol.infile import FileStream
from steelyard.mysql.protocol.packets import frame
from steelyard.mysql.protocol.response import ResponseTracker
from steelyard.mysql.protocol.wire import Malformed

if TYPE_CHECKING:
    from steelyard.mysql.session import MysqlSession

DISABLED = (
    "The used command is not allowed because the MariaDB server or client has disabled the "
    "local infile capability"
)  # MariaDB's text for ER_LOAD_INFILE_CAPABILITY_DISABLED
_LOCAL_FILES = int(Capability.LOCAL_FILES)
_QUERY = int(Command.QUERY)


class Discard:
    """Where a server's bytes go that the client must not see."""

    def write(self, data: bytes) -> None:
        pass


DISCARD = Discard()


def refuse_now(session: MysqlSession) -> None:
    """A LOAD DATA LOCAL from a client that did not announce CLIENT_LOCAL_FILES (or on a
    listener without `local_infile`): refused as the server itself refuses it."""
    log("mysql_infile_refused", "info", peer=session.peer, user=session.user, why="not offered")
    session.reply_error(ER_LOAD_INFILE_CAPABILITY_DISABLED, DISABLED)


def asked(session: MysqlSession, conn: BackendConn, request: bytes, cut: bool) -> None:
    """The server asks for a local file (`request`: the request's bytes not yet passed to the
    client; `cut`: its first bytes were, before it could be told from an answer)."""
    assert conn.scanner is not None and conn.scanner.tracker.infile is not None
    tracker = conn.scanner.tracker
    if session.transport is None:
        return  # the client left: connection_lost closes the connection
    seq = conn.scanner.seq  # the request's sequence id
    why = None
    sql = session.local_file
    if sql is None or tracker.command != _QUERY:
        why = "the statement is no LOAD DATA LOCAL"
    elif not session.caps & _LOCAL_FILES:
        why = "the client did not offer CLIENT_LOCAL_FILES"
    elif (names := local_file_names(sql)) is not None and tracker.infile not in names:
        why = "the statement names another file"
    elif session.queue or session.packets.buffered():
        why = "the client sent more commands behind the statement"
    if why is None:
        LocalInfile(session, conn, tracker, seq).start(request)
        return
    log(
        "mysql_infile_refused", "warn", peer=session.peer, user=session.user,
        server=conn.address, file=tracker.infile.decode("utf-8", "replace"), why=why,
    )  # fmt: skip
    if cut:  # the client has part of a request it must not get: it cannot be told in-band
        session.transport.close()
        return
    Refused(session, conn, tracker, seq).start()


class Refused:
    """The server is told there is no file; the client gets the refusal once it has answered."""

    __slots__ = ("conn", "seq", "session", "tracker")

    def __init__(
        self, session: MysqlSession, conn: BackendConn, tracker: ResponseTracker, seq: int
    ) -> None:
        self.session = session
        self.conn = conn
        self.tracker = tracker
        self.seq = seq  # the request's sequence id: where the client's answer goes on

    def start(self) -> None:
        conn = self.conn
        conn.transport.write(frame(b"", self.seq + 1)[0])
        self.tracker.file_sent()
        conn.sink = DISCARD  # type: ignore[assignment]
        conn.on_answer = self.answered

    def answered(self, t: ResponseTracker | None, exc: Exception | None) -> None:
        session = self.session
        if session.transport is None:
            return
        if t is not None:
            session.fe.stats.proxy_errors += 1
            session.write(messages.error(ER_LOAD_INFILE_CAPABILITY_DISABLED, DISABLED), self.seq)
        session.answered(t, exc)


class LocalInfile:
    """A client's file on its way to the server."""

    __slots__ = ("conn", "failed", "paused", "pauses", "session", "stream", "tracker")

    def __init__(
        self, session: MysqlSession, conn: BackendConn, tracker: ResponseTracker, seq: int
    ) -> None:
        self.session = session
        self.conn = conn
        self.tracker = tracker
        self.stream = FileStream(seq)
        self.paused = False  # the client is not read: the server's socket is full
        self.pauses = 0
        self.failed: str | None = None  # the server failed: the rest of the file is dropped

    def start(self, request: bytes) -> None:
        session, conn = self.session, self.conn
        assert session.transport is not None
        session.upload = self
        conn.upload = self
        # nothing the server says before the end of the file may reach the client
        conn.sink = DISCARD  # type: ignore[assignment]
        conn.on_answer = self.broke
        conn.sent += len(request)
        session.transport.write(request)

    def feed(self, data: bytes) -> None:
        """Bytes from the client: its file, up to and with the empty packet that ends it."""
        try:
            end = self.stream.feed(data)
        except Malformed as exc:
            # not its file: a client out of step, refused as bad input (the connection is
            # closed with it: the server waits for the rest of the file)
            log("mysql_infile_failed", "warn", peer=self.session.peer, cause=str(exc))
            self.session.upload = self.conn.upload = None
            self.session.refuse(
                ER_NET_PACKETS_OUT_OF_ORDER, "Got packets out of order", self.stream.seq + 1
            )
            return
        if end < 0:
            if self.failed is None:
                self.conn.transport.write(data)
            return
        if self.failed is None:
            self.conn.transport.write(data[:end] if end < len(data) else data)
        self.finish()
        if end < len(data):
            self.session.data_received(data[end:])  # a command sent behind it: read as such

    def finish(self) -> None:
        session, conn = self.session, self.conn
        session.upload = None
        conn.upload = None
        self.resume()
        log(
            "mysql_infile", "debug", peer=session.peer, server=conn.address,
            bytes=self.stream.bytes, pauses=self.pauses, failed=self.failed,
        )  # fmt: skip
        if self.failed is not None:
            session.fe.stats.proxy_errors += 1
            session.write(messages.error(CR_SERVER_LOST, self.failed), self.stream.seq + 1)
            session.done()
            return
        self.tracker.file_sent()  # the server's answer to the statement follows
        conn.sink = session.transport
        conn.on_answer = session.answered

    def broke(self, t: ResponseTracker | None, exc: Exception | None) -> None:
        """The server connection failed (or answered) before the end of the file."""
        session, conn = self.session, self.conn
        conn.upload = None
        conn.close()
        if session.transport is None:
            return  # the client left first
        if session.active is conn:
            session.active = None
        if session.held is conn:
            session.held = None
        session.in_tx = False
        cause = exc or "the server answered before the end of the file"
        self.failed = f"Lost connection to backend server {conn.address} during query: {cause}"
        log("mysql_infile_failed", "warn", peer=session.peer, server=conn.address, cause=str(cause))
        self.resume()  # the rest of the file is read, and dropped

    def pause(self) -> None:
        """The server's socket is full: the client is read no more until it drains."""
        transport = self.session.transport
        if self.paused or transport is None:
            return
        self.paused = True
        self.pauses += 1
        transport.pause_reading()
        if self.pauses == 1:
            log(
                "mysql_infile_paused", "info", peer=self.session.peer, server=self.conn.address,
                bytes=self.stream.bytes,
            )  # fmt: skip

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            transport = self.session.transport
            if transport is not None:
                transport.resume_reading()
