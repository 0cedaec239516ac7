"""The HTTP/1.x codec with byte vectors: whole, one byte at a time, and with what follows."""

from __future__ import annotations

import pytest

from steelyard.http.codec import (
    DATA,
    END,
    ERROR,
    HEAD,
    UPGRADE,
    HttpError,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
)


def feed(reader, data: bytes, bytewise: bool) -> list[tuple[int, object]]:
    if bytewise:
        for i in range(len(data)):
            reader.feed(data[i : i + 1])
    else:
        reader.feed(data)
    return list(reader.events)


def summary(events) -> list:
    """Events with bodies joined, as (kind, detail) pairs."""
    out: list = []
    for kind, payload in events:
        if kind == DATA and out and out[-1][0] == DATA:
            out[-1] = (DATA, out[-1][1] + payload)
        elif kind == HEAD and isinstance(payload, RequestHead):
            out.append((HEAD, (payload.method, payload.target, payload.host)))
        elif kind == HEAD and isinstance(payload, ResponseHead):
            out.append((HEAD, payload.status))
        elif kind == ERROR:
            assert isinstance(payload, HttpError)
            out.append((ERROR, payload.status))
        else:
            out.append((kind, payload))
    return out


BYTEWISE = pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])


@BYTEWISE
def test_pipelined_requests_with_bodies(bytewise):
    data = (
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        b"PUT /b?x=1 HTTP/1.1\r\nHost: h:81\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer-X: 1\r\n\r\n"
        b"GET / HTTP/1.0\r\n\r\n"
    )
    assert summary(feed(RequestReader(), data, bytewise)) == [
        (HEAD, ("POST", b"/a", b"h")),
        (DATA, b"hello"),
        (END, None),
        (HEAD, ("PUT", b"/b?x=1", b"h:81")),
        (DATA, b"abcde"),
        (END, None),
        (HEAD, ("GET", b"/", None)),
        (END, None),
    ]


def test_request_head_fields():
    r = RequestReader()
    r.feed(
        b"POST /u HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-A\r\nExpect: 100-continue\r\n"
        b"Content-Length: 3\r\nX-Case: V\r\n\r\nabc"
    )
    kind, head = r.events[0]
    assert kind == HEAD and isinstance(head, RequestHead)
    assert head.content_length == 3 and head.expect_continue and head.keep_alive
    assert head.connection == b"keep-alive, X-A"
    assert head.lnames == [b"host", b"connection", b"expect", b"content-length", b"x-case"]
    assert (b"X-Case", b"V") in head.headers


@BYTEWISE
def test_an_error_after_a_head_takes_the_head_back(bytewise):
    # llhttp only finds the bad Transfer-Encoding once the head is complete: the reader must
    # not leave that head in the queue, or a proxy would forward it.
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nxx"
    assert summary(feed(RequestReader(), data, bytewise)) == [(ERROR, 400)]


@BYTEWISE
def test_garbage_after_a_good_request(bytewise):
    data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\x00\x01garbage"
    assert summary(feed(RequestReader(), data, bytewise)) == [
        (HEAD, ("GET", b"/", b"a")),
        (END, None),
        (ERROR, 400),
    ]


@BYTEWISE
def test_upgrade_leaves_the_rest_to_the_tunnel(bytewise):
    data = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW"
    events = summary(feed(RequestReader(), data, bytewise))
    assert events[:2] == [(HEAD, ("GET", b"/ws", b"a")), (END, None)]
    # whole: the tunnel bytes come with the UPGRADE event; bytewise they come later, unparsed
    assert events[2][0] == UPGRADE
    assert events[2][1] == (b"RAW" if not bytewise else b"")


