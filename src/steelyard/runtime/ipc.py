"""Supervisor <-> worker messages: one JSON object per line over a Unix socket pair.

The channel carries control, not data: config pushes, server state flips, stats every second and
passive-health reports. JSON lines keep it debuggable with strace and cheap at these rates.

Supervisor -> worker:  {"t": "config", "config": {...}, "states": [[pool, address, state]],
                        "first": true (at start) | "seq": n (on reload, answered by "applied")}
                       {"t": "state", "pool", "server", "state": {...}}  ("seq": n when
                        an operator's change: answered by "applied")
                       {"t": "stop", "timeout": seconds}  stop accepting, drain, exit
                       {"t": "query", "n", "q": {...}, "until": monotonic deadline}  another
                        worker's request, answered by "answer" with the same n (dropped when
                        read after the deadline: the asker has been told it came to nothing)
                       {"t": "answer", "n", "a": [answer, ...]}  the answers to this worker's
                        "ask" n (the workers that answered within RELAY_TIMEOUT)
Worker -> supervisor:  {"t": "ready", "pid"} | {"t": "applied", "seq"} | {"t": "error", "message"}
                       {"t": "result", "pool", "server", "ok", "reason"}
                       {"t": "stats", "servers": [[pool, address, active, total, failures,
                                                   bytes_in, bytes_out], ...]}   (deltas but active)
                       {"t": "ask", "n", "q": {...}}  a request for the other workers (the one
                        whose index is q["worker"], else all), relayed by the supervisor as
                        "query"; {"t": "answer", "n", "a": {...}} answers a "query"
                       {"t": "redis_script", "body": latin-1 text} | {"t": "redis_script",
                        "flush": true}  a SCRIPT LOAD / FLUSH through a Redis proxy

Requests between workers are the MySQL listener's SHOW PROCESSLIST and KILL (q["listen"] names
the listener, see mysql/processlist.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

MAX_LINE = 64 * 1024 * 1024  # a config push can be large
RELAY_TIMEOUT = 5.0  # seconds the supervisor waits for a worker's answer to a relayed request


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Channel:
    """A message stream over an asyncio reader/writer pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, sock: Any) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE)
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    async def recv(self) -> dict[str, Any] | None:
        """The next message, or None when the peer has gone."""
        try:
            line = await self.reader.readline()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            return None
        if not line:
            return None
        try:
            return json.loads(line)
        except ValueError:
            # A peer killed mid-write leaves half a line: treat it as gone, like EOF.
            return None

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except ConnectionError:
            pass

    def close(self) -> None:
        self.writer.close()
