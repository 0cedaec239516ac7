"""An edge-triggered epoll set for the data path, nested in the asyncio loop.

Why not `loop.add_reader`: level-triggered registration must be switched on and off as a
relay's buffers fill and drain, and under uvloop each new registration costs a libuv poll
handle with about five epoll_ctl calls (it probes the fd, adds, deletes, deletes again). For a
short connection that was fourteen epoll_ctl calls. Here each socket is added once, for reading
and writing, edge-triggered, and leaves the set when it is closed: two epoll_ctl calls per proxied
connection. The epoll fd itself is one reader of the asyncio loop, so timers, the supervisor
channel and the listeners stay on asyncio.

Handlers must read until EAGAIN (or a short read) and write until EAGAIN, since an edge is
reported once. Sockets closed while a batch is dispatched are closed after it, so a recycled fd
number can never receive an event meant for the socket that had it before.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable
from typing import Any

from steelyard.log import log

Handler = Callable[[int], None]

OUT = select.EPOLLOUT
HANGUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_MASK = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
_BATCH = 512


class Poller:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ep = select.epoll()
        self.handlers: dict[int, Handler] = {}
        self._dispatching = False
        self._graveyard: list[Any] = []
        loop.add_reader(self.ep.fileno(), self._dispatch)

    def register(self, fd: int, handler: Handler) -> None:
        self.handlers[fd] = handler
        self.ep.register(fd, _MASK)

    def close_socket(self, sock: Any) -> None:
        """Forget the socket's handler and close it (after the current batch, if any)."""
        try:
            fd = sock.fileno()
        except OSError:
            return
        if fd >= 0:
            self.handlers.pop(fd, None)
        if self._dispatching:
            self._graveyard.append(sock)
        else:
            sock.close()

    def _dispatch(self) -> None:
        handlers = self.handlers
        self._dispatching = True
        try:
            for fd, events in self.ep.poll(0, _BATCH):
                handler = handlers.get(fd)
                if handler is None:
                    continue
                try:
                    handler(events)
                except Exception as exc:
                    # An edge is reported once: losing the rest of the batch would hang
                    # other connections, so a bug in one handler must not stop the loop.
                    log("poller_handler_error", "error", fd=fd, cause=repr(exc))
        finally:
            self._dispatching = False
            if self._graveyard:
                for sock in self._graveyard:
                    sock.close()
                self._graveyard.clear()

    def close(self) -> None:
        self.loop.remove_reader(self.ep.fileno())
        self.ep.close()
