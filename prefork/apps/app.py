"""App: routes by method and path, path parameters, static mounts, error handlers.

The bet for speed: most requests hit a path without parameters, so those live in a dict
(path → {method → handler}) and cost two lookups; only parametrized paths are compiled
to patterns, tried in the order they were added. A handler's answer is converted to a
Response once; the head of a response with only its Content-Type is serialized once per
type and reused (see Response).

    app = App()

    @app.get("/users/{id:int}")
    def user(req, id):
        return {"id": id}

Converters: `{name}` or `{name:str}` one path segment, `{name:int}`, `{name:float}`,
`{name:uuid}`, `{name:path}` the rest of the path, slashes included. A known path with an
unknown method is 405 with Allow; GET routes answer HEAD; OPTIONS is 204 with Allow. An
exception in a handler is logged with its traceback and answered 500, never shown.
"""

from __future__ import annotations

import http.cookies
import json as _json
import logging
import os
import re
import stat
import uuid
from http import HTTPStatus
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote, unquote

from prefork.http._pyparser import header_block
from prefork.apps.request import Request
from prefork.apps.response import FileBody, StreamBody
from prefork.apps.response import Response as _BaseResponse
from prefork.apps.static import StaticFiles

log = logging.getLogger("prefork.error")

__all__ = ["App", "Request", "Response", "HTTPError"]

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
JSON = "application/json"
OCTETS = "application/octet-stream"

# Content-Type → (its fields, as a tuple that responses share until one of them asks for
# its headers; its serialized header block, validated once by header_block, or None).
TYPES_MAX = 256
_TYPED: Dict[str, Tuple[Tuple[Tuple[str, str], ...], Optional[str]]] = {}


def _typed(content_type: str) -> Tuple[Tuple[Tuple[str, str], ...], Optional[str]]:
    fields = (("Content-Type", content_type),)
    if len(_TYPED) >= TYPES_MAX:
        return fields, None  # the connection serializes (and validates) it
    try:
        block = header_block(list(fields))
    except ValueError:  # left for the connection to refuse, with its log line
        block = None
    _TYPED[content_type] = hit = (fields, block)
    return hit


class HTTPError(Exception):
    """Raise it in a handler to answer `status` (through the App's error handlers)."""

    def __init__(self, status: int, detail: Optional[str] = None,
                 headers: Optional[List[Tuple[str, str]]] = None) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or []


