"""A Starlette application for tests/test_asgi.py and tests/test_websocket.py."""

import contextlib
import os

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

FILE = os.environ.get("TEST_FILE", __file__)
MARKERS = os.environ.get("TEST_MARKERS", "/tmp")


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"started_by": os.getpid()}


async def home(request: Request):
    return PlainTextResponse("starlette home")


async def user(request: Request):
    return JSONResponse({"id": int(request.path_params["id"]), "q": request.query_params.get("q")})


async def state(request: Request):
    return JSONResponse({"started_by": request.state.started_by, "pid": os.getpid()})


async def stream(request: Request):
    async def numbers():
        for i in range(5):
            yield f"{i}\n"
    return StreamingResponse(numbers(), media_type="text/plain")


async def upload(request: Request):
    size = 0
    async for piece in request.stream():
        size += len(piece)
    return JSONResponse({"size": size})


async def file(request: Request):
    return FileResponse(FILE)


def write_marker(name):
    with open(os.path.join(MARKERS, name), "w") as f:
        f.write("done")


async def background(request: Request):
    return PlainTextResponse("queued", background=BackgroundTask(write_marker, request.query_params["name"]))


async def echo(ws: WebSocket):
    await ws.accept(subprotocol=(ws.scope["subprotocols"] or [None])[0])
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                write_marker(f"ws-closed-{msg['code']}")
                return
            if msg.get("text") is not None:
                await ws.send_text(msg["text"])
            else:
                await ws.send_bytes(msg["bytes"])
    except WebSocketDisconnect as exc:
        write_marker(f"ws-closed-{exc.code}")


async def deny(ws: WebSocket):
    await ws.close(code=1008)


app = Starlette(routes=[
    Route("/", home), Route("/users/{id:int}", user), Route("/state", state), Route("/stream", stream),
    Route("/upload", upload, methods=["POST"]), Route("/file", file), Route("/background", background),
    WebSocketRoute("/ws", echo), WebSocketRoute("/deny", deny),
], lifespan=lifespan)


class MarkingMiddleware(BaseHTTPMiddleware):
    """Starlette's BaseHTTPMiddleware: an anyio task group entered before the first await."""

    async def dispatch(self, request, call_next):
        response = await call_next(request)
        response.headers["x-middleware"] = "1"
        return response


with_middleware = Starlette(routes=[Route("/", home)], middleware=[Middleware(MarkingMiddleware)])
