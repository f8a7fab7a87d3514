"""PEP 3333: conformance under wsgiref.validate, the environ, file_wrapper, and Flask."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import APPS, ROOT, WSGI_ADAPTERS, read_response, require_wsgi
from prefork.http._pyparser import RequestParser
from prefork.apps.response import FileBody, StreamBody
from prefork.apps.wsgi import handler_class
from test_app_server import read_chunked, read_head, request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=WSGI_ADAPTERS)
def wsgi_name(request):
    """Every WSGI test runs on both adapter twins (py-wsgi, c-wsgi)."""
    require_wsgi(request.param)
    return request.param


@pytest.fixture
def WSGIHandler(wsgi_name):
    return handler_class(wsgi_name)


def read_any(sock, buf: bytearray, head_only=False):
    """(status, headers, body) of a response framed by Content-Length or chunked."""
    status, headers = read_head(sock, buf)
    if head_only:
        return status, headers, b""
    if headers.get("transfer-encoding") == "chunked":
        return status, headers, read_chunked(sock, buf)
    n = int(headers.get("content-length", 0))
    while len(buf) < n:
        buf += sock.recv(65536)
    body = bytes(buf[:n])
    del buf[:n]
    return status, headers, body


@pytest.fixture
def serve(start_server, wsgi_name):
    def start(*extra, app, env=None, **kw):
        env = dict(env or {}, PREFORK_WSGI=wsgi_name)
        return start_server(*extra, app=app, pythonpath=[APPS], env=env, **kw)
    return start


def test_validator_sees_no_violation(serve):
    """Every path of the application under wsgiref.validate, with warnings as errors in
    the worker: any assertion or warning would be a 500 and a traceback in the log."""
    srv = serve(app="wsgi_apps:validated", env={"PYTHONWARNINGS": "error"})
    with srv.connect() as s:
        buf = bytearray()
        request(s, b"GET", b"/env?x=1")
        status, _, body = read_any(s, buf)
        assert status == 200 and json.loads(body)["QUERY_STRING"] == "x=1"
        request(s, b"HEAD", b"/env")
        status, headers, _ = read_any(s, buf, head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0
        for how in ("read", "readline", "readlines", "iter"):
            request(s, b"POST", b"/echo?" + how.encode(), body=b"one\ntwo\nthree")
            want = b"one\ntwo\nthree" if how == "read" else b"one\n|two\n|three"
            assert read_any(s, buf)[::2] == (200, want), how
        s.sendall(b"POST /echo?read HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert read_any(s, buf)[::2] == (200, b"abcde")
        for path, want in ((b"/file", b"asset body\n"), (b"/write", b"written, then returned"),
                           (b"/stream", b"line 0\nline 1\nline 2\n")):
            request(s, b"GET", path)
            assert read_any(s, buf)[::2] == (200, want), path
        request(s, b"GET", b"/exc")  # start_response again with exc_info, before any body
        assert read_any(s, buf)[::2] == (500, b"handled")
        request(s, b"GET", b"/nothing")
        assert read_any(s, buf)[::2] == (404, b"not found")
    srv.stop()
    log = "".join(srv.log)
    for bad in ("Traceback", "Warning", "AssertionError", "garbage collected", "Exception ignored"):
        assert bad not in log, log


def test_environ_is_complete_and_correct(serve):
    srv = serve("--root-path", "/mount", app="wsgi_apps:app", workers=2)
    with srv.connect() as s:
        request(s, b"POST", b"/mount/env/caf%C3%A9%2Fx?q=%20&r", body=b"abc",
                headers=b"Content-Type: text/plain\r\nX-Forwarded-For: a\r\nX_Forwarded_For: spoof\r\n"
                        b"Accept: a\r\nAccept: b\r\nCookie: a=1\r\nCookie: b=2\r\n")
        status, _, body = read_response(s)
        env = json.loads(body)
        assert status == 200
        assert env["SCRIPT_NAME"] == "/mount"
        assert env["PATH_INFO"] == "/env/caf\u00c3\u00a9/x"  # decoded bytes, as latin-1 (PEP 3333)
        assert env["QUERY_STRING"] == "q=%20&r"
        assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == ("text/plain", "3")
        assert env["headers"] == {"HTTP_HOST": "t", "HTTP_X_FORWARDED_FOR": "a", "HTTP_ACCEPT": "a,b",
                                  "HTTP_COOKIE": "a=1; b=2"}  # the name with "_" is dropped
        assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == str(s.getsockname()[1])
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(srv.address[1]))
        assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["REQUEST_METHOD"] == "POST"
        assert env["wsgi.url_scheme"] == "http" and env["wsgi.version"] == [1, 0]
        assert env["wsgi.multiprocess"] is True and env["wsgi.multithread"] is False
        assert env["wsgi.run_once"] is False
        request(s, b"GET", b"/elsewhere")
        assert read_response(s)[0] == 404
        request(s, b"GET", b"/mount/crash")
        status, _, body = read_response(s)
        assert status == 500 and b"crashed" not in body
    srv.stop()
    assert "application crashed" in "".join(srv.log)


def test_threads_flag_in_environ(serve):
    srv = serve("--threads", "2", app="wsgi_apps:app")
    with srv.connect() as s:
        request(s, b"GET", b"/env")
        assert json.loads(read_response(s)[2])["wsgi.multithread"] is True


# ---------------------------------------------------------------------- in-process

class FakeConn:
    body = None
    addr = ("127.0.0.1", 4000)
    trusted = False  # an untrusted peer: its own address, scheme http

    def local_address(self):
        return ("127.0.0.1", 8000)


def _import_test_app(name):
    import importlib

    if APPS not in sys.path:
        sys.path.insert(0, APPS)
    return importlib.import_module(name)


@pytest.fixture
def wsgi_call(WSGIHandler):
    def call(app, raw=b"GET /file HTTP/1.1\r\nHost: h\r\n\r\n"):
        return WSGIHandler(app)(RequestParser().feed(raw)[0], FakeConn())
    return call


def test_file_wrapper_becomes_sendfile_and_close_is_called(tmp_path, wsgi_call):
    wsgi_apps = _import_test_app("wsgi_apps")
    resp = wsgi_call(wsgi_apps.app)
    try:
        assert type(resp.body) is FileBody and resp.length == len(b"asset body\n")
        assert os.pread(resp.body.fd, 100, resp.body.offset) == b"asset body\n"
    finally:
        resp.close()
    wsgi_apps._Closing.closed.clear()
    resp = wsgi_call(wsgi_apps.closing_app)
    assert type(resp.body) is StreamBody and wsgi_apps._Closing.closed == []
    assert list(resp.body.chunks) == [b"a", b"b"]
    resp.close()  # what the connection does when the stream ends or the client goes
    resp.close()
    assert wsgi_apps._Closing.closed == [True]
    resp = wsgi_call(lambda env, sr: sr("200 OK", []) and [b"x"])  # a list: sent whole
    assert resp.body == b"x"


def test_exc_info_after_the_head_left_is_reraised(wsgi_call):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        try:
            raise KeyError("late")
        except KeyError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    resp = wsgi_call(app)
    assert type(resp.body) is StreamBody
    chunks = resp.body.chunks
    assert next(chunks) == b"first"
    with pytest.raises(KeyError):
        next(chunks)


def test_head_keeps_the_applications_content_length(wsgi_call):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "42")])
        return []

    resp = wsgi_call(app, b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert resp.length == 42


# ---------------------------------------------------------------------- Flask

def test_flask_example_runs_under_prefork(start_server, wsgi_name):
    pytest.importorskip("flask")
    srv = start_server(app="flask_app:app", pythonpath=[os.path.join(ROOT, "examples")],
                       env={"PREFORK_WSGI": wsgi_name})
    with srv.connect() as s:
        request(s, b"GET", b"/")
        status, headers, body = read_response(s)
        assert status == 200 and b"Hello from Flask" in body
        request(s, b"POST", b"/echo", body=b'{"n": 1}', headers=b"Content-Type: application/json\r\n")
        status, headers, body = read_response(s)
        assert status == 200 and json.loads(body) == {"you sent": {"n": 1}}
        request(s, b"GET", b"/users/12")
        assert json.loads(read_response(s)[2]) == {"id": 12}
        request(s, b"HEAD", b"/")
        status, headers, body = read_response(s, head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0
        request(s, b"GET", b"/missing")
        assert read_response(s)[0] == 404