def test_absolute_form_target():
    r = RequestReader()
    r.feed(b"GET http://Example.com:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
    head = r.events[0][1]
    assert isinstance(head, RequestHead)
    assert (head.host, head.target) == (b"Example.com:8080", b"/p?q")
    # RFC 9112 section 3.2.2: the authority replaces Host, in what is forwarded too
    assert [(n, v) for n, v in head.headers if n.lower() == b"host"] == [
        (b"Host", b"Example.com:8080")
    ]
    assert head.lnames.count(b"host") == 1


def test_absolute_form_without_host_header_gets_one():
    r = RequestReader()
    r.feed(b"GET http://a.example HTTP/1.1\r\nX-A: 1\r\n\r\n")
    head = r.events[0][1]
    assert isinstance(head, RequestHead)
    assert head.headers == [(b"Host", b"a.example"), (b"X-A", b"1")]
    assert head.lnames == [b"host", b"x-a"]
    assert head.target == b"/"


@BYTEWISE
def test_http10_request_with_transfer_encoding_is_400(bytewise):
    data = b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert summary(feed(RequestReader(), data, bytewise)) == [(ERROR, 400)]


_CHUNKED_POST = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"


@BYTEWISE
def test_request_trailers_within_the_limit_pass(bytewise):
    r = RequestReader(max_head=200)
    data = _CHUNKED_POST + b"3\r\nabc\r\n0\r\nT: " + b"t" * 150 + b"\r\n\r\n"
    assert summary(feed(r, data, bytewise))[1:] == [(DATA, b"abc"), (END, None)]


@BYTEWISE
def test_request_trailers_count_against_the_header_limit(bytewise):
    r = RequestReader(max_head=200)
    data = _CHUNKED_POST + b"3\r\nabc\r\n0\r\nT: " + b"t" * 150 + b"\r\nU: " + b"u" * 60
    assert summary(feed(r, data + b"\r\n\r\n", bytewise))[-1] == (ERROR, 431)


def test_a_trailer_line_that_never_ends_is_cut_at_the_limit():
    """One trailer line sent in reads of 1 KiB: refused once it passes the limit, not when it
    ends (httptools would keep joining it in memory)."""
    r = RequestReader(max_head=4096)
    r.feed(_CHUNKED_POST + b"3\r\nabc\r\n0\r\nT: ")
    fed = 0
    while not r.failed:
        r.feed(b"t" * 1024)
        fed += 1024
        assert fed <= 8192
    assert summary(r.events)[-1] == (ERROR, 431)
    error = r.events[-1][1]
    assert isinstance(error, HttpError)
    assert error.reason == "request trailer fields too large"


def test_chunks_that_arrive_slowly_are_not_trailers():
    r = RequestReader(max_head=100)
    r.feed(_CHUNKED_POST + b"400\r\n")
    for _ in range(64):  # 1 KiB of chunk data, 16 bytes a read: data, not a trailer section
        r.feed(b"d" * 16)
    r.feed(b"\r\n0\r\n\r\n")
    assert summary(r.events)[1:] == [(DATA, b"d" * 1024), (END, None)]


@BYTEWISE
def test_response_trailers_count_against_the_header_limit(bytewise):
    r = ResponseReader(max_head=200)
    r.expect("GET")
    r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
    assert summary(r.events) == [(HEAD, 200), (DATA, b"ok")]
    r.events.clear()  # taken by the proxy, as it streams the response
    events = feed(r, b"0\r\nT: " + b"t" * 300 + b"\r\n\r\n", bytewise)
    assert summary(events) == [(ERROR, 502)]
    error = events[0][1]
    assert isinstance(error, HttpError)
    assert error.reason == "response trailer from server too large"


@pytest.mark.parametrize(
    "host", [b"a", b"a.b-c", b"a:80", b"127.0.0.1:8080", b"[::1]", b"[::1]:443", b"xn--d1a.ru"]
)
def test_valid_hosts(host):
    r = RequestReader()
    r.feed(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert r.events[0][0] == HEAD


@pytest.mark.parametrize("host", [b"a b", b"a/b", b"u@h", b"[::1", b"a:port", b"a:123456", b""])
def test_invalid_hosts(host):
    r = RequestReader()
    r.feed(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert summary(r.events) == [(ERROR, 400)]


@BYTEWISE
def test_responses_head_chunked_and_1xx(bytewise):
    r = ResponseReader()
    r.expect("GET")
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
    )
    assert summary(feed(r, data, bytewise)) == [(HEAD, 200), (DATA, b"body"), (END, None)]


@BYTEWISE
def test_response_to_head_has_no_body(bytewise):
    r = ResponseReader()
    r.expect("HEAD")
    events = feed(r, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", bytewise)
    assert summary(events) == [(HEAD, 200), (END, None)]
    r.events.clear()
    r.expect("GET")  # the same connection goes on with a fresh parser
    assert summary(feed(r, b"HTTP/1.1 204 No Content\r\n\r\n", bytewise)) == [
        (HEAD, 204),
        (END, None),
    ]


def test_close_delimited_body_and_early_close():
    r = ResponseReader()
    r.expect("GET")
    r.feed(b"HTTP/1.1 200 OK\r\n\r\nsome")
    r.feed(b" more")
    r.feed_eof()
    assert summary(r.events) == [(HEAD, 200), (DATA, b"some more"), (END, None)]
    r = ResponseReader()
    r.expect("GET")
    r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    r.feed_eof()
    # the cut message never was whole: its head is taken back, so a proxy answers 502 itself
    assert summary(r.events) == [(ERROR, 502)]


def test_switching_protocols_ends_in_upgrade():
    r = ResponseReader()
    r.expect("GET")
    r.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\nConnection: Upgrade\r\n\r\nXY")
    assert summary(r.events) == [(HEAD, 101), (UPGRADE, b"XY")]


@pytest.mark.parametrize(
    "data",
    [
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
    ],
    ids=["garbage", "two_lengths", "bad_status", "huge_head"],
)
def test_bad_responses_are_502(data):
    r = ResponseReader()
    r.expect("GET")
    r.feed(data)
    assert summary(r.events)[-1] == (ERROR, 502)


def test_limits():
    r = RequestReader(max_head=100, max_uri=10)
    r.feed(b"GET /0123456789abc HTTP/1.1\r\n")
    assert summary(r.events) == [(ERROR, 414)]
    r = RequestReader(max_head=100, max_uri=10)
    r.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 200 + b"\r\n\r\n")
    assert summary(r.events) == [(ERROR, 431)]
