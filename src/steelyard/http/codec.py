"""HTTP/1.x message framing, sans-IO: bytes in, events out, for requests and for responses.

Parsing is llhttp's (through httptools), which is strict where request smuggling lives:
Content-Length together with Transfer-Encoding, two Content-Lengths, a Transfer-Encoding whose
last coding is not `chunked`, bad chunk sizes, whitespace before a colon, bare CR and NUL are all
errors. On top of it this module adds what llhttp leaves to its caller: size limits (414, 431),
counted for a chunked body's trailer section as for the head (httptools joins a header line
piece by piece in memory, so an unbounded trailer line costs memory and quadratic CPU), the Host
rules of RFC 9112 section 3.2, HEAD responses (llhttp would wait for a body), responses
delimited by the connection closing, and a guarantee that a request whose head is followed by a
framing error never reaches the event queue as a request.

Events are tuples `(kind, payload)` in `reader.events`, taken by the caller after each `feed`:
HEAD (a RequestHead or ResponseHead), DATA (body bytes, already de-chunked), END, UPGRADE (the
bytes that followed an upgrade: they belong to the tunnel) and ERROR (an HttpError, always last).
"""

from __future__ import annotations

import re
from collections import deque

import httptools

HEAD, DATA, END, UPGRADE, ERROR = range(5)

Headers = list[tuple[bytes, bytes]]


