"""The App the end-to-end tests serve (tests/test_app_server.py)."""

import hashlib
import io
import os
import threading

from prefork import App, Response

app = App()
released = threading.Event()
HERE = os.path.dirname(os.path.abspath(__file__))


@app.get("/hello")
def hello(req):
    return Response(b"Hello, World!", content_type="text/plain")


@app.post("/echo")
def echo(req):
    return Response(req.body, headers=[("X-Length", str(len(req.body)))],
                    content_type=req.content_type or "application/octet-stream")


@app.route("/digest", methods=["POST", "PUT"])
def digest(req):
    h = hashlib.sha256()
    stream = req.stream
    for block in iter(lambda: stream.read(65536), b""):
        h.update(block)
    return {"sha256": h.hexdigest(), "size": req.body_size,
            "spooled": not isinstance(stream, io.BytesIO)}


@app.get("/stream")
def stream(req):
    n = int(req.query.get("n", "5"))
    return Response.stream((b"part %d\n" % i for i in range(n)), content_type="text/plain")


@app.get("/users/{id:int}")
def user(req, id):
    return {"id": id, "client": list(req.client)}


@app.get("/block")
def block(req):
    # Waits until another request sets the event: with --threads the worker goes on
    # serving other clients meanwhile.
    return "released" if released.wait(20) else "timed out"


@app.get("/release")
def release(req):
    released.set()
    return "ok"


@app.get("/boom")
def boom(req):
    raise RuntimeError("secret-detail-in-traceback")


@app.post("/form")
def form(req):
    files = {name: {"filename": part.filename, "size": part.size, "content": part.raw.decode()}
             for name, part in req.files.items()}
    return {"fields": req.form().to_dict(), "files": files}


@app.get("/cookies")
def cookies(req):
    resp = Response.json(req.cookies)
    resp.set_cookie("session", "a b;c", max_age=60)
    return resp


@app.get("/download")
def download(req):
    return Response.file(os.path.join(HERE, "public", "a.txt"), filename="a file.txt")


@app.errorhandler(404)
def not_found(req, exc):
    return f"nothing at {req.path}\n"


app.static("/assets", os.path.join(HERE, "public"))
