"""Where a server's answer to one command ends, and what state it leaves, sans-IO.

The proxy forwards a server's packets to the client as they come and must know when the answer
is complete (to hand the connection back to the pool, or to run the next command) and what it
says: the final status flags (in a transaction? more results?), an error, a prepared
statement's id and counts. `ResponseTracker.feed(payload)` is given every packet of the
answer in order and returns True on its last one. It looks at a packet's first bytes only,
never at rows.

Shapes (protocol 4.1; "end" is EOF, or an OK with header 0xFE under CLIENT_DEPRECATE_EOF):
- OK | ERR, for most commands; EOF | ERR for COM_SET_OPTION.
- COM_FIELD_LIST: column definitions (no count before them), then an end.
- a result set: column count, that many column definitions, [EOF], rows, end; an end (or OK)
  with SERVER_MORE_RESULTS_EXISTS is followed by the next result (multi-statements, CALL).
  An ERR can also end the rows (a query killed mid-way).
- COM_STMT_PREPARE: OK(statement id, columns, params), then the parameter definitions [EOF]
  and the column definitions [EOF].
- COM_STMT_EXECUTE with a cursor: column definitions and an end with SERVER_STATUS_CURSOR_EXISTS,
  no rows (they come with COM_STMT_FETCH).
- COM_STMT_FETCH: binary rows (header 0x00), then an end (LAST_ROW_SENT once the cursor is
  exhausted), or an ERR.
- COM_STATISTICS: one bare string.
- LOCAL INFILE (with CLIENT_LOCAL_FILES): 0xFB and a file name where a result starts; the
  answer pauses (`infile` names the file) until the client's file has gone to the server
  (`file_sent()`), then goes on with an OK or ERR (more results may follow).
- no answer at all: COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA (see `expects_answer`).
"""

from __future__ import annotations

from steelyard.mysql.protocol import messages
from steelyard.mysql.protocol.constants import MAX_PAYLOAD, Capability, Command, Status
from steelyard.mysql.protocol.wire import Cursor, Malformed

NO_ANSWER = frozenset(
    {int(Command.QUIT), int(Command.STMT_CLOSE), int(Command.STMT_SEND_LONG_DATA)}
)

# states
_FIRST = 0  # the first packet of a result
_COLUMNS = 1  # column definitions still to come
_COLUMNS_EOF = 2  # the EOF after the column definitions (without DEPRECATE_EOF)
_ROWS = 3
_PARAMS = 4  # COM_STMT_PREPARE's parameter definitions
_PARAMS_EOF = 5
_DONE = 6
_INFILE = 7  # the server asked for a local file and waits for it
_MORE_RESULTS = int(Status.MORE_RESULTS_EXISTS)  # plain ints: IntFlag arithmetic is slow
_CURSOR_EXISTS = int(Status.CURSOR_EXISTS)
_STATE_CHANGED = int(Status.SESSION_STATE_CHANGED)
# commands and capabilities as plain ints, compared on every answer
_FETCH, _PREPARE = int(Command.STMT_FETCH), int(Command.STMT_PREPARE)
_STATISTICS, _FIELD_LIST = int(Command.STATISTICS), int(Command.FIELD_LIST)
_DEPRECATE_EOF = int(Capability.DEPRECATE_EOF)
_LOCAL_FILES = int(Capability.LOCAL_FILES)
ROWS = _ROWS  # rows (or FIELD_LIST definitions) until an end: what a scanner may skip
FIRST = _FIRST
INFILE = _INFILE
MORE_RESULTS = _MORE_RESULTS
CURSOR_EXISTS = _CURSOR_EXISTS
# answered by OK, ERR or result sets only (what a scanner may read in one go)
RESULT_COMMANDS = frozenset({int(Command.QUERY), int(Command.STMT_EXECUTE)})


def expects_answer(command: int) -> bool:
    return command not in NO_ANSWER


def is_end(payload: bytes) -> bool:
    """An EOF, or an OK with header 0xFE: a 0xFE packet shorter than a 16 MiB row could be."""
    return bool(payload) and payload[0] == 0xFE and len(payload) < MAX_PAYLOAD


