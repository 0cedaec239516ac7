"""Move bytes between two connected sockets, both ways, with splice when the flow is bulk.

This is the TCP proxy's hot path, so it skips asyncio transports and protocols: it registers
raw file descriptors with the loop (`add_reader` / `add_writer`) and does one syscall per event.
Each direction starts in copy mode (`recv_into` a buffer, `send`): for short exchanges that is
cheaper than creating pipes. When a read fills the whole buffer the flow is bulk, and that
direction switches to `os.splice` through a pipe, so the payload never enters user space
(HAProxy's splice-auto does the same). Pipes come from a small free list to save the syscalls.

Half-close is kept: EOF from one side becomes `shutdown(SHUT_WR)` on the other once everything
read has been written, and the relay ends when both directions have ended. A reset or any
socket error aborts both sides with a reset (SO_LINGER 0), so the peer learns of it too.
"""

from __future__ import annotations

import _socket
import asyncio
import fcntl
import os
import socket
import struct
from collections.abc import Callable

CHUNK = 64 * 1024
PIPE_SIZE = 1024 * 1024
HAVE_SPLICE = hasattr(os, "splice")
_SPLICE_FLAGS = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if HAVE_SPLICE else 0
_LINGER_RESET = struct.pack("ii", 1, 0)

# One read buffer per process: a worker is single-threaded and every read is written out (or
# copied to `pending`) before the next one, so relays never need a buffer of their own.
# Allocating and zeroing 64 KiB per direction was the largest cost of a short connection.
_BUF = bytearray(CHUNK)
_VIEW = memoryview(_BUF)


class PipePool:
    """Reusable empty pipes: creating and sizing one costs three syscalls per direction."""

    def __init__(self, keep: int = 64) -> None:
        self._free: list[tuple[int, int]] = []
        self._keep = keep
        self.open = 0  # pipes alive, free or in use: watched by the fd-leak tests

    def get(self) -> tuple[int, int]:
        if self._free:
            return self._free.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # pipe-max-size may be lower for non-root; the default 64 KiB still works
        self.open += 1
        return r, w

    def put(self, pipe: tuple[int, int], empty: bool) -> None:
        # A pipe that still holds bytes belongs to an aborted flow: never hand it out again.
        if empty and len(self._free) < self._keep:
            self._free.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])
            self.open -= 1

    def close(self) -> None:
        for r, w in self._free:
            os.close(r)
            os.close(w)
            self.open -= 1
        self._free.clear()


