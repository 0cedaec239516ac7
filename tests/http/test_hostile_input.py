"""Hostile clients and servers against a real steelyard: trailers, absolute-form targets.

Each test is an attack that worked before the fix, with its figures in the docstring, and
asserts the status a client gets, that the worker's memory stayed bounded, and that the next
client is served.
"""

from __future__ import annotations

import json
import select

import httpx
import pytest

from fixtures.web import RawClient, http_config


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def proxy(tmp_path, http_backends, steelyard):
    b = http_backends("b1")
    cfg, port = http_config(
        tmp_path,
        {"p": [b.address], "internal": [b.address]},
        [
            {"host": "public.example", "path": "/", "pool": "p"},
            {"path": "/", "return": {"status": 403, "body": "not here\n"}},
        ],
    )
    sy = steelyard(cfg)
    (worker,) = sy.worker_pids()
    return port, b, sy, worker


def get_public(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Host": "public.example"})


def stream_until_answered(c: RawClient, piece: bytes, limit: int) -> int:
    """Send `piece` again and again until the proxy answers or cuts; the bytes sent."""
    sent = 0
    c.sock.setblocking(False)
    try:
        while sent < limit:
            readable, writable, _ = select.select([c.sock], [c.sock], [], 10.0)
            if readable:
                break
            if not writable:
                raise AssertionError("proxy neither reads nor answers")
            try:
                sent += c.sock.send(piece)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    finally:
        c.sock.setblocking(True)
        c.sock.settimeout(10.0)
    return sent


def test_request_trailer_line_without_end_is_431(proxy):
    """One trailer line of up to 200 MB after a chunked body.

    Before (issue 12): accepted whole, httptools joining it in memory: worker RSS +260 MB and
    43 s of CPU; here the old code was still reading when client_body_timeout answered 408.
    Now: counted against max_header_bytes (32 KiB) and answered 431 once past it; measured
    +0.4 MB of worker RSS, with 3.2 MB sent before the answer arrived (socket buffers; the rest
    is read and dropped by the lingering close, never kept).
    """
    port, _, sy, worker = proxy
    before = rss_kib(worker)
    with RawClient(port) as c:
        c.send(
            b"POST /upload HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Trailer: "
        )
        sent = stream_until_answered(c, b"t" * 65536, 200 * 1024 * 1024)
        r = c.response()
        assert r.status == 431, r
        assert r.header("connection") == "close"
    assert sent < 200 * 1024 * 1024, "the whole trailer was read before an answer"
    sy.wait_log(r"event=bad_request .*status=431 cause=\"request trailer fields too large\"")
    grown = rss_kib(worker) - before
    assert grown < 16 * 1024, f"worker RSS grew by {grown} KiB"
    assert get_public(port, "/status/200").status_code == 200


def test_request_trailers_within_the_limit_are_served(proxy):
    port, _, _, _ = proxy
    with RawClient(port) as c:
        c.send(
            b"POST /upload HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-More: " + b"m" * 20000 + b"\r\n\r\n"
        )
        r = c.response()
        assert r.status == 200, r
        assert json.loads(r.body)["size"] == 5


def test_many_trailer_fields_past_the_limit_are_431(proxy):
    port, _, _, _ = proxy
    with RawClient(port) as c:
        c.send(
            b"POST /upload HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n" + b"X-Many: 1234567890\r\n" * 3000 + b"\r\n"
        )
        r = c.response()
        assert r.status == 431, r
    assert get_public(port, "/status/200").status_code == 200


def test_server_trailer_too_large_cuts_the_response(proxy):
    """A server answers chunked and then sends a 200 MB trailer line.

    Before: read whole into the worker (the same cost as a client's trailer). Now: 502 in the
    log, the client's response cut before its last chunk (its head was already sent), the
    server connection closed (measured: +36 KiB of worker RSS), the next request served.
    """
    port, _, sy, worker = proxy
    before = rss_kib(worker)
    with RawClient(port) as c:
        c.send(b"GET /trailer/209715200 HTTP/1.1\r\nHost: public.example\r\n\r\n")
        with pytest.raises(ConnectionError):
            c.response()  # the chunked body never ends: the proxy cut it
        assert c.buf == b"" or b"0\r\n\r\n" not in c.buf
    sy.wait_log(r"event=upstream_error .*cause=\"response trailer from server too large\"")
    grown = rss_kib(worker) - before
    assert grown < 16 * 1024, f"worker RSS grew by {grown} KiB"
    assert get_public(port, "/status/200").status_code == 200


def test_absolute_form_authority_replaces_host(proxy):
    """`GET http://public.example/echo` with `Host: internal.example`.

    Before: routed by the authority (public.example, allowed) while the server received
    `Host: internal.example`, reaching a virtual host the routes refuse. Now the server gets
    the authority as its only Host (RFC 9112 section 3.2.2).
    """
    port, _, _, _ = proxy
    with RawClient(port) as c:
        c.send(
            b"GET http://public.example/echo HTTP/1.1\r\nHost: internal.example\r\nX-A: 1\r\n\r\n"
        )
        r = c.response()
        assert r.status == 200, r
    doc = json.loads(r.body)
    hosts = [v for k, v in doc["headers"] if k.lower() == "host"]
    assert hosts == ["public.example"]
    forwarded_hosts = [v for k, v in doc["headers"] if k.lower() == "x-forwarded-host"]
    assert forwarded_hosts == ["public.example"]
    assert doc["target"] == "/echo"
    # the other way round: an authority the routes refuse is refused, whatever Host says
    with RawClient(port) as c:
        c.send(b"GET http://internal.example/echo HTTP/1.1\r\nHost: public.example\r\n\r\n")
        assert c.response().status == 403
