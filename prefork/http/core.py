"""The sans-I/O HTTP/1.1 connection core: the rules of one connection, without the socket.

Drivers own the I/O; this module owns the decisions, so that each rule exists once:
- bytes in → requests: the parser twins (`RequestParser.feed`, `take_body`, `pending`,
  `error`); this module adds nothing between a driver and its parser.
- response start → head bytes (`response_head`): status line, Server and Date, the
  application's fields (already serialized and checked by the parser module's
  `header_block`), then the framing the server alone chooses — no body (HEAD, 1xx, 204,
  304), Content-Length, chunked on HTTP/1.1, or delimited by the close on HTTP/1.0 — and
  Connection: close / keep-alive. A head the application got wrong is a 500 (`refuse_head`).
- the body framing: `chunk`, `LAST_CHUNK` / `last_chunk`.
- 100-continue: the interim answer's bytes (`CONTINUE`); each driver sends it when the
  request's body is first wanted (epoll: the request's turn; asyncio: the first receive()).
- the keep-alive decision: the request's own (`Request.keep_alive`), off while the worker
  stops, off for a close-delimited body.
- what an application may not set (`SERVER_OWNED`, defined once in the pure parser twin,
  whose `header_block` drops them as the Cython twin's does; `clean_headers` for the ASGI
  adapter): the framing and hop-by-hop fields are the server's; a Content-Length it sets
  is read as its promise of the body's length.
- error answers (`error_answer`): a protocol error's status, `Connection: close`; then the
  connection lingers (the client may still be sending).
- which timeout applies to a connection (`expired`): a TLS handshake, write, body, head,
  an unfinished PROXY header, idle between requests or before the first byte, and the
  lingering close.
- after a response: keep the connection, close it, or linger (`after_response`), and for
  how long a lingering close reads (`LINGER_SECONDS`).
- whether a client takes trailer fields (`accepts_trailers`).

Nothing here imports socket, os, asyncio or ssl: tests feed it bytes and read bytes.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from prefork.http._pyparser import SERVER_OWNED
from prefork.http.errors import ResponseHeadError

log = logging.getLogger("prefork.error")

# How a response body is framed on the wire.
HEAD_ONLY, EXACT, CHUNKED, CLOSE_DELIMITED = range(4)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
_CLOSE_END = "Connection: close\r\n\r\n"
_KEEP_ALIVE_END = "Connection: keep-alive\r\n\r\n"
_CHUNKED_FIELD = "Transfer-Encoding: chunked\r\n"

# Statuses that never carry a body (RFC 9110 §6.4.1, §15.3.5, §15.4.5).
NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))

# Fields only the server writes (SERVER_OWNED, from the pure parser twin, which the Cython
# twin imports too): framing (RFC 9112 §6) and hop-by-hop fields (RFC 9110 §7.6.1). An
# application that sets them would make the server send two framings.

# A lingering close (after an answer that ends the connection while the client may still
# be sending) reads and drops for this long at most, so that the close does not reset the
# answer away before the client has read it.
LINGER_SECONDS = 2.0
# A connection that has sent nothing since it connected is closed after
# min(FIRST_BYTE_TIMEOUT, --header-timeout): it holds a descriptor and asks for nothing.
FIRST_BYTE_TIMEOUT = 5.0


def response_head(method: str, version: str, keep: bool, status_line: str, date_block: str,
                  block: str, status: int, length: Optional[int]) -> Tuple[bytes, int, bool]:
    """The head for a response to a `method` request in `version`, as (data, mode, keep):
    `data` the latin-1 bytes, `mode` HEAD_ONLY, EXACT, CHUNKED or CLOSE_DELIMITED, `keep`
    whether the connection takes another request after this one. A plain tuple: this runs
    once per response on the epoll worker's hot path.

    `status_line` and `block` come from the parser module (`status_line(status)`,
    `header_block(fields)`), `date_block` is the worker's "Server: ...\\r\\nDate: ...\\r\\n",
    `length` the body's size or None when unknown (streamed). `keep` is what the request
    allows (its keep_alive and not stopping); a close-delimited body turns it off."""
    if status in NO_BODY_STATUSES:
        mode = HEAD_ONLY
        framing = ""
    elif length is not None:
        mode = HEAD_ONLY if method == "HEAD" else EXACT
        framing = f"Content-Length: {length}\r\n"
    elif version == "HTTP/1.1":
        mode = HEAD_ONLY if method == "HEAD" else CHUNKED
        framing = _CHUNKED_FIELD
    else:
        framing = ""
        if method == "HEAD":
            mode = HEAD_ONLY
        else:
            mode = CLOSE_DELIMITED
            keep = False
    if not keep:
        end = _CLOSE_END
    elif version == "HTTP/1.0":
        end = _KEEP_ALIVE_END
    else:
        end = "\r\n"
    return (status_line + date_block + block + framing + end).encode("latin-1"), mode, keep


def upgrade_head(status_line: str, date_block: str, block: str, protocol: str) -> bytes:
    """The head of a 101 (Switching Protocols) to `protocol`. Upgrade and Connection are
    server-owned fields (`header_block` drops them from `block`, as from any response), so
    the server writes them here itself, after the block."""
    return (status_line + date_block + block + f"Upgrade: {protocol}\r\nConnection: Upgrade\r\n\r\n"
            ).encode("latin-1")


def refuse_head(method: str, target: str, exc: Exception) -> Tuple[int, str]:
    """A response head the application got wrong (a bad field, status or Content-Length:
    ResponseHeadError): logged, and answered 500 instead. Returns (status, reason)."""
    log.error("refused the response head for %s %s: %s", method, target, exc)
    return 500, "Internal Server Error"


def error_answer(status_line: str, date_block: str, block: str, body: bytes) -> bytes:
    """The whole answer to a protocol error (or any answer after which the connection
    closes): head with Content-Length and Connection: close, then `body`."""
    return (status_line + date_block + block + f"Content-Length: {len(body)}\r\n"
            + _CLOSE_END).encode("latin-1") + body


def clean_headers(fields: Iterable[Tuple[str, str]]) -> Tuple[List[Tuple[str, str]], Optional[int]]:
    """An application's response fields without the ones the server alone writes, and the
    body length it declared with Content-Length (None when it declared none). A malformed
    or conflicting Content-Length raises ResponseHeadError (the answer becomes a 500)."""
    kept = []
    length = None
    for name, value in fields:
        low = name.lower()
        if low in SERVER_OWNED:
            if low == "content-length":
                v = value.strip()
                if not v.isdigit() or not v.isascii():
                    raise ResponseHeadError(f"malformed Content-Length {value!r}")
                n = int(v)
                if length is not None and n != length:
                    raise ResponseHeadError("conflicting Content-Length fields")
                length = n
            continue
        kept.append((name, value))
    return kept, length


def fit_length(data: bytes, left: int, what: str = "a response body") -> bytes:
    """What of `data` a body declared `left` bytes long still takes. More than its
    Content-Length is cut (and logged): the bytes past it would be read as the next
    response. (A body that ends short closes the connection; each driver does that.)"""
    if len(data) > left:
        log.error("%s is longer than its Content-Length; cut", what)
        return data[:left]
    return data


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never call it with b"": that is the last chunk)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: Sequence[Tuple[str, str]] = (), header_block: Optional[Callable] = None) -> bytes:
    """The last chunk, with trailer fields serialized by `header_block` when there are any."""
    if not trailers:
        return LAST_CHUNK
    return b"0\r\n" + header_block(trailers).encode("latin-1") + b"\r\n"


def expired(now: float, last_active: float, head_started: float, writing: bool,
            body_pending: bool, cfg, lingering: bool = False, served: bool = True,
            proxy_partial: bool = False, handshake_started: float = 0.0) -> Optional[str]:
    """Which timeout a connection has run out of, if any: 'linger' (a lingering close has
    read long enough: close), 'write' (a client not reading its answer: close), 'body' (no
    body bytes: 408), 'header' (the head not complete in time: 408), 'proxy' (a PROXY
    header begun and not completed within the head timeout: close), 'keepalive' (idle
    between requests, or, `served` false, nothing sent since it connected for
    min(FIRST_BYTE_TIMEOUT, the head timeout): close), 'handshake' (a TLS connection, with
    its PROXY header if any, not through its handshake `tls_handshake_timeout` after
    `handshake_started`, the accept; 0.0 once done or without TLS: close; while it lasts no
    other timeout applies). `cfg` has write_timeout, body_timeout, header_timeout,
    keepalive and tls_handshake_timeout, in seconds."""
    idle = now - last_active
    if lingering:
        return "linger" if idle > LINGER_SECONDS else None
    if handshake_started:
        return "handshake" if now - handshake_started > cfg.tls_handshake_timeout else None
    if writing:
        return "write" if idle > cfg.write_timeout else None
    if body_pending:
        return "body" if idle > cfg.body_timeout else None
    if head_started:
        return "header" if now - head_started > cfg.header_timeout else None
    if proxy_partial:
        return "proxy" if idle > cfg.header_timeout else None
    if idle > cfg.keepalive or not served and idle > min(FIRST_BYTE_TIMEOUT, cfg.header_timeout):
        return "keepalive"
    return None


# What a connection does once a response has gone out whole.
KEEP, CLOSE, LINGER = range(3)


def after_response(keep: bool, body_done: bool, queued: bool) -> int:
    """KEEP (read the next request), CLOSE, or LINGER (shut our side, then read and drop
    for a moment so that the close does not reset the answer away). Not kept alive, or
    answered before the request body arrived whole: the rest of the stream cannot be told
    apart from the next request, so the connection ends; it lingers when the client may
    still be sending (the rest of a body, pipelined requests)."""
    if keep and body_done:
        return KEEP
    # (The epoll worker reads a body whole before its handler runs, so it asks only when
    # `keep` is off: KEEP there is `keep` itself.)
    return LINGER if queued or not body_done else CLOSE


def accepts_trailers(version: str, headers) -> bool:
    """The client takes trailer fields (`TE: trailers`, RFC 9110 §10.1.4); only HTTP/1.1
    has the chunked coding that carries them. `headers`: (lower-case name, value) pairs."""
    if version != "HTTP/1.1":
        return False
    for name, value in headers:
        if name == "te" and "trailers" in [t.split(";", 1)[0].strip() for t in value.lower().split(",")]:
            return True
    return False
