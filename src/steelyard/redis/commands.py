"""The command table: arity, flags and key positions of every command, from Redis 7's COMMAND.

Redis 7 describes where each command's keys are with key specifications (a begin search, by
index or by keyword, then a find-keys rule, a range or a key count), which covers commands whose
keys move (XREAD ... STREAMS k1 k2, EVAL script numkeys k1 k2, ZUNIONSTORE dst numkeys k1 k2).
The proxy routes with them instead of a hand-written list, so it knows the commands of the
Redis it runs in front of. `command_table.json` is the COMMAND reply of Redis 7.0 (Debian 12),
used until a backend answers COMMAND itself.

Regenerate the snapshot: `python -m steelyard.redis.commands HOST:PORT > command_table.json`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("command_table.json")


@dataclass(frozen=True, slots=True)
class KeySpec:
    begin: str  # "index" | "keyword" | "unknown"
    index: int = 0  # begin index, or where the keyword search starts (negative: from the end)
    keyword: bytes = b""
    find: str = "range"  # "range" | "keynum" | "unknown"
    lastkey: int = 0  # range: relative to the first key; -1 = up to the end
    keystep: int = 1
    limit: int = 0
    keynumidx: int = 0  # keynum: where the count is, relative to the begin index
    firstkey: int = 1


@dataclass(slots=True)
class CommandInfo:
    name: str
    arity: int
    flags: frozenset[str]
    specs: tuple[KeySpec, ...]
    subcommands: dict[str, CommandInfo] = field(default_factory=dict)

    @property
    def write(self) -> bool:
        """May change data: everything not flagged readonly (EVAL too; EVAL_RO is readonly)."""
        return "readonly" not in self.flags

    @property
    def blocking(self) -> bool:
        return "blocking" in self.flags

    def arity_ok(self, argc: int) -> bool:
        return argc == self.arity if self.arity >= 0 else argc >= -self.arity

    def key_positions(self, argv: list[bytes]) -> list[int]:
        """Indices of the keys in argv, in the order the specs give them, without repeats."""
        out: list[int] = []
        argc = len(argv)
        for spec in self.specs:
            if spec.begin == "index":
                start = spec.index
            elif spec.begin == "keyword":
                start = _find_keyword(argv, spec)
                if start < 0:
                    continue
            else:
                if self.name == "sort":
                    _sort_store(argv, out)
                continue
            if start >= argc:
                continue
            if spec.find == "range":
                if spec.lastkey >= 0:
                    last = start + spec.lastkey
                else:
                    # -1: up to the last argument; -2: the one before it, and so on.
                    last = argc + spec.lastkey
                    if spec.limit > 1:
                        last = start + (last - start) // spec.limit
                positions = range(start, min(last, argc - 1) + 1, spec.keystep or 1)
            elif spec.find == "keynum":
                at = start + spec.keynumidx
                if at >= argc:
                    continue
                try:
                    count = int(argv[at])
                except ValueError:
                    continue
                first = start + spec.firstkey
                positions = range(first, min(first + count * spec.keystep, argc), spec.keystep)
            else:
                continue
            for p in positions:
                if p not in out:
                    out.append(p)
        return out


def _sort_store(argv: list[bytes], out: list[int]) -> None:
    """SORT's STORE destination, which its key specs leave unknown: found as Redis finds it
    (the arguments of LIMIT, BY and GET skipped; the last STORE wins)."""
    store = -1
    i = 2
    while i < len(argv):
        word = argv[i].upper()
        if word == b"LIMIT":
            i += 2
        elif word in (b"BY", b"GET"):
            i += 1
        elif word == b"STORE" and i + 1 < len(argv):
            store = i + 1
        i += 1
    if store > 0 and store not in out:
        out.append(store)


def _find_keyword(argv: list[bytes], spec: KeySpec) -> int:
    """Index after the keyword, searching from `index` (negative: backwards from the end)."""
    word = spec.keyword.upper()
    argc = len(argv)
    if spec.index >= 0:
        for i in range(spec.index, argc):
            if argv[i].upper() == word:
                return i + 1
    else:
        for i in range(argc + spec.index, 0, -1):
            if argv[i].upper() == word:
                return i + 1
    return -1


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return {_s(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _spec(raw: list[Any]) -> KeySpec:
    info = _pairs(raw)
    begin = _pairs(info.get("begin_search", []))
    find = _pairs(info.get("find_keys", []))
    bspec = _pairs(begin.get("spec", []))
    fspec = _pairs(find.get("spec", []))
    btype = _s(begin.get("type", "unknown"))
    ftype = _s(find.get("type", "unknown"))
    keyword = bspec.get("keyword", b"")
    return KeySpec(
        begin=btype,
        index=int(bspec.get("index", bspec.get("startfrom", 0))),
        keyword=keyword if isinstance(keyword, bytes) else str(keyword).encode(),
        find=ftype,
        lastkey=int(fspec.get("lastkey", 0)),
        keystep=int(fspec.get("keystep", 1)),
        limit=int(fspec.get("limit", 0)),
        keynumidx=int(fspec.get("keynumidx", 0)),
        firstkey=int(fspec.get("firstkey", 1)),
    )


def _info(entry: list[Any]) -> CommandInfo:
    name, arity, flags = _s(entry[0]).lower(), int(entry[1]), entry[2]
    specs = tuple(_spec(s) for s in entry[8]) if len(entry) > 8 else ()
    if not specs and len(entry) > 5 and int(entry[3]) > 0:
        # No key specs (older servers): the legacy first/last/step triple.
        first, last, step = int(entry[3]), int(entry[4]), int(entry[5])
        specs = (
            KeySpec(
                "index", first, find="range", lastkey=last - first if last >= 0 else last,
                keystep=step,
            ),
        )  # fmt: skip
    info = CommandInfo(name, arity, frozenset(_s(f) for f in flags), specs)
    if len(entry) > 9:
        for sub in entry[9]:
            sinfo = _info(sub)
            info.subcommands[sinfo.name.split("|", 1)[-1]] = sinfo
    return info


class CommandTable:
    def __init__(self, commands: dict[str, CommandInfo]) -> None:
        self.commands = commands

    @classmethod
    def from_reply(cls, reply: list[Any]) -> CommandTable:
        """From the COMMAND reply as hiredis parses it (nested lists of bytes and ints)."""
        table = {}
        for entry in reply:
            info = _info(entry)
            table[info.name] = info
        return cls(table)

    @classmethod
    def snapshot(cls) -> CommandTable:
        return cls.from_reply(_from_json(json.loads(SNAPSHOT.read_text())))

    def lookup(self, argv: list[bytes]) -> CommandInfo | None:
        """The command (or its subcommand, as OBJECT ENCODING) that argv names."""
        info = self.commands.get(argv[0].decode("latin-1").lower())
        if info is not None and info.subcommands and len(argv) > 1:
            sub = info.subcommands.get(argv[1].decode("latin-1").lower())
            if sub is not None:
                return sub
        return info


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("latin-1")
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def fetch(host: str, port: int) -> list[Any]:
    """The raw COMMAND reply of a server (blocking; for the snapshot script and the tests)."""
    import socket

    from steelyard.redis.resp import ReplyFramer, parse

    framer = ReplyFramer()
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"*1\r\n$7\r\nCOMMAND\r\n")
        while True:
            data = s.recv(1 << 20)
            if not data:
                raise ConnectionError("closed before the COMMAND reply")
            replies = framer.feed(data)
            if replies:
                reply = parse(replies[0])
                assert isinstance(reply, list)
                return reply


if __name__ == "__main__":
    host, _, port = sys.argv[1].rpartition(":")
    json.dump(_to_json(fetch(host, int(port))), sys.stdout, separators=(",", ":"))
