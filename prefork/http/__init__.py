"""Sans-I/O HTTP/1.1: the connection core that every driver (the epoll worker, the asyncio
worker) uses, so that keep-alive, framing, limits and error answers live in one place.
Imports no socket, os, asyncio or ssl."""

from prefork.http.core import (  # noqa: F401
    CHUNKED, CLOSE_DELIMITED, CONTINUE, EXACT, HEAD_ONLY, LAST_CHUNK, Head, chunk, clean_headers,
    error_answer, expired, last_chunk, response_head,
)