class Response(_BaseResponse):
    """What a handler returns: `Response(body, status=200, headers=None, content_type=None)`.

    `body` is bytes, str (UTF-8, text/plain by default), or an iterable of bytes/str,
    which is streamed (chunked on HTTP/1.1, close-delimited on HTTP/1.0). `headers` is a
    list of (name, value) or a dict. Reading `headers` (to change them) drops the cached
    serialized head, so the connection validates the new list. Until then, a response with
    only its Content-Type holds a tuple of fields shared with the others of its type.
    """

    __slots__ = ("_headers",)

    def __init__(self, body: Union[bytes, str, Iterable] = b"", status: int = 200,
                 headers: Union[List[Tuple[str, str]], Dict[str, str], None] = None,
                 content_type: Optional[str] = None) -> None:
        t = type(body)
        if t is bytes:
            pass
        elif t is str:
            body = body.encode("utf-8")
            if content_type is None:
                content_type = TEXT
        elif t is bytearray or t is memoryview:
            body = bytes(body)
        elif t is not FileBody and t is not StreamBody:
            if body is None:
                body = b""
            elif hasattr(body, "__iter__"):
                body = StreamBody(body)
            else:
                raise TypeError(f"a response body cannot be {t.__name__}")
        self.status = status
        self.body = body
        given = content_type
        if content_type is None and body:  # an empty body has no type
            content_type = OCTETS
        if headers is None:
            if content_type is None:
                self._headers = ()
                self.block = ""
            else:
                self._headers, self.block = _TYPED.get(content_type) or _typed(content_type)
        else:
            hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers)
            if not any(name.lower() == "content-type" for name, _ in hdrs):
                if content_type is not None:
                    hdrs.insert(0, ("Content-Type", content_type))
            elif given is not None:
                hdrs = [(n, v) for n, v in hdrs if n.lower() != "content-type"]
                hdrs.insert(0, ("Content-Type", content_type))
            self._headers = hdrs
            self.block = None

    @property
    def headers(self) -> List[Tuple[str, str]]:
        self.block = None  # the caller may change the list
        headers = self._headers
        if type(headers) is tuple:  # shared with other responses of its type: copy it first
            headers = self._headers = list(headers)
        return headers

    @headers.setter
    def headers(self, value: List[Tuple[str, str]]) -> None:
        self._headers = list(value)
        self.block = None

    @property
    def content_type(self) -> Optional[str]:
        for name, value in self._headers:
            if name.lower() == "content-type":
                return value
        return None

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        name = name.lower()
        for key, value in self._headers:
            if key.lower() == name:
                return value
        return default

    def set_header(self, name: str, value: str) -> None:
        """Replace every field called `name` with this one."""
        low = name.lower()
        self.headers = [(n, v) for n, v in self._headers if n.lower() != low] + [(name, value)]

    def add_header(self, name: str, value: str) -> None:
        self.headers.append((name, value))

    # ------------------------------------------------------------------ constructors

    @classmethod
    def text(cls, text: str, status: int = 200, headers=None) -> "Response":
        return cls(text.encode("utf-8"), status, headers, TEXT)

    @classmethod
    def html(cls, html: str, status: int = 200, headers=None) -> "Response":
        return cls(html.encode("utf-8"), status, headers, HTML)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers=None) -> "Response":
        body = _json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return cls(body, status, headers, JSON)

    @classmethod
    def redirect(cls, location: str, status: int = 302, headers=None) -> "Response":
        if not 300 <= status < 400:
            raise ValueError(f"a redirect needs a 3xx status, not {status}")
        hdrs = [("Location", location)] + list(headers or [])
        return cls(b"", status, hdrs)

    @classmethod
    def stream(cls, chunks: Iterable, status: int = 200, headers=None,
               content_type: str = OCTETS, length: Optional[int] = None) -> "Response":
        """Stream `chunks` (bytes or str); with `length` it goes with Content-Length."""
        return cls(StreamBody(chunks, length), status, headers, content_type)

    @classmethod
    def file(cls, path: Union[str, os.PathLike], content_type: Optional[str] = None,
             filename: Optional[str] = None, status: int = 200, headers=None) -> "Response":
        """The file at `path`, sent with os.sendfile. Its type comes from its name (the
        static files' table) unless given; `filename` makes it a download. A missing or
        unreadable file, or a folder, raises HTTPError(404)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            raise HTTPError(404) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise HTTPError(404)
            meta = _file_meta()
            hdrs = [("Last-Modified", meta.last_modified(st.st_mtime))]
            if filename is not None:
                hdrs.append(("Content-Disposition", _attachment(filename)))
            hdrs.extend(headers or [])
            resp = cls(FileBody(fd, 0, st.st_size), status, hdrs,
                       content_type or meta.content_type(os.fspath(path)))
            fd = -1  # the response owns it
            return resp
        finally:
            if fd >= 0:
                os.close(fd)

    # ------------------------------------------------------------------ cookies

    def set_cookie(self, name: str, value: str = "", max_age: Optional[int] = None,
                   expires: Union[int, str, None] = None, path: Optional[str] = "/",
                   domain: Optional[str] = None, secure: bool = False, httponly: bool = True,
                   samesite: Optional[str] = "Lax") -> None:
        """Add a Set-Cookie field built by http.cookies (which quotes the value and
        refuses bad names); attribute values with ';' or control characters are refused."""
        jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        jar[name] = value  # CookieError for an illegal name
        morsel = jar[name]
        for key, attr in (("path", path), ("domain", domain)):
            if attr is not None:
                if any(c in attr for c in ";,\r\n\x00") or not attr.isprintable():
                    raise ValueError(f"cookie {key} {attr!r} has a forbidden character")
                morsel[key] = attr
        if max_age is not None:
            morsel["max-age"] = int(max_age)
        if expires is not None:
            morsel["expires"] = expires  # seconds from now (int) or a date string
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite is not None:
            if samesite not in ("Strict", "Lax", "None"):
                raise ValueError("samesite must be 'Strict', 'Lax' or 'None'")
            morsel["samesite"] = samesite
        self.headers.append(("Set-Cookie", morsel.OutputString()))

    def delete_cookie(self, name: str, path: Optional[str] = "/", domain: Optional[str] = None) -> None:
        self.set_cookie(name, "", max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT", path=path,
                        domain=domain, httponly=False, samesite=None)


_meta: Optional[StaticFiles] = None


def _file_meta() -> StaticFiles:
    """The static files' types table and Last-Modified cache (used for nothing else)."""
    global _meta
    if _meta is None:
        _meta = StaticFiles(os.sep)
    return _meta


