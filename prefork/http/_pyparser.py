"""Pure-Python request parser: the readable reference twin of prefork/http/_parser.pyx.

The rule this module keeps: for any byte stream, split into `feed()` calls at any points,
the result is the same requests and the same error as if the stream had been fed whole.
Both twins implement exactly the rules below, in the same order; a difference is a bug.

Sans-I/O: bytes in, `Request` objects out. No socket, os or signal here.

Rules (RFC 9112, RFC 9110 §5), decided once for both twins:
- Limits: every max_* above LIMIT_MAX (1 PiB) is clamped to LIMIT_MAX, by both twins,
  when the parser is made (the command line refuses larger values; the clamp keeps
  position + limit inside a C Py_ssize_t and the twins equal for any caller).
- Lines end in CRLF. A bare LF anywhere in a head, a chunk line or a trailer is 400
  (RFC 9112 §2.2 lets a recipient accept it; we do not, because lenient line endings are
  how requests get smuggled between servers that disagree). A CR not followed by LF is a
  control byte in a line, hence 400.
- Empty lines (CRLF) before a request line are skipped (RFC 9112 §2.2). The first byte
  after them must start a method (a tchar): any other byte (a TLS ClientHello's 0x16, NUL,
  SP, a bare LF, a CR not followed by LF) is 400 as soon as it arrives, before any limit
  is checked, so that a client speaking another protocol is answered at once.
- request-line = method SP request-target SP HTTP-version, exactly one SP each.
  method = token; request-target = 1*VCHAR; HTTP-version = "HTTP/" DIGIT "." DIGIT.
  A well-formed version other than 1.0 / 1.1 is 505; anything else malformed is 400.
  A "#" anywhere in the target is 400: a fragment is never part of a request-target
  (RFC 9112 §3.2). Targets: origin-form ("/..."), absolute-form ("http://" or
  "https://" authority [path]), authority-form only with CONNECT, asterisk-form only
  with OPTIONS. In absolute-form the authority is checked like Host (below) and must
  name a host; userinfo ("user@") is 400; it is the request's `host` (RFC 9112 §3.2.2:
  the target's authority wins over the Host field, which must still be there and valid).
- field-line = field-name ":" OWS field-value OWS; field-name = token (so no whitespace
  before the colon and no obs-fold); field-value bytes are VCHAR, SP, HTAB or obs-text.
- Per field line, in order: more than max_fields lines → 431; longer than max_field_size
  → 431; malformed → 400. The whole head longer than max_head_size → 431; a request line
  longer than max_request_line → 414. These limits are found while the head is still
  arriving, at the byte that crosses them.
- After the fields, in order: Host (HTTP/1.1 needs exactly one, HTTP/1.0 at most one; its
  value Host = uri-host [ ":" port ], port = *DIGIT, uri-host an "[...]" IP-literal or a
  reg-name / IPv4address of unreserved, pct-encoded and sub-delims bytes) → 400;
  Transfer-Encoding together with Content-Length → 400; Transfer-Encoding on HTTP/1.0 →
  400; its codings: a malformed element → 400, final coding not chunked (or none) → 400,
  chunked twice → 400, any other coding → 501; Content-Length: every element 1*DIGIT,
  at least one, all the same number → else 400; larger than max_body_size → 413; Expect
  (HTTP/1.1 only) with an element other than 100-continue → 417.
- Lists (Transfer-Encoding, Content-Length, Connection, Expect, across repeated fields):
  elements are separated by "," with OWS around them, and empty elements are ignored
  (RFC 9110 §5.6.1.2): "Transfer-Encoding: , chunked" is chunked, "Content-Length: 5, 5"
  is 5.
- Chunked bodies: chunk-size = 1 to 16 HEXDIG, no sign, prefix or whitespace; then
  chunk-ext exactly as RFC 9112 §7.1.1 gives it (BWS, token names, token or quoted-string
  values; the extensions are skipped), then CRLF; anything else on the line → 400; a chunk
  line longer than max_field_size → 400; chunk data is followed by exactly CRLF; the sum
  of chunks over max_body_size → 413. Trailer fields are checked like header fields
  (a line over max_field_size or more than max_fields of them → 431) and collected.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Iterable

from prefork.http.errors import (
    BadRequest,
    BodyTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    ParseError,
    RequestLineTooLong,
    ResponseHeadError,
    UnsupportedTransferCoding,
    VersionNotSupported,
)

# Limits, with who else uses the same number.
MAX_REQUEST_LINE = 8190  # gunicorn limit_request_field_size; nginx's 8k header buffer
MAX_FIELDS = 100  # gunicorn limit_request_fields, Apache LimitRequestFields
MAX_FIELD_SIZE = 8190  # gunicorn limit_request_field_size, Apache LimitRequestFieldSize
MAX_HEAD_SIZE = 65536  # bounds the memory one connection can pin with a head
MAX_BODY_SIZE = 16 * 1024 * 1024  # bodies are held in memory; nginx defaults to 1 MiB
# Any limit above this is clamped to it (1 PiB): no buffer gets near it, and position +
# limit stays far inside a C Py_ssize_t. The command line refuses larger values.
LIMIT_MAX = 1 << 50

# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" /
#         "|" / "~" / DIGIT / ALPHA                                    (RFC 9110 §5.6.2)
_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TCHAR_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# request-line = method SP request-target SP HTTP-version             (RFC 9112 §3)
_REQUEST_LINE = re.compile(rb"([" + _TCHAR + rb"]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
# field-line = field-name ":" OWS field-value OWS; OWS = *( SP / HTAB )  (RFC 9112 §5)
# field-value bytes: VCHAR / SP / HTAB / obs-text; trailing OWS is stripped afterwards.
_FIELD_LINE = re.compile(rb"([" + _TCHAR + rb"]+):[ \t]*([\t\x20-\x7e\x80-\xff]*)")
# chunk          = chunk-size [ chunk-ext ] CRLF                      (RFC 9112 §7.1)
# chunk-size     = 1*HEXDIG                    (we allow at most 16 digits)
# chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
# chunk-ext-name = token                                              (RFC 9112 §7.1.1)
# chunk-ext-val  = token / quoted-string
# quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE            (RFC 9110 §5.6.4)
# qdtext         = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
# quoted-pair    = "\" ( HTAB / SP / VCHAR / obs-text );  BWS = OWS
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = (rb"(?:[ \t]*;[ \t]*[" + _TCHAR + rb"]+(?:[ \t]*=[ \t]*(?:[" + _TCHAR + rb"]+|"
              + _QUOTED + rb"))?)*")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})" + _CHUNK_EXT)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Host     = uri-host [ ":" port ]; port = *DIGIT                     (RFC 9112 §3.2)
# uri-host = IP-literal / IPv4address / reg-name                     (RFC 3986 §3.2.2)
# IP-literal = "[" ( IPv6address / IPvFuture ) "]": here any host bytes but brackets,
# at least one; reg-name = *( unreserved / pct-encoded / sub-delims ), IPv4address too.
_IP_LITERAL = r"\[[A-Za-z0-9\-._~!$&'()*+,;=:%]+\]"
_REG_NAME = r"[A-Za-z0-9\-._~!$&'()*+,;=%]"
_HOST = re.compile(r"(?:" + _IP_LITERAL + "|" + _REG_NAME + r"*)(?::[0-9]*)?")
# absolute-form authority: the same, but the host may not be empty (RFC 9110 §4.2.1)
_AUTHORITY_HOST = re.compile(r"(?:" + _IP_LITERAL + "|" + _REG_NAME + r"+)(?::[0-9]*)?")
_DIGITS = re.compile(r"[0-9]+")
_ABSOLUTE = re.compile(r"(?:[hH][tT][tT][pP][sS]?)://[^/?]+")
_AUTHORITY = re.compile(r"[^/?#@]+:[0-9]+")

_METHODS = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"CONNECT", b"TRACE")}

# Parser states.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _DEAD = range(7)


class Request:
    """One complete request. Header names are lower-cased; names and values are str
    decoded as latin-1, the body is bytes."""

    __slots__ = (
        "method", "target", "path", "query", "version", "headers", "host",
        "content_length", "chunked", "keep_alive", "expect_continue", "body", "trailers",
    )

    def __init__(self) -> None:
        self.body = b""
        self.trailers = []

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of the field `name` (lower-case), or `default`."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} {self.version}>"


class RequestParser:
    """Incremental HTTP/1.1 request parser.

    `feed(data)` returns the requests completed so far, in order. It never raises a
    protocol error: after one, `error` holds it (a ParseError with the status to answer),
    the requests before it are still returned, and the parser accepts nothing more.
    `pending` is the request whose body is being read, if any (for 100-continue);
    `take_body()` hands over the part of its body received so far (for spooling).
    """

    def __init__(
        self,
        max_request_line: int = MAX_REQUEST_LINE,
        max_fields: int = MAX_FIELDS,
        max_field_size: int = MAX_FIELD_SIZE,
        max_head_size: int = MAX_HEAD_SIZE,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        self.max_request_line = min(max_request_line, LIMIT_MAX)
        self.max_fields = min(max_fields, LIMIT_MAX)
        self.max_field_size = min(max_field_size, LIMIT_MAX)
        self.max_head_size = min(max_head_size, LIMIT_MAX)
        self.max_body_size = min(max_body_size, LIMIT_MAX)
        self.error: ParseError | None = None
        self.pending: Request | None = None
        self._buf = bytearray()
        self._pos = 0  # first unconsumed byte of _buf
        self._checked = 0  # _buf[_pos:_checked] of a head in progress holds no bare LF
        self._state = _HEAD
        self._remaining = 0  # bytes left of the Content-Length body or of the chunk
        self._parts: list[bytes] = []
        self._body_size = 0
        self._trailers: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ public API

    def feed(self, data: bytes) -> list[Request]:
        out: list[Request] = []
        if self._state == _DEAD:
            return out
        buf = self._buf
        buf += data
        try:
            while self._pos < len(buf):
                state = self._state
                if state == _HEAD:
                    req = self._parse_head()
                    if req is None:
                        break
                    if self._state == _HEAD:
                        out.append(req)
                elif state == _BODY:
                    if self._read_body():
                        out.append(self._finish())
                elif state == _CHUNK_SIZE:
                    if not self._read_chunk_size():
                        break
                elif state == _CHUNK_DATA:
                    self._read_chunk_data()
                elif state == _CHUNK_END:
                    if not self._read_chunk_end():
                        break
                elif state == _TRAILERS:
                    done = self._read_trailer()
                    if done is None:
                        break
                    if done:
                        out.append(self._finish())
        except ParseError as exc:
            self.error = exc
            self._state = _DEAD
            self.pending = None
            self._buf = bytearray()
            self._pos = self._checked = 0
            return out
        if self._pos:
            del buf[: self._pos]
            self._checked = max(0, self._checked - self._pos)
            self._pos = 0
        return out

    @property
    def buffered(self) -> int:
        """Bytes received and kept that belong to no completed request yet (a head still
        arriving, or the start of a chunk line): what a header timeout watches."""
        return len(self._buf) - self._pos

    def take_body(self) -> bytes:
        """The body bytes received so far for `pending`, which the parser then forgets:
        the completed Request.body holds only what arrived after the last call. Lets the
        caller move a large body to a file as it arrives. b"" when nothing is pending.
        Limits still count the whole body."""
        if self.pending is None or not self._parts:
            return b""
        parts = self._parts
        self._parts = []
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # ------------------------------------------------------------------ head

    def _parse_head(self) -> Request | None:
        buf = self._buf
        pos = self._pos
        n = len(buf)
        # Empty lines before a request line are ignored (RFC 9112 §2.2).
        while buf.startswith(b"\r\n", pos):
            pos += 2
        self._pos = pos
        if pos >= n:
            return None
        first = buf[pos]
        if first not in _TCHAR_BYTES:
            # A request line starts with a method (a token). Anything else (a TLS
            # ClientHello, NUL, a CR not followed by LF) is answered now, not at a timeout.
            if first != 13 or pos + 1 < n:
                raise BadRequest("not an HTTP request")
            return None  # a lone CR may be the start of one more empty line
        checked = self._checked if self._checked > pos else pos

        # Where would the head cross a limit? A request line needs its LF within
        # max_request_line + 2 bytes; the whole head must fit in max_head_size.
        cap = pos + self.max_head_size
        over: type[ParseError] = HeadersTooLarge
        line_cap = pos + self.max_request_line + 2
        if line_cap <= cap and buf.find(b"\n", pos, line_cap) < 0:
            cap = line_cap
            over = RequestLineTooLong
        t = buf.find(b"\r\n\r\n", max(pos, checked - 3))
        end = t + 4 if t >= 0 else n
        stop = end if end < cap else cap
        if stop > checked:
            lfs = buf.count(b"\n", checked, stop)
            if lfs and lfs != buf.count(b"\r\n", checked - 1 if checked > pos else pos, stop):
                raise BadRequest("bare LF in request head")
            self._checked = stop
        if t >= 0 and end <= cap:
            head = bytes(buf[pos:t])
            self._pos = end
            self._checked = 0
            return self._start_request(head)
        if n >= cap:
            raise over()
        return None

    def _start_request(self, head: bytes) -> Request:
        lines = head.split(b"\r\n")
        m = _REQUEST_LINE.fullmatch(lines[0])
        if m is None:
            raise BadRequest("malformed request line")
        major, minor = m.group(3, 4)
        if major != b"1" or minor not in b"01":
            raise VersionNotSupported()
        req = Request()
        method_b = m.group(1)
        method = _METHODS.get(method_b) or method_b.decode("ascii")
        target = m.group(2).decode("ascii")
        req.method = method
        req.target = target
        req.version = "HTTP/1.1" if minor == b"1" else "HTTP/1.0"
        authority = self._split_target(req, method, target)

        headers = []
        max_fields = self.max_fields
        max_field_size = self.max_field_size
        count = 0
        for line in lines[1:]:
            count += 1
            if count > max_fields:
                raise HeadersTooLarge("too many header fields")
            if len(line) > max_field_size:
                raise HeadersTooLarge("header field too large")
            f = _FIELD_LINE.fullmatch(line)
            if f is None:
                raise BadRequest("malformed header field")
            headers.append((f.group(1).lower().decode("ascii"), f.group(2).rstrip(b" \t").decode("latin-1")))
        req.headers = headers
        self._frame(req, headers, authority)
        return req

    @staticmethod
    def _split_target(req: Request, method: str, target: str) -> str | None:
        """path and query from the request-target, by its form (RFC 9112 §3.2); the
        authority of an absolute-form target, else None."""
        # request-target = origin-form / absolute-form / authority-form / asterisk-form;
        # none of them has a fragment ("#" is not in path, query or authority).
        if "#" in target:
            raise BadRequest("fragment in request target")
        authority = None
        first = target[0]
        if first == "/":
            path = target
        elif first == "*" and target == "*":
            if method != "OPTIONS":
                raise BadRequest("asterisk-form is only for OPTIONS")
            req.path, req.query = "*", ""
            return None
        elif method == "CONNECT":
            if _AUTHORITY.fullmatch(target) is None:
                raise BadRequest("CONNECT needs authority-form")
            req.path, req.query = "", ""
            return None
        else:
            # absolute-form = absolute-URI; for http(s): scheme "://" authority path-abempty
            # [ "?" query ]; authority = [ userinfo "@" ] host [ ":" port ]  (RFC 3986 §3)
            a = _ABSOLUTE.match(target)
            if a is None:
                raise BadRequest("malformed request target")
            authority = target[target.index("/") + 2:a.end()]
            if "@" in authority:
                raise BadRequest("userinfo in request target")
            if _AUTHORITY_HOST.fullmatch(authority) is None:
                raise BadRequest("malformed authority in request target")
            path = target[a.end():] or "/"
            if path[0] == "?":
                path = "/" + path
        if method == "CONNECT":
            raise BadRequest("CONNECT needs authority-form")
        q = path.find("?")
        if q < 0:
            req.path, req.query = path, ""
        else:
            req.path, req.query = path[:q], path[q + 1:]
        return authority

    def _frame(self, req: Request, headers: list[tuple[str, str]], authority: str | None) -> None:
        """Host, framing, keep-alive and Expect, in the order the module docstring gives.
        `authority`: that of an absolute-form target, which becomes the request's host."""
        http11 = req.version == "HTTP/1.1"
        host = None
        hosts = 0
        te = None
        cl = None
        conn = None
        expect = None
        for name, value in headers:
            if name == "host":
                hosts += 1
                host = value
            elif name == "content-length":
                cl = value if cl is None else cl + "," + value
            elif name == "transfer-encoding":
                te = value if te is None else te + "," + value
            elif name == "connection":
                conn = value if conn is None else conn + "," + value
            elif name == "expect":
                expect = value if expect is None else expect + "," + value
        if hosts > 1 or (http11 and hosts == 0):
            raise BadRequest("HTTP/1.1 needs exactly one Host" if http11 else "repeated Host")
        if host is not None and _HOST.fullmatch(host) is None:
            raise BadRequest("malformed Host")
        # RFC 9112 §3.2.2: with an absolute-form target, its authority is the host.
        req.host = host if authority is None else authority

        chunked = False
        length = 0
        if te is not None:
            if cl is not None:
                raise BadRequest("both Transfer-Encoding and Content-Length")
            if not http11:
                raise BadRequest("Transfer-Encoding on HTTP/1.0")
            # Transfer-Encoding = #transfer-coding; empty elements are ignored
            codings = [c for c in (c.strip(" \t").lower() for c in te.split(",")) if c]
            for c in codings:
                if _TOKEN.fullmatch(c) is None:
                    raise BadRequest("malformed Transfer-Encoding")
            if not codings or codings[-1] != "chunked":
                raise BadRequest("final transfer coding is not chunked")
            if codings.count("chunked") > 1:
                raise BadRequest("chunked applied twice")
            if len(codings) > 1:
                raise UnsupportedTransferCoding()
            chunked = True
            req.content_length = None
        elif cl is not None:
            # Content-Length = 1*DIGIT; a list of the same number is that number
            # (RFC 9110 §8.6), with the list rule's OWS and empty elements.
            value = None
            for v in cl.split(","):
                v = v.strip(" \t")
                if not v:
                    continue
                if _DIGITS.fullmatch(v) is None:
                    raise BadRequest("malformed Content-Length")
                n = int(v)
                if value is not None and n != value:
                    raise BadRequest("conflicting Content-Length")
                value = n
            if value is None:
                raise BadRequest("malformed Content-Length")
            if value > self.max_body_size:
                raise BodyTooLarge()
            length = value
            req.content_length = value
        else:
            req.content_length = None
        req.chunked = chunked

        keep_alive = http11
        if conn is not None:
            for token in conn.split(","):
                token = token.strip(" \t").lower()
                if token == "close":
                    keep_alive = False
                    break
                if token == "keep-alive":
                    keep_alive = True
        req.keep_alive = keep_alive

        req.expect_continue = False
        if expect is not None and http11:
            # Expect = #expectation; empty elements are ignored
            for v in expect.split(","):
                v = v.strip(" \t").lower()
                if not v:
                    continue
                if v != "100-continue":
                    raise ExpectationFailed()
                req.expect_continue = True

        if chunked:
            self._state = _CHUNK_SIZE
            self._parts = []
            self._body_size = 0
            self._trailers = []
            self.pending = req
        elif length:
            buf = self._buf
            pos = self._pos
            if len(buf) - pos >= length:  # the common case: the body came with the head
                req.body = bytes(buf[pos:pos + length])
                self._pos = pos + length
            else:
                self._state = _BODY
                self._remaining = length
                self._parts = []
                self.pending = req

    # ------------------------------------------------------------------ bodies

    def _take(self) -> None:
        """Move up to _remaining bytes from the buffer into the body parts."""
        buf = self._buf
        pos = self._pos
        take = min(self._remaining, len(buf) - pos)
        self._parts.append(bytes(buf[pos:pos + take]))
        self._pos = pos + take
        self._remaining -= take

    def _read_body(self) -> bool:
        self._take()
        return self._remaining == 0

    def _finish(self) -> Request:
        req = self.pending
        req.body = b"".join(self._parts)
        self._parts = []
        if req.chunked:
            req.trailers = self._trailers
            self._trailers = []
        self.pending = None
        self._state = _HEAD
        return req

    def _line(self, limit: int, too_long: type[ParseError]) -> bytes | None:
        """The next CRLF-terminated line without its CRLF, or None for "need more"."""
        buf = self._buf
        pos = self._pos
        lf = buf.find(b"\n", pos, pos + limit + 2)
        if lf < 0:
            if len(buf) - pos >= limit + 2:
                raise too_long("line too long")
            return None
        if lf == pos or buf[lf - 1] != 13:
            raise BadRequest("bare LF")
        self._pos = lf + 1
        return bytes(buf[pos:lf - 1])

    def _read_chunk_size(self) -> bool:
        line = self._line(self.max_field_size, BadRequest)
        if line is None:
            return False
        m = _CHUNK_LINE.fullmatch(line)
        if m is None:
            raise BadRequest("malformed chunk size line")
        size = int(m.group(1), 16)
        if size > self.max_body_size - self._body_size:
            raise BodyTooLarge()
        self._body_size += size
        if size == 0:
            self._state = _TRAILERS
        else:
            self._remaining = size
            self._state = _CHUNK_DATA
        return True

    def _read_chunk_data(self) -> None:
        self._take()
        if self._remaining == 0:
            self._state = _CHUNK_END

    def _read_chunk_end(self) -> bool:
        buf = self._buf
        pos = self._pos
        have = len(buf) - pos
        if have >= 2:
            if buf[pos] != 13 or buf[pos + 1] != 10:
                raise BadRequest("chunk data not followed by CRLF")
            self._pos = pos + 2
            self._state = _CHUNK_SIZE
            return True
        if have == 1 and buf[pos] != 13:
            raise BadRequest("chunk data not followed by CRLF")
        return False

    def _read_trailer(self) -> bool | None:
        """True: the body is complete; False: one trailer read; None: need more."""
        line = self._line(self.max_field_size, HeadersTooLarge)
        if line is None:
            return None
        if not line:
            return True
        if len(self._trailers) >= self.max_fields:
            raise HeadersTooLarge("too many trailer fields")
        f = _FIELD_LINE.fullmatch(line)
        if f is None:
            raise BadRequest("malformed trailer field")
        self._trailers.append((f.group(1).lower().decode("ascii"), f.group(2).rstrip(b" \t").decode("latin-1")))
        return False


