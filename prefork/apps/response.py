"""What a handler returns, and what the connection sends.

A handler (static files, an App, a WSGI application) takes a parsed request and returns a
`Response`: a status, its own headers, and a body that is bytes, a `FileBody` (an open
file descriptor sent with os.sendfile), `Parts` (bytes and FileBody pieces in order, for
multipart/byteranges) or a `StreamBody` (an iterable of bytes pulled as the socket takes
them). The connection adds Date, Server, Content-Length (or Transfer-Encoding: chunked for
a stream of unknown length) and Connection; it owns the socket, the handler never sees it.
A handler's own framing and hop-by-hop fields are dropped when its fields are serialized
(header_block in the parser module, SERVER_OWNED): a body's length is told by the body.
"""

from __future__ import annotations

import os
from typing import List, Tuple, Union

from prefork.http.core import NO_BODY_STATUSES  # noqa: F401 - statuses without a body, the core's rule


class SharedFd:
    """A descriptor with several users (an open-file cache and the responses in flight):
    closed when the last one releases it, never under a response still sending from it.
    sendfile() with an explicit offset leaves the file position alone, so users need not
    take turns. One thread per worker, so a plain counter is enough."""

    __slots__ = ("fd", "refs")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.refs = 1  # the creator's reference

    def acquire(self) -> int:
        self.refs += 1
        return self.fd

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            os.close(self.fd)
            self.fd = -1


class FileBody:
    """`count` bytes of the open file `fd` from `offset`. close() closes `fd`, or, when it
    belongs to a SharedFd (`shared`), releases this body's reference to it; the connection
    calls it once the bytes are sent or the connection is gone."""

    __slots__ = ("fd", "offset", "count", "shared")

    def __init__(self, fd: int, offset: int, count: int, shared: SharedFd | None = None) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count
        self.shared = shared

    def close(self) -> None:
        if self.fd >= 0:
            if self.shared is None:
                os.close(self.fd)
            else:
                self.shared.release()
            self.fd = -1


class Parts:
    """A body sent piece by piece: bytes and FileBody, in order (multipart/byteranges)."""

    __slots__ = ("parts", "count")

    def __init__(self, parts: List[Union[bytes, FileBody]]) -> None:
        self.parts = parts
        self.count = sum(p.count if type(p) is FileBody else len(p) for p in parts)

    def close(self) -> None:
        for part in self.parts:
            if type(part) is FileBody:
                part.close()


class StreamBody:
    """An iterable of bytes sent as the socket takes it: with Content-Length when `length`
    is known (then exactly `length` bytes go out), else chunked on HTTP/1.1 and
    close-delimited on HTTP/1.0. `close()` closes the iterable (PEP 3333 asks that it is
    always called), once."""

    __slots__ = ("chunks", "length", "_close")

    def __init__(self, iterable, length: int | None = None) -> None:
        self.chunks = iter(iterable)
        self.length = length
        self._close = getattr(iterable, "close", None)

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()


class Response:
    """`block`, when set, is `headers` already serialized by the parser module's
    header_block() (so already validated): a cache for answers that repeat."""

    __slots__ = ("status", "headers", "body", "block")

    def __init__(self, status: int = 200, headers: List[Tuple[str, str]] | None = None,
                 body: Union[bytes, FileBody, Parts, StreamBody] = b"", block: str | None = None) -> None:
        self.status = status
        self.headers = headers if headers is not None else []
        self.body = body
        self.block = block

    @property
    def length(self) -> int | None:
        """Body bytes, or None for a stream of unknown length."""
        body = self.body
        t = type(body)
        if t is FileBody or t is Parts:
            return body.count
        if t is StreamBody:
            return body.length
        return len(body)

    def close(self) -> None:
        t = type(self.body)
        if t is FileBody or t is Parts or t is StreamBody:
            self.body.close()



def error_response(status: int, reason: str, headers: List[Tuple[str, str]] | None = None) -> Response:
    """A short plain-text answer for a status the server itself decides."""
    body = f"{status} {reason}\n".encode("latin-1")
    hdrs = [("Content-Type", "text/plain; charset=utf-8")]
    if headers:
        hdrs.extend(headers)
    return Response(status, hdrs, body)
