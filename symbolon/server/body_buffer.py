"""A request body of declared length read straight into one buffer that its handler owns.

Tornado gives a streaming handler its body in pieces copied out of the connection's read buffer,
itself filled from a fresh buffer at each socket read; a handler that needs the body in one piece
then joins them: the bytes were copied three times on the way. Here the socket reads land in the
handler's buffer (Tornado's own ``read_into``), and ``data_received`` gets each piece as a view
into it. The rest is Tornado's: the answer to a request answered early, a connection closed before
the end, the keep-alive connection's next request.
"""

from __future__ import annotations

import asyncio
import weakref

from tornado import httputil
from tornado.http1connection import HTTP1Connection

# Tornado lets other connections run after this many body bytes of one request; so does this.
YIELD_EVERY = 256 * 1024


def read_body_into(request: httputil.HTTPServerRequest, buffer: memoryview) -> bool:
    """Have the rest of ``request``'s body read into ``buffer``, which must be its declared
    length; called before the body is read (in ``prepare``). False, and the body read as usual,
    where the connection cannot (not Tornado's HTTP/1 server connection)."""
    if not isinstance(request.connection, HTTP1Connection) or request.connection.is_client:
        return False
    # Weakly: the connection holds this function, which must not keep it (and the buffer) alive
    # until the cyclic garbage collector runs.
    connection_ref = weakref.ref(request.connection)

    async def read_fixed_body(content_length: int, delegate: httputil.HTTPMessageDelegate) -> None:
        connection = connection_ref()
        assert connection is not None  # it is the one calling
        if content_length != len(buffer):
            # Not the length the handler was told: Tornado's way, whatever that is.
            await HTTP1Connection._read_fixed_body(connection, content_length, delegate)
            return
        done = since_yield = 0
        while done < content_length:
            size = await connection.stream.read_into(buffer[done:], partial=True)  # type: ignore[arg-type]
            piece = buffer[done : done + size]
            done += size
            if not connection._write_finished:  # once answered, the rest is read and dropped
                pending = delegate.data_received(piece)  # type: ignore[arg-type]
                if pending is not None:
                    await pending
            since_yield += size
            if since_yield >= YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)

    # This request's connection object only: the next request on the connection gets a new one.
    request.connection._read_fixed_body = read_fixed_body  # type: ignore[method-assign]
    return True
