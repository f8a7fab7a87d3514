"""The ASGI framework applications bench/run_all.py serves (the raw ASGI hello is
bench/hello.py's `asgi`), the same answers under every ASGI server:

  starlette  GET /starlette   the 13-byte text/plain "Hello, World!" (PlainTextResponse)
             GET /file        FileResponse of $BENCH_WWW/1024.bin (1 KiB; pathsend where offered)
             WS  /ws          echo every text or binary message back
  fastapi    GET /fastapi     {"message": "Hello, World!"} as JSON, from a typed FastAPI route
"""

import os

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

WWW = os.environ.get("BENCH_WWW", "")
FILE_1K = os.path.join(WWW, "1024.bin")


async def hello(request):
    return PlainTextResponse("Hello, World!")


async def file_1k(request):
    return FileResponse(FILE_1K, media_type="application/octet-stream")


async def ws_echo(ws):
    await ws.accept()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await ws.send_text(message["text"])
            else:
                await ws.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass


starlette = Starlette(routes=[Route("/starlette", hello), Route("/file", file_1k), WebSocketRoute("/ws", ws_echo)])

fastapi = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@fastapi.get("/fastapi")
async def fastapi_json() -> dict:
    return {"message": "Hello, World!"}
