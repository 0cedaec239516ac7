"""Which requests a web page could have forged, refused before any route runs.

A browser lets any page send a "simple" cross-origin request (a form's POST with text/plain,
no custom header) and read nothing back; and a page on a name its owner re-points at 127.0.0.1
(DNS rebinding) is same-origin with the admin API and reads everything. So, as Jupyter and the
Docker API do:

- Host must be a name of this API: an IP literal (a rebound page always carries its own DNS
  name), `localhost`, the listen address's name, or one of `admin.allowed_hosts`. Every route.
- A request that changes state (POST, PUT, PATCH, DELETE) must not carry a foreign Origin
  (one whose authority is not the Host it was sent to; absent is fine: curl, ctl), and its body
  must be `application/json`, which no page can send cross-origin without a CORS preflight
  that this API never grants. A DELETE without a body has nothing to type.

Plain functions over header values: no aiohttp here, the middleware in api.py applies them.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from steelyard.config.model import is_unix
from steelyard.core.backend import split_address

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class Refusal(Exception):
    """A request refused by the guard: the status and the reason for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def host_name(authority: str) -> str:
    """`Host`'s name without port or brackets, lower case, no trailing dot."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        name = authority[1 : authority.find("]")] if "]" in authority else authority
    else:
        name, sep, port = authority.rpartition(":")
        if not sep or not port.isdigit():
            name = authority
    return name.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _authority(value: str, scheme: str) -> str:
    """`host[:port]` lower case, the scheme's default port dropped, so equal ones compare."""
    value = value.strip().lower()
    head, sep, port = value.rpartition(":")
    if sep and not head.endswith("]") and ":" in head:
        return value  # an unbracketed IPv6 literal: no port to drop
    if sep and port == _DEFAULT_PORTS.get(scheme):
        return head
    return value


class Guard:
    """The Host names this API answers to, and the checks against forged requests."""

    __slots__ = ("names",)

    def __init__(self, listen: str, allowed_hosts: list[str] | tuple[str, ...] = ()) -> None:
        names = {"localhost", *(h.lower().rstrip(".") for h in allowed_hosts)}
        if not is_unix(listen):
            host, _ = split_address(any_port(listen))
            if not _is_ip(host):
                names.add(host.lower().rstrip("."))
        self.names = frozenset(names)

    def check_host(self, host: str | None) -> None:
        """Raise Refusal when Host names something else than this API (every request)."""
        if host is not None:
            name = host_name(host)
            if not (_is_ip(name) or name in self.names):
                raise Refusal(
                    403,
                    f"Host {host!r} is not a name of this admin API: add it to "
                    "admin.allowed_hosts if it is yours",
                )

    def check_change(
        self, method: str, host: str | None, origin: str | None, content_type: str, body: bool
    ) -> None:
        """Raise Refusal for a change a page could have forged; `content_type` is the media
        type without parameters, `body` whether the request carries one."""
        if method not in CHANGES:
            return
        if origin is not None:
            parts = urlsplit(origin.strip())
            scheme = parts.scheme.lower()
            same = (
                host is not None
                and scheme in _DEFAULT_PORTS
                and _authority(parts.netloc, scheme) == _authority(host, scheme)
            )
            if not same:
                raise Refusal(403, f"cross-origin request refused (Origin {origin!r})")
        if (body or method != "DELETE") and content_type != JSON:
            raise Refusal(
                415, f"a change must be sent as Content-Type: {JSON}, not {content_type or 'none'}"
            )


def any_port(listen: str) -> str:
    """Port 0 (any free port, for tests and tools) passes split_address's check."""
    head, sep, port = listen.rpartition(":")
    return f"{head}:1" if sep and port == "0" else listen
