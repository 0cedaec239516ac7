"""Slow and half-sent admin requests against a real `steelyard run`: the header, body and
keep-alive timeouts, the connection cap, and the supervisor's descriptors kept for its probes.

The review's attack: 20,000 half-sent requests (headers never finished) held for aiohttp's
3,630 s keep-alive took every descriptor of the supervisor; a healthy server was marked down
with "too many open files" and the HTTP listener answered 503.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator

from fixtures.procs import base_config, connect, fd_count, free_port, recv_line, wait_for

REQUEST_HEAD = b"GET /api/pools HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def admin_port(sy) -> int:
    return int(sy.admin.rpartition(":")[2])


def read_until_closed(s: socket.socket, timeout: float = 60.0) -> bytes:
    """Everything the server sends until it closes (b"" when it reset the connection)."""
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for s in held:
            s.close()


def pool_config(tmp_path, backend, **admin) -> tuple[dict, int]:
    port = free_port()
    cfg = base_config(
        tmp_path,
        pools={"p": {
            "servers": [{"address": backend.address}],
            # the most sensitive probe: one failed check and the server is down
            "health": {"kind": "tcp", "interval": "100ms", "timeout": "1s", "rise": 1, "fall": 1},
        }},
        tcp=[{"name": "front", "listen": f"127.0.0.1:{port}", "pool": "p"}],
    )  # fmt: skip
    cfg["admin"].update(admin)
    return cfg, port


def served(port: int) -> bool:
    with connect(port) as s:
        return recv_line(s) == b"a\n"


def test_half_sent_requests_cannot_starve_the_probes(tmp_path, backends, steelyard):
    """2,000 half-sent requests against a supervisor limited to 512 descriptors (prlimit,
    soft = hard, so raising the soft limit gains nothing): the admin API holds at most 128
    (a quarter of the descriptors; admin.max_connections 256 lowered to fit), answers the rest
    503 at once, and closes the held ones with 408 at header_timeout.

    Measured (2 cores, other suites running), the same attack on the code before this fix:
    the supervisor reached 512 of 512 descriptors within 5 s, the server probed every 100 ms
    was marked down (`health_flip ... state=down reason="too many open files"`) and the TCP
    listener closed its clients with nothing to send. With it: 20 descriptors at rest, a peak
    of 150, 128 requests answered 408 after 4 s and 1,872 answered 503 at once, the listener
    serving throughout and the server never down."""
    a = backends("a")
    cfg, port = pool_config(tmp_path, a, header_timeout="4s")
    sy = steelyard(cfg, prefix=["prlimit", "--nofile=512:512", "--"])
    sy.wait_log(r"event=admin_listen .*max_connections=128")
    wait_for(lambda: served(port), what="the TCP listener")
    baseline = fd_count(sy.proc.pid)
    peak = baseline
    with sockets() as held:
        for i in range(2000):
            s = socket.create_connection(("127.0.0.1", admin_port(sy)), timeout=30)
            held.append(s)
            with contextlib.suppress(OSError):  # refused ones may be closed already
                s.sendall(REQUEST_HEAD + b"X-Slow: 1")  # never the final CRLF
            if i % 100 == 0:
                peak = max(peak, fd_count(sy.proc.pid))
                assert served(port)  # the data path is not touched
        peak = max(peak, fd_count(sy.proc.pid))
        assert served(port)
        answers = [status_of(read_until_closed(s)) for s in held]
    timed_out, full = answers.count(408), answers.count(503) + answers.count(0)
    assert timed_out >= 128 and timed_out + full == 2000, (timed_out, full)
    assert peak < 512 - 64, f"the supervisor held {peak} descriptors (baseline {baseline})"
    assert "Too many open files" not in sy.log()
    assert sy.count_log(r"event=health_flip .*state=down") == 0
    assert sy.count_log(r"event=admin_full") >= 1
    # every held connection is gone, and the API answers again
    wait_for(lambda: fd_count(sy.proc.pid) <= baseline + 8, what="descriptors given back")
    assert sy.server("p", a.address)["health"] == "up"


def test_timeouts_close_slow_and_idle_connections(tmp_path, backends, steelyard):
    """header_timeout counts from a request's first byte (a trickle of one byte a second does
    not reset it), body_timeout bounds the body, keepalive_timeout an idle connection; each
    ends with the connection closed (408 with a JSON reason where a request was under way),
    and the next client is served."""
    a = backends("a")
    cfg, _ = pool_config(tmp_path, a, header_timeout="2s", body_timeout="2s",
                         keepalive_timeout="3s")  # fmt: skip
    sy = steelyard(cfg)
    port = admin_port(sy)
    with sockets() as held:
        trickle = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.append(trickle)
        body = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.append(body)
        body.sendall(
            b"PUT /api/pools/p/servers/" + a.address.encode() + b" HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"state":'
        )
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.append(idle)
        idle.sendall(REQUEST_HEAD + b"\r\n")  # one whole request, then nothing
        silent = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.append(silent)  # connects and never sends a byte
        trickled = b""
        for byte in REQUEST_HEAD:  # one byte a second: longer than header_timeout in all
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                break
            trickled += bytes([byte])
            trickle.settimeout(1.0)
            try:
                if trickle.recv(65536, socket.MSG_PEEK):
                    break  # the server answered: it gave up on the headers
            except TimeoutError:
                pass
        assert len(trickled) < len(REQUEST_HEAD)
        answer = read_until_closed(trickle)
        assert status_of(answer) == 408
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
            "error": "request headers not received in time"
        }
        answer = read_until_closed(body)
        assert status_of(answer) == 408
        assert b"request body not received in time" in answer
        answer = read_until_closed(idle)
        assert status_of(answer) == 200 and answer.count(b"HTTP/1.1") == 1
        assert read_until_closed(silent) == b""  # closed by the server (a deadline raises)
    assert sy.server("p", a.address)["state"] == "ready"  # the cut PUT changed nothing
    assert sy.api("GET", "/healthz") == b"ok"


def test_connections_over_the_cap_are_answered_503(tmp_path, backends, steelyard):
    """admin.max_connections: 4 held, the fifth is told 503 at once and closed; once one
    goes, a new client is served."""
    a = backends("a")
    cfg, _ = pool_config(tmp_path, a, max_connections=4, header_timeout="1m",
                         keepalive_timeout="1m")  # fmt: skip
    sy = steelyard(cfg)
    port = admin_port(sy)
    with sockets() as held:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(REQUEST_HEAD)
            held.append(s)
        wait_for(lambda: sy.count_log(r"event=admin_listen") == 1, what="admin up")
        over = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.append(over)
        answer = read_until_closed(over)
        assert status_of(answer) == 503
        assert b"too many admin connections" in answer
        sy.wait_log(r"event=admin_full .*connections=4")
        held[0].close()

        def admitted() -> bool:
            try:
                return sy.api("GET", "/healthz") == b"ok"
            except OSError:
                return False  # 503 (HTTPError is an OSError) until the slot is free

        wait_for(admitted, what="a free slot")


def test_a_silent_connection_is_closed_at_keepalive_timeout(tmp_path, backends, steelyard):
    """A connection that never sends a byte, and one idle after its request, are closed at
    admin.keepalive_timeout by the admin server's own timer (admin_idle_timeout), not by
    aiohttp's keep-alive (3.9 never closes the first; here it is only a late backstop)."""
    a = backends("a")
    cfg, _ = pool_config(tmp_path, a, keepalive_timeout="1s", header_timeout="1m")
    cfg["log_level"] = "debug"  # admin_idle_timeout
    sy = steelyard(cfg)
    port = admin_port(sy)
    with sockets() as held:
        silent = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.append(silent)
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.append(idle)
        idle.sendall(REQUEST_HEAD + b"\r\n")
        # The deadline (60 s) is before aiohttp's backstop (2 x 1s + 1m): only ours can close.
        assert read_until_closed(silent) == b""
        answer = read_until_closed(idle)
        assert status_of(answer) == 200 and answer.count(b"HTTP/1.1") == 1
    wait_for(lambda: sy.count_log(r"event=admin_idle_timeout") >= 2, what="both logged")
    assert sy.count_log(r"event=admin_header_timeout") == 0
    assert sy.api("GET", "/healthz") == b"ok"