class _Half:
    """One direction of a relay: `src` -> `dst`."""

    __slots__ = (
        "dfd",
        "done",
        "dst",
        "eof",
        "loop",
        "nbytes",
        "pending",
        "pipe",
        "piped",
        "reading",
        "relay",
        "sfd",
        "src",
        "writing",
    )

    def __init__(self, relay: Relay, src: _socket.socket, dst: _socket.socket) -> None:
        self.relay = relay
        self.loop = relay.loop
        self.src, self.dst = src, dst
        self.sfd, self.dfd = src.fileno(), dst.fileno()
        self.pending: bytes | memoryview = b""
        self.pipe: tuple[int, int] | None = None
        self.piped = 0
        self.eof = self.done = False
        self.reading = self.writing = False
        self.nbytes = 0

    # registration -------------------------------------------------------------------------

    def start_reading(self) -> None:
        if not self.reading:
            self.reading = True
            self.loop.add_reader(self.sfd, self.on_readable)

    def stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.sfd)

    def start_writing(self) -> None:
        if not self.writing:
            self.writing = True
            self.loop.add_writer(self.dfd, self.on_writable)

    def stop_writing(self) -> None:
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.dfd)

    # events -------------------------------------------------------------------------------

    def on_readable(self) -> None:
        if self.pipe is not None:
            self._splice_in()
            return
        try:
            n = self.src.recv_into(_BUF)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.relay.abort(exc, self)
            return
        if n == 0:
            self._on_eof()
            return
        self.nbytes += n
        self.relay.idle = 0
        try:
            sent = self.dst.send(_VIEW[:n])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.relay.abort(exc, self)
            return
        if sent < n:
            self.pending = bytes(_VIEW[sent:n])
            self.stop_reading()
            self.start_writing()
        elif n == CHUNK and HAVE_SPLICE:
            # A full buffer means bulk data: let the kernel move the rest.
            self.pipe = self.relay.pipes.get()

    def _splice_in(self) -> None:
        assert self.pipe is not None
        try:
            n = os.splice(self.sfd, self.pipe[1], PIPE_SIZE, flags=_SPLICE_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.relay.abort(exc, self)
            return
        if n == 0:
            self._on_eof()
            return
        self.nbytes += n
        self.relay.idle = 0
        self.piped = n
        if self._splice_out():
            return
        self.stop_reading()
        self.start_writing()

    def _splice_out(self) -> bool:
        """Drain the pipe into dst; False when dst is full (the caller waits for writable)."""
        assert self.pipe is not None
        while self.piped:
            try:
                m = os.splice(self.pipe[0], self.dfd, self.piped, flags=_SPLICE_FLAGS)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                self.relay.abort(exc, self)
                return True
            self.piped -= m
        return True

    def on_writable(self) -> None:
        if self.pipe is not None and self.piped:
            if not self._splice_out():
                return
        elif self.pending:
            try:
                sent = self.dst.send(self.pending)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.relay.abort(exc, self)
                return
            self.pending = self.pending[sent:]
            if self.pending:
                return
        if self.relay.closed:
            return
        self.stop_writing()
        if self.eof:
            self._finish()
        else:
            self.start_reading()

    def _on_eof(self) -> None:
        self.eof = True
        self.stop_reading()
        if not self.pending and not self.piped:
            self._finish()

    def _finish(self) -> None:
        """Everything read has been written: pass the EOF on as a half-close."""
        self.done = True
        self.release_pipe()
        if self.relay.c2s.done and self.relay.s2c.done:
            # Both directions ended: close() sends the FIN, a shutdown would be one more syscall.
            self.relay.close(None)
            return
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is gone already; the other half will notice

    def release_pipe(self) -> None:
        if self.pipe is not None:
            self.relay.pipes.put(self.pipe, empty=self.piped == 0)
            self.pipe = None
            self.piped = 0


class Relay:
    """Both directions between `client` and `server`; calls `on_close(relay, error)` once."""

    __slots__ = ("c2s", "client", "closed", "idle", "loop", "on_close", "pipes", "s2c", "server")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: _socket.socket,
        server: _socket.socket,
        pipes: PipePool,
        on_close: Callable[[Relay, BaseException | None], None],
    ) -> None:
        self.loop = loop
        self.client, self.server = client, server
        self.pipes = pipes
        self.on_close = on_close
        self.closed = False
        self.idle = 0  # sweeps since the last byte moved (see the listener's idle sweeper)
        self.c2s = _Half(self, client, server)
        self.s2c = _Half(self, server, client)

    def start(self, initial: bytes = b"") -> None:
        """Begin relaying; `initial` is client data already read (after a PROXY header)."""
        if initial:
            self.c2s.nbytes += len(initial)
            self.c2s.pending = initial
            self.c2s.start_writing()
        else:
            self.c2s.start_reading()
        self.s2c.start_reading()

    @property
    def bytes_in(self) -> int:
        return self.c2s.nbytes

    @property
    def bytes_out(self) -> int:
        return self.s2c.nbytes

    def abort(self, exc: BaseException | None, half: _Half | None = None) -> None:
        """Tear down both sides with a reset so neither peer waits for data that won't come."""
        if self.closed:
            return
        for sock in (self.client, self.server):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        self.close(exc)

    def close(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        for half in (self.c2s, self.s2c):
            half.stop_reading()
            half.stop_writing()
            half.release_pipe()
        self.client.close()
        self.server.close()
        self.on_close(self, exc)
