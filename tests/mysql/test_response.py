"""Where a server's answer ends: every command shape, against a real MariaDB, with and without
CLIENT_DEPRECATE_EOF. After the tracker says an answer is complete, a PING must be answered by
the very next packet: a tracker that stopped early or late fails that check. Every answer is
also framed again and given to the raw-stream scanner (whole, one byte at a time, and followed
by other bytes), which must end at the same byte."""

from __future__ import annotations

import pytest

from fixtures.mariadb import PASSWORD, USER
from fixtures.mysql_client import CAPS, RawClient
from steelyard.mysql.protocol import messages
from steelyard.mysql.protocol.constants import MAX_PAYLOAD, Capability, Command, Status
from steelyard.mysql.protocol.packets import frame
from steelyard.mysql.protocol.response import ResponseTracker, expects_answer
from steelyard.mysql.protocol.scanner import AnswerScanner
from steelyard.mysql.protocol.wire import Malformed

EOF_MODES = pytest.mark.parametrize(
    "caps", [CAPS, CAPS | Capability.DEPRECATE_EOF], ids=["eof", "deprecate_eof"]
)


def run(client: RawClient, command: int, body: bytes) -> tuple[ResponseTracker, list[bytes]]:
    client.send(bytes((command,)) + body)
    tracker = ResponseTracker(command, client.capabilities)
    packets = []
    if not expects_answer(command):
        return tracker, packets
    while True:
        _, payload = client.read()
        packets.append(payload)
        if tracker.feed(payload):
            break
    # nothing of this answer is left: a PING's OK is the next packet, sequence id 1
    client.send(bytes((Command.PING,)))
    seq, payload = client.read()
    assert (seq, messages.is_ok(payload)) == (1, True), (seq, payload)
    raw = b"".join(frame(p, i + 1)[0] for i, p in enumerate(packets))
    caps = client.capabilities
    for chunks, end in (
        ([raw], len(raw)),  # whole: the one-pass reading of common answers
        ([raw + b"\x07\x00\x00\x01more"], len(raw)),  # followed by other bytes
        ([raw[i : i + 1] for i in range(len(raw))], 1),  # a byte at a time
    ):
        scanner = scan(command, caps, chunks, end)
        got = scanner.tracker
        assert (got.status, got.results, got.error) == (tracker.status, tracker.results,
                                                         tracker.error)  # fmt: skip
    return tracker, packets


def scan(command: int, caps: int, chunks: list[bytes], end: int) -> AnswerScanner:
    """The scanner that read `chunks`, after checking it ends the answer at `end` in the
    chunk that ends it."""
    scanner = AnswerScanner(ResponseTracker(command, caps))
    for chunk in chunks:
        at = scanner.feed(chunk)
        if at >= 0:
            assert scanner.done and at == end
            return scanner
    raise AssertionError("the scanner did not find the end")


def scanned(command: int, caps: int, chunks: list[bytes]) -> int:
    """Where the scanner ends the answer: the offset in the chunk that ends it."""
    scanner = AnswerScanner(ResponseTracker(command, caps))
    for chunk in chunks:
        end = scanner.feed(chunk)
        if end >= 0:
            assert scanner.done
            return end
    raise AssertionError("the scanner did not find the end")


@pytest.fixture(scope="module")
def table(mariadb):
    mariadb.sql(
        "CREATE DATABASE IF NOT EXISTS resp; CREATE TABLE IF NOT EXISTS resp.t "
        "(id INT PRIMARY KEY, name VARCHAR(20));"
        "REPLACE INTO resp.t VALUES (1,'a'),(2,'b'),(3,NULL);"
    )
    return "resp.t"


@EOF_MODES
def test_result_sets_oks_and_errors(mariadb, table, caps):
    c = RawClient(mariadb.port, USER, PASSWORD, caps)
    t, packets = run(c, Command.QUERY, f"SELECT id, name FROM {table} ORDER BY id".encode())
    # count, 2 definitions, [EOF], 3 rows, end
    assert len(packets) == 1 + 2 + (0 if caps & Capability.DEPRECATE_EOF else 1) + 3 + 1
    assert t.error is None and t.status & Status.AUTOCOMMIT and t.results == 1
    t, packets = run(c, Command.QUERY, f"SELECT * FROM {table} WHERE id > 99".encode())
    assert t.results == 1 and t.error is None  # an empty set still ends
    t, _ = run(c, Command.QUERY, b"SELECT * FROM no_such.table")
    assert t.error is not None and t.error.code == 1146
    t, _ = run(c, Command.QUERY, b"BEGIN")
    assert t.status & Status.IN_TRANS
    t, _ = run(c, Command.QUERY, f"UPDATE {table} SET name = name WHERE id = 1".encode())
    assert t.status & Status.IN_TRANS and t.error is None
    t, _ = run(c, Command.QUERY, b"ROLLBACK")
    assert not t.status & Status.IN_TRANS
    c.close()


