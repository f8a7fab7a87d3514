"""Locust users for prefork-http serving loadtests/demo_site.py.

    python loadtests/run.py --users 50 --time 60s        # starts the server too
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000   # against a running one

Three kinds of user, each checking status and body of every answer (a wrong answer is a
failure in locust's report, not just a slow one):

  BrowserUser     loads the page and its assets like a browser with a cache: a first visit
                  fetches everything (bodies compared byte for byte), later visits revalidate
                  with If-None-Match or If-Modified-Since and must get 304 with no body.
  ApiUser         GET JSON (one item, a list), POST JSON to an echo route, POST urlencoded
                  and multipart forms, and an unknown item that must be a JSON 404.
  ConnectionMixUser
                  the same requests, half of them with `Connection: close`, so the server
                  sees new connections and keep-alive ones interleaved; the answer to a
                  close request must say `Connection: close`.

Think time between tasks: LOADTEST_WAIT="MIN:MAX" seconds (default 0.5:2; 0:0 is a closed
loop at full speed, what loadtests/run.py --compare uses).
"""

from __future__ import annotations

import json
import os
import random
import sys

from locust import FastHttpUser, between, constant, events, task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_site  # noqa: E402  (the same module the server runs: expected bodies)


# ---------------------------------------------------------------------- final figures
# locust's _stats.csv is rewritten once a second while the run goes on and not at the end,
# so it misses the last second and the requests finished during --stop-timeout. When
# LOADTEST_FINAL_STATS names a file, locust's own final Aggregated figures (the ones its
# closing summary prints) are written there as JSON once the users have stopped.
_environment = None


@events.init.add_listener
def _keep_environment(environment, **_kwargs) -> None:
    global _environment
    _environment = environment


@events.quit.add_listener
def _write_final_stats(exit_code=None, **_kwargs) -> None:
    path = os.environ.get("LOADTEST_FINAL_STATS")
    if not path or _environment is None or _environment.stats is None:
        return
    total = _environment.stats.total
    final = {"requests": total.num_requests, "failures": total.num_failures, "rps": total.total_rps,
             "p50": total.get_response_time_percentile(0.5), "p95": total.get_response_time_percentile(0.95),
             "p99": total.get_response_time_percentile(0.99)}
    with open(path, "w") as f:
        json.dump(final, f)


def _wait_time():
    lo, _, hi = os.environ.get("LOADTEST_WAIT", "0.5:2").partition(":")
    lo_f, hi_f = float(lo), float(hi or lo)
    return constant(lo_f) if lo_f == hi_f else between(lo_f, hi_f)


EXPECTED = {f"/static/{path}": demo_site.asset_bytes(path, size) for path, size in demo_site.ASSETS}
PAGE = demo_site.page_html().encode()


def _fail(resp, why: str) -> None:
    resp.failure(f"{why} (status {resp.status_code})")


def check_json(resp, expected, status: int = 200) -> None:
    if resp.status_code != status:
        return _fail(resp, f"expected {status}")
    if not (resp.headers.get("Content-Type") or "").startswith("application/json"):
        return _fail(resp, f"not JSON: {resp.headers.get('Content-Type')!r}")
    try:
        got = json.loads(resp.content)
    except ValueError:
        return _fail(resp, "body is not valid JSON")
    if got != expected:
        return _fail(resp, f"wrong body: {resp.content[:80]!r}")
    resp.success()


class BrowserUser(FastHttpUser):
    """A visitor with a browser cache: the first page view downloads, later ones revalidate."""

    weight = 3
    wait_time = _wait_time()

    def on_start(self) -> None:
        self.validators: dict = {}  # asset path → (ETag, Last-Modified)

    @task
    def view_page(self) -> None:
        with self.client.get("/", name="/ (page)", catch_response=True) as resp:
            if resp.status_code != 200:
                _fail(resp, "page not 200")
            elif resp.content != PAGE:
                _fail(resp, f"page body differs ({len(resp.content or b'')} bytes)")
            else:
                resp.success()
        for path, body in EXPECTED.items():
            cached = self.validators.get(path)
            if cached is None:
                self._download(path, body)
            else:
                self._revalidate(path, *cached)

    def _download(self, path: str, body: bytes) -> None:
        with self.client.get(path, name="asset (first visit)", catch_response=True) as resp:
            if resp.status_code != 200:
                return _fail(resp, f"{path} not 200")
            if resp.content != body:
                return _fail(resp, f"{path}: body differs ({len(resp.content or b'')} of {len(body)} bytes)")
            etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
            if not etag or not modified:
                return _fail(resp, f"{path}: no ETag or Last-Modified")
            self.validators[path] = (etag, modified)
            resp.success()

    def _revalidate(self, path: str, etag: str, modified: str) -> None:
        # Browsers send both when they have both; send one or the other so each is exercised.
        if random.random() < 0.5:
            headers, name = {"If-None-Match": etag}, "asset If-None-Match"
        else:
            headers, name = {"If-Modified-Since": modified}, "asset If-Modified-Since"
        with self.client.get(path, headers=headers, name=name, catch_response=True) as resp:
            if resp.status_code != 304:
                return _fail(resp, f"{path}: expected 304")
            if resp.content:
                return _fail(resp, f"{path}: 304 with a body")
            if resp.headers.get("ETag") != etag:
                return _fail(resp, f"{path}: 304 with another ETag")
            resp.success()


