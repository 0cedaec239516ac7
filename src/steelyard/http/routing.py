"""Route matching for one `http:` listener: first route whose conditions all hold wins.

Routes are compiled once per config into `CompiledRoute`s (bytes, compiled regexes, the upstream
settings resolved against the listener's), so a request costs a few comparisons per route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from steelyard.config.http_model import HttpListenerConfig, Route
from steelyard.http.codec import RequestHead


def _b(text: str) -> bytes:
    return text.encode("latin-1")


@dataclass(eq=False)
class CompiledRoute:
    index: int
    cfg: Route
    settings: dict[str, Any]
    host_exact: bytes | None = None
    host_suffix: bytes | None = None  # `.example.com` for `*.example.com`
    path: bytes | None = None
    path_regex: re.Pattern[bytes] | None = None
    methods: frozenset[str] | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    strip_prefix: bytes | None = None
    add_prefix: bytes | None = None
    set_request: list[tuple[bytes, bytes]] = field(default_factory=list)
    remove_request: frozenset[bytes] = frozenset()
    set_response: list[tuple[bytes, bytes]] = field(default_factory=list)
    remove_response: frozenset[bytes] = frozenset()
    retry_on: frozenset[int] = frozenset()
    name: str = ""
    # How server connections are made for this route (None: plain HTTP); keys the keep-alive
    # pool, so a route never reuses a connection made with other TLS settings.
    conn_kind: tuple[bool, str | None, str | None] | None = None

    def matches(self, head: RequestHead, host: bytes, path: bytes) -> bool:
        if self.host_exact is not None and host != self.host_exact:
            return False
        if self.host_suffix is not None and not (
            host.endswith(self.host_suffix) and len(host) > len(self.host_suffix)
        ):
            return False
        if self.path is not None and not path.startswith(self.path):
            return False
        if self.path_regex is not None and self.path_regex.search(path) is None:
            return False
        if self.methods is not None and head.method not in self.methods:
            return False
        if self.headers:
            for lname, want in self.headers:
                for name, value in head.headers:
                    if name.lower() == lname and value == want:
                        break
                else:
                    return False
        return True

    def rewrite(self, target: bytes) -> bytes:
        """Apply strip_prefix / add_prefix to a request target (query kept)."""
        if self.strip_prefix is not None and target.startswith(self.strip_prefix):
            target = target[len(self.strip_prefix) :]
            if not target.startswith(b"/"):
                target = b"/" + target
        if self.add_prefix is not None:
            target = self.add_prefix.rstrip(b"/") + target
        return target


def compile_routes(listener: HttpListenerConfig) -> list[CompiledRoute]:
    out = []
    for i, r in enumerate(listener.routes):
        c = CompiledRoute(index=i, cfg=r, settings=listener.resolve(r))
        c.name = r.pool or ("return" if r.return_ else "redirect")
        c.name = f"{i}:{c.name}"
        if r.host is not None:
            if r.host.startswith("*."):
                c.host_suffix = _b(r.host[1:])
            else:
                c.host_exact = _b(r.host)
        if r.path is not None:
            c.path = _b(r.path)
        if r.path_regex is not None:
            c.path_regex = re.compile(_b(r.path_regex))
        if r.methods is not None:
            c.methods = frozenset(r.methods)
        if r.headers:
            c.headers = [(_b(k).lower(), _b(v)) for k, v in r.headers.items()]
        if r.strip_prefix is not None:
            c.strip_prefix = _b(r.strip_prefix)
        if r.add_prefix is not None:
            c.add_prefix = _b(r.add_prefix)
        c.set_request = [(_b(k), _b(v)) for k, v in r.set_request_headers.items()]
        c.remove_request = frozenset(_b(n).lower() for n in r.remove_request_headers)
        c.set_response = [(_b(k), _b(v)) for k, v in r.set_response_headers.items()]
        c.remove_response = frozenset(_b(n).lower() for n in r.remove_response_headers)
        c.retry_on = frozenset(c.settings["retry_on"])
        s = c.settings
        if s["upstream_tls"]:
            c.conn_kind = (bool(s["verify"]), s["ca"], s["sni"])
        out.append(c)
    return out


def split_target(target: bytes) -> bytes:
    """The path part of a request target (before `?`)."""
    q = target.find(b"?")
    return target if q < 0 else target[:q]


def match(routes: list[CompiledRoute], head: RequestHead) -> CompiledRoute | None:
    host = head.host or b""
    colon = host.rfind(b":")
    if colon >= 0 and not host.endswith(b"]"):
        host = host[:colon]
    host = host.lower()
    path = split_target(head.target)
    for route in routes:
        if route.matches(head, host, path):
            return route
    return None