class ResponseTracker:
    __slots__ = (
        "capabilities", "changed", "columns", "command", "eof_follows", "error", "infile",
        "params", "results", "state", "statement", "status",
    )  # fmt: skip

    def __init__(self, command: int, capabilities: int) -> None:
        self.capabilities = int(capabilities)  # a plain int: IntFlag arithmetic is slow
        self.reset(command)

    def reset(self, command: int) -> None:
        """Track the answer to another command (one tracker serves a connection's answers)."""
        capabilities = self.capabilities
        self.command = command
        self.state = _FIRST if command not in NO_ANSWER else _DONE
        if command == _FETCH:
            self.state = _ROWS  # binary rows of an open cursor, then an end
        self.eof_follows = not capabilities & _DEPRECATE_EOF
        self.columns = 0  # column definitions still to read
        self.params = 0
        self.status: int | None = None  # Status flags of the last OK / end seen
        self.error: messages.Err | None = None
        self.statement: tuple[int, int, int] | None = None  # prepare: (id, columns, params)
        self.results = 0  # result sets and OKs seen (several with multi-statements)
        # SERVER_SESSION_STATE_CHANGED in any OK or end of the answer (with CLIENT_SESSION_TRACK)
        self.changed = False
        self.infile: bytes | None = None  # the file a LOCAL INFILE request names

    @property
    def done(self) -> bool:
        return self.state == _DONE

    @staticmethod
    def status_of(payload: bytes) -> int:
        """The status flags of an EOF or OK, read in place (every answer ends with one)."""
        try:
            if payload[0] == 0xFE and len(payload) < 9:  # EOF: header, warnings, status
                return payload[3] | payload[4] << 8
            pos = 1  # OK: header, affected rows and last insert id (lenenc), status
            for _ in range(2):
                first = payload[pos]
                pos += 1 if first < 0xFB else 3 if first == 0xFC else 4 if first == 0xFD else 9
            return payload[pos] | payload[pos + 1] << 8
        except IndexError:
            raise Malformed(f"a short OK or EOF {payload[:16]!r}") from None

    def _ended(self, status: int) -> bool:
        """An OK or end of a result: the answer continues if more results exist."""
        self.status = status
        self.results += 1
        if status & _STATE_CHANGED:
            self.changed = True
        if status & _MORE_RESULTS:
            self.state = _FIRST
            return False
        self.state = _DONE
        return True

    def feed(self, payload: bytes) -> bool:
        """The next packet of the answer; True when it was the last one. Raises Malformed."""
        state = self.state
        if state == _ROWS:
            if payload and payload[0] == 0xFE and len(payload) < MAX_PAYLOAD:
                return self._ended(self.status_of(payload))
            if payload and payload[0] == 0xFF:
                self.error = messages.parse_err(payload)
                self.state = _DONE
                return True
            return False
        if state == _FIRST:
            if not payload:
                raise Malformed("an empty packet where an answer starts")
            head = payload[0]
            if head == 0xFF:
                self.error = messages.parse_err(payload)
                self.state = _DONE
                return True
            if self.command == _STATISTICS:
                self.state = _DONE
                return True
            if self.command == _FIELD_LIST:
                # column definitions straight away (no count), until an end
                if is_end(payload):
                    return self._ended(self.status_of(payload))
                self.state = _ROWS
                return False
            if head == 0x00:
                if self.command == _PREPARE:
                    return self._prepared(payload)
                return self._ended(self.status_of(payload))
            if head == 0xFE and len(payload) < 9:  # EOF: COM_SET_OPTION, old servers
                return self._ended(self.status_of(payload))
            if head == 0xFB:
                if not self.capabilities & _LOCAL_FILES:
                    raise Malformed("LOCAL INFILE was not offered to the server")
                self.infile = payload[1:]
                self.state = _INFILE
                return True  # the answer pauses here: the server waits for the file
            count = head if head < 0xFB else Cursor(payload).lenenc_int()
            if not count:
                raise Malformed("a result set of no columns")
            self.columns = count
            self.state = _COLUMNS
            return False
        if state in (_COLUMNS, _PARAMS):
            if state == _COLUMNS:
                self.columns -= 1
                left = self.columns
            else:
                self.params -= 1
                left = self.params
            if left > 0:
                return False
            if self.eof_follows:
                self.state = _COLUMNS_EOF if state == _COLUMNS else _PARAMS_EOF
                return False
            return self._after_definitions(state)
        if state in (_COLUMNS_EOF, _PARAMS_EOF):
            if not messages.is_eof(payload):
                raise Malformed("no EOF after the definitions")
            if state == _COLUMNS_EOF and self.command != _PREPARE:
                status = self.status_of(payload)
                if status & _CURSOR_EXISTS:
                    return self._ended(status)  # rows come with COM_STMT_FETCH
            return self._after_definitions(_COLUMNS if state == _COLUMNS_EOF else _PARAMS)
        raise Malformed("a packet after the end of the answer")

    def file_sent(self) -> None:
        """The file asked for has gone to the server: its answer to the statement follows."""
        self.infile = None
        self.state = _FIRST

    def finish(self, status: int) -> None:
        """The answer ended with one OK or result set and this status (read by a scanner)."""
        self.status = status
        self.results += 1
        if status & _STATE_CHANGED:
            self.changed = True
        self.state = _DONE

    def _after_definitions(self, which: int) -> bool:
        if self.command == _PREPARE:
            if which == _PARAMS and self.columns:
                self.state = _COLUMNS
                return False
            self.state = _DONE
            return True
        self.state = _ROWS
        return False

    def _prepared(self, payload: bytes) -> bool:
        c = Cursor(payload, 1)
        stmt_id, columns, params = c.u32(), c.u16(), c.u16()
        self.statement = (stmt_id, columns, params)
        self.columns, self.params = columns, params
        self.results += 1
        if params:
            self.state = _PARAMS
            return False
        if columns:
            self.state = _COLUMNS
            return False
        self.state = _DONE
        return True