class ApiUser(FastHttpUser):
    """A client of the JSON API."""

    weight = 3
    wait_time = _wait_time()
    close = False  # ConnectionMixUser sends Connection: close on some requests

    def _headers(self, extra=None) -> dict:
        headers = dict(extra or {})
        if self.close and random.random() < 0.5:
            headers["Connection"] = "close"
        return headers

    def _check_close(self, resp, headers) -> bool:
        if headers.get("Connection") == "close" and (resp.headers.get("Connection") or "").lower() != "close":
            _fail(resp, "a Connection: close request answered without Connection: close")
            return False
        return True

    @task(4)
    def get_item(self) -> None:
        i = random.randint(1, 10000)
        headers = self._headers()
        with self.client.get(f"/api/items/{i}", name="/api/items/{id}", headers=headers,
                             catch_response=True) as resp:
            if self._check_close(resp, headers):
                check_json(resp, demo_site.item(i))

    @task(1)
    def list_items(self) -> None:
        n = random.choice((10, 50, 100))
        headers = self._headers()
        with self.client.get(f"/api/items?limit={n}", name="/api/items?limit=N", headers=headers,
                             catch_response=True) as resp:
            if self._check_close(resp, headers):
                check_json(resp, [demo_site.item(i) for i in range(1, n + 1)])

    @task(3)
    def post_json(self) -> None:
        doc = {"order": random.randint(1, 10**9), "lines": [{"sku": f"A{i}", "qty": i} for i in range(random.randint(1, 30))],
               "note": "é ünïcode ✓"}
        body = json.dumps(doc).encode()
        headers = self._headers({"Content-Type": "application/json"})
        with self.client.post("/api/echo", data=body, headers=headers, catch_response=True) as resp:
            if self._check_close(resp, headers):
                check_json(resp, {"echo": doc, "bytes": len(body)})

    @task(2)
    def post_form(self) -> None:
        fields = {"name": f"user{random.randint(1, 999)}", "email": "a@example.org", "comment": "a b&c=d"}
        from urllib.parse import urlencode
        headers = self._headers({"Content-Type": "application/x-www-form-urlencoded"})
        with self.client.post("/api/form", data=urlencode(fields).encode(), headers=headers,
                              name="/api/form (urlencoded)", catch_response=True) as resp:
            if self._check_close(resp, headers):
                check_json(resp, {"fields": fields, "files": {}})

    @task(1)
    def post_multipart(self) -> None:
        boundary = f"----locust{random.getrandbits(64):016x}"
        upload = random.randbytes(random.randint(1, 64 * 1024))
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nholiday\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.bin\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + upload + f"\r\n--{boundary}--\r\n".encode()
        headers = self._headers({"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with self.client.post("/api/form", data=body, headers=headers, name="/api/form (multipart)",
                              catch_response=True) as resp:
            if self._check_close(resp, headers):
                check_json(resp, {"fields": {"title": "holiday"},
                                  "files": {"photo": {"filename": "p.bin", "size": len(upload)}}})

    @task(1)
    def missing(self) -> None:
        headers = self._headers()
        with self.client.get("/api/items/0", name="/api/items/0 (404)", headers=headers,
                             catch_response=True) as resp:
            if self._check_close(resp, headers):
                check_json(resp, {"error": "not found", "path": "/api/items/0"}, status=404)


class ConnectionMixUser(ApiUser):
    """ApiUser's requests, half of them on a connection the client closes."""

    weight = 1
    close = True
