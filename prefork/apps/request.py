"""The application's view of a request: a thin wrapper over the parser's Request.

The bet: most handlers read the method, the path and maybe one header, so the wrapper
stores three references and computes everything else on first use (query, headers,
cookies, body, form) and keeps it. Nothing is copied from the parser's object eagerly.
"""

from __future__ import annotations

import io
import json as _json
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qsl

_EMPTY: Dict[str, Any] = {}


class MultiDict:
    """Names with one or more values, in order: `d[name]` and `get` give the first value,
    `getall` every value. Used for the query, form fields and uploaded files."""

    __slots__ = ("_items", "_map")

    def __init__(self, items=()) -> None:
        self._items: List[Tuple[str, Any]] = list(items)
        self._map: Dict[str, List[Any]] = {}
        for name, value in self._items:
            self._map.setdefault(name, []).append(value)

    def __getitem__(self, name: str):
        return self._map[name][0]

    def get(self, name: str, default=None):
        values = self._map.get(name)
        return values[0] if values else default

    def getall(self, name: str) -> list:
        return list(self._map.get(name, ()))

    getlist = getall

    def __contains__(self, name) -> bool:
        return name in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def keys(self):
        return self._map.keys()

    def items(self) -> List[Tuple[str, Any]]:
        """Every (name, value) pair, repeated names included, in arrival order."""
        return list(self._items)

    def to_dict(self) -> Dict[str, Any]:
        return {name: values[0] for name, values in self._map.items()}

    def __eq__(self, other) -> bool:
        if isinstance(other, MultiDict):
            return self._items == other._items
        if isinstance(other, dict):
            return self.to_dict() == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"MultiDict({self._items!r})"


class Headers:
    """Request header fields: case-insensitive names, repeated fields kept in order.
    Reads the parser's list of (lower-case name, value) pairs; copies nothing."""

    __slots__ = ("_list",)

    def __init__(self, fields: List[Tuple[str, str]]) -> None:
        self._list = fields

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        name = name.lower()
        for key, value in self._list:
            if key == name:
                return value
        return default

    def getall(self, name: str) -> List[str]:
        name = name.lower()
        return [value for key, value in self._list if key == name]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._list)

    def __len__(self) -> int:
        return len(self._list)

    def items(self) -> List[Tuple[str, str]]:
        return list(self._list)

    def keys(self) -> List[str]:
        return [key for key, _ in self._list]

    def __repr__(self) -> str:
        return f"Headers({self._list!r})"


