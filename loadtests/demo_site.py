"""The site the load tests serve: a page with its assets, and a small JSON/form API.

    python loadtests/demo_site.py /tmp/site
    PREFORK_LOADTEST_ROOT=/tmp/site prefork-http --chdir loadtests demo_site:app

Every asset is generated from a fixed seed (`build(root)` writes them; `asset_bytes`
returns the same bytes), so the locustfile can compare each body with what it must be
without shipping binary files in the repository. Sizes follow what a typical page loads
(HTTP Archive medians, rounded): tens of KiB of HTML and CSS, a few hundred KiB of
scripts, one large image and a few thumbnails.

The server imports this module (each worker does); the assets must already be on disk
under $PREFORK_LOADTEST_ROOT: loadtests/run.py builds them first, or run
`python loadtests/demo_site.py DIR`.
"""

from __future__ import annotations

import json
import os
import random
from typing import Dict, Tuple

# (path under /static, size in bytes). The content type comes from the extension.
ASSETS: Tuple[Tuple[str, int], ...] = (
    ("css/site.css", 48 * 1024),
    ("css/print.css", 3 * 1024),
    ("js/vendor.js", 180 * 1024),
    ("js/app.js", 60 * 1024),
    ("img/logo.png", 9 * 1024),
    ("img/hero.jpg", 220 * 1024),
    ("img/thumb-1.jpg", 28 * 1024),
    ("img/thumb-2.jpg", 31 * 1024),
    ("img/thumb-3.jpg", 26 * 1024),
    ("img/thumb-4.jpg", 35 * 1024),
    ("favicon.ico", 4 * 1024),
)

# Magic numbers, so the images at least start like what they claim to be.
_MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff\xe0", ".ico": b"\x00\x00\x01\x00"}
_WORDS = ("grid", "flex", "color", "margin", "button", "header", "card", "nav", "item", "value",
          "return", "const", "function", "this", "length", "node", "event", "style", "width")

TITLE = "prefork-http load test shop"


def asset_bytes(path: str, size: int) -> bytes:
    """The content of one asset: text-like for css/js, random bytes for images."""
    rng = random.Random(f"{path}:{size}")
    ext = os.path.splitext(path)[1]
    if ext in (".css", ".js"):
        out = bytearray()
        while len(out) < size:
            out += (" ".join(rng.choice(_WORDS) for _ in range(8)) + ";\n").encode()
        return bytes(out[:size])
    magic = _MAGIC.get(ext, b"")
    return magic + rng.randbytes(size - len(magic))


def build(root: str) -> None:
    """Write every asset under root/ (idempotent: same bytes every time)."""
    for path, size in ASSETS:
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        data = asset_bytes(path, size)
        try:
            with open(full, "rb") as f:
                if f.read() == data:
                    continue
        except FileNotFoundError:
            pass
        with open(full, "wb") as f:
            f.write(data)


def page_html() -> str:
    """The page: about 30 KiB of markup that references every asset."""
    links = "\n".join(f'<link rel="stylesheet" href="/static/{p}">' for p, _ in ASSETS if p.endswith(".css"))
    scripts = "\n".join(f'<script src="/static/{p}" defer></script>' for p, _ in ASSETS if p.endswith(".js"))
    images = "\n".join(f'<img src="/static/{p}" alt="">' for p, _ in ASSETS if p.startswith("img/"))
    rng = random.Random("page")
    paragraphs = "\n".join("<p>" + " ".join(rng.choice(_WORDS) for _ in range(60)) + "</p>" for _ in range(70))
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{TITLE}</title>\n"
            f'<link rel="icon" href="/static/favicon.ico">\n{links}\n{scripts}\n</head>\n'
            f"<body><h1>{TITLE}</h1>\n{images}\n{paragraphs}\n</body></html>\n")


def item(item_id: int) -> Dict:
    """A catalogue entry, the same for a given id in every process."""
    rng = random.Random(item_id)
    return {"id": item_id, "name": f"item {item_id}", "price": round(rng.uniform(1, 500), 2),
            "tags": rng.sample(_WORDS, 3), "stock": rng.randrange(0, 100)}


def create_app(root: str):
    # Imported here so that the locustfile can use the data above without prefork installed.
    from prefork import App, HTTPError, Response

    app = App()
    page = page_html().encode()

    @app.get("/")
    def index(req):
        return Response(page, content_type="text/html; charset=utf-8")

    @app.get("/api/items/{id:int}")
    def get_item(req, id):
        if not 1 <= id <= 10000:
            raise HTTPError(404, f"no item {id}")
        return item(id)

    @app.get("/api/items")
    def list_items(req):
        limit = min(int(req.query.get("limit", "20")), 100)
        return [item(i) for i in range(1, limit + 1)]

    @app.post("/api/echo")
    def echo(req):
        return Response.json({"echo": req.json(), "bytes": req.body_size})

    @app.post("/api/form")
    def form(req):
        files = {name: {"filename": f.filename, "size": f.size} for name, f in req.files.items()}
        return Response.json({"fields": req.form().to_dict(), "files": files})

    @app.errorhandler(404)
    def not_found(req, exc):
        return Response.json({"error": "not found", "path": req.path}, 404)

    app.static("/static", root)
    return app


def _app_from_env():
    root = os.environ.get("PREFORK_LOADTEST_ROOT")
    if not root:
        raise RuntimeError("set PREFORK_LOADTEST_ROOT to the folder build() wrote (loadtests/run.py does)")
    return create_app(root)  # build() is run.py's job: workers booting together must not write files


app = _app_from_env() if os.environ.get("PREFORK_LOADTEST_ROOT") else None
if __name__ == "__main__":  # python loadtests/demo_site.py DIR: write the assets only
    import sys

    build(sys.argv[1])
    print(json.dumps({p: s for p, s in ASSETS}, indent=1))
