"""The MySQL listener's timeouts and its limit before login: silent, slow and idle clients go,
the others are served.

The attacks (issue 12, before the fix, MariaDB 10.11 behind one worker): 10,010 connections
that never sent a login filled `max_clients` and every real client got 1040 "Too many
connections" for as long as they stayed (MariaDB cuts them at connect_timeout=10); a logged-in
client idle for hours kept its place (MariaDB: wait_timeout=28800); a login packet was buffered
up to max_allowed_packet (64 MiB) before anyone knew who sent it. Here `max_clients` is small so
the lock-out is cheap to reproduce.
"""

from __future__ import annotations

import socket
import threading
import time

import pymysql
import pytest

from fixtures.mysql_client import RawClient, primary_proxy
from fixtures.procs import wait_for
from steelyard.mysql.protocol import messages
from steelyard.mysql.protocol.constants import Command
from steelyard.mysql.protocol.response import ResponseTracker


def start(tmp_path, steelyard, primary, **listener):
    port, sy = primary_proxy(tmp_path, steelyard, primary, **listener)
    wait_for(lambda: login(port), what="the proxy").close()
    return port, sy


def login(port: int) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="app", password="pw",
                           autocommit=True, connect_timeout=10)  # fmt: skip


def closed(sock: socket.socket) -> bool:
    """Whether the proxy closed the connection (after its greeting, which is read first)."""
    sock.settimeout(0.05)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_silent_clients_are_cut_at_the_login_timeout(tmp_path, steelyard, mariadb):
    port, sy = start(tmp_path, steelyard, mariadb, max_clients=5, login_timeout="1s")
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    for s in silent:  # each was greeted: each holds a place
        assert s.recv(4)[3:4] == b"\x00"
    with pytest.raises(pymysql.err.OperationalError) as refused:
        login(port)
    assert refused.value.args == (1040, "Too many connections")
    # cut without a word, as MariaDB does at connect_timeout; then real clients come in
    wait_for(lambda: all(closed(s) for s in silent), what="the silent clients cut")
    conn = login(port)
    with conn.cursor() as c:
        c.execute("SELECT 1")
        assert c.fetchone() == (1,)
    conn.close()
    assert sy.count_log(r"event=mysql_timeout .*timeout=login_timeout") == 5
    for s in silent:
        s.close()


def test_a_trickle_of_bytes_does_not_stretch_the_login(tmp_path, steelyard, mariadb):
    """A client sending its login one byte at a time is cut at login_timeout from its connect,
    however steadily it trickles."""
    port, _ = start(tmp_path, steelyard, mariadb, login_timeout="1s")
    s = socket.create_connection(("127.0.0.1", port))
    s.recv(4)
    s.sendall((1000).to_bytes(3, "little") + b"\x01")  # a login of 1000 bytes, then a trickle
    started = time.monotonic()
    cut = False
    while not cut and time.monotonic() - started < 15:
        try:
            s.sendall(b"\x00")
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        cut = closed(s)
    assert cut
    s.close()
    login(port).close()  # the next client is served


def test_idle_clients_are_closed_at_the_idle_timeout(tmp_path, steelyard, mariadb):
    port, sy = start(tmp_path, steelyard, mariadb, idle_timeout="1s")
    idle = RawClient(port, "app", "pw")
    busy = login(port)
    with busy.cursor() as c:  # a command under way is no idle time
        c.execute("SELECT SLEEP(3)")
        assert c.fetchone() == (0,)
        c.execute("SELECT 1")
        assert c.fetchone() == (1,)
    busy.close()
    wait_for(lambda: closed(idle.sock), what="the idle client closed")
    assert sy.count_log(r"event=mysql_timeout .*user=app .*timeout=idle_timeout") >= 1
    login(port).close()


def test_a_large_packet_before_login_is_refused(tmp_path, steelyard, mariadb):
    """Only the header of a 1 MiB "login" is read: it is refused at once (error 1153, as a
    packet over max_allowed_packet), nothing of it buffered; once logged in, the listener's
    max_allowed_packet applies."""
    port, _ = start(tmp_path, steelyard, mariadb)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.recv(65536)
    s.sendall((1 << 20).to_bytes(3, "little") + b"\x01")
    answer = b""
    while True:
        data = s.recv(65536)
        if not data:
            break
        answer += data
    err = messages.parse_err(answer[4:])
    assert (err.code, err.message) == (1153, "Got a packet bigger than 'max_allowed_packet' bytes")
    s.close()
    conn = login(port)
    with conn.cursor() as c:
        c.execute("SELECT LENGTH(%s)", ("x" * (1 << 20),))
        assert c.fetchone() == (1 << 20,)
    conn.close()


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


def answer(c: RawClient, command: int) -> tuple[ResponseTracker, list[bytes]]:
    """The answer to a command sent earlier."""
    tracker = ResponseTracker(command, c.capabilities)
    packets = []
    while not tracker.done:
        packets.append(c.read()[1])
        tracker.feed(packets[-1])
    return tracker, packets


def test_pipelined_commands_behind_a_slow_one_are_not_read_ahead(tmp_path, steelyard, mariadb):
    """A client that sends 64 MB of commands behind a slow one without reading any answer:
    the proxy reads about 1 MiB ahead and then stops reading it (the kernel's buffers hold the
    rest) instead of queueing all of it in the worker; then every command is answered, in
    order. Measured: the worker's peak RSS grew by 3 MB (+67 MB with the queue unbounded)."""
    port, sy = start(tmp_path, steelyard, mariadb)
    (worker,) = sy.worker_pids()
    c = RawClient(port, "app", "pw")
    before = status_kib(worker, "VmRSS")
    sql = b"\x03SELECT LENGTH('" + b"x" * (1 << 20) + b"')"
    sender = threading.Thread(target=lambda: [c.send(p) for p in [b"\x03SELECT SLEEP(2)"]
                                              + [sql] * 64])  # fmt: skip
    sender.start()
    t, _ = answer(c, Command.QUERY)  # SLEEP(2)
    assert t.error is None
    for _ in range(64):
        t, packets = answer(c, Command.QUERY)
        assert t.error is None and str(1 << 20).encode() in packets[-2], packets[-2][:20]
    sender.join()
    grown = status_kib(worker, "VmHWM") - before
    assert grown < 40 << 10, f"the worker's peak grew by {grown} KiB"
    c.close()


def test_a_client_that_reads_nothing_of_its_answer_is_cut_at_write_timeout(
    tmp_path, steelyard, mariadb
):
    """A client that asks for a big answer and reads none of it is closed at write_timeout
    (the server's net_write_timeout), with the server connection that was answering it; the
    others are served."""
    port, sy = start(tmp_path, steelyard, mariadb, write_timeout="1s")
    raw = RawClient(port, "app", "pw")
    # about 64 MB of rows: far more than the sockets and the proxy's buffer hold
    raw.send(
        bytes((Command.QUERY,))
        + b"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1000) "
        b"SELECT REPEAT('x', 65536) FROM r"
    )
    sy.wait_log(r"event=mysql_timeout .*timeout=write_timeout")
    raw.sock.settimeout(30)
    received = 0
    try:
        while chunk := raw.sock.recv(1 << 20):  # what was buffered, then the end
            received += len(chunk)
    except ConnectionResetError:
        pass
    assert received < 65536 * 1000  # cut off, not the whole answer
    conn = login(port)
    with conn.cursor() as c:
        c.execute("SELECT 2")
        assert c.fetchone() == (2,)
    conn.close()
