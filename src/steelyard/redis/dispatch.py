"""What the proxy does with one command, sans-IO: answer it, send it to a slot, split it, ...

`classify(argv, table)` decides from the command table alone (no connection state), so the
rules are testable and the session layer only carries them out:

- LOCAL: the proxy answers itself (PING, ECHO, QUIT, SELECT, AUTH, INFO, DBSIZE, SCAN, ...).
- SLOT: every key hashes to one slot; forward to its owner.
- SPLIT: MGET, MSET, DEL, UNLINK, EXISTS, TOUCH over several slots; split per slot and merged.
- TRANSACTION / PUBSUB / BLOCKING: need a connection of their own (pinned or dedicated).
- FANOUT: KEYS, FLUSHDB, FLUSHALL on every group (only with `allow_fanout`).
- SERVER: FUNCTION, SCRIPT and CONFIG subcommands, sent to every group's master (or one, or
  every server) and merged as one Redis would answer (see `scripting`).
- ERROR: the reply is known now (unknown command, wrong arity, CROSSSLOT, not supported).

Keys in several slots answer CROSSSLOT, as Redis Cluster does; the decision says in `cross`
what the command would be if one group owned all those slots, so that the session (which knows
the slot map) can run it there (`cross_slot: group`).

Errors use Redis's own texts where Redis has one, with their code (`ERR ...`, `CROSSSLOT ...`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from steelyard.redis.commands import CommandTable
from steelyard.redis.slots import slot_of


class Kind(Enum):
    LOCAL = "local"
    SLOT = "slot"
    SPLIT = "split"
    TRANSACTION = "transaction"
    PUBSUB = "pubsub"
    BLOCKING = "blocking"
    FANOUT = "fanout"
    SERVER = "server"
    ERROR = "error"


@dataclass(slots=True)
class Decision:
    kind: Kind
    name: str = ""  # the command (or command|subcommand), lower case
    slot: int = -1  # SLOT / BLOCKING / TRANSACTION keyed commands
    keys: list[int] = field(default_factory=list)  # key positions in argv
    error: str = ""  # ERROR: the message, without the leading '-'
    write: bool = False
    # CROSSSLOT only: the kind the command has when one group owns all its keys' slots.
    cross: Kind | None = None


# Answered by the proxy itself.
LOCAL = frozenset(
    {"ping", "echo", "quit", "select", "auth", "info", "dbsize", "scan", "hello", "command",
     "time", "reset", "client|setname", "client|getname", "client|setinfo", "client|id"}
)  # fmt: skip
TRANSACTION = frozenset({"multi", "exec", "discard", "watch", "unwatch"})
PUBSUB = frozenset(
    {"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
     "publish", "spublish", "pubsub"}
)  # fmt: skip
FANOUT = frozenset({"keys", "flushdb", "flushall"})
# Split per slot and merged when their keys span several slots (MSET is then not atomic).
SPLIT = frozenset({"mget", "mset", "del", "unlink", "exists", "touch"})
# Server-wide or topology commands that mean nothing through a sharding proxy.
UNSUPPORTED = frozenset(
    {"debug", "shutdown", "monitor", "sync", "psync", "replconf", "replicaof",
     "slaveof", "migrate", "move", "randomkey", "cluster", "readonly", "readwrite", "wait",
     "waitaof", "bgsave", "save", "lastsave", "bgrewriteaof", "client",
     "swapdb", "failover", "latency", "slowlog", "memory", "module", "acl", "lolwut",
     "restore-asking", "asking", "role"}
)  # fmt: skip


# Refused with a reason of their own (CLIENT TRACKING: client-side caching needs invalidation
# messages from every server a client's keys live on, which the proxy does not relay).
REFUSED = {
    "client|tracking": "ERR CLIENT TRACKING is not supported by the proxy (client-side caching "
    "needs invalidation messages from every group)",
}

# Server-wide commands the proxy runs on every group (see `scripting`).
SERVER = frozenset({"function", "script", "config"})
# Subcommands of those it refuses: SCRIPT DEBUG needs one server's own session with the
# client; CONFIG REWRITE would rewrite the servers' files, which is not a proxy's call.
SERVER_REFUSED = {
    "script|debug": "ERR SCRIPT DEBUG is not supported by the proxy (it debugs on one server)",
    "config|rewrite": "ERR CONFIG REWRITE is not supported by the proxy: it must not rewrite "
    "the servers' config files; run it on each server",
}

# Commands that run a script on a server or load one: `scripts: deny` refuses them.
SCRIPTS = frozenset(
    {"eval", "eval_ro", "evalsha", "evalsha_ro", "fcall", "fcall_ro", "function|load",
     "function|restore", "script|load"}
)  # fmt: skip


def not_supported(name: str) -> str:
    return f"ERR command '{name.upper().replace('|', ' ')}' is not supported by the proxy"


def unknown_subcommand(argv: list[bytes]) -> str:
    # Redis: "unknown subcommand 'X'. Try FUNCTION HELP." (the subcommand cut at 128 bytes).
    sub = argv[1].decode("utf-8", "replace")[:128]
    return f"ERR unknown subcommand '{sub}'. Try {argv[0].decode('utf-8', 'replace').upper()} HELP."


def unknown(argv: list[bytes]) -> str:
    # Redis: "unknown command 'X', with args beginning with: 'a' 'b' " (the args quoted).
    name = argv[0].decode("utf-8", "replace")
    args = "".join(f"'{a.decode('utf-8', 'replace')[:128]}' " for a in argv[1:][:64])
    return f"ERR unknown command '{name}', with args beginning with: {args}"


CROSSSLOT = "CROSSSLOT Keys in request don't hash to the same slot"


def classify(argv: list[bytes], table: CommandTable) -> Decision:
    info = table.lookup(argv)
    if info is None:
        return Decision(Kind.ERROR, error=unknown(argv))
    name = info.name
    base = name.split("|", 1)[0]
    if not info.arity_ok(len(argv)):
        return Decision(
            Kind.ERROR, name, error=f"ERR wrong number of arguments for '{name}' command"
        )
    if base in LOCAL or name in LOCAL:
        return Decision(Kind.LOCAL, name)
    if name in REFUSED:
        return Decision(Kind.ERROR, name, error=REFUSED[name])
    if base in UNSUPPORTED:
        return Decision(Kind.ERROR, name, error=not_supported(base))
    if base in SERVER:
        if name == base:
            return Decision(Kind.ERROR, name, error=unknown_subcommand(argv))
        refused = SERVER_REFUSED.get(name)
        if refused is not None:
            return Decision(Kind.ERROR, name, error=refused)
        return Decision(Kind.SERVER, name, write=info.write)
    if base in PUBSUB:
        return Decision(Kind.PUBSUB, name)
    if base in FANOUT:
        return Decision(Kind.FANOUT, name, write=info.write)
    keys = info.key_positions(argv)
    if base in TRANSACTION:
        slot = _one_slot(argv, keys)
        if slot == -2:
            return Decision(Kind.ERROR, name, keys=keys, error=CROSSSLOT, cross=Kind.TRANSACTION)
        return Decision(Kind.TRANSACTION, name, slot=slot, keys=keys)
    if not keys:
        # EVAL/FCALL with no keys and other keyless commands: no slot tells where to run them.
        return Decision(Kind.ERROR, name, error=not_supported(base) + " without keys")
    slot = _one_slot(argv, keys)
    if slot == -2 and base in SPLIT:
        return Decision(Kind.SPLIT, name, keys=keys, write=info.write)
    kind = Kind.BLOCKING if _blocks(base, argv, info.blocking) else Kind.SLOT
    if slot == -2:
        return Decision(Kind.ERROR, name, keys=keys, error=CROSSSLOT, write=info.write, cross=kind)
    return Decision(kind, name, slot=slot, keys=keys, write=info.write)


def _one_slot(argv: list[bytes], keys: list[int]) -> int:
    """The slot shared by every key; -1 without keys, -2 when they differ."""
    slot = -1
    for i in keys:
        s = slot_of(argv[i])
        if slot == -1:
            slot = s
        elif s != slot:
            return -2
    return slot


def _blocks(base: str, argv: list[bytes], flagged: bool) -> bool:
    """XREAD/XREADGROUP block only with BLOCK, though their flags say `blocking` either way."""
    if base in ("xread", "xreadgroup"):
        return any(a.upper() == b"BLOCK" for a in argv)
    return flagged


def fast_table(table: CommandTable) -> dict[bytes, tuple[int, bool]]:
    """Commands whose only key is argv[1] and that need nothing but forwarding (GET, SET,
    INCR, HSET, LPUSH, ...), by their name as clients send it (lower or upper case): (arity,
    may write). The session routes these without `classify`; every other spelling or command
    takes the general path."""
    out: dict[bytes, tuple[int, bool]] = {}
    excluded = LOCAL | TRANSACTION | PUBSUB | FANOUT | SPLIT | UNSUPPORTED | SERVER
    for name, info in table.commands.items():
        if name in excluded or info.subcommands or info.blocking or len(info.specs) != 1:
            continue
        if "movablekeys" in info.flags or not (info.arity >= 2 or info.arity <= -2):
            continue
        spec = info.specs[0]
        if (spec.begin, spec.index, spec.find, spec.lastkey) != ("index", 1, "range", 0):
            continue
        for spelling in (name.encode(), name.upper().encode()):
            out[spelling] = (info.arity, info.write)
    return out
