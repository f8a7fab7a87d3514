"""PEP 3333: run any WSGI application as a prefork-http handler.

The body was read before the application runs (memory, or a temporary file past the
spool threshold), so `wsgi.input` never blocks on the socket. The response is built in
the handler (which runs in a pool thread under --threads): a list of bytes is joined and
goes out with Content-Length in one send; `wsgi.file_wrapper` over a real file becomes a
sendfile; any other iterable is pulled until its first non-empty chunk (so that a
generator may call start_response late, as PEP 3333 allows), then streamed by the loop.
`close()` of the result is always called: at once for what was sent whole, else when the
stream ends or the connection closes.

Left as PEP 3333 allows: write() data is buffered and sent before the iterable's; the
reason phrase of the status is the standard one.
"""

from __future__ import annotations

import io
import itertools
import os
import stat
import sys
from typing import Callable, List, Optional, Tuple
from urllib.parse import unquote_to_bytes

from prefork import __version__
from prefork.apps.response import FileBody, Response, StreamBody, error_response

_ENVIRON_KEYS: dict = {}  # header name → HTTP_* key, or "" for names with "_" (dropped)
# The fields a trusted proxy speaks for the client with (prefork.proxy.forwarded_client):
# without any of them, the client is the peer and the scheme stays, and nothing is parsed.
FORWARDING_KEYS = frozenset({"HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO"})


def _environ_key(name: str) -> str:
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        # A name with "_" would collide with the "-" one after the translation, a known
        # way to smuggle headers past a proxy (as nginx and gunicorn do, drop it).
        key = "" if "_" in name else "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < 1024:
            _ENVIRON_KEYS[name] = key
    return key


