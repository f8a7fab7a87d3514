"""A small prefork App:

    prefork-http --chdir examples --workers 2 hello_app:app
    curl localhost:8000/  localhost:8000/users/7  -d 'x=1' localhost:8000/form
"""

import os

from prefork import App, HTTPError, Response

app = App()
USERS = {1: "ada", 2: "grace"}


@app.get("/")
def index(req):
    return Response.html("<h1>Hello from prefork-http</h1>\n")


@app.get("/users/{id:int}")
def user(req, id):
    if id not in USERS:
        raise HTTPError(404, f"no user {id}")
    return {"id": id, "name": USERS[id]}


@app.post("/form")
def form(req):
    return {"fields": req.form().to_dict(), "files": [f.filename for _, f in req.files.items()]}


@app.get("/count")
def count(req):
    n = min(int(req.query.get("to", "10")), 10000)
    return Response.stream((f"{i}\n" for i in range(n)), content_type="text/plain")  # chunked


@app.get("/login")
def login(req):
    resp = Response.redirect("/")
    resp.set_cookie("session", "opaque-token", max_age=3600, secure=False)
    return resp


@app.errorhandler(404)
def not_found(req, exc):
    return Response.json({"error": str(exc) or "not found", "path": req.path}, 404)


app.static("/static", os.path.join(os.path.dirname(os.path.abspath(__file__)), "public"))
