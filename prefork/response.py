"""What a handler returns, and what the connection sends.

A handler (static files now; App and WSGI later) takes a parsed request and returns a
`Response`: a status, its own headers, and a body that is bytes or a `FileBody` (an open
file descriptor sent with os.sendfile). The connection adds Date, Server,
Content-Length and Connection; it owns the socket, the handler never sees it.
"""

from __future__ import annotations

import os
from typing import List, Tuple, Union


class FileBody:
    """`count` bytes of the open file `fd` from `offset`; the connection closes `fd`."""

    __slots__ = ("fd", "offset", "count")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Response:
    """`block`, when set, is `headers` already serialized by the parser module's
    header_block() (so already validated): a cache for answers that repeat."""

    __slots__ = ("status", "headers", "body", "block")

    def __init__(self, status: int = 200, headers: List[Tuple[str, str]] | None = None,
                 body: Union[bytes, FileBody] = b"", block: str | None = None) -> None:
        self.status = status
        self.headers = headers if headers is not None else []
        self.body = body
        self.block = block

    @property
    def length(self) -> int:
        body = self.body
        return body.count if type(body) is FileBody else len(body)

    def close(self) -> None:
        if type(self.body) is FileBody:
            self.body.close()


# Statuses that never carry a body (RFC 9110 §6.4.1).
NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))


def error_response(status: int, reason: str, headers: List[Tuple[str, str]] | None = None) -> Response:
    """A short plain-text answer for a status the server itself decides."""
    body = f"{status} {reason}\n".encode("latin-1")
    hdrs = [("Content-Type", "text/plain; charset=utf-8")]
    if headers:
        hdrs.extend(headers)
    return Response(status, hdrs, body)
