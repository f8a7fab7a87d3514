"""WSGI applications the end-to-end tests serve (tests/test_wsgi.py).

`validated` is `app` inside wsgiref.validate.validator, which asserts on every PEP 3333
rule the server must keep (environ, start_response, write, iteration, close()).
"""

import json
import os
import sys
from wsgiref.validate import validator

HERE = os.path.dirname(os.path.abspath(__file__))
ENV_KEYS = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
            "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR",
            "REMOTE_PORT", "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess",
            "wsgi.run_once", "wsgi.version")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/env" or path.startswith("/env/"):
        info = {k: environ.get(k) for k in ENV_KEYS}
        info["headers"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        body = json.dumps(info).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/echo":
        stream = environ["wsgi.input"]
        how = environ["QUERY_STRING"] or "read"
        if how == "read":
            body = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
        elif how == "readline":
            body = b"|".join(iter(lambda: stream.readline(), b""))
        elif how == "readlines":
            body = b"|".join(stream.readlines())
        else:  # iteration, and a read in pieces
            body = b"|".join(line for line in stream)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/remote":  # who the server says the client is
        body = f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']}".encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(os.path.join(HERE, "public", "a.txt"), "rb"), 4)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        return [b"then returned"]
    if path == "/exc":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("caught by the application")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"handled"]
    if path == "/stream":
        return _late_stream(start_response)
    if path == "/crash":
        raise RuntimeError("application crashed")
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


def _late_stream(start_response):
    # start_response inside the generator: the head waits for the first chunk.
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(3):
        yield b"line %d\n" % i


class _Closing:
    """An iterable with close(); records that the server called it."""

    closed = []

    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        _Closing.closed.append(True)
        print("close() called", file=sys.stderr, flush=True)


def closing_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _Closing([b"a", b"b"])


validated = validator(app)
