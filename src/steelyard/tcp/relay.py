"""Move bytes between two connected sockets, both ways, with splice when the flow is bulk.

This is the TCP proxy's hot path. Sockets are driven by the edge-triggered `Poller` (see
poller.py): an event only says "something changed", so each direction keeps two flags, whether
its source may have data and whether its destination may take more, and `pump()` moves bytes
until one of them turns false (EAGAIN, or a short read, which means the socket was drained, as
nginx also assumes).

Each direction starts in copy mode (`recv_into` one shared buffer, `send`): for short exchanges
that is cheaper than pipes. When a read fills the whole buffer the flow is bulk, and that
direction switches to `os.splice` through a pipe, so the payload never enters user space
(HAProxy's splice-auto does the same). Pipes come from a free list to save their syscalls.

Half-close is kept: EOF from one side becomes `shutdown(SHUT_WR)` on the other once everything
read has been written, and the relay ends when both directions have ended. A reset or any
socket error aborts both sides with a reset (SO_LINGER 0), so the peer learns of it too.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import socket
import struct
from collections.abc import Callable

from steelyard.tcp.poller import HANGUP, READABLE, WRITABLE, Poller

CHUNK = 64 * 1024
PIPE_SIZE = 1024 * 1024
HAVE_SPLICE = hasattr(os, "splice")
_SPLICE_FLAGS = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if HAVE_SPLICE else 0
_LINGER_RESET = struct.pack("ii", 1, 0)
_ROUNDS = 16  # reads per direction per wake-up before yielding to other connections

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
        self.open = 0  # pipes alive, free or in use

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
        "can_read",
        "can_write",
        "dfd",
        "done",
        "dst",
        "eof",
        "hup",
        "nbytes",
        "pending",
        "pipe",
        "piped",
        "relay",
        "sfd",
        "src",
    )

    def __init__(self, relay: Relay, src: _socket.socket, dst: _socket.socket) -> None:
        self.relay = relay
        self.src, self.dst = src, dst
        self.sfd, self.dfd = src.fileno(), dst.fileno()
        self.pending: bytes | memoryview = b""
        self.pipe: tuple[int, int] | None = None
        self.piped = 0
        self.eof = self.done = False
        # Optimistic at start: a fresh socket is writable, and the first read is cheap.
        self.can_read = self.can_write = True
        # The source reported a hang-up (FIN, reset, error): a short read no longer means
        # "drained", since the FIN came with the same edge as the data and no edge will follow.
        self.hup = False
        self.nbytes = 0

    def pump(self) -> bool:
        """Move what can be moved now; True when it stopped only to let others run."""
        for _ in range(_ROUNDS):
            if (self.pending or self.piped) and (not self.can_write or not self._flush()):
                return False
            if self.eof:
                if not self.done:
                    self._finish()
                return False
            if not self.can_read or not self._read():
                return False
        return True

    def _read(self) -> bool:
        """One read (and the write it feeds). False when the source has nothing more now."""
        if self.pipe is not None:
            return self._splice_in()
        try:
            n = self.src.recv_into(_BUF)
        except (BlockingIOError, InterruptedError):
            self.can_read = False
            return False
        except OSError as exc:
            self.relay.abort(exc)
            return False
        if n == 0:
            self.eof = True
            return True
        self.nbytes += n
        self.relay.idle = 0
        if n < CHUNK and not self.hup:
            self.can_read = False  # a short read drained the socket; the next edge wakes us
        try:
            sent = self.dst.send(_VIEW[:n])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.relay.abort(exc)
            return False
        if sent < n:
            self.pending = bytes(_VIEW[sent:n])
            return self._flush()
        if n == CHUNK and HAVE_SPLICE:
            # A full buffer means bulk data: let the kernel move the rest.
            self.pipe = self.relay.pipes.get()
        return True

    def _splice_in(self) -> bool:
        assert self.pipe is not None
        try:
            n = os.splice(self.sfd, self.pipe[1], PIPE_SIZE, flags=_SPLICE_FLAGS)
        except (BlockingIOError, InterruptedError):
            # Splice can stop short of what is queued (pipe slots), so only EAGAIN says empty.
            self.can_read = False
            return False
        except OSError as exc:
            self.relay.abort(exc)
            return False
        if n == 0:
            self.eof = True
            return True
        self.nbytes += n
        self.relay.idle = 0
        self.piped = n
        return self._flush()

    def saw(self, events: int) -> None:
        """Record what an event says about the source."""
        self.can_read = True
        if events & HANGUP:
            self.hup = True

    def _flush(self) -> bool:
        """Write out what is held; False when dst is full (its next edge resumes us)."""
        try:
            if self.piped:
                assert self.pipe is not None
                while self.piped:
                    self.piped -= os.splice(self.pipe[0], self.dfd, self.piped, flags=_SPLICE_FLAGS)
                    self.relay.idle = 0  # a slow reader draining is activity, not idleness
            else:
                pending = memoryview(self.pending)
                while pending:
                    pending = pending[self.dst.send(pending) :]
                    self.relay.idle = 0
                self.pending = b""
        except (BlockingIOError, InterruptedError):
            if not self.piped:
                self.pending = bytes(pending)
            self.can_write = False
            return False
        except OSError as exc:
            self.relay.abort(exc)
            return False
        return True

    def _finish(self) -> None:
        """Everything read has been written: pass the EOF on as a half-close."""
        self.done = True
        self.release_pipe()
        relay = self.relay
        if relay.c2s.done and relay.s2c.done:
            # Both directions ended: close() sends the FIN, a shutdown would be one more syscall.
            relay.close(None)
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


def _closed(relay: Relay, exc: BaseException | None) -> None:
    """on_close after the relay has closed: nothing more to report."""


class Relay:
    """Both directions between `client` and `server`; calls `on_close(relay, error)` once."""

    __slots__ = ("c2s", "client", "closed", "idle", "on_close", "pipes", "poller", "s2c", "server")

    def __init__(
        self,
        poller: Poller,
        client: _socket.socket,
        server: _socket.socket,
        pipes: PipePool,
        on_close: Callable[[Relay, BaseException | None], None],
    ) -> None:
        self.poller = poller
        self.client, self.server = client, server
        self.pipes = pipes
        self.on_close = on_close
        self.closed = False
        self.idle = 0  # sweeps since the last byte moved (see the frontend's idle sweeper)
        self.c2s = _Half(self, client, server)
        self.s2c = _Half(self, server, client)

    def start(
        self, initial: bytes = b"", client_hup: bool = False, server_hup: bool = False
    ) -> None:
        """Begin relaying; `initial` is client data already read (after a PROXY header).

        Both sockets must already be registered with the poller; this takes their events over.
        `*_hup` carry hang-ups seen before the relay existed (their edges were consumed then).
        """
        self.c2s.hup = client_hup
        self.s2c.hup = server_hup
        if initial:
            self.c2s.nbytes += len(initial)
            self.c2s.pending = initial
        self.poller.handlers[self.c2s.sfd] = self._on_client
        self.poller.handlers[self.s2c.sfd] = self._on_server
        self.pump()

    def _on_client(self, events: int) -> None:
        if events & READABLE:
            self.c2s.saw(events)
        if events & WRITABLE:
            self.s2c.can_write = True
        self.pump()

    def _on_server(self, events: int) -> None:
        if events & READABLE:
            self.s2c.saw(events)
        if events & WRITABLE:
            self.c2s.can_write = True
        self.pump()

    def pump(self) -> None:
        if self.closed:
            return
        more = self.c2s.pump()
        if self.closed:
            return
        more = self.s2c.pump() or more
        if more and not self.closed:
            # An edge is reported once: come back for the rest after others had their turn.
            self.poller.loop.call_soon(self.pump)

    @property
    def bytes_in(self) -> int:
        return self.c2s.nbytes

    @property
    def bytes_out(self) -> int:
        return self.s2c.nbytes

    def abort(self, exc: BaseException | None) -> None:
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
        self.c2s.release_pipe()
        self.s2c.release_pipe()
        self.poller.close_socket(self.client)
        self.poller.close_socket(self.server)
        on_close, self.on_close = self.on_close, _closed
        on_close(self, exc)
        # Break the relay <-> halves <-> session cycles so reference counting frees them now;
        # left to the cyclic GC, a busy worker spent its time in collections.
        self.c2s.relay = self.s2c.relay = None  # type: ignore[assignment]
