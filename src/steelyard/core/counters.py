"""Active-connection counts shared by the workers, so `max_conns` and `least_conn` are global.

Each worker owns one row of an int64 table in shared memory (a memfd the supervisor creates
and passes to every worker) and only ever writes its own row; a reader sums a server's column
over the rows in use. Single writers per cell need no locks: a count read while another worker
updates it is at most one connection stale, as with HAProxy's per-thread counters. When a
worker dies the supervisor clears its row, so its connections stop counting.

Slots (columns) are given to servers by the supervisor and never reused in a process's life,
so a connection released after a reload removed its server can't skew another server's count.
"""

from __future__ import annotations

import mmap
import os

ROWS = 256  # the most workers the config allows
SLOTS = 4096  # servers over the process's life; beyond that a server counts locally
_CELL = 8
SIZE = ROWS * SLOTS * _CELL


class SharedCounters:
    def __init__(self, fd: int, row: int = -1) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, SIZE)
        self.cells = memoryview(self._map).cast("q")
        self.row = row  # this process's row; -1 in the supervisor, which only reads and clears
        self.rows = 1  # rows in use: the highest worker index + 1

    @classmethod
    def create(cls) -> SharedCounters:
        fd = os.memfd_create("steelyard-counters", 0)
        os.ftruncate(fd, SIZE)  # pages are allocated only when touched
        return cls(fd)

    def add(self, slot: int, delta: int) -> None:
        self.cells[self.row * SLOTS + slot] += delta

    def total(self, slot: int) -> int:
        return sum(self.cells[slot : slot + SLOTS * self.rows : SLOTS])

    def clear_row(self, row: int) -> None:
        start = row * SLOTS * _CELL
        self._map[start : start + SLOTS * _CELL] = bytes(SLOTS * _CELL)

    def close(self) -> None:
        self.cells.release()
        self._map.close()
        os.close(self.fd)
