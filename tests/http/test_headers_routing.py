"""Header rewriting and route matching as plain functions (no sockets)."""

from __future__ import annotations

from steelyard.config.model import Config
from steelyard.http.codec import HEAD, RequestHead, RequestReader
from steelyard.http.headers import connection_tokens, request_headers, response_headers
from steelyard.http.routing import compile_routes, match


def head_of(raw: bytes) -> RequestHead:
    r = RequestReader()
    r.feed(raw)
    kind, head = r.events[0]
    assert kind == HEAD and isinstance(head, RequestHead)
    return head


def forward(head: RequestHead, **kw) -> dict[str, str]:
    args = {
        "client_ip": "10.0.0.9",
        "scheme": "http",
        "host": head.host,
        "request_id": b"r" * 32,
        "via": True,
        "forwarded": False,
        "upgrade": None,
    }
    args.update(kw)
    headers, _ = request_headers(head.headers, head.lnames, head.connection, **args)
    return {k.decode().lower(): v.decode() for k, v in headers}


def test_forwarded_header_appends_and_quotes_ipv6():
    head = head_of(b"GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=1.2.3.4\r\nVia: 1.0 edge\r\n\r\n")
    h = forward(head, forwarded=True, client_ip="2001:db8::1", scheme="https")
    assert h["forwarded"] == 'for=1.2.3.4, for="[2001:db8::1]";proto=https;host="h"'
    assert h["via"] == "1.0 edge, 1.1 steelyard"
    assert h["x-forwarded-proto"] == "https"


def test_forwarded_off_passes_the_clients_header_through():
    head = head_of(b"GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=1.2.3.4\r\n\r\n")
    assert forward(head)["forwarded"] == "for=1.2.3.4"


def test_spoofed_single_value_headers_are_replaced():
    head = head_of(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: evil\r\n\r\n"
    )
    h = forward(head)
    assert (h["x-real-ip"], h["x-forwarded-proto"], h["x-forwarded-host"]) == (
        "10.0.0.9",
        "http",
        "h",
    )


def test_upgrade_is_kept_only_when_upgrading():
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    head = head_of(raw)
    assert "upgrade" not in forward(head)
    h = forward(head, upgrade=b"websocket")
    assert (h["connection"], h["upgrade"]) == ("upgrade", "websocket")


def test_response_hop_by_hop_and_connection_named_headers_are_dropped():
    headers = [
        (b"Server", b"s"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"3"),
        (b"Set-Cookie", b"a=1"),
    ]
    lnames = [n.lower() for n, _ in headers]
    out = response_headers(headers, lnames, b"close, X-Hop")
    assert out == [(b"Server", b"s"), (b"Set-Cookie", b"a=1")]
    assert connection_tokens(b"close, X-Hop ,keep-alive") == {b"x-hop"}


def test_route_order_and_conditions():
    cfg = Config.model_validate(
        {
            "pools": {"p": {"servers": [{"address": "127.0.0.1:1"}]}},
            "http": [
                {
                    "name": "w",
                    "listen": "127.0.0.1:2",
                    "routes": [
                        {"host": "a.test", "path": "/x", "pool": "p"},
                        {"host": "*.b.test", "pool": "p"},
                        {"path_regex": r"^/r/\d+$", "methods": ["DELETE"], "pool": "p"},
                        {"path": "/", "headers": {"X-T": "1"}, "pool": "p"},
                    ],
                }
            ],
        }
    )
    routes = compile_routes(cfg.http[0])

    def index(raw: bytes) -> int | None:
        route = match(routes, head_of(raw))
        return None if route is None else route.index

    assert index(b"GET /x/y HTTP/1.1\r\nHost: A.TEST:80\r\n\r\n") == 0
    assert index(b"GET /y HTTP/1.1\r\nHost: a.test\r\n\r\n") is None
    assert index(b"GET / HTTP/1.1\r\nHost: c.b.test\r\n\r\n") == 1
    assert index(b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n") is None
    assert index(b"DELETE /r/12 HTTP/1.1\r\nHost: z\r\n\r\n") == 2
    assert index(b"GET /r/12 HTTP/1.1\r\nHost: z\r\n\r\n") is None
    assert index(b"GET /q HTTP/1.1\r\nHost: z\r\nx-t: 1\r\n\r\n") == 3
    # rewrites keep the query
    routes[0].strip_prefix, routes[0].add_prefix = b"/x", b"/new/"
    assert routes[0].rewrite(b"/x/y?z=1") == b"/new/y?z=1"
    assert routes[0].rewrite(b"/x") == b"/new/"