def _attachment(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode("ascii")
    ascii_name = "".join(c if c.isprintable() and c not in '"\\;' else "_" for c in ascii_name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _default_error(status: int, headers: Optional[List[Tuple[str, str]]] = None) -> Response:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return Response(f"{status} {reason}\n".encode("latin-1"), status, headers, TEXT)


def to_response(result: Any) -> _BaseResponse:
    """A handler's return value as a Response: a Response as is; bytes; str (text/plain);
    dict or list (JSON); (body, status) or (body, status, headers); an iterable streams."""
    if isinstance(result, _BaseResponse):
        return result
    t = type(result)
    if t is bytes or t is str:
        return Response(result)
    if t is dict or t is list:
        return Response.json(result)
    if t is tuple and 2 <= len(result) <= 3:
        resp = to_response(result[0])
        resp.status = result[1]
        if len(result) == 3:
            extra = result[2].items() if isinstance(result[2], dict) else result[2]
            resp.headers.extend(extra)
        return resp
    if result is None:
        raise TypeError("the handler returned None; return a Response, bytes, str, dict or list")
    if hasattr(result, "__iter__"):
        return Response(result)
    raise TypeError(f"a handler cannot return {t.__name__}")


# ---------------------------------------------------------------------- routing

# name → (pattern, converter); a pattern matches within the percent-encoded path.
CONVERTERS: Dict[str, Tuple[str, Callable[[str], Any]]] = {
    "str": (r"[^/]+", str),
    "int": (r"[0-9]+", int),
    "float": (r"[0-9]+(?:\.[0-9]+)?", float),
    "uuid": (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", uuid.UUID),
    "path": (r".+", str),
}
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")


class Route:
    """A parametrized path: its compiled pattern and its handlers by method."""

    __slots__ = ("path", "regex", "converters", "methods")

    def __init__(self, path: str) -> None:
        self.path = path
        self.methods: Dict[str, Callable] = {}
        parts = []
        self.converters: Dict[str, Callable[[str], Any]] = {}
        pos = 0
        for m in _PARAM.finditer(path):
            name, kind = m.group(1), m.group(2) or "str"
            if kind not in CONVERTERS:
                raise ValueError(f"route {path!r}: unknown converter {kind!r} "
                                 f"(known: {', '.join(CONVERTERS)})")
            if name in self.converters:
                raise ValueError(f"route {path!r}: parameter {name!r} appears twice")
            parts.append(re.escape(quote(path[pos:m.start()], safe="/:@!$&'()*+,;=-._~")))
            parts.append(f"(?P<{name}>{CONVERTERS[kind][0]})")
            self.converters[name] = CONVERTERS[kind][1]
            pos = m.end()
        parts.append(re.escape(quote(path[pos:], safe="/:@!$&'()*+,;=-._~")))
        self.regex = re.compile("".join(parts))

    def match(self, path: str) -> Optional[Dict[str, Any]]:
        m = self.regex.fullmatch(path)
        if m is None:
            return None
        params = {}
        for name, raw in m.groupdict().items():
            value = unquote(raw) if "%" in raw else raw
            try:
                params[name] = self.converters[name](value)
            except ValueError:
                return None
        return params


class _Mounted:
    """The request as a static mount sees it: the path below the mount's prefix."""

    __slots__ = ("_req", "path")

    def __init__(self, req, path: str) -> None:
        self._req = req
        self.path = path

    def __getattr__(self, name: str):
        return getattr(self._req, name)


class App:
    """A handler for prefork-http (and a plain object in tests: call `app.handle`)."""

    wants_connection = True  # the connection passes itself: client address, spooled body

    def __init__(self) -> None:
        self._exact: Dict[str, Dict[str, Callable]] = {}
        self._routes: List[Route] = []
        self._by_pattern: Dict[str, Route] = {}
        self._mounts: List[Tuple[str, Callable]] = []
        self._status_handlers: Dict[int, Callable] = {}
        self._exception_handlers: Dict[type, Callable] = {}
        self.root_path = ""

    # ------------------------------------------------------------------ declaring routes

    def route(self, path: str, methods: Sequence[str] = ("GET",)) -> Callable:
        def register(fn: Callable) -> Callable:
            self.add_route(path, fn, methods)
            return fn
        return register

    def get(self, path: str) -> Callable:
        return self.route(path, ("GET",))

    def post(self, path: str) -> Callable:
        return self.route(path, ("POST",))

    def put(self, path: str) -> Callable:
        return self.route(path, ("PUT",))

    def patch(self, path: str) -> Callable:
        return self.route(path, ("PATCH",))

    def delete(self, path: str) -> Callable:
        return self.route(path, ("DELETE",))

    def add_route(self, path: str, fn: Callable, methods: Sequence[str] = ("GET",)) -> None:
        if not path.startswith("/"):
            raise ValueError(f"route {path!r} must start with /")
        if isinstance(methods, str):
            methods = (methods,)
        names = [m.upper() for m in methods]
        if _PARAM.search(path) is None:
            table = self._exact.setdefault(quote(path, safe="/:@!$&'()*+,;=-._~"), {})
        else:
            route = self._by_pattern.get(path)
            if route is None:
                route = self._by_pattern[path] = Route(path)
                self._routes.append(route)
            table = route.methods
        for name in names:
            if name in table:
                raise ValueError(f"{name} {path} is already routed to {table[name].__name__}")
            table[name] = fn

    def static(self, prefix: str, folder: str) -> None:
        """Serve the files under `folder` at `prefix` (GET and HEAD, as --root does)."""
        prefix = "/" + prefix.strip("/")
        if not os.path.isdir(folder):
            raise ValueError(f"static folder {folder!r} is not a directory")
        self._mounts.append((prefix if prefix != "/" else "", StaticFiles(folder, no_index_advice="")))

    def errorhandler(self, key: Union[int, type]) -> Callable:
        """Register `fn(request, error)` for a status (404, 405, 500, or any an HTTPError
        carries) or an exception class (and its subclasses). Its return value is
        converted like a handler's; a bare body keeps the error's status."""
        def register(fn: Callable) -> Callable:
            if isinstance(key, int):
                self._status_handlers[key] = fn
            elif isinstance(key, type) and issubclass(key, BaseException):
                self._exception_handlers[key] = fn
            else:
                raise TypeError("errorhandler takes a status code or an exception class")
            return fn
        return register

    def configure(self, root_path: str = "") -> None:
        """Called by the server: the prefix the App is mounted under (--root-path)."""
        self.root_path = root_path.rstrip("/")

    # ------------------------------------------------------------------ serving

    def dispatch(self, req, conn=None) -> _BaseResponse:
        """The server's entry point (`__call__`): a parsed request in, a Response out.
        This is the readable reference; `__call__` is its Cython twin when that is built
        (prefork/apps/_app.pyx, which runs the common case and hands every other here)."""
        path = req.path
        if self.root_path:
            path = self._below_root(path)
            if path is None:
                return self._error(Request(req, conn), 404)
        methods = self._exact.get(path)
        if methods is not None:
            fn = methods.get(req.method)
            if fn is not None:
                request = Request(req, conn)
                try:
                    result = fn(request)
                    return result if type(result) is Response else to_response(result)
                except Exception as exc:
                    return self._exception(request, exc)
            params: Dict[str, Any] = {}
        else:
            for prefix, files in self._mounts:
                if path.startswith(prefix + "/"):
                    return self._serve_static(req, prefix, path[len(prefix):], files)
            methods, params = self._match(path, req.method)
            if methods is None:
                return self._error(Request(req, conn), 404)
        method = req.method
        fn = methods.get(method)
        if fn is None and method == "HEAD":
            fn = methods.get("GET")
        request = Request(req, conn, params)
        if fn is None:
            allow = _allow(methods)
            if method == "OPTIONS":
                return Response(b"", 204, [("Allow", allow)])
            return self._error(request, 405, headers=[("Allow", allow)])
        try:
            return to_response(fn(request, **params) if params else fn(request))
        except Exception as exc:
            return self._exception(request, exc)

    __call__ = handle = dispatch  # the Cython twin's, when it is built (end of the module)

    def check_expect(self, req) -> Optional[_BaseResponse]:
        """Before `100 Continue`: None when the route takes the request, else its answer
        (404, 405), so that the client need not send a body that would be refused."""
        path = req.path
        if self.root_path:
            path = self._below_root(path)
            if path is None:
                return self._error(Request(req), 404)
        methods = self._exact.get(path)
        if methods is None:
            for prefix, _ in self._mounts:
                if path.startswith(prefix + "/"):
                    return None  # static files answer it (405 for a body)
            methods, _ = self._match(path, req.method)
            if methods is None:
                return self._error(Request(req), 404)
        if req.method in methods:
            return None
        return self._error(Request(req), 405, headers=[("Allow", _allow(methods))])

    def _below_root(self, path: str) -> Optional[str]:
        root = self.root_path
        if path == root:
            return "/"
        if path.startswith(root + "/"):
            return path[len(root):]
        return None

    def _match(self, path: str, method: str):
        """(methods, params) of the first pattern that matches with this method, else of
        the first that matches at all (for 405), else (None, None)."""
        want = "GET" if method == "HEAD" else method
        first = None
        allowed: Dict[str, Callable] = {}
        for route in self._routes:
            params = route.match(path)
            if params is None:
                continue
            if method in route.methods or want in route.methods:
                return route.methods, params
            if first is None:
                first = params
            allowed.update(route.methods)
        if first is None:
            return None, None
        return allowed, first

    def _serve_static(self, req, prefix: str, rest: str, files: Callable) -> _BaseResponse:
        resp = files(_Mounted(req, rest))
        if 300 <= resp.status < 400:
            location = resp.headers
            for i, (name, value) in enumerate(location):
                if name.lower() == "location" and value.startswith("/"):
                    location[i] = (name, self.root_path + prefix + value)
                    resp.block = None
        return resp

    # ------------------------------------------------------------------ errors

    def _exception(self, request: Request, exc: Exception) -> _BaseResponse:
        if isinstance(exc, HTTPError):
            return self._error(request, exc.status, exc, exc.headers)
        for cls in type(exc).__mro__:
            handler = self._exception_handlers.get(cls)
            if handler is not None:
                return self._run_error_handler(handler, request, exc, 500, None)
        log.error("error handling %s %s", request.method, request.target, exc_info=exc)
        return self._error(request, 500, exc)

    def _error(self, request: Request, status: int, exc: Optional[BaseException] = None,
               headers: Optional[List[Tuple[str, str]]] = None) -> _BaseResponse:
        handler = self._status_handlers.get(status)
        if handler is None:
            if isinstance(exc, HTTPError) and exc.detail and status < 500:
                return Response(f"{status} {exc.reason}: {exc.detail}\n".encode("utf-8"), status,
                                headers, TEXT)
            return _default_error(status, headers)
        if exc is None:
            exc = HTTPError(status, headers=headers)
        return self._run_error_handler(handler, request, exc, status, headers)

    def _run_error_handler(self, handler: Callable, request: Request, exc: BaseException,
                           status: int, headers) -> _BaseResponse:
        try:
            result = handler(request, exc)
            resp = to_response(result)
        except Exception:
            log.exception("error handler %s failed", getattr(handler, "__name__", handler))
            return _default_error(500)
        if not isinstance(result, _BaseResponse) and type(result) is not tuple:
            resp.status = status
            if headers:
                resp.headers.extend(headers)
        return resp


def _allow(methods: Dict[str, Callable]) -> str:
    names = set(methods)
    if "GET" in names:
        names.add("HEAD")
    names.add("OPTIONS")
    return ", ".join(m for m in METHODS if m in names) + "".join(
        ", " + m for m in sorted(names) if m not in METHODS)


# ---------------------------------------------------------------------- the twin

# App.__call__ is the Cython twin of App.dispatch (prefork/apps/_app.pyx) unless it failed
# to build or PREFORK_APP=python asks for the pure one; a difference between the two is a
# bug (tests/test_app_twins.py). The twin reads this module's names, so it installs itself
# through _install() once it is initialised, whichever of the two modules is imported first
# (imported first, it imports this module, whose import of it below finds it half made).
def _install(call: Callable) -> None:
    """Called by prefork.apps._app at the end of its initialisation."""
    if os.environ.get("PREFORK_APP", "auto") != "python":
        App.__call__ = App.handle = call


try:
    from prefork.apps import _app  # noqa: F401  (installs itself)
except ImportError:
    pass
