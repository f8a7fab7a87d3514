"""ASGI 3 (asgiref's ASGI 3.0, HTTP/WebSocket spec 2.4, lifespan 2.0): telling an ASGI
application from a WSGI one, the scopes the server builds, and lifespan.

No sockets here: the asyncio driver (prefork.workers.aio) calls these with what it read.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Dict, Optional
from urllib.parse import unquote

log = logging.getLogger("prefork.error")

ASGI = {"version": "3.0", "spec_version": "2.4"}
LIFESPAN_ASGI = {"version": "3.0", "spec_version": "2.0"}
HTTP_EXTENSIONS = {"http.response.pathsend": {}, "http.response.trailers": {}}
WS_EXTENSIONS = {"websocket.http.response": {}}


def detect_interface(obj: Any) -> str:
    """"asgi" for an ASGI 3 application (a coroutine function, or an object whose
    __call__ is one: Starlette, FastAPI, most middleware), else "wsgi"."""
    if inspect.iscoroutinefunction(obj):
        return "asgi"
    call = getattr(obj, "__call__", None)
    if call is not None and inspect.iscoroutinefunction(call):
        return "asgi"
    return "wsgi"


def request_scope(req, kind: str, scheme: str, client, server, root_path: str,
                  state: Optional[dict]) -> Dict[str, Any]:
    """The scope of an "http" or "websocket" connection for the parsed request `req`."""
    raw = req.path
    scope = {
        "type": kind,
        "asgi": ASGI,
        "http_version": "1.1" if req.version == "HTTP/1.1" else "1.0",
        "scheme": scheme,
        "path": unquote(raw) if "%" in raw else raw,
        "raw_path": raw.encode("latin-1"),
        "query_string": req.query.encode("latin-1"),
        "root_path": root_path,
        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in req.headers],
        "client": client,
        "server": server,
    }
    if kind == "http":
        scope["method"] = req.method
        scope["extensions"] = HTTP_EXTENSIONS
    else:
        protocols = []
        for name, value in req.headers:
            if name == "sec-websocket-protocol":
                protocols += [p.strip() for p in value.split(",") if p.strip()]
        scope["subprotocols"] = protocols
        scope["extensions"] = WS_EXTENSIONS
    if state is not None:
        scope["state"] = dict(state)
    return scope


class LifespanFailed(Exception):
    """lifespan.startup.failed (or an app that broke lifespan with --lifespan on)."""


class Lifespan:
    """One lifespan conversation: startup before the worker serves, shutdown after.

    `mode` "auto": an application that raises before answering the startup event does not
    support lifespan; it is served without one (a line in the log at info level).
    "on": that is a boot failure, like lifespan.startup.failed."""

    def __init__(self, app, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.state: Dict[str, Any] = {}
        self.supported = True
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._answer: Optional[asyncio.Future] = None
        self._task: Optional[asyncio.Task] = None
        self._error: Optional[str] = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": LIFESPAN_ASGI, "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except BaseException as exc:  # noqa: BLE001 - reported through the answer
            self._finish(exc)
        else:
            self._finish(None)

    def _finish(self, exc) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            if exc is not None:
                answer.set_exception(exc)
            else:
                answer.set_result(None)  # returned without answering

    async def _send(self, message) -> None:
        kind = message["type"]
        answer = self._answer
        if kind in ("lifespan.startup.complete", "lifespan.shutdown.complete"):
            if answer is not None and not answer.done():
                answer.set_result(kind)
        elif kind in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
            self._error = message.get("message", "")
            if answer is not None and not answer.done():
                answer.set_result(kind)
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")

    async def startup(self) -> None:
        """Raises LifespanFailed when the application says startup failed (or, with
        --lifespan on, breaks); returns when it is ready or does not do lifespan."""
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._task = loop.create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        try:
            kind = await self._answer
        except BaseException as exc:  # noqa: BLE001
            if self.mode == "auto":
                log.info("the application does not do ASGI lifespan (%s: %s); serving without it",
                         type(exc).__name__, exc)
                self.supported = False
                return
            raise LifespanFailed(f"lifespan startup raised {type(exc).__name__}: {exc}") from exc
        if kind is None:  # returned without a word: no lifespan
            self.supported = False
            if self.mode == "on":
                raise LifespanFailed("the application returned from lifespan without answering startup")
            return
        if kind == "lifespan.startup.failed":
            raise LifespanFailed(f"lifespan startup failed: {self._error}")

    async def shutdown(self, timeout: float) -> None:
        if not self.supported or self._task is None or self._task.done():
            return
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            kind = await asyncio.wait_for(self._answer, timeout)
        except asyncio.TimeoutError:
            log.error("lifespan shutdown did not finish in %.0fs", timeout)
            self._task.cancel()
            return
        except BaseException:  # noqa: BLE001
            log.exception("lifespan shutdown raised")
            return
        if kind == "lifespan.shutdown.failed":
            log.error("lifespan shutdown failed: %s", self._error)