class FileWrapper:
    """wsgi.file_wrapper: a file object the server sends with sendfile when it has a
    real descriptor, else reads in blocks."""

    def __init__(self, filelike, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while True:
            block = read(self.blksize)
            if not block:
                return
            yield block


class _Call:
    """One call of the application: start_response and write, with their state."""

    __slots__ = ("status", "headers", "sent", "written")

    def __init__(self) -> None:
        self.status: Optional[str] = None
        self.headers: Optional[List[Tuple[str, str]]] = None
        self.sent = False  # the head has left (the response is streaming)
        self.written: List[bytes] = []

    def start_response(self, status: str, headers: List[Tuple[str, str]], exc_info=None) -> Callable:
        if exc_info is not None:
            try:
                if self.sent:  # too late to change the head: re-raise (PEP 3333)
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if type(status) is not str or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
            raise AssertionError(f"status {status!r} is not '<3 digits> <reason>'")
        if type(headers) is not list:
            raise AssertionError("response headers must be a list of (name, value) tuples")
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        if self.status is None:
            raise AssertionError("write() called before start_response()")
        if type(data) is not bytes:
            raise TypeError("write() takes bytes")
        self.written.append(data)


class WSGIHandler:
    """Handler for a PEP 3333 callable."""

    wants_connection = True

    def __init__(self, app: Callable, root_path: str = "", multithread: bool = False,
                 multiprocess: bool = True, url_scheme: str = "http") -> None:
        self.app = app
        self.root_path = root_path.rstrip("/")
        self.base = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": url_scheme,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,  # the whole body is there; reading to EOF is fine
            "SCRIPT_NAME": self.root_path,
            "SERVER_SOFTWARE": f"prefork-http/{__version__}",
        }

    def environ(self, req, conn) -> Optional[dict]:
        """The environ for `req`; None when its path is outside --root-path."""
        env = self.base.copy()
        path = req.path
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
        root = self.root_path
        if root:
            if path == root or path.startswith(root + "/"):
                path = path[len(root):]
            else:
                return None
        env["REQUEST_METHOD"] = req.method
        env["PATH_INFO"] = path
        env["QUERY_STRING"] = req.query
        env["SERVER_PROTOCOL"] = req.version
        env["RAW_URI"] = req.target
        env["REQUEST_URI"] = req.target
        for name, value in req.headers:
            if name == "content-type":
                env["CONTENT_TYPE"] = value
                continue
            if name == "content-length":  # the parsed number: the field may be "5, 5"
                env["CONTENT_LENGTH"] = str(req.content_length)
                continue
            key = _ENVIRON_KEYS.get(name) or _environ_key(name)
            if not key:
                continue
            if key in env:  # repeated fields are one list (RFC 9110 §5.3); cookies use ";"
                env[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
            else:
                env[key] = value
        if req.target[0] != "/":
            # absolute-form: the parser gives the target's authority as the host, which
            # wins over the Host field (RFC 9112 §3.2.2). For "*" and CONNECT, req.host
            # is the Host field itself.
            host = req.host
            if host is not None:
                env["HTTP_HOST"] = host
        held = conn.body if conn is not None else None
        if held is None:
            body = req.body
            env["wsgi.input"] = io.BytesIO(body)
            size = len(body)
        elif type(held) is bytes:
            env["wsgi.input"] = io.BytesIO(held)
            size = len(held)
        else:
            size = held.seek(0, 2)
            held.seek(0)
            env["wsgi.input"] = held
        if req.chunked:  # tell the application how much there is to read
            env["CONTENT_LENGTH"] = str(size)
        addr = conn.addr if conn is not None else None
        if isinstance(addr, tuple):
            env["REMOTE_ADDR"] = addr[0]
            env["REMOTE_PORT"] = str(addr[1])
        else:
            env["REMOTE_ADDR"] = ""
        tls = getattr(conn, "tls", None)
        if tls is not None:  # mod_ssl's names: HTTPS=on, SSL_CLIENT_S_DN, SSL_CLIENT_VERIFY...
            env["wsgi.url_scheme"] = "https"
            env.update(tls.environ())
        if conn is not None and conn.trusted and not FORWARDING_KEYS.isdisjoint(env):
            # A trusted proxy speaks for the client.
            client, scheme = conn.client(req)
            if client != env["REMOTE_ADDR"]:
                env["REMOTE_ADDR"] = client
                env.pop("REMOTE_PORT", None)
            env["wsgi.url_scheme"] = scheme
        local = conn.local_address() if conn is not None else None
        if isinstance(local, tuple):
            env["SERVER_NAME"] = local[0]
            env["SERVER_PORT"] = str(local[1])
        else:  # a unix socket: the name the client asked for
            host = req.host or "localhost"
            name, _, port = host.rpartition(":") if host.rfind(":") > host.rfind("]") else (host, "", "")
            env["SERVER_NAME"] = name or host
            env["SERVER_PORT"] = port or "80"
        return env

    def __call__(self, req, conn=None) -> Response:
        env = self.environ(req, conn)
        if env is None:
            return error_response(404, "Not Found")
        call = _Call()
        result = self.app(env, call.start_response)
        try:
            return self._response(req, call, result)
        except BaseException:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise

    def _response(self, req, call: _Call, result) -> Response:
        t = type(result)
        chunks: Optional[list] = None
        stream = None
        if t is list or t is tuple:
            chunks = list(result)
        elif t is FileWrapper and call.status is not None:
            planned = self._sendfile(call, result)
            if planned is not None:
                return planned
        if chunks is None:
            # Pull until the first non-empty chunk: the head may be decided until then.
            it = iter(result)
            chunks = []
            for chunk in it:
                if chunk:
                    chunks.append(chunk)
                    stream = it
                    break
        if call.status is None:
            raise RuntimeError("the WSGI application did not call start_response")
        status, headers, length = self._head(call)
        if call.written:
            chunks[:0] = call.written
        for chunk in chunks:
            if type(chunk) is not bytes:
                raise TypeError(f"the WSGI application yielded {type(chunk).__name__}, not bytes")
        if stream is not None:
            call.sent = True
            body = StreamBody(_Chain(itertools.chain(chunks, stream), result), length)
            return Response(status, headers, body)
        close = getattr(result, "close", None)
        if close is not None:
            close()
        body = b"".join(chunks)
        if length is not None:
            if req.method == "HEAD" and not body:
                return Response(status, headers, StreamBody((), length))  # HEAD keeps GET's length
            if len(body) > length:
                body = body[:length]
        return Response(status, headers, body)

    def _head(self, call: _Call):
        """Status, the application's fields, and its Content-Length as the length to send
        (PEP 3333: the server honours it for an iterable). The fields go to the connection
        as they are: hop-by-hop and framing fields, which PEP 3333 forbids to the
        application, are dropped there by the parser module's header_block (the rule is in
        _pyparser.SERVER_OWNED), and the connection writes the framing from the body."""
        length = None
        for name, value in call.headers:
            if len(name) == 14 and name.lower() == "content-length" and value.isdigit():
                length = int(value)
        return int(call.status[:3]), call.headers, length

    def _sendfile(self, call: _Call, wrapper: FileWrapper) -> Optional[Response]:
        """The file_wrapper's file as a FileBody, or None when it has no usable fd."""
        if call.written:
            return None  # rare: write() data before a file; the general path sends both
        f = wrapper.filelike
        try:
            fd = f.fileno()
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            offset = f.tell() if hasattr(f, "tell") else 0
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        status, headers, length = self._head(call)
        count = max(0, st.st_size - offset)
        if length is not None:
            count = min(count, length)
        body = FileBody(os.dup(fd), offset, count)
        wrapper_close = getattr(wrapper, "close", None)
        if wrapper_close is not None:
            wrapper_close()
        return Response(status, headers, body)


class _Chain:
    """The rest of a streamed result, whose close() is the application's."""

    __slots__ = ("it", "close")

    def __init__(self, it, result) -> None:
        self.it = it
        self.close = getattr(result, "close", None) or _nothing

    def __iter__(self):
        return self.it


def _nothing() -> None:
    pass


# ---------------------------------------------------------------------- the twin

# The Cython twin (prefork/apps/_wsgi.pyx) runs unless it failed to build or PREFORK_WSGI
# (--wsgi) asks for this module, the readable reference; as with the parser twins, a
# difference between the two is a bug (tests/test_wsgi.py runs the tests on both).
WSGI_CHOICES = ("auto", "cython", "python")


class WSGIAdapterUnavailable(RuntimeError):
    pass


def _cython_twin():
    """(module, None), or (None, why it did not import)."""
    try:
        from prefork.apps import _wsgi
    except ImportError as exc:
        return None, str(exc)
    return _wsgi, None


def cython_available() -> bool:
    return _cython_twin()[0] is not None


def handler_class(choice: Optional[str] = None):
    """The WSGIHandler class for `choice` ('auto', 'cython' or 'python'; None reads
    PREFORK_WSGI, defaulting to 'auto')."""
    if choice is None:
        choice = os.environ.get("PREFORK_WSGI", "auto") or "auto"
    if choice not in WSGI_CHOICES:
        raise ValueError(f"unknown WSGI adapter {choice!r} (choose from {', '.join(WSGI_CHOICES)})")
    if choice == "python":
        return WSGIHandler
    module, error = _cython_twin()
    if module is None:
        if choice == "cython":
            raise WSGIAdapterUnavailable(f"the Cython WSGI adapter is not built: {error}")
        return WSGIHandler
    return module.WSGIHandler


def name_of(cls) -> str:
    return "python" if cls is WSGIHandler else "cython"