@EOF_MODES
def test_multi_statements_and_procedures(mariadb, table, caps):
    c = RawClient(mariadb.port, USER, PASSWORD, caps)
    t, _ = run(c, Command.QUERY, f"SELECT 1; SELECT id FROM {table}; DO 1; SELECT 2".encode())
    assert t.results == 4 and t.error is None and not t.status & Status.MORE_RESULTS_EXISTS
    t, _ = run(c, Command.QUERY, b"SELECT 1; SELECT * FROM no_such.t; SELECT 3")
    assert t.results == 1 and t.error is not None and t.error.code == 1146  # stops at the error
    # one statement for the server (the mariadb client would split it at each ';')
    run(
        c, Command.QUERY, b"CREATE PROCEDURE IF NOT EXISTS resp.two() BEGIN SELECT 1; SELECT 2; END"
    )
    t, _ = run(c, Command.QUERY, b"CALL resp.two()")
    assert t.results == 3  # two result sets and the CALL's own OK
    c.close()


@EOF_MODES
def test_other_commands(mariadb, table, caps):
    c = RawClient(mariadb.port, USER, PASSWORD, caps)
    t, _ = run(c, Command.INIT_DB, b"resp")
    assert t.error is None
    t, _ = run(c, Command.INIT_DB, b"no_such_db")
    assert t.error is not None and t.error.code == 1049
    t, packets = run(c, Command.FIELD_LIST, b"t\0")
    assert t.error is None and len(packets) == 3  # two definitions and an end
    t, _ = run(c, Command.SET_OPTION, b"\x00\x00")  # multi-statements on: an EOF answers
    assert t.error is None
    t, packets = run(c, Command.STATISTICS, b"")
    assert packets[0].startswith(b"Uptime:")
    t, _ = run(c, Command.RESET_CONNECTION, b"")
    assert t.error is None
    t, _ = run(c, 0x60, b"")  # no such command
    assert t.error is not None and t.error.code == 1047
    c.close()


@EOF_MODES
def test_prepared_statements(mariadb, table, caps):
    c = RawClient(mariadb.port, USER, PASSWORD, caps)
    t, _ = run(c, Command.STMT_PREPARE, f"SELECT id, name FROM {table} WHERE id > ?".encode())
    assert t.statement is not None
    stmt_id, columns, params = t.statement
    assert (columns, params) == (2, 1)
    # EXECUTE id, flags 0, iterations 1, null bitmap, new-params-bound 1, type LONG, value 0
    execute = stmt_id.to_bytes(4, "little") + b"\x00" + (1).to_bytes(4, "little")
    execute += b"\x00" + b"\x01" + b"\x03\x00" + (0).to_bytes(4, "little")
    t, packets = run(c, Command.STMT_EXECUTE, execute)
    assert t.error is None and t.results == 1
    assert sum(1 for p in packets if p[:1] == b"\x00") == 3  # three binary rows
    t, _ = run(c, Command.STMT_PREPARE, b"DO ?")  # params only
    assert t.statement is not None and t.statement[1:] == (0, 1)
    t, _ = run(c, Command.STMT_PREPARE, b"SELEC nonsense")
    assert t.error is not None and t.error.code == 1064
    t, _ = run(c, Command.STMT_CLOSE, stmt_id.to_bytes(4, "little"))  # no answer
    t, _ = run(c, Command.STMT_EXECUTE, execute)
    assert t.error is not None and t.error.code == 1243  # unknown statement handler
    c.close()


def test_malformed_answers_raise():
    t = ResponseTracker(Command.QUERY, CAPS)
    with pytest.raises(Malformed):
        t.feed(b"")
    t = ResponseTracker(Command.QUERY, CAPS)
    assert not t.feed(b"\x01")  # one column
    assert not t.feed(b"\x03def")  # its definition
    with pytest.raises(Malformed):
        t.feed(b"\x00not an eof")


def test_scanner_skips_long_rows():
    """A row of 16 MiB or more arrives as a full packet (its first byte may be 0xFE, the
    lenenc prefix of a long string) and continuations; none of it is an end."""
    caps = CAPS | Capability.DEPRECATE_EOF
    row = b"\xfe" + (MAX_PAYLOAD + 10).to_bytes(8, "little") + b"x" * (MAX_PAYLOAD + 10)
    end = messages.ok(messages.Ok(), caps, header=0xFE)
    packets = [b"\x01", b"\x03def" + b"\x00" * 20]
    raw = b"".join(frame(p, i + 1)[0] for i, p in enumerate(packets))
    long_row, seq = frame(row, len(packets) + 1)
    raw += long_row + frame(end, seq)[0]
    assert scanned(Command.QUERY, caps, [raw]) == len(raw)
    step = 65536
    assert scanned(Command.QUERY, caps, [raw[i : i + step] for i in range(0, len(raw), step)]) == (
        len(raw) - (len(raw) - 1) // step * step
    )
