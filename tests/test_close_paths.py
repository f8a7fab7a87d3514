"""Every way a connection ends, in-process over a socketpair, with both parsers.

The rules: a stream's iterable is closed exactly once whatever ends the response (PEP 3333
asks for it); close() may be called any number of times and never raises, even when what
it releases fails to close; a request body that cannot be spooled (the disk is full) gets
507 with `Connection: close` and the worker goes on.
"""

from __future__ import annotations

import errno
import os
import io
import logging
import socket

import pytest

from conftest import read_response, recv_until_closed
from prefork.workers import connection as connection_mod
from prefork.workers.connection import CLOSED, CLOSING, LINGER
from prefork.apps.response import Response, StreamBody
import test_connection

pair = test_connection.pair  # the fixture, bound here so that pytest finds it for this module's tests

pytestmark = pytest.mark.timeout(20)


class Recorded:
    """An iterable whose close() calls are counted; it raises after `fail_after` chunks."""

    def __init__(self, chunks, fail_after=None, close_raises=False):
        self.chunks = list(chunks)
        self.fail_after = fail_after
        self.close_raises = close_raises
        self.closes = 0

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_after:
                raise RuntimeError("the iterable fails on purpose")
            yield chunk

    def close(self):
        self.closes += 1
        if self.close_raises:
            raise RuntimeError("close fails on purpose")


def endless(size=1 << 16):
    while True:
        yield b"x" * size


class Endless(Recorded):
    def __iter__(self):
        return endless()


GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


# ---------------------------------------------------------------------- item 12: streams

def test_stream_whose_head_cannot_be_sent_is_closed_once(pair):
    it = Recorded([b"a", b"b"])
    worker, conn, client = pair(lambda req: Response(200, [], StreamBody(it)))
    client.sendall(GET)
    client.close()  # gone before the head goes out: the send fails with EPIPE
    conn.on_readable()
    assert conn.state == CLOSED
    assert it.closes == 1
    assert not conn.out  # nothing left queued on the closed connection
    conn.close()
    assert it.closes == 1


def test_stream_whose_client_goes_mid_stream_is_closed_once(pair):
    it = Endless([])
    worker, conn, client = pair(lambda req: Response(200, [], StreamBody(it)))
    client.sendall(GET)
    conn.on_readable()
    assert conn.out and conn.state != CLOSED  # the socket is full; the stream waits
    client.close()
    conn.on_writable()
    assert conn.state == CLOSED and it.closes == 1
    conn.close()
    assert it.closes == 1


def test_stream_cut_by_the_write_timeout_is_closed_once(pair):
    it = Endless([])
    worker, conn, client = pair(lambda req: Response(200, [], StreamBody(it)))
    client.sendall(GET)
    conn.on_readable()
    assert conn.out
    conn.close()  # what Worker._tick does to a client that stopped reading
    conn.close()
    assert it.closes == 1


def test_stream_whose_iterable_raises_is_closed_once_and_the_connection_closed(pair, caplog):
    it = Recorded([b"first", b"second"], fail_after=1)
    worker, conn, client = pair(lambda req: Response(200, [], StreamBody(it)))
    with caplog.at_level(logging.ERROR, logger="prefork.error"):
        client.sendall(GET)
        conn.on_readable()
    assert conn.state == CLOSED and it.closes == 1
    data = recv_until_closed(client)
    assert data.startswith(b"HTTP/1.1 200 OK") and b"first" in data
    assert not data.endswith(b"0\r\n\r\n")  # no clean end: the client sees the cut
    assert any("error while streaming" in r.getMessage() for r in caplog.records)


def test_stream_whose_close_raises_is_logged_and_closed_once(pair, caplog):
    it = Recorded([b"a"], close_raises=True)
    worker, conn, client = pair(lambda req: Response(200, [], StreamBody(it)))
    with caplog.at_level(logging.ERROR, logger="prefork.error"):
        client.sendall(GET)
        client.close()
        conn.on_readable()  # must not raise into the worker loop
        conn.close()
    assert conn.state == CLOSED and it.closes == 1
    assert worker.forgotten == [conn]


def test_stream_answered_on_a_connection_closed_meanwhile_is_closed_once(pair):
    it = Recorded([b"a"])
    worker, conn, client = pair(lambda req: Response(200, [], StreamBody(it)))
    conn.close()
    req = type("Req", (), {"method": "GET", "target": "/", "version": "HTTP/1.1", "keep_alive": True})()
    assert conn.answered(req, Response(200, [], StreamBody(it)), 0.0, False) is False
    assert it.closes == 1


