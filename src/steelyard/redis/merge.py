"""One answer from the answers of every group's master to FUNCTION, SCRIPT and CONFIG, as one
Redis would give it. Pure functions over raw reply bytes, in the client's protocol: the parts
come in RESP2 or RESP3 (whatever the client speaks), and the answer is written in the same,
by editing one server's reply (see `values`) rather than rebuilding it.

Every merge is called with every part, errors included, and decides what an error means.
"""

from __future__ import annotations

from steelyard.redis import resp
from steelyard.redis.values import Value, read, write

NOTBUSY = b"-NOTBUSY No scripts in execution right now.\r\n"


def is_error(raw: bytes) -> bool:
    return raw[:1] in (b"-", b"!")


def first_error(parts: list[bytes]) -> bytes | None:
    for raw in parts:
        if is_error(raw):
            return raw
    return None


def same(parts: list[bytes]) -> bytes:
    """A change made on every master (FUNCTION LOAD / DELETE / FLUSH / RESTORE, SCRIPT LOAD /
    FLUSH, CONFIG SET): the first refusal, else the answer they all gave. Masters that agree
    give the same bytes (the library's name, the script's sha1, +OK)."""
    error = first_error(parts)
    if error is not None:
        return error
    if any(raw != parts[0] for raw in parts[1:]):
        return resp.error("ERR the groups' masters answered differently: " + _show(parts))
    return parts[0]


def _show(parts: list[bytes]) -> str:
    return " / ".join(raw[:64].decode("utf-8", "replace").strip() for raw in parts)


def libraries(parts: list[bytes]) -> bytes:
    """FUNCTION LIST: each library once (by its name), in the order first seen."""
    error = first_error(parts)
    if error is not None:
        return error
    if len(parts) == 1:
        return parts[0]
    seen: set[bytes] = set()
    out: list[bytes] = []
    for raw in parts:
        for library in read(raw).items or []:
            name_value = library.get(b"library_name")
            name = name_value.text if name_value is not None else None
            if name is None or name not in seen:
                if name is not None:
                    seen.add(name)
                out.append(write(library))
    return b"*%d\r\n" % len(out) + b"".join(out)


def function_stats(parts: list[bytes]) -> bytes:
    """FUNCTION STATS as one server: the running script of the master running one (if any);
    per engine, the counts one server reports (every master has the same libraries, loaded
    through the proxy: the largest count is the one a master missing none would give)."""
    error = first_error(parts)
    if error is not None:
        return error
    replies = [read(raw) for raw in parts]
    merged = replies[0]
    running = next(
        (r.get(b"running_script") for r in replies if not _null(r.get(b"running_script"))),
        None,
    )
    if running is not None:
        _put(merged, b"running_script", running)
    engines = merged.get(b"engines")
    if engines is not None:
        for name, counts in engines.pairs():
            for other in replies[1:]:
                theirs = other.get(b"engines")
                them = theirs.get(name) if theirs is not None else None
                if them is None:
                    continue
                for field, value in counts.pairs():
                    their = them.get(field)
                    if _count(value) >= 0 and their is not None and _count(their) > _count(value):
                        value.text = their.text
        # an engine only some masters list (none today: Lua is built in) is added as seen
        known = {name for name, _ in engines.pairs()}
        for other in replies[1:]:
            theirs = other.get(b"engines")
            for name, counts in theirs.pairs() if theirs is not None else []:
                if name not in known and engines.items is not None:
                    known.add(name)
                    engines.items += [Value(ord("$"), name), counts]
    return write(merged)


def _count(value: Value) -> int:
    """An integer reply's value; -1 for anything else."""
    return int(value.text or b"0") if value.kind == ord(":") else -1


def _null(value: Value | None) -> bool:
    return value is None or value.is_null


def _put(reply: Value, name: bytes, value: Value) -> None:
    items = reply.items or []
    for i in range(0, len(items) - 1, 2):
        if items[i].text == name:
            items[i + 1] = value
            return


def kill(parts: list[bytes]) -> bytes:
    """FUNCTION KILL / SCRIPT KILL on every master: OK when one of them killed something; else
    a refusal other than NOTBUSY (BUSY: a script of the other kind runs; UNKILLABLE: it
    wrote); else NOTBUSY, as a server running nothing answers."""
    if any(raw == resp.OK for raw in parts):
        return resp.OK
    for raw in parts:
        if is_error(raw) and not raw.startswith(b"-NOTBUSY"):
            return raw
    return parts[0] if parts else NOTBUSY


def exists(parts: list[bytes]) -> bytes:
    """SCRIPT EXISTS: 1 for a sha1 only where every master has the script."""
    error = first_error(parts)
    if error is not None:
        return error
    replies = [read(raw) for raw in parts]
    merged = replies[0]
    for other in replies[1:]:
        for mine, theirs in zip(merged.items or [], other.items or [], strict=False):
            if theirs.text == b"0":
                mine.text = b"0"
    return write(merged)
