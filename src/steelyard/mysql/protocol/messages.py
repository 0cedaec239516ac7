"""OK, ERR and EOF packets: built for clients, read from servers (protocol 4.1 forms).

The proxy reads the status flags of every OK and EOF a server sends (in a transaction? more
results coming?), which is what its pooling and routing decide on; it never needs the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from steelyard.mysql.protocol.constants import Capability, Status
from steelyard.mysql.protocol.wire import Cursor, Malformed, lenenc_int, lenenc_str

OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB


@dataclass(frozen=True)
class Ok:
    affected_rows: int = 0
    last_insert_id: int = 0
    status: Status = Status.AUTOCOMMIT
    warnings: int = 0
    info: bytes = b""
    session_state: bytes = b""


@dataclass(frozen=True)
class Err:
    code: int
    sqlstate: str
    message: str


@dataclass(frozen=True)
class Eof:
    warnings: int
    status: Status


def ok(
    msg: Ok = Ok(), capabilities: int = Capability.PROTOCOL_41, header: int = OK_HEADER
) -> bytes:
    """An OK payload (header 0xFE: the OK that ends a result set under DEPRECATE_EOF)."""
    out = bytes((header,)) + lenenc_int(msg.affected_rows) + lenenc_int(msg.last_insert_id)
    out += int(msg.status).to_bytes(2, "little") + msg.warnings.to_bytes(2, "little")
    if capabilities & Capability.SESSION_TRACK:
        out += lenenc_str(msg.info)
        if msg.status & Status.SESSION_STATE_CHANGED:
            out += lenenc_str(msg.session_state)
    else:
        out += msg.info
    return out


def error(code_state: tuple[int, str], message: str) -> bytes:
    code, state = code_state
    return b"\xff" + code.to_bytes(2, "little") + b"#" + state.encode() + message.encode()


def eof(status: Status, warnings: int = 0) -> bytes:
    return b"\xfe" + warnings.to_bytes(2, "little") + int(status).to_bytes(2, "little")


def is_ok(payload: bytes) -> bool:
    return bool(payload) and payload[0] == OK_HEADER


def is_err(payload: bytes) -> bool:
    return bool(payload) and payload[0] == ERR_HEADER


def is_eof(payload: bytes) -> bool:
    """A real EOF packet (an OK with header 0xFE is 7 bytes or more: see is_ok_eof)."""
    return bool(payload) and payload[0] == EOF_HEADER and len(payload) < 9


def parse_ok(payload: bytes, capabilities: int = Capability.PROTOCOL_41) -> Ok:
    c = Cursor(payload, 1)
    affected = c.lenenc_int() or 0
    insert_id = c.lenenc_int() or 0
    status = Status(c.u16())
    warnings = c.u16()
    info = b""
    state = b""
    if capabilities & Capability.SESSION_TRACK:
        if c.remaining():
            info = c.lenenc_str() or b""
        if status & Status.SESSION_STATE_CHANGED and c.remaining():
            state = c.lenenc_str() or b""
    else:
        info = c.rest()
    return Ok(affected, insert_id, status, warnings, info, state)


def parse_err(payload: bytes) -> Err:
    c = Cursor(payload, 1)
    code = c.u16()
    state = "HY000"
    if c.remaining() and payload[c.pos] == 0x23:  # '#'
        c.u8()
        state = c.fixed(5).decode("ascii", "replace")
    return Err(code, state, c.rest().decode("utf-8", "replace"))


def parse_eof(payload: bytes) -> Eof:
    if len(payload) < 5:
        raise Malformed("an EOF packet has 5 bytes")
    c = Cursor(payload, 1)
    warnings = c.u16()
    return Eof(warnings, Status(c.u16()))


def status_of(payload: bytes, capabilities: int) -> Status | None:
    """The server status of an OK or EOF payload (None for anything else)."""
    if is_eof(payload):
        return parse_eof(payload).status
    if payload and payload[0] in (OK_HEADER, EOF_HEADER):
        return parse_ok(payload, capabilities).status
    return None
