"""Handlers that set framing and hop-by-hop fields themselves (tests/test_framing.py).

The server must drop every one of them and write its own framing: one Content-Length, or
one Transfer-Encoding: chunked, never both, and one Connection of its own.
"""

from prefork import App, Response
from prefork.apps.app import HTTPError

HOP = {"Connection": "close", "Keep-Alive": "timeout=99", "TE": "trailers", "Trailer": "X-Sum",
       "Upgrade": "h2c", "Proxy-Connection": "keep-alive"}

app = App()


@app.get("/cl-te")
def cl_te(req):
    return Response(b"hello", headers=[("Content-Length", "100"), ("Transfer-Encoding", "chunked")])


@app.get("/tuple")
def tuple_return(req):
    return ("hello", 200, {"Content-Length": "2"})


@app.get("/tuple-list")
def tuple_list(req):
    return (b"hello", 201, [("content-length", "5"), ("CONTENT-LENGTH", "7"), ("X-Kept", "yes")])


@app.get("/stream-cl")
def stream_cl(req):
    return Response(iter([b"ab", b"cd"]), headers={"Content-Length": "9"})


@app.get("/stream-te")
def stream_te(req):
    return Response.stream([b"ab", b"cd"], headers=[("Transfer-Encoding", "chunked")])


@app.get("/hop")
def hop(req):
    return Response(b"hop", headers=dict(HOP))


@app.get("/keep")
def keep(req):
    return Response(b"keep", headers={"Connection": "keep-alive"})


@app.get("/nocontent")
def nocontent(req):
    return Response(b"", 204, headers={"Content-Length": "5", "Transfer-Encoding": "chunked"})


@app.get("/teapot")
def teapot(req):
    raise HTTPError(418, headers=[("Content-Length", "0"), ("Transfer-Encoding", "chunked"), ("X-Tea", "1")])


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/te":  # a list body with its own Transfer-Encoding: the server counts it
        start_response("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
        return [b"hello"]
    if path == "/cl-gen":  # PEP 3333: the application's Content-Length for an iterable is honoured
        start_response("200 OK", [("Content-Length", "3"), ("Connection", "close")])
        return (c for c in [b"a", b"bc"])
    if path == "/hop":
        start_response("200 OK", list(HOP.items()) + [("Content-Length", "3")])
        return [b"hop"]
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
