"""The twins of App.__call__ agree: App.dispatch (prefork/apps/app.py, the reference) and
call (prefork/apps/_app.pyx, its common case in C) give the same answer, and hand the
handler the same Request, for a corpus of requests over an App with every kind of route,
result and error; and App.__call__ is the Cython twin when it is built (PREFORK_APP=python
asks for the pure one). tests/test_app.py runs all its tests with both."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import C_APP_IMPORT_ERROR, CAPP, require_built
from prefork import App, HTTPError, Response
from prefork.apps.request import Request
from prefork.http import _pyparser

pytestmark = pytest.mark.timeout(30)

def require_app_twin():
    """The Cython twin's call, or a skip (a failure under PREFORK_REQUIRE_EXTENSION=1)."""
    require_built(CAPP, "prefork.apps._app", C_APP_IMPORT_ERROR)
    return CAPP.call


def parsers():
    out = [_pyparser]
    try:
        from prefork.http import _parser
    except ImportError:
        pass
    else:
        out.append(_parser)
    return out


class Conn:
    trusted = False
    body = None
    addr = ("10.0.0.1", 5555)


SEEN = []  # (slots of the Request a handler got) per call


def slots(r: Request):
    out = {}
    for name in Request.__slots__:
        try:
            out[name] = getattr(r, name)
        except AttributeError:
            out[name] = "<unset>"
    return out


def make_app(root_path=""):
    app = App()
    app.configure(root_path)

    def seen(r, **params):
        SEEN.append(slots(r))

    @app.get("/")
    def index(r):
        seen(r)
        return Response(b"Hello", content_type="text/plain")

    @app.get("/text")
    def text(r):
        seen(r)
        return "text"

    @app.get("/json")
    def js(r):
        seen(r)
        return {"a": [1, 2]}

    @app.post("/tuple")
    def tup(r):
        seen(r)
        return "made", 201, {"Location": "/x"}

    @app.route("/many", methods=["GET", "PUT", "DELETE"])
    def many(r):
        seen(r)
        return r.method

    @app.get("/teapot")
    def teapot(r):
        seen(r)
        raise HTTPError(418, "short and stout")

    @app.get("/boom")
    def boom(r):
        seen(r)
        raise RuntimeError("kaboom")

    @app.get("/none")
    def none(r):
        seen(r)

    @app.get("/bad")
    def bad(r):
        seen(r)
        return 3.5

    @app.get("/stream")
    def stream(r):
        seen(r)
        return iter([b"a", b"b"])

    @app.get("/users/{id:int}")
    def user(r, id):
        seen(r)
        return {"id": id}

    @app.get("/value")
    def value(r):
        seen(r)
        raise ValueError("handled")

    @app.errorhandler(ValueError)
    def on_value(r, exc):
        return "value error", 409

    @app.errorhandler(404)
    def on_404(r, exc):
        return f"nothing at {r.path}"

    return app


TARGETS = [
    ("GET", "/"), ("HEAD", "/"), ("POST", "/"), ("OPTIONS", "/"), ("GET", "/?q=1"),
    ("GET", "/text"), ("GET", "/json"), ("POST", "/tuple"), ("GET", "/tuple"),
    ("GET", "/many"), ("PUT", "/many"), ("DELETE", "/many"), ("PATCH", "/many"),
    ("GET", "/teapot"), ("GET", "/boom"), ("GET", "/none"), ("GET", "/bad"),
    ("GET", "/stream"), ("GET", "/users/7"), ("GET", "/users/x"), ("GET", "/value"),
    ("GET", "/missing"), ("GET", "/app"), ("GET", "/app/"), ("GET", "/app/text"),
    ("GET", "/app/users/3"), ("GET", "/apps"),
]


def answer(resp):
    body = resp.body
    if not isinstance(body, bytes):
        body = b"".join(body.chunks)
    return type(resp), resp.status, list(resp.headers), body


@pytest.mark.parametrize("root_path", ["", "/app"])
@pytest.mark.parametrize("parser", parsers(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_the_twins_answer_alike(parser, root_path, caplog):
    call = require_app_twin()
    app = make_app(root_path)
    for method, target in TARGETS:
        raw = f"{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        got = []
        for twin in (App.dispatch, call):
            req = parser.RequestParser().feed(raw)[0]
            SEEN.clear()
            resp = twin(app, req, Conn)
            got.append((answer(resp), [{k: v for k, v in s.items() if k != "_req"} for s in SEEN],
                        [s["_req"] is req for s in SEEN]))
        assert got[0] == got[1], (method, target)


def test_app_call_is_the_cython_twin_unless_asked_otherwise():
    call = require_app_twin()
    assert App.__call__ is call and App.handle is call
    code = "from prefork import App; print(App.__call__ is App.dispatch)"
    env = dict(os.environ, PREFORK_APP="python")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "True", out.stderr


@pytest.mark.parametrize("first", ["prefork.apps._app", "prefork.apps.app", "prefork"])
def test_the_twin_is_installed_whichever_module_is_imported_first(first):
    """The twin and app.py import each other: imported first, the twin used to find app.py's
    import of it half made and fail (AttributeError: partially initialized module)."""
    require_app_twin()
    code = (f"import {first}\nimport prefork.apps._app as c\nfrom prefork.apps.app import App\n"
            "print(App.__call__ is c.call and App.handle is c.call)")
    env = {k: v for k, v in os.environ.items() if k != "PREFORK_APP"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "True", out.stderr
