"""TLS in the middle of a MySQL connection: after the client's SSLRequest, the same TCP
connection carries TLS, and the login goes on inside it.

`loop.start_tls()` cannot be used as it is: a client sends its TLS ClientHello right behind the
SSLRequest without waiting, so both can arrive in one read, and start_tls has no way to take
bytes already read. This builds the same thing by hand (asyncio's SSLProtocol put between the
transport and the session) and hands it those bytes first.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto


def upgrade(
    transport: asyncio.Transport, protocol: asyncio.Protocol, context: ssl.SSLContext,
    already_read: bytes, timeout: float = 10.0,
) -> tuple[asyncio.Transport, asyncio.Future[None]]:  # fmt: skip
    """Start the server side of TLS on `transport` for `protocol`; returns the transport the
    protocol writes to from now on, and a future set when the handshake is done (an exception
    when it failed: the connection is then closed)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    tls = sslproto.SSLProtocol(
        loop, protocol, context, waiter, server_side=True, call_connection_made=False,
        ssl_handshake_timeout=timeout,
    )  # fmt: skip
    transport.pause_reading()
    transport.set_protocol(tls)
    tls.connection_made(transport)
    view = memoryview(already_read)
    while view:
        buf = tls.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        tls.buffer_updated(n)
        view = view[n:]
    transport.resume_reading()
    return tls._app_transport, waiter  # what start_tls() returns too
