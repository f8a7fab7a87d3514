"""A small raw ASGI 3 application for the ASGI locust scenario (loadtests/locust_asgi.py):

    python loadtests/run.py --scenario asgi
    prefork-http --chdir loadtests asgi_site:app

Routes (every answer is a pure function of the request, so the users can check it):
  GET  /hello                 text, one body message (the server sends Content-Length)
  GET  /items/{n}             JSON of item(n); 404 JSON when n is 0
  GET  /stream?n=N            N lines in N body messages (chunked)
  POST /echo                  the request body read in pieces (more_body), echoed back with
                              its length and SHA-256 in fields
  GET  /trailers              a body and a trailer field (sent only when asked: TE: trailers)
and a lifespan that stores the worker's start in the state every request sees.
"""

from __future__ import annotations

import hashlib
import json
import os


def item(n: int) -> dict:
    return {"id": n, "name": f"item {n}", "price": round(n * 1.25, 2), "tags": ["t%d" % (n % 7)]}


def stream_lines(n: int) -> bytes:
    return b"".join(b"line %d\n" % i for i in range(n))


async def _lifespan(scope, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["pid"] = os.getpid()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _answer(send, status: int, body: bytes, ctype: bytes = b"text/plain", extra=()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), *extra]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/hello" and method == "GET":
        await _answer(send, 200, b"hello from pid %d" % scope["state"]["pid"])
    elif path.startswith("/items/") and method == "GET":
        try:
            n = int(path[7:])
        except ValueError:
            n = 0
        if n <= 0:
            await _answer(send, 404, json.dumps({"error": "not found", "path": path}).encode(), b"application/json")
        else:
            await _answer(send, 200, json.dumps(item(n)).encode(), b"application/json")
    elif path == "/stream" and method == "GET":
        n = int(scope["query_string"].decode().partition("=")[2] or 5)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": b"line %d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/echo" and method == "POST":
        parts = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        await _answer(send, 200, body, b"application/octet-stream",
                      [(b"x-length", b"%d" % len(body)), (b"x-sha256", hashlib.sha256(body).hexdigest().encode())])
    elif path == "/trailers" and method == "GET":
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"with trailers"})
        await send({"type": "http.response.trailers", "headers": [(b"x-check", b"ok")], "more_trailers": False})
    else:
        await _answer(send, 404, json.dumps({"error": "not found", "path": path}).encode(), b"application/json")
