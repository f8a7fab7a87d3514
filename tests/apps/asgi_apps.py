"""ASGI applications the end-to-end tests serve (tests/test_asgi.py)."""

import asyncio
import json
import os


async def raw(scope, receive, send):
    """A raw ASGI 3 application: echoes what it saw, streams, fails on demand."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["booted"] = os.getpid()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    path = scope["path"][len(scope["root_path"]):]
    if path.startswith("/scope"):
        info = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string", "state", "asgi", "extensions")}
        info["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
        info["raw_path"] = scope["raw_path"].decode("latin-1")
        info["query_string"] = scope["query_string"].decode("latin-1")
        info["asgi"] = scope["asgi"]
        info["extensions"] = sorted(scope["extensions"])
        info["state"] = dict(scope.get("state", {}))
        body = json.dumps(info).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/echo":
        chunks = []
        while True:
            m = await receive()
            assert m["type"] == "http.request", m
            chunks.append(len(m["body"]))
            if not m["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-chunks", str(len(chunks)).encode())]})
        await send({"type": "http.response.body", "body": str(sum(chunks)).encode()})
    elif path == "/stream":
        n = int(scope["query_string"] or b"3")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": b"part %d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big":  # 8 MiB in 64 KiB pieces: back-pressure on a slow reader
        piece = b"x" * 65536
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % (128 * 65536))]})
        for _ in range(128):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/forever":  # streams until the client goes away; records it in a file
        marker = scope["query_string"].decode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await asyncio.sleep(0.01)
        except OSError:
            with open(marker, "w") as f:
                f.write("disconnected")
            raise
    elif path == "/wait-disconnect":
        marker = scope["query_string"].decode()
        m = await receive()
        m = await receive()
        with open(marker, "w") as f:
            f.write(m["type"])
    elif path == "/raise-before":
        raise RuntimeError("boom before start")
    elif path == "/raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after start")
    elif path == "/nothing":
        return
    elif path == "/bad-header":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-evil", b"a\r\nset-cookie: x")]})
        await send({"type": "http.response.body", "body": b"no"})
    elif path == "/framing":  # the server alone decides the framing
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"transfer-encoding", b"chunked"), (b"connection", b"close"), (b"x-ok", b"1")]})
        await send({"type": "http.response.body", "body": b"hello"})
    elif path == "/both-framings":  # Content-Length and Transfer-Encoding from the app: the server picks one
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]})
        await send({"type": "http.response.body", "body": b"he", "more_body": True})
        await send({"type": "http.response.body", "body": b"llo"})
    elif path == "/sub/a.txt":  # what the static tests' docroot serves there (tests/test_drain.py's clients)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"file a\n"})
    elif path == "/trailers":
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"data", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")], "more_trailers": False})
    elif path == "/pathsend":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.pathsend", "path": scope["query_string"].decode()})
    elif path == "/sleep":  # suspends before it answers
        await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"slept"})
    elif path == "/in-task":  # asyncio.timeout, anyio cancel scopes need a current task from the start
        task = asyncio.current_task()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"task" if task is not None else b"no task"})
    elif path == "/status":  # the same fields under the status the query names, fields from a generator
        fields = ((n, v) for n, v in [(b"content-type", b"text/plain"), (b"x-same", b"1")])
        await send({"type": "http.response.start", "status": int(scope["query_string"] or b"200"), "headers": fields})
        await send({"type": "http.response.body", "body": b"status"})
    elif path == "/list-fields":  # fields as lists (unhashable): fine
        await send({"type": "http.response.start", "status": 200, "headers": [[b"x-list", b"1"]]})
        await send({"type": "http.response.body", "body": b"listed"})
    elif path == "/block":  # blocks the whole event loop: the master must see a hung worker
        import time
        time.sleep(float(scope["query_string"] or b"30"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello " + path.encode()})


async def websocket(scope, receive, send):
    """/ws-echo echoes text and bytes; /ws-deny answers the handshake with an HTTP response
    (the websocket.http.response extension)."""
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"] == "/ws-deny":
        assert "websocket.http.response" in scope["extensions"]
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"token"})
        return
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": m.get("text"), "bytes": m.get("bytes")})


async def no_lifespan(scope, receive, send):
    """An application that raises on the lifespan scope (tolerated by --lifespan auto)."""
    if scope["type"] != "http":
        raise ValueError("only http here")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"plain"})


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"never"})
