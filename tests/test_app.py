"""Unit tests of App routing, Request and Response, in-process (no sockets)."""

from __future__ import annotations

import io
import logging
import tempfile
import uuid

import pytest

from prefork import App, HTTPError, Request, Response
from prefork.http._pyparser import RequestParser, header_block
from prefork.apps.response import FileBody, StreamBody

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(autouse=True, params=["python", "cython"], ids=["py-app", "c-app"])
def app_twin(request, monkeypatch):
    """Every test here runs with both twins of App.__call__: App.dispatch (pure) and
    prefork/apps/_app.pyx's call."""
    if request.param == "python":
        call = App.dispatch
    else:
        from test_app_twins import require_app_twin
        call = require_app_twin()
    monkeypatch.setattr(App, "__call__", call)
    monkeypatch.setattr(App, "handle", call)
    return request.param


def parse(raw: bytes):
    p = RequestParser()
    reqs = p.feed(raw)
    assert reqs and p.error is None, p.error
    return reqs[0]


def req(method="GET", path="/", headers=b"", body=b""):
    if body:
        headers += b"Content-Length: %d\r\n" % len(body)
    return parse(method.encode() + b" " + path.encode() + b" HTTP/1.1\r\nHost: h\r\n" + headers + b"\r\n" + body)


class FakeConn:
    trusted = False  # an untrusted peer: its own address, scheme http

    def __init__(self, body=None, addr=("10.0.0.1", 5555)):
        self.body = body
        self.addr = addr


def call(app, *args, **kw):
    r = app(req(*args, **kw))
    return r.status, dict(r.headers), r.body


# ---------------------------------------------------------------------- routing

@pytest.fixture
def app():
    app = App()

    @app.get("/")
    def index(r):
        return "index"

    @app.get("/users/{id:int}")
    def user(r, id):
        return {"id": id, "type": type(id).__name__}

    @app.route("/users/{id:int}", methods=["PUT", "DELETE"])
    def change_user(r, id):
        return f"{r.method} {id}"

    @app.get("/users/me")
    def me(r):
        return "me"

    @app.get("/files/{rest:path}")
    def files(r, rest):
        return rest

    @app.get("/tag/{name}")
    def tag(r, name):
        return name

    @app.get("/n/{x:float}/{u:uuid}")
    def num(r, x, u):
        return f"{x!r} {u!r}"

    @app.post("/items")
    def items(r):
        return "created", 201, {"Location": "/items/1"}

    return app


def test_static_path_params_and_converters(app):
    assert call(app, "GET", "/")[::2] == (200, b"index")
    assert call(app, "GET", "/users/42")[2] == b'{"id":42,"type":"int"}'
    assert call(app, "GET", "/users/me")[2] == b"me"  # the exact path wins
    assert call(app, "PUT", "/users/7")[2] == b"PUT 7"
    assert call(app, "GET", "/files/a/b%20c/d.txt")[2] == b"a/b c/d.txt"
    assert call(app, "GET", "/tag/caf%C3%A9")[2] == "caf\u00e9".encode()
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert call(app, "GET", f"/n/1.5/{u}")[2] == f"1.5 {u!r}".encode()
    status, headers, body = call(app, "POST", "/items")
    assert (status, headers["Location"], body) == (201, "/items/1", b"created")


def test_404_405_head_and_options(app):
    assert call(app, "GET", "/users/x")[0] == 404  # int converter does not match
    assert call(app, "GET", "/nothing")[0] == 404
    assert call(app, "GET", "/tag/a/b")[0] == 404  # str is one segment
    status, headers, _ = call(app, "POST", "/users/3")
    assert (status, headers["Allow"]) == (405, "GET, HEAD, PUT, DELETE, OPTIONS")
    status, headers, _ = call(app, "DELETE", "/")
    assert (status, headers["Allow"]) == (405, "GET, HEAD, OPTIONS")
    assert call(app, "HEAD", "/users/9")[::2] == (200, b'{"id":9,"type":"int"}')  # the connection drops it
    status, headers, body = call(app, "OPTIONS", "/items")
    assert (status, headers["Allow"], body) == (204, "POST, OPTIONS", b"")


def test_duplicate_route_and_bad_converter_are_refused():
    app = App()
    app.get("/a")(lambda r: "1")
    with pytest.raises(ValueError, match="already routed"):
        app.get("/a")(lambda r: "2")
    with pytest.raises(ValueError, match="unknown converter"):
        app.get("/b/{x:nope}")(lambda r, x: x)
    with pytest.raises(ValueError, match="must start with /"):
        app.get("b")(lambda r: "")


