"""check_tcp and check_http against real sockets: every outcome is a result, never a raise."""

from __future__ import annotations

import pytest

from fixtures.health_servers import response
from steelyard.config.model import parse_status_ranges
from steelyard.core.health.http import (
    BadResponse,
    check_http,
    default_host_header,
    format_ranges,
    parse_status_line,
)
from steelyard.core.health.tcp import check_tcp


async def test_tcp_ok_against_a_listener(canned) -> None:
    srv = await canned()
    r = await check_tcp("127.0.0.1", srv.port, 1.0)
    assert r.ok and r.detail == "connected"
    assert 0 <= r.duration < 1.0
    await srv.wait_for(lambda: srv.connections == 1)


async def test_tcp_refused(closed_port: int) -> None:
    r = await check_tcp("127.0.0.1", closed_port, 1.0)
    assert not r.ok
    assert r.detail == "connection refused"


async def test_http_200(canned) -> None:
    srv = await canned(response(200, "OK"))
    r = await check_http("127.0.0.1", srv.port, 1.0, "/health", "GET", None, [(200, 399)])
    assert r.ok and r.detail == "status 200"
    head = srv.requests[0]
    assert head.startswith(b"GET /health HTTP/1.1\r\n")
    lines = head.split(b"\r\n")
    assert f"Host: 127.0.0.1:{srv.port}".encode() in lines
    assert b"User-Agent: steelyard-health" in lines
    assert b"Connection: close" in lines


async def test_http_method_and_host_header(canned) -> None:
    srv = await canned(response(204))
    r = await check_http("127.0.0.1", srv.port, 1.0, "/ping?x=1", "HEAD", "api.example", None)
    assert r.ok and r.detail == "status 204"
    assert srv.requests[0].startswith(b"HEAD /ping?x=1 HTTP/1.1\r\nHost: api.example\r\n")


async def test_http_503_is_a_failure_naming_the_ranges(canned) -> None:
    srv = await canned(response(503, "Service Unavailable"))
    expect = parse_status_ranges("200-299,301")
    r = await check_http("127.0.0.1", srv.port, 1.0, "/", "GET", None, expect)
    assert not r.ok
    assert r.detail == "status 503 not in 200-299,301"


@pytest.mark.parametrize(("status", "ok"), [(200, True), (299, True), (300, False), (301, True)])
async def test_http_expect_ranges(canned, status: int, ok: bool) -> None:
    srv = await canned(response(status))
    r = await check_http(
        "127.0.0.1", srv.port, 1.0, "/", "GET", None, parse_status_ranges("200-299,301")
    )
    assert r.ok is ok, r.detail


async def test_http_garbage_status_line(canned) -> None:
    srv = await canned(b"garbage\r\n\r\n")
    r = await check_http("127.0.0.1", srv.port, 1.0)
    assert not r.ok
    assert r.detail == "bad status line 'garbage\\r\\n'"


async def test_http_slow_server_times_out(canned) -> None:
    srv = await canned(mode="silent")
    r = await check_http("127.0.0.1", srv.port, 0.05)
    assert not r.ok
    assert r.detail == "timeout after 50ms (waiting for status line)"
    assert 0.04 <= r.duration < 1.0  # loop clocks may round just under


async def test_http_server_closing_at_once(canned) -> None:
    srv = await canned(mode="close")
    r = await check_http("127.0.0.1", srv.port, 1.0)
    assert not r.ok
    # Depending on timing the close shows as EOF or as a reset of our request.
    assert r.detail in ("connection closed before the status line", "connection reset by peer")


async def test_http_truncated_status_line(canned) -> None:
    srv = await canned(b"HTTP/1.1 20")
    r = await check_http("127.0.0.1", srv.port, 1.0)
    assert not r.ok and r.detail == "connection closed inside the status line"


async def test_http_refused(closed_port: int) -> None:
    r = await check_http("127.0.0.1", closed_port, 1.0)
    assert not r.ok and r.detail == "connection refused"


async def test_http_skips_interim_responses(canned) -> None:
    srv = await canned(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + response(200))
    r = await check_http("127.0.0.1", srv.port, 1.0)
    assert r.ok and r.detail == "status 200"


async def test_http_overlong_status_line(canned) -> None:
    srv = await canned(b"HTTP/1.1 200 " + b"x" * 10000 + b"\r\n\r\n")
    r = await check_http("127.0.0.1", srv.port, 1.0)
    assert not r.ok and r.detail == "status line longer than 8192 bytes"


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"HTTP/1.1 200 OK\r\n", 200),
        (b"HTTP/1.0 404 Not Found\r\n", 404),
        (b"HTTP/1.1 200\r\n", 200),  # empty reason, space omitted (seen in the wild)
        (b"HTTP/1.1 204 \r\n", 204),
        (b"HTTP/1.1 200 OK\n", 200),  # bare LF, which RFC 9112 lets a recipient accept
    ],
)
def test_parse_status_line_accepts(line: bytes, status: int) -> None:
    assert parse_status_line(line) == status


@pytest.mark.parametrize(
    "line",
    [
        b"garbage\r\n",
        b"HTTP/2 200 OK\r\n",
        b"HTTP/1.1 2000 OK\r\n",
        b"HTTP/1.1 20 OK\r\n",
        b"HTTP/1.1  200 OK\r\n",
        b"HTTP/1.1 099 OK\r\n",
        b"http/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nextra",
        b"HTTP/1.1 200 O\rK\r\n",
        b"",
    ],
)
def test_parse_status_line_rejects(line: bytes) -> None:
    with pytest.raises(BadResponse, match="bad status line"):
        parse_status_line(line)


def test_format_ranges_round_trips_the_config_spelling() -> None:
    for spec in ("200-399", "200-299,301", "204"):
        assert format_ranges(parse_status_ranges(spec)) == spec


def test_default_host_header() -> None:
    assert default_host_header("example.com", 80) == "example.com"
    assert default_host_header("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert default_host_header("::1", 8080) == "[::1]:8080"


async def test_http_refuses_to_send_a_split_request(canned) -> None:
    srv = await canned()
    r = await check_http("127.0.0.1", srv.port, 1.0, "/", "GET", "a\r\nX-Injected: 1", None)
    assert not r.ok
    assert r.detail == "ValueError: method, path or Host would break the request line or headers"
    assert srv.requests == []