class HttpError(Exception):
    """A request the proxy refuses, with the status it answers (400, 413, 414, 431, ...)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestHead:
    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "keep_alive",
        "lnames",
        "method",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self) -> None:
        self.method = ""
        self.target = b""
        self.version = "1.1"
        self.headers: Headers = []
        self.lnames: list[bytes] = []  # the header names lowercased, in step with `headers`
        self.connection: bytes | None = None  # the Connection header's value(s)
        self.host: bytes | None = None
        self.keep_alive = True
        self.chunked = False
        self.content_length: int | None = None
        self.upgrade: bytes | None = None  # the Upgrade header's value, for upgrade requests
        self.expect_continue = False

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


class ResponseHead:
    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "headers",
        "keep_alive",
        "lnames",
        "reason",
        "status",
        "version",
    )

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.version = "1.1"
        self.headers: Headers = []
        self.lnames: list[bytes] = []
        self.connection: bytes | None = None
        self.keep_alive = True
        self.chunked = False
        self.content_length: int | None = None


# RFC 3986 host[:port]: a reg-name (unreserved, sub-delims, pct-encoded) or IPv4, or a
# bracketed IPv6 literal; an optional port of up to five digits; no userinfo.
_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?")


def _valid_host(value: bytes) -> bool:
    return _HOST.fullmatch(value) is not None


class _Reader:
    """What request and response readers share: the event queue and the head being built."""

    def __init__(self, max_head: int) -> None:
        self.events: deque[tuple[int, object]] = deque()
        self.max_head = max_head
        self._head_size = 0
        self._in_head = False
        self._in_message = False
        self._open_head: object | None = None  # head of the message being read, until END
        self.failed = False
        # After a chunk-size line and before that chunk's data: the trailer section when the
        # chunk was the last one. Trailer bytes are counted two ways, both never more than the
        # section's real size: whole fields as llhttp reports them, and whole reads that fell
        # inside the section (no event at all), which bounds a line that never ends.
        self._chunk_open = False
        self._trailer_fields = 0
        self._trailer_raw = 0

    too_large = HttpError(431, "request header fields too large")
    trailer_too_large = HttpError(431, "request trailer fields too large")

    def close(self) -> None:
        """Break the reader <-> parser cycle when the connection is gone (no GC needed)."""
        self.failed = True
        self._parser = None

    def _grow_head(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self.max_head:
            raise HttpError(self.too_large.status, self.too_large.reason)

    def _grow_trailer(self, n: int) -> None:
        self._trailer_raw += n
        if self._trailer_raw > self.max_head:
            raise HttpError(self.trailer_too_large.status, self.trailer_too_large.reason)

    def on_chunk_header(self) -> None:
        self._chunk_open = True
        self._trailer_fields = 0
        self._trailer_raw = 0

    def on_chunk_complete(self) -> None:
        self._chunk_open = False

    def _trailer(self, name: bytes, value: bytes) -> None:
        self._trailer_fields += len(name) + len(value) + 4
        if self._trailer_fields > self.max_head:
            raise HttpError(self.trailer_too_large.status, self.trailer_too_large.reason)

    def _fail(self, error: HttpError) -> None:
        # A message cut by an error was never whole: if nobody has taken its head yet, it must
        # not be taken at all (this is what keeps a smuggling attempt from reaching a server).
        head = self._open_head
        if head is not None:
            events = self.events
            for i, (kind, payload) in enumerate(events):
                if kind == HEAD and payload is head:
                    while len(events) > i:
                        events.pop()
                    break
        self.events.append((ERROR, error))
        self.failed = True


class RequestReader(_Reader):
    """Requests from a client connection, pipelined or not."""

    def __init__(self, max_head: int = 32 * 1024, max_uri: int = 8 * 1024) -> None:
        super().__init__(max_head)
        self.max_uri = max_uri
        self._parser = httptools.HttpRequestParser(self)
        self._head: RequestHead | None = None
        self._url: list[bytes] = []
        self._url_size = 0

    def feed(self, data: bytes) -> None:
        if self.failed:
            return
        try:
            before = self._in_head
            in_chunk = self._chunk_open
            n_events = len(self.events)
            self._parser.feed_data(data)
            if self._in_head:
                # No end of head in this chunk: bound what llhttp buffers for us. A head that
                # began in this chunk starts after the last blank line in it, if any.
                if before:
                    self._grow_head(len(data))
                elif len(data) > self.max_head:
                    start = data.rfind(b"\r\n\r\n")
                    self._grow_head(len(data) - (start + 4 if start >= 0 else 0))
            elif in_chunk and self._chunk_open and len(self.events) == n_events:
                self._grow_trailer(len(data))  # a read wholly inside a trailer section
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self.events.append((UPGRADE, data[offset:]))
            self.failed = True  # what follows is the tunnel's, not HTTP
        except httptools.HttpParserInvalidMethodError:
            self._fail(HttpError(400, "invalid method"))
        except HttpError as exc:
            self._fail(exc)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HttpError):  # raised by one of our callbacks
                self._fail(exc.__context__)
                return
            reason = str(exc) or "bad request"
            if "PRI" in reason:
                reason = "HTTP/2 is not supported on this listener (use HTTP/1.1)"
            self._fail(HttpError(400, reason.lower()))

    # httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._head = RequestHead()
        self._url = []
        self._url_size = 0
        self._head_size = 0
        self._in_head = True
        self._in_message = True

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._url_size += len(url)
        if self._url_size > self.max_uri:
            raise HttpError(414, "request URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if head is None or not self._in_head:
            self._trailer(name, value)  # trailers: counted, never forwarded
            return
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.max_head:
            raise HttpError(431, "request header fields too large")
        lname = name.lower()
        if lname == b"connection":
            head.connection = value if head.connection is None else head.connection + b"," + value
        elif lname == b"host":
            if head.host is not None:
                raise HttpError(400, "more than one Host header")
            if not _valid_host(value):
                raise HttpError(400, "invalid Host header")
            head.host = value
        elif lname == b"content-length":
            head.content_length = int(value)  # llhttp has checked the digits and duplicates
        elif lname == b"transfer-encoding":
            head.chunked = True  # llhttp refuses any Transfer-Encoding not ending in chunked
        elif lname == b"expect":
            if value.lower() == b"100-continue":
                head.expect_continue = True
            else:
                raise HttpError(417, "unsupported Expect")
        elif lname == b"upgrade":
            head.upgrade = value
        head.headers.append((name, value))
        head.lnames.append(lname)

    def on_headers_complete(self) -> None:
        head = self._head
        assert head is not None
        parser = self._parser
        self._in_head = False
        head.method = parser.get_method().decode("ascii")
        if head.method == "CONNECT":
            raise HttpError(405, "CONNECT is not allowed")
        head.version = parser.get_http_version()
        head.keep_alive = parser.should_keep_alive()
        head.target = b"".join(self._url)
        if not parser.should_upgrade():
            head.upgrade = None
        target = head.target
        if target[:1] != b"/":
            if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
                # Absolute form: its authority replaces Host (RFC 9112 section 3.2.2).
                rest = target.split(b"://", 1)[1]
                slash = rest.find(b"/")
                authority = rest if slash < 0 else rest[:slash]
                if not _valid_host(authority):
                    raise HttpError(400, "invalid authority in the request target")
                head.host = authority
                head.target = b"/" if slash < 0 else rest[slash:]
                _replace_host(head, authority)
            elif not (target == b"*" and head.method == "OPTIONS") and head.method != "CONNECT":
                raise HttpError(400, "invalid request target")
        if head.host is None and head.version != "1.0":
            raise HttpError(400, "missing Host header")
        if head.chunked and head.version == "1.0":
            # HTTP/1.0 has no chunked coding: a server behind us may read this body by
            # another rule than ours (nginx refuses it too, since 1.21.1).
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        self._open_head = head
        self.events.append((HEAD, head))

    def on_body(self, body: bytes) -> None:
        self.events.append((DATA, body))

    def on_message_complete(self) -> None:
        self._in_message = False
        self._chunk_open = False
        self._open_head = None
        self.events.append((END, None))


def _replace_host(head: RequestHead, authority: bytes) -> None:
    """Make the Host header the request line's authority: the server must see what we routed
    by. A Host field that differs would let a client reach a host route it was refused by."""
    headers = head.headers
    lnames = head.lnames
    for i in range(len(lnames) - 1, -1, -1):
        if lnames[i] == b"host":
            del headers[i]
            del lnames[i]
    headers.insert(0, (b"Host", authority))
    lnames.insert(0, b"host")


class ResponseReader(_Reader):
    """Responses on a server connection, one request at a time.

    `expect(method)` is called before each request is sent: a response to HEAD has no body,
    whatever its Content-Length says, and llhttp has to be told by starting it afresh.
    """

    too_large = HttpError(502, "response header from server too large")
    trailer_too_large = HttpError(502, "response trailer from server too large")

    def __init__(self, max_head: int = 64 * 1024) -> None:
        super().__init__(max_head)
        self._parser = httptools.HttpResponseParser(self)
        self._head: ResponseHead | None = None
        self._reason: list[bytes] = []
        self._no_body = False
        self._skip_rest = False  # after a HEAD response: bytes now are a protocol error
        self.until_close = False  # the body ends when the server closes
        self.head_leftover = False

    def expect(self, method: str) -> None:
        if self._skip_rest:
            self._parser = httptools.HttpResponseParser(self)
            self._skip_rest = False
        self._no_body = method == "HEAD"
        self.until_close = False
        self.head_leftover = False

    def feed(self, data: bytes) -> None:
        if self.failed:
            return
        if self._skip_rest:
            self._fail(HttpError(502, "server sent data after a response to HEAD"))
            return
        try:
            in_chunk = self._chunk_open
            n_events = len(self.events)
            self._parser.feed_data(data)
            if self._in_head:
                self._grow_head(len(data))
            elif in_chunk and self._chunk_open and len(self.events) == n_events:
                self._grow_trailer(len(data))
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self.events.append((UPGRADE, data[offset:]))
            self.failed = True
        except HttpError as exc:
            self._fail(exc)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadDone):
                if not data.endswith(b"\r\n\r\n"):
                    # Bytes after the head of a HEAD answer: whatever they are, the framing
                    # of this connection can no longer be trusted, so it is not reused.
                    self.head_leftover = True
            elif isinstance(cause, HttpError):
                self._fail(cause)
            else:
                self._fail(HttpError(502, f"invalid response from server: {str(exc).lower()}"))

    def feed_eof(self) -> None:
        """The server closed: that ends a close-delimited body, and is an error mid-message."""
        if self.failed:
            return
        if self._in_message and self.until_close and not self._in_head:
            self._in_message = False
            self._open_head = None
            self.events.append((END, None))
        elif self._in_message:
            self._fail(HttpError(502, "server closed the connection mid-response"))

    @property
    def busy(self) -> bool:
        """A response has started and not ended."""
        return self._in_message

    def on_message_begin(self) -> None:
        self._head = ResponseHead()
        self._reason = []
        self._head_size = 0
        self._in_head = True
        self._in_message = True

    def on_status(self, reason: bytes) -> None:
        self._reason.append(reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if head is None or not self._in_head:
            self._trailer(name, value)
            return
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.max_head:
            raise HttpError(502, "response header from server too large")
        lname = name.lower()
        if lname == b"content-length":
            head.content_length = int(value)
        elif lname == b"transfer-encoding":
            head.chunked = value.rstrip().lower().endswith(b"chunked")
        elif lname == b"connection":
            head.connection = value if head.connection is None else head.connection + b"," + value
        head.headers.append((name, value))
        head.lnames.append(lname)

    def on_headers_complete(self) -> None:
        head = self._head
        assert head is not None
        parser = self._parser
        self._in_head = False
        head.status = parser.get_status_code()
        head.reason = b"".join(self._reason)
        head.version = parser.get_http_version()
        head.keep_alive = parser.should_keep_alive()
        status = head.status
        if status < 200 and status != 101:
            self._in_message = False  # 100 Continue, 103 Early Hints: a prelude, not the answer
            return
        self._open_head = head
        self.events.append((HEAD, head))
        if self._no_body and status != 101:
            # llhttp would wait for the Content-Length bytes of a HEAD answer: end it here and
            # restart the parser before the next response.
            self._in_message = False
            self._open_head = None
            self._skip_rest = True
            self.events.append((END, None))
            raise _HeadDone
        if (
            head.content_length is None
            and not head.chunked
            and status not in (101, 204, 304)
            and status >= 200
        ):
            self.until_close = True
            head.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self.events.append((DATA, body))

    def on_message_complete(self) -> None:
        self._chunk_open = False
        if not self._in_message:
            return  # the end of a 1xx prelude
        self._in_message = False
        if self._head is not None and self._head.status == 101:
            self._open_head = None
            return  # no END: what follows a 101 is the UPGRADE event and the tunnel
        self._open_head = None
        self.events.append((END, None))


class _HeadDone(Exception):
    """Raised from a callback to stop llhttp after a HEAD response's headers."""
