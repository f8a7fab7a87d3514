"""Locust user for prefork-http serving the ASGI application loadtests/asgi_site.py:

    python loadtests/run.py --scenario asgi --users 50 --time 60s    # starts the server too
    locust -f loadtests/locust_asgi.py --host http://127.0.0.1:8000  # against a running one

AsgiUser checks the status and body of every answer (a wrong one is a failure in locust's
report): plain text, JSON items and a JSON 404, a streamed (chunked) body, a POST echoed
back with its length and SHA-256, and a response whose trailers the client did not ask for
(they must not appear; the body must be whole). Half of its requests say Connection: close
(ConnectionMix), so new and kept-alive connections interleave. Think time: LOADTEST_WAIT as
in locustfile.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys

from locust import FastHttpUser, task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asgi_site  # noqa: E402  (the same module the server runs: expected bodies)
from locustfile import _fail, _wait_time, check_json  # noqa: E402


class AsgiUser(FastHttpUser):
    wait_time = _wait_time()

    def _headers(self, extra=None) -> dict:
        headers = dict(extra or {})
        if random.random() < 0.25:
            headers["Connection"] = "close"
        return headers

    def _closed_right(self, resp, headers) -> bool:
        if headers.get("Connection") == "close" and (resp.headers.get("Connection") or "").lower() != "close":
            _fail(resp, "a Connection: close request answered without Connection: close")
            return False
        return True

    @task(4)
    def hello(self) -> None:
        headers = self._headers()
        with self.client.get("/hello", headers=headers, catch_response=True) as resp:
            if not self._closed_right(resp, headers):
                return
            if resp.status_code != 200 or not (resp.content or b"").startswith(b"hello from pid "):
                return _fail(resp, f"wrong answer {resp.content[:60]!r}")
            resp.success()

    @task(4)
    def get_item(self) -> None:
        n = random.randint(0, 5000)
        headers = self._headers()
        with self.client.get(f"/items/{n}", name="/items/{n}", headers=headers, catch_response=True) as resp:
            if self._closed_right(resp, headers):
                if n == 0:
                    check_json(resp, {"error": "not found", "path": "/items/0"}, status=404)
                else:
                    check_json(resp, asgi_site.item(n))

    @task(2)
    def stream(self) -> None:
        n = random.randint(1, 40)
        headers = self._headers()
        with self.client.get(f"/stream?n={n}", name="/stream?n=N", headers=headers, catch_response=True) as resp:
            if not self._closed_right(resp, headers):
                return
            if resp.status_code != 200 or resp.content != asgi_site.stream_lines(n):
                return _fail(resp, f"stream of {n} lines differs ({len(resp.content or b'')} bytes)")
            resp.success()

    @task(3)
    def echo(self) -> None:
        body = random.randbytes(random.choice((0, 10, 1000, 100_000, 600_000)))
        headers = self._headers({"Content-Type": "application/octet-stream"})
        with self.client.post("/echo", data=body, headers=headers, catch_response=True) as resp:
            if not self._closed_right(resp, headers):
                return
            if resp.status_code != 200 or resp.content != body:
                return _fail(resp, f"echo of {len(body)} bytes differs ({len(resp.content or b'')} back)")
            if resp.headers.get("x-length") != str(len(body)) or \
                    resp.headers.get("x-sha256") != hashlib.sha256(body).hexdigest():
                return _fail(resp, "echo fields wrong")
            resp.success()

    @task(1)
    def trailers_not_asked(self) -> None:
        headers = self._headers()
        with self.client.get("/trailers", headers=headers, catch_response=True) as resp:
            if not self._closed_right(resp, headers):
                return
            if resp.status_code != 200 or resp.content != b"with trailers" or "x-check" in resp.headers:
                return _fail(resp, f"trailers answer wrong: {resp.content[:40]!r}")
            resp.success()

    @task(1)
    def missing(self) -> None:
        with self.client.get("/nope", catch_response=True) as resp:
            check_json(resp, {"error": "not found", "path": "/nope"}, status=404)


if __name__ == "__main__":  # a quick check of the expected bodies
    print(json.dumps(asgi_site.item(3)))
