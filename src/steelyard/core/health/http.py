"""HTTP check: send one small HTTP/1.1 request, judge the server by its status code.

Like HAProxy's `option httpchk` with `http-check expect status`, or Keepalived's HTTP_GET: the
request is minimal (`Host`, `User-Agent: steelyard-health`, `Connection: close`), only the status
line is read, and the server passes when the code is inside one of the `expect` ranges
(`parse_status_ranges("200-299,301")`). The body is never read: a health endpoint's verdict is
its status, and reading less keeps the probe cheap for both sides.

The status line is parsed here, small and strict (RFC 9112 section 4): `HTTP/1.x`, one space,
three digits, then an optional reason. Anything else fails the check with the offending line in
the detail. Interim 1xx responses (103 Early Hints, a stray 100 Continue) are skipped, as a
client would. The whole exchange, DNS included, is bounded by `timeout`; checkers never raise.
"""

from __future__ import annotations

import asyncio
import re

from steelyard.core.health.state import CheckResult
from steelyard.core.health.tcp import close_quietly, describe_error, timeout_detail

USER_AGENT = "steelyard-health"
MAX_LINE = 8192  # a status or header line longer than this is not a health endpoint's answer
MAX_INTERIM = 8  # 1xx responses tolerated before the final one

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?\r?\n")


class BadResponse(Exception):
    """The peer answered something that is not an HTTP/1.x response."""


def parse_status_line(line: bytes) -> int:
    """b"HTTP/1.1 200 OK\\r\\n" -> 200. Raises BadResponse naming the line."""
    m = _STATUS_LINE.fullmatch(line)
    if m is None:
        shown = line[:64].decode("latin-1")
        raise BadResponse(f"bad status line {shown!r}")
    return int(m.group(1))


def format_ranges(expect: list[tuple[int, int]]) -> str:
    """[(200, 299), (301, 301)] -> "200-299,301", the way the config spells it."""
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in expect)


def default_host_header(host: str, port: int) -> str:
    if ":" in host:  # an IPv6 literal needs its brackets back in a Host header
        host = f"[{host}]"
    return host if port == 80 else f"{host}:{port}"


def build_request(method: str, path: str, host: str) -> bytes:
    """The probe's request head. Raises ValueError on CR/LF/space where they would split it."""
    if any(c in v for v in (method, path) for c in " \r\n") or any(c in host for c in "\r\n"):
        raise ValueError("method, path or Host would break the request line or headers")
    return (
        f"{method} {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("latin-1")


async def _read_line(reader: asyncio.StreamReader, what: str) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise BadResponse(f"connection closed inside the {what}") from None
        raise BadResponse(f"connection closed before the {what}") from None
    except asyncio.LimitOverrunError:
        raise BadResponse(f"{what} longer than {MAX_LINE} bytes") from None


async def _read_status(reader: asyncio.StreamReader) -> int:
    for _ in range(MAX_INTERIM + 1):
        status = parse_status_line(await _read_line(reader, "status line"))
        # 101 would switch protocols; we never ask for that, so it is a final (wrong) answer.
        if status >= 200 or status == 101:
            return status
        while await _read_line(reader, "interim response headers") not in (b"\r\n", b"\n"):
            pass
    raise BadResponse(f"more than {MAX_INTERIM} interim 1xx responses")


async def check_http(
    host: str,
    port: int,
    timeout: float,
    path: str = "/",
    method: str = "GET",
    host_header: str | None = None,
    expect: list[tuple[int, int]] | None = None,
) -> CheckResult:
    """One HTTP/1.1 request to host:port; ok when the status is inside `expect`.

    `expect` defaults to 200-399 (the config's default); `host_header` to host:port.
    """
    ranges = expect if expect is not None else [(200, 399)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer: asyncio.StreamWriter | None = None
    phase = "connecting"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
            phase = "sending request"
            writer.write(
                build_request(method, path, host_header or default_host_header(host, port))
            )
            await writer.drain()
            phase = "waiting for status line"
            status = await _read_status(reader)
        if any(lo <= status <= hi for lo, hi in ranges):
            ok, detail = True, f"status {status}"
        else:
            ok, detail = False, f"status {status} not in {format_ranges(ranges)}"
    except TimeoutError:
        ok, detail = False, timeout_detail(timeout, phase)
    except BadResponse as exc:
        ok, detail = False, str(exc)
    except Exception as exc:
        ok, detail = False, describe_error(exc)
    except BaseException:  # cancelled (monitor stopping): still release the socket
        if writer is not None:
            writer.close()
        raise
    duration = loop.time() - started
    if writer is not None:
        await close_quietly(writer)
    return CheckResult(ok, detail, duration)
