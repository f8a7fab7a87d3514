# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython twin of prefork/apps/wsgi.py: PEP 3333 on the hot path.

The pure module is the reference and the fallback; this one implements the same rules, and
a difference is a bug (tests/test_wsgi.py runs the WSGI tests on both, and compares the
environ of both for a corpus of requests). What it does in C is what every request pays:
- the environ: one copy of the constant part, then the request's keys, set in the pure
  twin's order; header names map to their environ keys through one dict (the common names
  precomputed, the rest added on first use), and a trusted peer's forwarding fields are
  parsed only when the request has one;
- start_response and write(), with the pure twin's checks and messages;
- a list (or tuple) of bytes: joined (one chunk is used as it is), with the header block
  serialized here (`Response.block`), so the connection sends head and body in one send.
  The block of the last header list is kept: an application that answers with the same
  fields (a constant list, or equal names and values) pays a comparison, not a
  serialization.
Every other result (generators, file_wrapper, any iterable) takes the pure twin's code
itself, so streaming, sendfile, late start_response and close() cannot drift.

It reads the parser's Request through its public attributes, so it serves Requests of
either parser twin; the parser's field cache already hands out shared (name, value)
tuples with interned names, which is what reading the parser's offsets directly would
have bought here.
"""

cimport cython
from cpython.unicode cimport PyUnicode_READ_CHAR, PyUnicode_GET_LENGTH

import io

from prefork.apps import wsgi as _pure
from prefork.apps.response import Response, StreamBody, error_response
from prefork.http._parser import header_block

from urllib.parse import unquote_to_bytes

cdef object BytesIO = io.BytesIO
cdef object _environ_key = _pure._environ_key

cdef str K_CONTENT_TYPE = "CONTENT_TYPE"
cdef str K_CONTENT_LENGTH = "CONTENT_LENGTH"
cdef str K_COOKIE = "HTTP_COOKIE"
cdef str K_HOST = "HTTP_HOST"
cdef str K_FORWARDED = "HTTP_FORWARDED"
cdef str K_X_FORWARDED_FOR = "HTTP_X_FORWARDED_FOR"
cdef str K_X_FORWARDED_PROTO = "HTTP_X_FORWARDED_PROTO"
cdef str S_EMPTY = ""
cdef bytes B_EMPTY = b""

# Header name (lower-case, as both parser twins give it) → environ key, "" for a name that
# is dropped (it has "_"), or the CONTENT_TYPE / CONTENT_LENGTH objects above, which the
# environ loop tells apart by identity. Common names are here from the start; others are
# added on first use, up to _MAX_KEYS, by the pure twin's own rule (_environ_key).
cdef dict _KEYS = {}
cdef Py_ssize_t _MAX_KEYS = 1024

for _name in (
    "host", "user-agent", "accept", "accept-language", "accept-encoding", "accept-charset",
    "connection", "referer", "origin", "upgrade-insecure-requests", "cache-control",
    "pragma", "transfer-encoding", "authorization", "if-none-match", "if-modified-since",
    "range", "expect", "te", "upgrade", "x-forwarded-host", "x-real-ip",
    "x-requested-with", "dnt", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-user",
    "sec-fetch-dest", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "priority",
    "keep-alive", "trailer", "via", "date", "if-match", "if-range",
):
    _KEYS[_name] = _environ_key(_name)
_KEYS["content-type"] = K_CONTENT_TYPE
_KEYS["content-length"] = K_CONTENT_LENGTH
_KEYS["cookie"] = K_COOKIE
_KEYS["host"] = K_HOST
_KEYS["forwarded"] = K_FORWARDED
_KEYS["x-forwarded-for"] = K_X_FORWARDED_FOR
_KEYS["x-forwarded-proto"] = K_X_FORWARDED_PROTO
assert _KEYS["user-agent"] == "HTTP_USER_AGENT" and _pure.FORWARDING_KEYS == {
    K_FORWARDED, K_X_FORWARDED_FOR, K_X_FORWARDED_PROTO}


cdef inline object _key_of(object name):
    key = _KEYS.get(name)
    if key is None:
        key = _environ_key(name)
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[name] = key
    return key


# str(port) of recent ports (REMOTE_PORT, SERVER_PORT), direct-mapped: str() of an int is a
# fifth of the environ's cost, and a client's port repeats for every request of its
# connection (the server's, for every request). A slot's two halves are read and written
# without running Python code in between, so pool threads (holding the GIL) see them whole.
cdef enum:
    PORT_SLOTS = 1024
cdef long _PORT_NUM[PORT_SLOTS]
cdef object _PORT_STR = [None] * PORT_SLOTS
for _i in range(PORT_SLOTS):
    _PORT_NUM[_i] = -1


cdef inline object _port_str(object port):
    cdef long n
    cdef Py_ssize_t slot
    if type(port) is not int:
        return str(port)
    try:
        n = port
    except OverflowError:
        return str(port)
    slot = n & (PORT_SLOTS - 1)
    cached = (<list>_PORT_STR)[slot]
    if cached is not None and _PORT_NUM[slot] == n:
        return cached
    s = str(port)
    (<list>_PORT_STR)[slot] = s
    _PORT_NUM[slot] = n
    return s


cdef inline bint _digit(Py_UCS4 c) noexcept:
    return c >= 48 and c <= 57  # "0".."9"


# ---------------------------------------------------------------------- start_response

@cython.freelist(16)
@cython.final
cdef class StartResponse:
    """One call of the application: start_response (the object itself is the callable)
    and write, with their state. Attribute names are the pure twin's _Call's: its code
    for streamed results reads them."""

    cdef public object status
    cdef public object headers
    cdef public bint sent  # the head has left (the response is streaming)
    cdef list _written

    @property
    def written(self):
        if self._written is None:
            self._written = []
        return self._written

    def __call__(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:  # too late to change the head: re-raise (PEP 3333)
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if not (type(status) is str and PyUnicode_GET_LENGTH(status) >= 4
                and _digit(PyUnicode_READ_CHAR(status, 0)) and _digit(PyUnicode_READ_CHAR(status, 1))
                and _digit(PyUnicode_READ_CHAR(status, 2)) and PyUnicode_READ_CHAR(status, 3) == 32):
            # Not the common "200 OK": exactly the pure twin's test (str.isdigit takes
            # other digits than ASCII ones).
            if type(status) is not str or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
                raise AssertionError(f"status {status!r} is not '<3 digits> <reason>'")
        if type(headers) is not list:
            raise AssertionError("response headers must be a list of (name, value) tuples")
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data):
        if self.status is None:
            raise AssertionError("write() called before start_response()")
        if type(data) is not bytes:
            raise TypeError("write() takes bytes")
        if self._written is None:
            self._written = []
        self._written.append(data)


# ---------------------------------------------------------------------- the handler

cdef class WSGIHandler:
    """Handler for a PEP 3333 callable (the pure twin's WSGIHandler, same arguments)."""

    wants_connection = True

    cdef readonly object app
    cdef readonly str root_path
    cdef readonly dict base
    cdef object _py  # the pure twin, whose code serves every result but a list or tuple
    # The last header list serialized: (its items, their block, their Content-Length), one
    # tuple read and replaced whole, so that handlers in pool threads (--threads) never
    # pair one list's block with another's fields.
    cdef tuple _last

    def __init__(self, app, root_path="", multithread=False, multiprocess=True, url_scheme="http"):
        self._py = _pure.WSGIHandler(app, root_path=root_path, multithread=multithread,
                                     multiprocess=multiprocess, url_scheme=url_scheme)
        self.app = app
        self.root_path = self._py.root_path
        self.base = self._py.base  # the same constant part as the pure twin's, by construction

    def environ(self, req, conn):
        """The environ for `req`; None when its path is outside --root-path."""
        return self._environ(req, conn)

    cdef dict _environ(self, req, conn):
        cdef str path = req.path
        cdef str root = self.root_path
        cdef dict env
        cdef bint forwarding = False
        cdef object old
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
        if root:
            if path == root or path.startswith(root + "/"):
                path = path[len(root):]
            else:
                return None
        env = self.base.copy()
        env["REQUEST_METHOD"] = req.method
        env["PATH_INFO"] = path
        env["QUERY_STRING"] = req.query
        env["SERVER_PROTOCOL"] = req.version
        cdef str target = req.target
        env["RAW_URI"] = target
        env["REQUEST_URI"] = target
        for name, value in req.headers:
            key = _key_of(name)
            if key is K_CONTENT_TYPE:
                env[K_CONTENT_TYPE] = value
                continue
            if key is K_CONTENT_LENGTH:  # the parsed number: the field may be "5, 5"
                env[K_CONTENT_LENGTH] = str(req.content_length)
                continue
            if not key:
                continue
            if key is K_FORWARDED or key is K_X_FORWARDED_FOR or key is K_X_FORWARDED_PROTO:
                forwarding = True
            old = env.get(key)
            if old is None:
                env[key] = value
            else:  # repeated fields are one list (RFC 9110 §5.3); cookies use ";"
                env[key] = old + ("; " if key == K_COOKIE else ",") + value
        if target[0] != "/":  # absolute-form, "*" or CONNECT: see the pure twin
            host = req.host
            if host is not None:
                env[K_HOST] = host
        held = conn.body if conn is not None else None
        if held is None:
            body = req.body
            env["wsgi.input"] = BytesIO(body)
            size = len(body)
        elif type(held) is bytes:
            env["wsgi.input"] = BytesIO(held)
            size = len(held)
        else:
            size = held.seek(0, 2)
            held.seek(0)
            env["wsgi.input"] = held
        if req.chunked:
            env[K_CONTENT_LENGTH] = str(size)
        addr = conn.addr if conn is not None else None
        if isinstance(addr, tuple):
            env["REMOTE_ADDR"] = addr[0]
            env["REMOTE_PORT"] = _port_str(addr[1])
        else:
            env["REMOTE_ADDR"] = S_EMPTY
        tls = getattr(conn, "tls", None)
        if tls is not None:  # mod_ssl's names: HTTPS=on, SSL_CLIENT_S_DN, SSL_CLIENT_VERIFY...
            env["wsgi.url_scheme"] = "https"
            env.update(tls.environ())
        if forwarding and conn is not None and conn.trusted:  # a trusted proxy speaks for the client
            client, scheme = conn.client(req)
            if client != env["REMOTE_ADDR"]:
                env["REMOTE_ADDR"] = client
                env.pop("REMOTE_PORT", None)
            env["wsgi.url_scheme"] = scheme
        local = conn.local_address() if conn is not None else None
        if isinstance(local, tuple):
            env["SERVER_NAME"] = local[0]
            env["SERVER_PORT"] = _port_str(local[1])
        else:  # a unix socket: the name the client asked for
            host = req.host or "localhost"
            name, _, port = host.rpartition(":") if host.rfind(":") > host.rfind("]") else (host, "", "")
            env["SERVER_NAME"] = name or host
            env["SERVER_PORT"] = port or "80"
        return env

    def __call__(self, req, conn=None):
        env = self._environ(req, conn)
        if env is None:
            return error_response(404, "Not Found")
        cdef StartResponse call = StartResponse.__new__(StartResponse)
        result = self.app(env, call)
        try:
            t = type(result)
            if t is list or t is tuple:
                return self._whole(req, call, result)
            return self._py._response(req, call, result)
        except BaseException:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise

    cdef object _whole(self, req, StartResponse call, result):
        """The response for a list or tuple result: sent whole, head and body together."""
        cdef list chunks
        cdef Py_ssize_t n
        if call.status is None:
            raise RuntimeError("the WSGI application did not call start_response")
        status, length, block = self._head(call)
        if call._written:
            chunks = call._written + list(result)
        else:
            chunks = result if type(result) is list else list(result)
        for chunk in chunks:
            if type(chunk) is not bytes:
                raise TypeError(f"the WSGI application yielded {type(chunk).__name__}, not bytes")
        n = len(chunks)
        if n == 1:
            body = chunks[0]
        elif n == 0:
            body = B_EMPTY
        else:
            body = B_EMPTY.join(chunks)
        if length is not None:
            if req.method == "HEAD" and not body:
                return Response(status, call.headers, StreamBody((), length), block)  # HEAD keeps GET's length
            if len(body) > length:
                body = body[:length]
        return Response(status, call.headers, body, block)

    cdef tuple _head(self, StartResponse call):
        """(status, the application's Content-Length or None, the header block or None):
        the pure twin's _head, and the block the connection would make of the fields
        (None when they are refused: the connection then refuses them itself, as it does
        for the pure twin's answers)."""
        cdef object status = call.status
        cdef list headers = call.headers
        cdef long code
        if (type(status) is str and _digit(PyUnicode_READ_CHAR(status, 0))
                and _digit(PyUnicode_READ_CHAR(status, 1)) and _digit(PyUnicode_READ_CHAR(status, 2))):
            code = ((<long>PyUnicode_READ_CHAR(status, 0) - 48) * 100
                    + (<long>PyUnicode_READ_CHAR(status, 1) - 48) * 10 + <long>PyUnicode_READ_CHAR(status, 2) - 48)
        else:
            code = int(status[:3])
        cdef tuple last = self._last
        if last is not None and _same_fields(headers, <tuple>last[0]):
            return code, last[2], last[1]
        length = None
        for name, value in headers:
            if len(name) == 14 and name.lower() == "content-length" and value.isdigit():
                length = int(value)
        try:
            block = header_block(headers)
        except Exception:  # ResponseHeadError, or fields that are not (str, str) at all
            return code, length, None
        if _cacheable(headers):
            self._last = (tuple(headers), block, length)
        return code, length, block


cdef bint _cacheable(list headers):
    """Fields whose block may be kept: (str, str) tuples, immutable all through."""
    for item in headers:
        if type(item) is not tuple or len(<tuple>item) != 2:
            return False
        if type((<tuple>item)[0]) is not str or type((<tuple>item)[1]) is not str:
            return False
    return True


cdef bint _same_fields(list headers, tuple last):
    """Are `headers` the fields of `last` (kept by _cacheable, so exact str tuples)?"""
    cdef Py_ssize_t i, n = len(headers)
    cdef tuple a
    cdef tuple b
    if n != len(last):
        return False
    for i in range(n):
        item = headers[i]
        b = <tuple>last[i]
        if item is b:
            continue
        if type(item) is not tuple or len(<tuple>item) != 2:
            return False
        a = <tuple>item
        if type(a[0]) is not str or type(a[1]) is not str:
            return False
        if not (<str>a[0] == <str>b[0] and <str>a[1] == <str>b[1]):
            return False
    return True
