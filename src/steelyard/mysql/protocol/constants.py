"""Protocol constants: capability flags, server status flags, commands, and the error codes the
proxy answers with (numbers and SQLSTATEs as MySQL and MariaDB define them)."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class Capability(IntFlag):
    LONG_PASSWORD = 1
    FOUND_ROWS = 1 << 1
    LONG_FLAG = 1 << 2
    CONNECT_WITH_DB = 1 << 3
    NO_SCHEMA = 1 << 4
    COMPRESS = 1 << 5
    ODBC = 1 << 6
    LOCAL_FILES = 1 << 7
    IGNORE_SPACE = 1 << 8
    PROTOCOL_41 = 1 << 9
    INTERACTIVE = 1 << 10
    SSL = 1 << 11
    IGNORE_SIGPIPE = 1 << 12
    TRANSACTIONS = 1 << 13
    RESERVED = 1 << 14
    SECURE_CONNECTION = 1 << 15
    MULTI_STATEMENTS = 1 << 16
    MULTI_RESULTS = 1 << 17
    PS_MULTI_RESULTS = 1 << 18
    PLUGIN_AUTH = 1 << 19
    CONNECT_ATTRS = 1 << 20
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    SESSION_TRACK = 1 << 23
    DEPRECATE_EOF = 1 << 24


class Status(IntFlag):
    IN_TRANS = 1
    AUTOCOMMIT = 1 << 1
    MORE_RESULTS_EXISTS = 1 << 3
    NO_GOOD_INDEX_USED = 1 << 4
    NO_INDEX_USED = 1 << 5
    CURSOR_EXISTS = 1 << 6
    LAST_ROW_SENT = 1 << 7
    DB_DROPPED = 1 << 8
    NO_BACKSLASH_ESCAPES = 1 << 9
    METADATA_CHANGED = 1 << 10
    QUERY_WAS_SLOW = 1 << 11
    PS_OUT_PARAMS = 1 << 12
    IN_TRANS_READONLY = 1 << 13
    SESSION_STATE_CHANGED = 1 << 14


class Command(IntEnum):
    SLEEP = 0x00
    QUIT = 0x01
    INIT_DB = 0x02
    QUERY = 0x03
    FIELD_LIST = 0x04
    CREATE_DB = 0x05
    DROP_DB = 0x06
    REFRESH = 0x07
    SHUTDOWN = 0x08
    STATISTICS = 0x09
    PROCESS_INFO = 0x0A
    CONNECT = 0x0B
    PROCESS_KILL = 0x0C
    DEBUG = 0x0D
    PING = 0x0E
    TIME = 0x0F
    DELAYED_INSERT = 0x10
    CHANGE_USER = 0x11
    BINLOG_DUMP = 0x12
    TABLE_DUMP = 0x13
    CONNECT_OUT = 0x14
    REGISTER_SLAVE = 0x15
    STMT_PREPARE = 0x16
    STMT_EXECUTE = 0x17
    STMT_SEND_LONG_DATA = 0x18
    STMT_CLOSE = 0x19
    STMT_RESET = 0x1A
    SET_OPTION = 0x1B
    STMT_FETCH = 0x1C
    DAEMON = 0x1D
    BINLOG_DUMP_GTID = 0x1E
    RESET_CONNECTION = 0x1F


# Errors the proxy answers with: (code, SQLSTATE). Texts are built where they are raised, in
# the server's wording (see messages.error()).
ER_CON_COUNT_ERROR = (1040, "08004")  # Too many connections
ER_HANDSHAKE_ERROR = (1043, "08S01")  # Bad handshake
ER_ACCESS_DENIED_ERROR = (1045, "28000")  # Access denied for user '%s'@'%s' (using password: %s)
ER_NO_DB_ERROR = (1046, "3D000")  # No database selected
ER_UNKNOWN_COM_ERROR = (1047, "08S01")  # Unknown command
ER_HOST_NOT_PRIVILEGED = (1130, "HY000")  # Host '%s' is not allowed to connect to this server
ER_NET_PACKET_TOO_LARGE = (1153, "08S01")  # Got a packet bigger than 'max_allowed_packet' bytes
ER_NET_PACKETS_OUT_OF_ORDER = (1156, "08S01")  # Got packets out of order
ER_NET_READ_ERROR = (1158, "08S01")  # Got an error reading communication packets
ER_TOO_MANY_USER_CONNECTIONS = (1203, "42000")  # User %s already has more than ... connections
ER_UNKNOWN_STMT_HANDLER = (1243, "HY000")  # Unknown prepared statement handler (%.*s) given to %s
ER_WRONG_ARGUMENTS = (1210, "HY000")  # Incorrect arguments to %s
ER_MAX_PREPARED_STMT_COUNT_REACHED = (1461, "42000")  # Can't create more than ... (current ...)
ER_STMT_HAS_NO_OPEN_CURSOR = (1421, "HY000")  # The statement (%lu) has no open cursor.
ER_UNKNOWN_ERROR = (1105, "HY000")  # what the proxy's own refusals (firewall) are sent as
ER_SECURE_TRANSPORT_REQUIRED = (3159, "HY000")  # MySQL's; MariaDB has no code of its own
ER_MALFORMED_PACKET = (1835, "HY000")  # Malformed communication packet
ER_CONNECTION_KILLED = (1927, "70100")  # Connection was killed (MariaDB)
ER_NO_SUCH_THREAD = (1094, "HY000")  # Unknown thread id: %lu
ER_KILL_DENIED_ERROR = (1095, "HY000")  # You are not owner of thread %lu
ER_QUERY_INTERRUPTED = (1317, "70100")  # Query execution was interrupted
ER_NO_SUCH_QUERY = (1957, "HY000")  # Unknown query id: %lld (MariaDB)
ER_NOT_SUPPORTED_YET = (1235, "42000")  # This version of MariaDB doesn't yet support '%s'
ER_UNSUPPORTED_PS = (1295, "HY000")  # This command is not supported in the prepared ...
CR_SERVER_LOST = (2013, "HY000")  # Lost connection to MySQL server during query

UTF8MB4_GENERAL_CI = 45
MAX_PAYLOAD = 0xFFFFFF  # a payload this long continues in the next packet
