"""Shared connection counts: each worker writes its row, everyone reads the column sum."""

from __future__ import annotations

import subprocess
import sys

from steelyard.core.backend import Pool, Server
from steelyard.core.counters import SharedCounters


def test_rows_sum_per_slot_and_a_cleared_row_stops_counting():
    sup = SharedCounters.create()
    try:
        sup.rows = 3
        w0, w2 = SharedCounters(sup.fd, 0), SharedCounters(sup.fd, 2)
        w0.add(5, 2)
        w2.add(5, 1)
        w2.add(6, 4)
        assert (sup.total(5), sup.total(6), sup.total(7)) == (3, 4, 0)
        sup.clear_row(2)  # worker 2 died: its connections are gone
        assert (sup.total(5), sup.total(6)) == (2, 0)
    finally:
        sup.close()


def test_another_process_sees_the_counts():
    sup = SharedCounters.create()
    try:
        sup.rows = 2
        code = (
            "import sys; from steelyard.core.counters import SharedCounters as C; "
            "c = C(int(sys.argv[1]), 1); c.add(3, 7)"
        )
        subprocess.run([sys.executable, "-c", code, str(sup.fd)], check=True, pass_fds=[sup.fd])
        assert sup.total(3) == 7
    finally:
        sup.close()


def test_try_acquire_refuses_beyond_max_conns_counted_over_workers():
    sup = SharedCounters.create()
    try:
        sup.rows = 2
        other = SharedCounters(sup.fd, 1)
        mine = SharedCounters(sup.fd, 0)
        mine.rows = 2
        server = Server("127.0.0.1:1", max_conns=2, shared=mine, slot=0)
        pool = Pool("p", [server])
        other.add(0, 1)  # a connection held by the other worker
        assert pool.try_acquire(server)
        assert not pool.try_acquire(server)  # 2 in use over both workers
        assert (server.active, server.load, server.total) == (1, 2, 1)
        assert pool.pick() is None  # full everywhere
        other.add(0, -1)
        assert pool.pick() is server
    finally:
        sup.close()
