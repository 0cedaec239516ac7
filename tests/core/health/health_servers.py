"""Real servers on 127.0.0.1 for the health tests, with counters to wait on (never sleeps).

A module of its own (not conftest) so tests can import it without clashing with tests/conftest.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def response(status: int, reason: str = "X") -> bytes:
    return f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


class CannedServer:
    """An asyncio server answering every connection the same way, chosen at accept time.

    mode "respond": read the request head, write `response`; "close": close at once without a
    byte; "silent": accept and never answer. Every accepted connection is counted under
    `cond`, so a test can wait for "n connections" instead of sleeping.
    """

    def __init__(self, response: bytes = response(200, "OK"), mode: str = "respond") -> None:
        self.response = response
        self.mode = mode
        self.connections = 0
        self.by_status: dict[int, int] = {}
        self.requests: list[bytes] = []
        self.cond = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> CannedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        async with self.cond:
            self.connections += 1
            mode, resp = self.mode, self.response
            if mode == "respond" and resp.startswith(b"HTTP/1.1 "):
                status = int(resp[9:12])
                self.by_status[status] = self.by_status.get(status, 0) + 1
            self.cond.notify_all()
        try:
            if mode == "silent":
                await reader.read()  # until the prober gives up and closes
            elif mode == "respond":
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(resp)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # a TCP probe connects and closes without a request
        finally:
            writer.close()
            self._writers.discard(writer)
            self._handlers.discard(task)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self.cond:
            await self.cond.wait_for(predicate)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for w in list(self._writers):
            w.close()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
