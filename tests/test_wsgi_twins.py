"""The WSGI adapter twins agree: the same environ for a corpus of requests (both parser
twins, trusted and untrusted peers, unix sockets, bodies in memory and spooled, a mount
point), the same response for the results a list takes, wsgiref.validate clean under the
Cython adapter, and the choice between them (PREFORK_WSGI)."""

from __future__ import annotations

import sys
import tempfile
from wsgiref.validate import validator

import pytest

from conftest import CWSGI, PARSERS, require_parser, require_wsgi
from prefork.apps import wsgi as pure
from prefork.apps.response import StreamBody
from prefork.http import _pyparser
from prefork.proxy import TrustedProxies, forwarded_client, parse_networks

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=PARSERS)
def parser(request):
    require_parser(request.param)
    if request.param == "python":
        return _pyparser
    from prefork.http import _parser
    return _parser


@pytest.fixture
def cwsgi():
    require_wsgi("cython")
    return CWSGI


class Conn:
    """What the adapters read of a connection (prefork.workers.connection.Connection)."""

    def __init__(self, addr=("127.0.0.1", 4000), local=("127.0.0.1", 8000), trusted=False,
                 body=None, allow="127.0.0.1") -> None:
        self.addr = addr
        self.local = local
        self.trusted = trusted
        self.body = body
        self.proxies = TrustedProxies(parse_networks(allow))

    def local_address(self):
        return self.local

    def client(self, req):
        addr = self.addr
        host = addr[0] if isinstance(addr, tuple) else ""
        if self.trusted and self.proxies:
            return forwarded_client(req.headers, host, self.proxies)
        return host, "http"