# ---------------------------------------------------------------------- response heads

_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n" for s in HTTPStatus}

# The fields a handler may not set, dropped by header_block (any case): the framing
# (Content-Length, Transfer-Encoding: RFC 9112 §6) and the hop-by-hop fields (RFC 9110
# §7.6.1: Connection and what it may name, Keep-Alive, TE, Trailer, Upgrade, and the
# non-standard Proxy-Connection). The connection writes Content-Length or
# Transfer-Encoding, and Connection, itself, from the body it sends; so no response can
# carry two framings whichever path (App, WSGI, static files, error answers, a future
# ASGI adapter) built its fields. A body's length is told with the body (bytes, a
# FileBody's count, StreamBody(length=...)), never with a field.
SERVER_OWNED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                          "te", "trailer", "upgrade", "proxy-connection"})
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ResponseHeadError(f"status {status!r} is not three digits")
        line = f"HTTP/1.1 {status} \r\n"
    return line


def header_block(headers: Iterable[tuple[str, str]]) -> str:
    """Serialize a handler's header fields as "Name: value\r\n" lines. Every response
    head's handler fields pass here (or through a block this made and cached), so the
    rules live once:
    - a name that is not a token, or a value with CR, LF, NUL or another control byte, or
      text that is not latin-1, raises ResponseHeadError: an application can never split
      a response;
    - a valid field named in SERVER_OWNED is dropped: the server alone writes the framing
      (Content-Length or Transfer-Encoding) and Connection, after this block."""
    parts = []
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None:
            raise ResponseHeadError(f"invalid header name {name!r}")
        if _BAD_VALUE.search(value) is not None:
            raise ResponseHeadError(f"control character in header {name!r}")
        if name.lower() in SERVER_OWNED:
            continue
        parts.append(f"{name}: {value}\r\n")
    block = "".join(parts)
    try:
        block.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ResponseHeadError("header text is not latin-1") from exc
    return block


def response_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """A whole response head: status line, header_block(headers), blank line (so without
    any framing field: this is for tests and heads that carry none)."""
    return (status_line(status) + header_block(headers) + "\r\n").encode("latin-1")