# ---------------------------------------------------------------------- close() itself

class FailingFile(io.RawIOBase):
    """A spool file whose every write and close fails with ENOSPC."""

    def __init__(self):
        self.closes = 0

    def writable(self):
        return True

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def seek(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        self.closes += 1
        raise OSError(errno.ENOSPC, "No space left on device")


def test_close_twice_releases_once_and_forgets_once(pair):
    worker, conn, client = pair(lambda req: Response(200, [], b"ok"))
    conn.close()
    conn.close()
    assert worker.forgotten == [conn]
    assert conn.sock.fileno() == -1


def test_close_goes_on_when_the_spool_and_the_body_fail_to_close(pair, caplog):
    worker, conn, client = pair(lambda req: Response(200, [], b"ok"))
    spool, body, spooled = FailingFile(), FailingFile(), FailingFile()
    conn.spool = spool
    conn.body = body
    conn.spooled = {object(): spooled}
    with caplog.at_level(logging.ERROR, logger="prefork.error"):
        conn.close()
        conn.close()
    assert conn.state == CLOSED and worker.forgotten == [conn]
    assert conn.sock.fileno() == -1  # the socket was closed all the same
    assert (spool.closes, body.closes, spooled.closes) == (1, 1, 1)
    assert conn.spool is None and conn.body is None and not conn.spooled


# ---------------------------------------------------------------------- item 3: a full spool

class FullDisk:
    """tempfile.TemporaryFile on a full disk: buffered writes fail when they reach it."""

    def __init__(self, room=0):
        self.room = room
        self.files = []

    def __call__(self, *args, **kwargs):
        f = io.BufferedWriter(_Raw(self), buffer_size=4096)
        self.files.append(f)
        return f


class _Raw(io.RawIOBase):
    def __init__(self, disk):
        self.disk = disk
        self.data = bytearray()

    def writable(self):
        return True

    def seekable(self):
        return True

    def write(self, b):
        if len(self.data) + len(b) > self.disk.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.data += b
        return len(b)

    def seek(self, pos, whence=0):
        return 0


@pytest.mark.parametrize("room", [0, 100_000], ids=["at-once", "midway"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_body_that_cannot_be_spooled_gets_507_and_the_worker_goes_on(pair, monkeypatch, caplog, room, chunked):
    disk = FullDisk(room)
    monkeypatch.setattr(connection_mod.tempfile, "TemporaryFile", disk)
    calls = []

    def handler(req):
        calls.append(req.path)
        return Response(200, [], b"answered " + req.path.encode())

    worker, conn, client = pair(handler)
    worker.spool_threshold = 1000
    size = 300_000
    if chunked:
        head = b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        piece = b"%x\r\n%s\r\n" % (10_000, b"b" * 10_000)
    else:
        head = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
        piece = b"b" * 10_000
    with caplog.at_level(logging.INFO, logger="prefork.error"):
        # A request before it on the same connection is answered first.
        client.sendall(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n" + head)
        sent = 0
        while conn.state not in (CLOSING, LINGER, CLOSED) and sent < size:
            client.sendall(piece)
            sent += 10_000
            conn.on_readable()
        buf = bytearray()
        first = read_response(client, buf=buf)
        status, headers, body = read_response(client, buf=buf)
    assert first[::2] == (200, b"answered /first")
    assert status == 507 and headers["connection"] == "close"
    assert calls == ["/first"]  # the request whose body was lost never reaches the handler
    assert conn.state == LINGER  # the client may still be sending: linger, then close
    assert any("cannot keep a request body" in r.getMessage() for r in caplog.records)
    assert disk.files and all(f.closed for f in disk.files)  # no descriptor left behind
    conn.close()
    assert worker.forgotten == [conn]


def test_body_whose_last_bytes_cannot_be_spooled_gets_507_not_a_truncated_body(pair, monkeypatch):
    disk = FullDisk(room=1 << 30)
    monkeypatch.setattr(connection_mod.tempfile, "TemporaryFile", disk)
    seen = []
    worker, conn, client = pair(lambda req: seen.append(req.body) or Response(200, [], b"ok"))
    worker.spool_threshold = 1000
    size = 50_000
    client.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size + b"b" * (size - 10))
    while conn.parser.pending is None or conn.spool is None or conn.parser.buffered:
        conn.on_readable()
    got = sum(len(f.raw.data) for f in disk.files)
    assert disk.files and conn.spool_req is not None
    disk.room = 0  # the disk fills up just before the last bytes arrive
    client.sendall(b"b" * 10)
    conn.on_readable()
    status, headers, _ = read_response(client)
    assert status == 507 and headers["connection"] == "close"
    assert seen == []  # the handler never sees a truncated body
    assert got >= 0 and all(f.closed for f in disk.files)


# ---------------------------------------------------------------------- item 3, end to end

@pytest.fixture
def full_tmpfs(tmp_path):
    """A 64 KiB tmpfs (root only): the spool folder of a server whose disk is full."""
    import subprocess
    folder = tmp_path / "tiny"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_full_spool_folder_answers_507_and_the_worker_goes_on(start_server, full_tmpfs):
    srv = start_server("--spool-threshold", "1K", "--access-log", "-", env={"TMPDIR": str(full_tmpfs)})
    worker = srv.children()
    size = 1 << 20  # 16 times the room on the tmpfs
    for framing in ("length", "chunked"):
        with srv.connect(timeout=10) as s:
            s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            buf = bytearray()
            assert read_response(s, buf=buf)[::2] == (200, b"file a\n")
            if framing == "length":
                s.sendall(b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
            else:
                s.sendall(b"PUT /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            sent = 0
            try:
                while sent < size:
                    piece = b"z" * 32768
                    s.sendall(piece if framing == "length" else b"8000\r\n" + piece + b"\r\n")
                    sent += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and stopped reading; the answer is still there
            status, headers, _ = read_response(s, buf=buf)
            assert status == 507 and headers["connection"] == "close", (status, headers)
    with srv.connect() as s:
        s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[::2] == (200, b"file a\n")
    assert srv.children() == worker  # the same worker answered: it did not crash
    # The worker's log lines reach the test through a pipe and a reader thread: wait for them.
    srv.wait_for(r"cannot keep a request body", count=2)
    log = "".join(srv.log)
    assert log.count("cannot keep a request body") == 2
    assert "Traceback" not in log


# ---------------------------------------------------------------------- item 12, end to end

def _closes(log_file, timeout=15.0):
    """The close() lines, once they stop changing (a second close would come right after)."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (log_file.exists() and log_file.read_text()):
        time.sleep(0.05)
    time.sleep(0.3)
    return log_file.read_text().splitlines() if log_file.exists() else []


@pytest.fixture
def recorder(start_server, tmp_path):
    from conftest import APPS
    log_file = tmp_path / "closes.log"

    def start(*extra):
        return start_server(*extra, app="close_recorder:app", pythonpath=[APPS],
                            env={"CLOSE_LOG": str(log_file)}), log_file
    return start


def _start_stream(srv, path):
    s = srv.connect(timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
    assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
    return s


def test_stream_to_a_client_that_stops_reading_is_closed_once_by_the_write_timeout(recorder):
    srv, log_file = recorder("--write-timeout", "1")
    s = _start_stream(srv, "/stalled")  # then reads nothing more
    assert _closes(log_file) == ["closed /stalled"]
    srv.wait_for(r"not reading for \d+s")
    s.close()


def test_stream_to_a_client_that_goes_away_is_closed_once(recorder):
    srv, log_file = recorder()
    s = _start_stream(srv, "/gone")
    s.close()
    assert _closes(log_file) == ["closed /gone"]


def test_stream_whose_iterable_fails_is_closed_once_end_to_end(recorder):
    srv, log_file = recorder()
    s = _start_stream(srv, "/fail")
    recv_until_closed(s, limit=1 << 24)
    assert _closes(log_file) == ["closed /fail"]
    srv.wait_for(r"error while streaming")
    s.close()


def test_stream_in_flight_when_the_worker_stops_is_closed_once(recorder):
    import signal
    srv, log_file = recorder("--graceful-timeout", "1")
    s = _start_stream(srv, "/in-flight")  # the client reads nothing more: it never ends
    worker = srv.children()
    assert srv.stop(signal.SIGTERM) == 0
    assert _closes(log_file) == ["closed /in-flight"]
    assert not any(os.path.exists(f"/proc/{pid}") and
                   open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z" for pid in worker)
    s.close()