class Request:
    """What a route handler gets. `params` holds the converted path parameters."""

    __slots__ = ("_req", "_conn", "params", "_query", "_headers", "_cookies", "_body", "_form",
                 "_files")

    def __init__(self, req, conn=None, params: Optional[Dict[str, Any]] = None) -> None:
        # prefork/apps/_app.pyx makes a Request without calling this (it sets these three
        # slots itself, params=_EMPTY): keep the two alike.
        self._req = req  # the parser's Request
        self._conn = conn  # the Connection (client address, spooled body); None in tests
        self.params = params if params is not None else _EMPTY

    # ------------------------------------------------------------------ the request line

    @property
    def method(self) -> str:
        return self._req.method

    @property
    def path(self) -> str:
        """The path as sent (percent-encoded), without the query."""
        return self._req.path

    @property
    def target(self) -> str:
        return self._req.target

    @property
    def version(self) -> str:
        return self._req.version

    @property
    def query_string(self) -> str:
        return self._req.query

    @property
    def query(self) -> MultiDict:
        """The query parameters, percent-decoded as UTF-8 (parsed on first use)."""
        try:
            return self._query
        except AttributeError:
            qs = self._req.query
            self._query = MultiDict(parse_qsl(qs, keep_blank_values=True) if qs else ())
            return self._query

    # ------------------------------------------------------------------ headers

    @property
    def headers(self) -> Headers:
        try:
            return self._headers
        except AttributeError:
            self._headers = Headers(self._req.headers)
            return self._headers

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of the header `name` (any case), or `default`."""
        return self._req.header(name.lower(), default)

    @property
    def host(self) -> Optional[str]:
        return self._req.host

    @property
    def content_type(self) -> str:
        return self._req.header("content-type", "")

    @property
    def content_length(self) -> Optional[int]:
        return self._req.content_length

    @property
    def client(self) -> Optional[Tuple[str, int]]:
        """(address, port) of the peer; None over a unix socket or outside a server. Behind
        a trusted proxy (--forwarded-allow-ips), the client it names, with port 0 when
        the proxy named none."""
        conn = self._conn
        addr = conn.addr if conn is not None else None
        peer = (addr[0], addr[1]) if isinstance(addr, tuple) and len(addr) >= 2 else None
        if conn is not None and conn.trusted:
            host, _ = conn.client(self._req)
            if peer is None or host != peer[0]:
                return (host, 0) if host else peer
        return peer

    @property
    def scheme(self) -> str:
        """"https" on a TLS connection, or when a trusted proxy says the client used it;
        else "http"."""
        conn = self._conn
        if conn is not None and conn.trusted:
            return conn.client(self._req)[1]
        return getattr(conn, "scheme", "http")

    @property
    def tls(self):
        """The TLS session of the connection (prefork.tls.TLSInfo: version, cipher, alpn,
        client_cert, client_subject, client_issuer, client_verified), or None on plain HTTP."""
        return getattr(self._conn, "tls", None)

    @property
    def cookies(self) -> Dict[str, str]:
        """Cookie header pairs. Lenient on purpose (as browsers are): a malformed pair is
        skipped, not the whole header (http.cookies stops at the first bad one)."""
        try:
            return self._cookies
        except AttributeError:
            jar: Dict[str, str] = {}
            for header in self.headers.getall("cookie"):
                for pair in header.split(";"):
                    name, eq, value = pair.partition("=")
                    name = name.strip()
                    if not eq or not name:
                        continue
                    value = value.strip()
                    if len(value) >= 2 and value[0] == value[-1] == '"':
                        value = value[1:-1]
                    jar.setdefault(name, value)
            self._cookies = jar
            return jar

    # ------------------------------------------------------------------ the body

    @property
    def body(self) -> bytes:
        """The whole body. Large bodies live in a temporary file (see `stream`); this
        reads it into memory."""
        try:
            return self._body
        except AttributeError:
            held = self._conn.body if self._conn is not None else None
            if held is None:
                body = self._req.body
            elif type(held) is bytes:
                body = held
            else:
                held.seek(0)
                body = held.read()
                held.seek(0)
            self._body = body
            return body

    @property
    def stream(self):
        """The body as a binary file object (the temporary file for a spooled body)."""
        held = self._conn.body if self._conn is not None else None
        if held is not None and type(held) is not bytes:
            return held
        return io.BytesIO(self.body)

    @property
    def body_size(self) -> int:
        held = self._conn.body if self._conn is not None else None
        if held is not None and type(held) is not bytes:
            return held.seek(0, 2) - held.seek(0)
        return len(self.body)

    def json(self) -> Any:
        """The body decoded as JSON; a body that is not JSON is a 400."""
        from prefork.apps.app import HTTPError

        try:
            return _json.loads(self.body)
        except ValueError:
            raise HTTPError(400, "the body is not valid JSON") from None

    def form(self) -> MultiDict:
        """Fields of an application/x-www-form-urlencoded or multipart/form-data body
        (uploaded files are in `files`); empty for other types; a malformed body is 400."""
        try:
            return self._form
        except AttributeError:
            self._parse_form()
            return self._form

    @property
    def files(self) -> MultiDict:
        """Uploaded files of a multipart body: multipart.MultipartPart objects with
        `filename`, `content_type`, `size`, `file`, `raw` and `save_as(path)`."""
        try:
            return self._files
        except AttributeError:
            self._parse_form()
            return self._files

    def _parse_form(self) -> None:
        from prefork.apps.app import HTTPError
        import multipart

        ctype, options = multipart.parse_options_header(self.content_type)
        fields: list = []
        files: list = []
        if ctype == "application/x-www-form-urlencoded":
            try:
                text = self.body.decode("utf-8")
                fields = parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                                   errors="strict", max_num_fields=10000)
            except (UnicodeDecodeError, ValueError):
                raise HTTPError(400, "malformed form body") from None
        elif ctype == "multipart/form-data":
            boundary = options.get("boundary")
            if not boundary:
                raise HTTPError(400, "multipart body without a boundary")
            try:
                parser = multipart.MultipartParser(self.stream, boundary, self.body_size)
                for part in parser:
                    if part.filename is None:
                        fields.append((part.name, part.value))
                    else:
                        files.append((part.name, part))
            except multipart.MultipartError as exc:
                raise HTTPError(400, f"malformed multipart body: {exc}") from None
        self._form = MultiDict(fields)
        self._files = MultiDict(files)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target}>"
