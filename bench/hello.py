"""The hello-world applications bench/apps.py serves: the same 13-byte text/plain answer
as a prefork App route, a WSGI callable and a raw ASGI callable."""

from prefork import App, Response

BODY = b"Hello, World!"

app = App()


@app.get("/")
def hello(req):
    return Response(BODY, content_type="text/plain")


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [BODY]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": BODY})