def test_check_expect_follows_routing(app):
    assert app.check_expect(req("POST", "/items")) is None
    assert app.check_expect(req("POST", "/nope")).status == 404
    refused = app.check_expect(req("POST", "/"))
    assert refused.status == 405 and ("Allow", "GET, HEAD, OPTIONS") in refused.headers


def test_root_path(app):
    app.configure(root_path="/api")
    assert call(app, "GET", "/api/users/1")[0] == 200
    assert call(app, "GET", "/api")[2] == b"index"
    assert call(app, "GET", "/users/1")[0] == 404
    assert call(app, "GET", "/apix/users/1")[0] == 404


def test_static_mount(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.html").write_text("hi")
    (tmp_path / "f.css").write_text("b{}")
    app = App()
    app.static("/s/", str(tmp_path))
    assert call(app, "GET", "/s/f.css")[::2] == (200, b"b{}")
    status, headers, _ = call(app, "GET", "/s/sub?x=1")
    assert (status, headers["Location"]) == (301, "/s/sub/?x=1")
    assert call(app, "GET", "/s/../etc/passwd")[0] == 404
    assert call(app, "GET", "/other")[0] == 404


# ---------------------------------------------------------------------- errors

def test_500_logs_the_traceback_and_never_sends_it(caplog):
    app = App()

    @app.get("/")
    def boom(r):
        raise KeyError("very secret")

    with caplog.at_level(logging.ERROR, logger="prefork.error"):
        status, _, body = call(app, "GET", "/")
    assert status == 500 and b"secret" not in body
    assert any("very secret" in (r.exc_text or "") for r in caplog.records)


def test_error_handlers_by_status_and_exception_class(caplog):
    app = App()

    class Missing(LookupError):
        pass

    @app.get("/missing")
    def missing(r):
        raise Missing("thing")

    @app.get("/forbidden")
    def forbidden(r):
        raise HTTPError(403, "no entry", [("X-Why", "policy")])

    @app.get("/crash")
    def crash(r):
        raise RuntimeError("x")

    @app.errorhandler(LookupError)
    def lookup(r, exc):
        return Response.json({"missing": str(exc)}, 410)

    @app.errorhandler(404)
    def nf(r, exc):
        return {"error": "not found", "path": r.path}

    @app.errorhandler(500)
    def oops(r, exc):
        raise ValueError("the error handler itself fails")

    assert call(app, "GET", "/missing")[::2] == (410, b'{"missing":"thing"}')
    status, headers, body = call(app, "GET", "/nope")
    assert status == 404 and body == b'{"error":"not found","path":"/nope"}'
    status, headers, body = call(app, "GET", "/forbidden")  # default page, with the detail
    assert (status, headers["X-Why"], body) == (403, "policy", b"403 Forbidden: no entry\n")
    with caplog.at_level(logging.ERROR, logger="prefork.error"):
        assert call(app, "GET", "/crash")[::2] == (500, b"500 Internal Server Error\n")
    assert any("error handler" in r.getMessage() for r in caplog.records)


def test_handler_results_are_converted():
    app = App()
    app.get("/bytes")(lambda r: b"\x00\x01")
    app.get("/list")(lambda r: [1, 2])
    app.get("/none")(lambda r: None)
    app.get("/gen")(lambda r: (b"a" for _ in range(2)))
    assert call(app, "GET", "/bytes")[1]["Content-Type"] == "application/octet-stream"
    assert call(app, "GET", "/list")[::2] == (200, b"[1,2]")
    assert call(app, "GET", "/none")[0] == 500
    assert type(call(app, "GET", "/gen")[2]) is StreamBody


# ---------------------------------------------------------------------- Request

def test_request_query_headers_cookies_client():
    r = Request(req("GET", "/p?a=1&b=&a=2&c=%C3%A9",
                    headers=b"X-Multi: 1\r\nx-multi: 2\r\nCookie: s=abc; t=\"q\"; bad; u=1=2\r\nCookie: s=dup\r\n"),
                FakeConn())
    assert r.path == "/p" and r.query_string == "a=1&b=&a=2&c=%C3%A9"
    assert r.query["a"] == "1" and r.query.getall("a") == ["1", "2"] and r.query["b"] == ""
    assert r.query.get("c") == "\u00e9" and r.query.get("zzz", "d") == "d"
    assert r.headers["X-MULTI"] == "1" and r.headers.getall("x-multi") == ["1", "2"]
    assert "x-multi" in r.headers and "nope" not in r.headers and r.header("HOST") == "h"
    assert r.cookies == {"s": "abc", "t": "q", "u": "1=2"}
    assert r.client == ("10.0.0.1", 5555)
    assert Request(req()).client is None


def test_request_json_and_forms():
    r = Request(req("POST", "/", headers=b"Content-Type: application/json\r\n", body=b'{"a": [1]}'))
    assert r.json() == {"a": [1]}
    with pytest.raises(HTTPError) as e:
        Request(req("POST", "/", body=b"{nope")).json()
    assert e.value.status == 400
    r = Request(req("POST", "/", headers=b"Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n",
                    body=b"x=1&y=%E2%9C%93&x=2"))
    assert r.form().getall("x") == ["1", "2"] and r.form()["y"] == "\u2713" and len(r.files) == 0
    with pytest.raises(HTTPError):
        Request(req("POST", "/", headers=b"Content-Type: multipart/form-data\r\n", body=b"x")).form()
    assert len(Request(req("POST", "/", headers=b"Content-Type: text/plain\r\n", body=b"x=1")).form()) == 0


def test_request_body_from_a_spooled_file():
    f = tempfile.TemporaryFile()
    f.write(b"spooled body")
    f.seek(0)
    r = Request(req("POST", "/", body=b""), FakeConn(body=f))
    assert r.body_size == 12 and r.stream is f
    assert r.body == b"spooled body" and f.tell() == 0
    r = Request(req("POST", "/", body=b"tail"), FakeConn(body=b"head+tail"))
    assert r.body == b"head+tail" and isinstance(r.stream, io.BytesIO)
    f.close()


# ---------------------------------------------------------------------- Response

def test_response_constructors():
    r = Response.text("caf\u00e9")
    assert (r.status, r.body, r.block) == (200, "caf\u00e9".encode(), header_block(r._headers))
    assert r.content_type == "text/plain; charset=utf-8"
    assert Response.html("<b>").content_type == "text/html; charset=utf-8"
    r = Response.json({"a": "\u00e9"}, 201)
    assert (r.status, r.body, r.content_type) == (201, '{"a":"\u00e9"}'.encode(), "application/json")
    r = Response.redirect("/there", 303)
    assert r.status == 303 and r.header("location") == "/there" and r.body == b""
    with pytest.raises(ValueError):
        Response.redirect("/x", 200)
    r = Response(b"", 204)
    assert r.headers == [] and r.length == 0
    r = Response(b"x", headers={"Content-Type": "image/png", "X-A": "1"})
    assert r.headers == [("Content-Type", "image/png"), ("X-A", "1")]
    r = Response(b"x", headers=[("content-type", "a/b")], content_type="c/d")
    assert r.headers == [("Content-Type", "c/d")]


def test_response_block_is_dropped_when_headers_are_touched():
    r = Response.text("x")
    assert r.block is not None
    r.headers.append(("X-Extra", "1"))
    assert r.block is None  # the connection serializes (and validates) the new list
    r = Response.text("x")
    r.set_header("Content-Type", "text/csv")
    assert r.block is None and r.headers == [("Content-Type", "text/csv")]


def test_cookies_are_set_safely():
    r = Response(b"")
    r.set_cookie("id", 'va"l;ue\r\nX: y', max_age=10, secure=True)
    value = r.header("set-cookie")
    assert "\r" not in value and "\n" not in value and value.startswith('id="va\\"l\\073ue')
    assert "Secure" in value and "HttpOnly" in value and "SameSite=Lax" in value
    header_block(r.headers)  # the connection would accept it
    with pytest.raises(Exception):
        r.set_cookie("bad name;", "v")
    with pytest.raises(ValueError):
        r.set_cookie("ok", "v", path="/; Domain=evil")
    with pytest.raises(ValueError):
        r.set_cookie("ok", "v", samesite="sometimes")
    r.delete_cookie("id")
    assert "Max-Age=0" in r.headers[-1][1]


def test_file_response_uses_sendfile_and_404_when_missing(tmp_path):
    p = tmp_path / "doc.json"
    p.write_bytes(b'{"k": 1}')
    r = Response.file(p, filename="r\u00e9sum\u00e9.json")
    try:
        assert type(r.body) is FileBody and r.length == 8
        assert r.content_type == "application/json; charset=utf-8"
        assert r.header("last-modified").endswith("GMT")
        assert r.header("content-disposition") == \
            "attachment; filename=\"r?sum?.json\"; filename*=UTF-8''r%C3%A9sum%C3%A9.json"
    finally:
        r.close()
    with pytest.raises(HTTPError) as e:
        Response.file(tmp_path / "missing")
    assert e.value.status == 404
    with pytest.raises(HTTPError):
        Response.file(tmp_path)


def test_streams():
    r = Response.stream(["a", b"b"], length=2, content_type="text/plain")
    assert type(r.body) is StreamBody and r.length == 2
    r = Response(iter([b"x"]))
    assert r.length is None