H = b"Host: example.com\r\n"
CORPUS = [
    b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /index.html?a=1&b=%20x HTTP/1.1\r\n" + H + b"User-Agent: t\r\nAccept: */*\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\n" + H + b"\r\n",
    b"DELETE /items/7 HTTP/1.1\r\n" + H + b"\r\n",
    b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    b"PATCH /p?x HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /form HTTP/1.1\r\n" + H + b"Content-Type: a\r\nContent-Type: b\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /e HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello",
    b"POST /chunked HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    b"GET /caf%C3%A9%2Fx/%zz?q=%C3%A9 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /%E2%82%AC HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"Accept: a\r\nAccept: b\r\naccept: c\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X_Forwarded_For: spoof\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"Forwarded: for=198.51.100.1;proto=https\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X-Forwarded-For: 127.0.0.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X-Forwarded-Proto: https\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\nHost: a:81\r\n\r\n",
    b"GET http://other.example:8080/abs?x=1 HTTP/1.1\r\n" + H + b"\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1]:9000\r\nX-Custom-Thing: v\r\nX-Custom-Thing: w\r\nWeird~Name!: yes\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"Value-Latin1: caf\xe9\r\nEmpty:\r\nDnt: 1\r\nSec-Fetch-Mode: navigate\r\n\r\n",
    b"GET /mount HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /mount/ HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /mount/a%2Fb?z HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /mountain HTTP/1.1\r\n" + H + b"\r\n",
    b"PUT /up HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
]
CONNS = {
    "untrusted": lambda: Conn(trusted=False),
    "trusted": lambda: Conn(trusted=True),
    "trusted-hops": lambda: Conn(trusted=True, allow="127.0.0.1,10.0.0.0/8"),
    "unix": lambda: Conn(addr="", local="/run/app.sock", trusted=True),
    "ipv6": lambda: Conn(addr=("::1", 5000, 0, 0), local=("::1", 8443, 0, 0)),
    "no-conn": lambda: None,
}


def _environs(parser, cwsgi, raw, conn_kind, root_path="", body=None):
    out = []
    for cls in (pure.WSGIHandler, cwsgi.WSGIHandler):
        req = parser.RequestParser().feed(raw)
        assert req, raw  # the corpus is valid HTTP/1.1
        conn = CONNS[conn_kind]()
        if conn is not None and body is not None:
            conn.body = body()
        out.append(cls(lambda e, s: [], root_path=root_path, multithread=True).environ(req[0], conn))
    return out


def _comparable(env):
    """The environ with wsgi.input read (the two inputs are different objects)."""
    if env is None:
        return None
    env = dict(env)
    stream = env.pop("wsgi.input")
    return env, type(stream), stream.read()


@pytest.mark.parametrize("conn_kind", list(CONNS))
@pytest.mark.parametrize("root_path", ["", "/mount"])
def test_same_environ_for_the_corpus(parser, cwsgi, conn_kind, root_path):
    for raw in CORPUS:
        py_env, c_env = _environs(parser, cwsgi, raw, conn_kind, root_path)
        assert _comparable(c_env) == _comparable(py_env), raw
        if py_env is not None:
            assert list(c_env) == list(py_env), raw  # the same keys in the same order


@pytest.mark.parametrize("held", ["bytes", "file"])
def test_same_environ_for_a_body_the_connection_holds(parser, cwsgi, held):
    def body():
        if held == "bytes":
            return b"spooled body"
        f = tempfile.TemporaryFile()
        f.write(b"spooled body")
        return f

    raw = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    py_env, c_env = _environs(parser, cwsgi, raw, "untrusted", body=body)
    assert _comparable(c_env) == _comparable(py_env)
    assert c_env["CONTENT_LENGTH"] == "12"


def test_forwarding_fields_are_read_only_when_present(cwsgi):
    """A trusted peer without Forwarded / X-Forwarded-* is the client: neither twin asks the
    connection (the proxy parse was a third of the adapter's time on the benchmark)."""
    class Watched(Conn):
        asked = 0

        def client(self, req):
            Watched.asked += 1
            return super().client(req)

    raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    for cls in (pure.WSGIHandler, cwsgi.WSGIHandler):
        Watched.asked = 0
        env = cls(lambda e, s: []).environ(_pyparser.RequestParser().feed(raw)[0], Watched(trusted=True))
        assert Watched.asked == 0 and env["REMOTE_ADDR"] == "127.0.0.1"
        env = cls(lambda e, s: []).environ(_pyparser.RequestParser().feed(
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n")[0], Watched(trusted=True))
        assert Watched.asked == 1 and env["REMOTE_ADDR"] == "10.1.2.3" and "REMOTE_PORT" not in env


# ---------------------------------------------------------------------- responses

def _app(status="200 OK", headers=(("Content-Type", "text/plain"),), result=(b"hello",), write=None,
         start=True, as_tuple=False):
    def app(environ, start_response):
        if start:
            w = start_response(status, list(headers))
            if write is not None:
                w(write)
        return tuple(result) if as_tuple else list(result)
    return app


APPS = {
    "plain": _app(),
    "tuple": _app(as_tuple=True),
    "several": _app(result=(b"a", b"", b"bc")),
    "empty": _app(result=()),
    "length": _app(headers=(("Content-Length", "3"),), result=(b"hello",)),
    "length-short": _app(headers=(("Content-Length", "9"),), result=(b"hello",)),
    "length-odd": _app(headers=(("content-LENGTH", "2"), ("Content-Length", "x")), result=(b"hello",)),
    "write": _app(write=b"first ", result=(b"then",)),
    "server-owned": _app(headers=(("Connection", "close"), ("Transfer-Encoding", "chunked"), ("X-A", "b"))),
    "status-odd": _app(status="599 Whatever"),
    "status-other-digits": _app(status="\u0662\u0660\u0660 OK"),
}
ERRORS = {
    "no-start": (_app(start=False), RuntimeError),
    "str-chunk": (_app(result=("text",)), TypeError),
    "bad-status": (_app(status="20 OK"), AssertionError),
    "bad-status-type": (_app(status=b"200 OK"), AssertionError),
    "bad-field": (_app(headers=(("X", "a\r\nb"),)), None),  # refused by the connection: 500
    "not-a-pair": (_app(headers=(("X",),)), ValueError),
}


def _response(cls, app, raw=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"):
    return cls(app)(_pyparser.RequestParser().feed(raw)[0], Conn())


@pytest.mark.parametrize("name", list(APPS))
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_same_response_for_a_list(cwsgi, name, method):
    raw = method + b" / HTTP/1.1\r\nHost: h\r\n\r\n"
    py, c = _response(pure.WSGIHandler, APPS[name], raw), _response(cwsgi.WSGIHandler, APPS[name], raw)
    assert (c.status, c.headers, c.length) == (py.status, py.headers, py.length)
    if type(py.body) is StreamBody:
        assert type(c.body) is StreamBody and list(c.body.chunks) == list(py.body.chunks)
    else:
        assert c.body == py.body
    # The block the Cython twin made is the one the connection would make.
    assert c.block == _pyparser.header_block(c.headers)
    again = _response(cwsgi.WSGIHandler, APPS[name], raw)  # the kept block, the same
    assert (again.block, again.body, again.length) == (c.block, c.body, c.length)


@pytest.mark.parametrize("name", list(ERRORS))
def test_same_errors_for_a_list(cwsgi, name):
    app, exc = ERRORS[name]
    if exc is None:
        py, c = _response(pure.WSGIHandler, app), _response(cwsgi.WSGIHandler, app)
        assert c.block is None and (c.status, c.headers, c.body) == (py.status, py.headers, py.body)
        return
    with pytest.raises(exc) as py_err:
        _response(pure.WSGIHandler, app)
    with pytest.raises(exc) as c_err:
        _response(cwsgi.WSGIHandler, app)
    if name != "not-a-pair":  # (Cython words a failed tuple unpacking its own way)
        assert str(c_err.value) == str(py_err.value)


def test_kept_block_follows_the_fields(cwsgi):
    """The block kept from the last answer is used only for the same fields."""
    fields = [("Content-Type", "text/plain")]

    def app(environ, start_response):
        start_response("200 OK", list(fields))
        return [b"x"]

    handler = cwsgi.WSGIHandler(app)
    req = _pyparser.RequestParser().feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    assert handler(req, Conn()).block == "Content-Type: text/plain\r\n"
    fields[0] = ("Content-Type", "text/html")
    assert handler(req, Conn()).block == "Content-Type: text/html\r\n"
    fields.append(("X-A", "1"))
    assert handler(req, Conn()).block == "Content-Type: text/html\r\nX-A: 1\r\n"
    fields[1] = ("Content-Length", "1")
    resp = handler(req, Conn())
    assert resp.block == "Content-Type: text/html\r\n" and resp.body == b"x"


def test_start_response_twice_and_write_rules(cwsgi):
    for cls in (pure.WSGIHandler, cwsgi.WSGIHandler):
        def twice(environ, start_response):
            start_response("200 OK", [])
            start_response("201 Created", [])
            return []

        with pytest.raises(AssertionError, match="second time"):
            _response(cls, twice)

        def bad_write(environ, start_response):
            start_response("200 OK", [])("text")
            return []

        with pytest.raises(TypeError, match="write\\(\\) takes bytes"):
            _response(cls, bad_write)

        def replaced(environ, start_response):  # exc_info before the head left: replaces it
            start_response("200 OK", [("X-A", "1")])
            try:
                raise ValueError
            except ValueError:
                start_response("500 Internal Server Error", [("X-B", "2")], sys.exc_info())
            return [b"oops"]

        resp = _response(cls, replaced)
        assert (resp.status, resp.headers, resp.body) == (500, [("X-B", "2")], b"oops")


def test_close_is_called_when_the_list_path_fails(cwsgi):
    closed = []

    class Result(list):  # a list subclass takes the general path, and has close()
        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Result(["not bytes"])

    for cls in (pure.WSGIHandler, cwsgi.WSGIHandler):
        closed.clear()
        with pytest.raises(TypeError):
            _response(cls, app)
        assert closed == [True]


# ---------------------------------------------------------------------- wsgiref.validate

def test_validator_is_clean_under_the_cython_adapter(cwsgi, recwarn):
    """wsgiref.validate asserts every PEP 3333 rule on the environ, start_response, write
    and the result; it wraps the result, so the general path runs too."""
    import warnings

    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"w:")
        return [b"got ", body]

    handler = cwsgi.WSGIHandler(validator(app))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for raw in CORPUS:
            if raw.startswith((b"OPTIONS *", b"CONNECT")):
                continue  # PATH_INFO "*" / "": validate wants a "/" (both twins, as before)
            for conn in (Conn(), Conn(trusted=True), None):
                req = _pyparser.RequestParser().feed(raw)[0]
                resp = handler(req, conn)
                body = resp.body
                if type(body) is StreamBody:
                    data = b"".join(body.chunks)
                    body.close()
                else:
                    data = body
                assert resp.status == 200 and data.startswith(b"w:got "), raw
        assert not recwarn.list


# ---------------------------------------------------------------------- the choice

def test_choice_between_the_twins(monkeypatch):
    assert pure.handler_class("python") is pure.WSGIHandler
    with pytest.raises(ValueError):
        pure.handler_class("fast")
    monkeypatch.setenv("PREFORK_WSGI", "python")
    assert pure.handler_class() is pure.WSGIHandler
    if CWSGI is not None:
        monkeypatch.setenv("PREFORK_WSGI", "")
        assert pure.handler_class() is CWSGI.WSGIHandler
        assert pure.handler_class("cython") is CWSGI.WSGIHandler
        assert pure.name_of(CWSGI.WSGIHandler) == "cython" and pure.name_of(pure.WSGIHandler) == "python"
    else:
        require_wsgi("cython")


def test_cython_choice_fails_loudly_when_not_built(monkeypatch):
    monkeypatch.setattr(pure, "_cython_twin", lambda: (None, "no module"))
    assert pure.handler_class("auto") is pure.WSGIHandler
    with pytest.raises(pure.WSGIAdapterUnavailable, match="no module"):
        pure.handler_class("cython")


def test_cython_adapter_is_built_in_ci():
    """Under PREFORK_REQUIRE_EXTENSION=1 (CI) a missing extension fails here."""
    require_wsgi("cython")
    assert isinstance(CWSGI.WSGIHandler(lambda e, s: []).base, dict)


def test_ports_are_the_same_whatever_the_cache_holds(cwsgi):
    """REMOTE_PORT and SERVER_PORT come from a small cache of str(port) in the Cython twin:
    slots shared by several ports, and ports that are no plain small int, give str(port)."""
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    ports = [5, 1029, 5, 2053, -1, -1025, 1023, 10 ** 30, True, 65535, 0, 1024, 0]
    for port in ports:
        for local in (("127.0.0.1", port), ("127.0.0.1", 8000)):
            envs = []
            for cls in (pure.WSGIHandler, cwsgi.WSGIHandler):
                req = _pyparser.RequestParser().feed(raw)[0]
                envs.append(cls(lambda e, s: []).environ(req, Conn(addr=("10.0.0.1", port), local=local)))
            assert (envs[1]["REMOTE_PORT"], envs[1]["SERVER_PORT"]) == (envs[0]["REMOTE_PORT"], envs[0]["SERVER_PORT"])
            assert envs[1]["REMOTE_PORT"] == str(port)
