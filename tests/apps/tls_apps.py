"""Applications the TLS tests serve (tests/test_tls.py): each says what it saw of TLS."""

import json

from prefork import App, Response

app = App()


@app.get("/")
def hello(req):
    return Response(b"hello tls\n", content_type="text/plain")


@app.get("/tls")
def tls_info(req):
    tls = req.tls
    info = {"scheme": req.scheme, "client": list(req.client or ())}
    if tls is not None:
        info.update(version=tls.version, cipher=tls.cipher, alpn=tls.alpn,
                    subject=tls.client_subject, verified=tls.client_verified)
    return Response(json.dumps(info).encode(), content_type="application/json")


def wsgi(environ, start_response):
    keys = ("wsgi.url_scheme", "HTTPS", "SSL_PROTOCOL", "SSL_CLIENT_S_DN", "SSL_CLIENT_I_DN",
            "SSL_CLIENT_VERIFY", "REMOTE_ADDR")
    body = json.dumps({k: environ.get(k) for k in keys}
                      | {"has_cert": bool(environ.get("SSL_CLIENT_CERT"))}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        tls = scope["extensions"].get("tls")
        await send({"type": "websocket.send", "text": json.dumps({"scheme": scope["scheme"], "tls": tls})})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": m.get("text"), "bytes": m.get("bytes")})
    if scope["path"] == "/file":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.pathsend", "path": scope["query_string"].decode()})
        return
    body = json.dumps({"scheme": scope["scheme"], "tls": scope["extensions"].get("tls"),
                       "client": scope["client"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
