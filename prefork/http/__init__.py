"""Sans-I/O HTTP/1.1: the connection core that every driver (the epoll worker, the asyncio
worker) uses, so that keep-alive, framing, limits and error answers live in one place.
Imports no socket, os, asyncio or ssl."""

from prefork.http.core import (  # noqa: F401
    CHUNKED, CLOSE, CLOSE_DELIMITED, CONTINUE, EXACT, FIRST_BYTE_TIMEOUT, HEAD_ONLY, KEEP, LAST_CHUNK,
    LINGER, LINGER_SECONDS, SERVER_OWNED, accepts_trailers, after_response, chunk, clean_headers,
    error_answer, expired, fit_length, last_chunk, refuse_head, response_head, upgrade_head,
)
