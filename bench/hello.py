"""The applications bench/apps.py and bench/run_all.py serve, the same answers three ways
(a prefork App, a WSGI callable, a raw ASGI callable):

  GET /       the 13-byte text/plain "Hello, World!"
  POST /echo  the JSON body parsed and serialized back ({"echo": <body>}), application/json
"""

import json

from prefork import App, Response

BODY = b"Hello, World!"

app = App()


@app.get("/")
def hello(req):
    return Response(BODY, content_type="text/plain")


@app.post("/echo")
def echo(req):
    return Response(json.dumps({"echo": req.json()}).encode(), content_type="application/json")


def wsgi(environ, start_response):
    if environ["PATH_INFO"] == "/echo" and environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            data = json.loads(environ["wsgi.input"].read(length))
        except ValueError:
            start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Content-Length", "0")])
            return [b""]
        out = json.dumps({"echo": data}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
        return [out]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [BODY]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/echo" and scope["method"] == "POST":
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            data = json.loads(b"".join(chunks))
        except ValueError:
            await send({"type": "http.response.start", "status": 400, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        out = json.dumps({"echo": data}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": BODY})
