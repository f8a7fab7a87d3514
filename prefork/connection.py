"""One client connection: receive buffer → parser → handler → output queue / sendfile.

The rules it keeps:
- Requests on a connection are answered in order. While output is waiting for the socket
  (EPOLLOUT), no new request is handled and nothing more is read: a client that does not
  read cannot make the worker buffer without bound.
- The common case costs one recv, one feed and one send: a response goes out directly
  when nothing is queued before it; the queue is only for what the socket refused.
- After a protocol error the client gets its status with `Connection: close`; then the
  write side is shut and what the client still sends is read and dropped for a moment
  (lingering close), so that the answer is not destroyed by a reset.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from itertools import islice

from prefork.errors import ResponseHeadError
from prefork.response import NO_BODY_STATUSES, FileBody, Parts, Response, error_response

log = logging.getLogger("prefork.error")

RECV_SIZE = 65536
SENDFILE_CHUNK = 1 << 30  # os.sendfile moves at most ~2 GiB a call; ask for 1 GiB
LINGER_SECONDS = 2.0
MSG_MORE = getattr(socket, "MSG_MORE", 0)

CLOSE_END = "Connection: close\r\n\r\n"
KEEP_ALIVE_END = "Connection: keep-alive\r\n\r\n"

# Connection states.
OPEN, CLOSING, LINGER, CLOSED = range(4)


class Connection:
    __slots__ = (
        "worker", "sock", "fd", "addr", "parser", "out", "pending", "state",
        "last_active", "writing", "linger_on_close", "answered",
    )

    def __init__(self, worker, sock: socket.socket, addr) -> None:
        self.worker = worker
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.parser = worker.new_parser()
        self.out: deque = deque()  # bytes / memoryview / FileBody the socket has not taken
        self.pending = None  # deque of parsed requests waiting for the output to drain
        self.state = OPEN
        self.last_active = worker.now
        self.writing = False  # registered for EPOLLOUT instead of EPOLLIN
        self.linger_on_close = False
        self.answered = 0  # requests answered on this connection

    # ------------------------------------------------------------------ events

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.last_active = self.worker.now
        if self.state != OPEN:  # lingering, or closing after an answer: drop input
            if not data:
                self.close()
            return
        if not data:  # the client closed its side: finish what it asked for, then close
            if self.out or self.pending:
                self.state = CLOSING
            else:
                self.close()
            return
        parser = self.parser
        reqs = parser.feed(data)
        if reqs:
            if self.pending is None and not self.out:
                self.handle(reqs)
            else:
                self.pending.extend(reqs)
        if parser.error is not None and self.state == OPEN and self.pending is None:
            self.reject(parser.error)
        self.after_write()

    def on_writable(self) -> None:
        self.last_active = self.worker.now
        if self.flush() and self.pending is not None:
            pending = self.pending
            self.pending = None
            self.handle(pending)
            if self.pending is None and self.state == OPEN and self.parser.error is not None:
                self.reject(self.parser.error)
        self.after_write()

    # ------------------------------------------------------------------ requests

    def handle(self, reqs) -> None:
        """Answer requests in order until one has to wait for the socket."""
        worker = self.worker
        handler = worker.handler
        n = len(reqs)
        i = 0
        for req in reqs:
            i += 1
            worker.current = req
            worker.busy_since = worker.now
            try:
                resp = handler(req)
            except Exception:
                log.exception("error handling %s %s", req.method, req.target)
                resp = error_response(500, "Internal Server Error")
            worker.busy_since = 0.0
            worker.current = None
            keep = req.keep_alive and not worker.stopping
            self.respond(req, resp, keep)
            worker.requests += 1
            self.answered += 1
            if not keep:
                self.state = CLOSING
                # Later pipelined requests are not answered; linger so that the close
                # does not reset the connection before the client reads this answer.
                self.linger_on_close = i < n
                return
            if self.out and i < n:
                self.pending = deque(islice(reqs, i, None))
                return

    def respond(self, req, resp: Response, keep: bool) -> None:
        worker = self.worker
        try:
            block = resp.block
            if block is None:
                block = worker.header_block(resp.headers)
            status_line = worker.status_line(resp.status)
        except ResponseHeadError as exc:
            log.error("refused the response head for %s %s: %s", req.method, req.target, exc)
            resp.close()
            resp = error_response(500, "Internal Server Error")
            block = worker.header_block(resp.headers)
            status_line = worker.status_line(500)
        status = resp.status
        body = resp.body
        if status in NO_BODY_STATUSES:
            length = ""
            head_only = True
        else:
            length = f"Content-Length: {resp.length}\r\n"
            head_only = req.method == "HEAD"
        if not keep:
            end = CLOSE_END
        elif req.version == "HTTP/1.0":
            end = KEEP_ALIVE_END
        else:
            end = "\r\n"
        head = (status_line + worker.date_block + block + length + end).encode("latin-1")
        worker.by_status[status // 100] += 1
        if worker.access is not None:
            worker.access(self.addr, req, status, 0 if head_only else resp.length)
        if head_only:
            resp.close()
            self.write(head)
        elif type(body) is FileBody or type(body) is Parts:
            if not body.count:
                body.close()
                self.write(head)
                return
            # MSG_MORE: the head waits for the first bytes of the body to share a packet.
            self.write(head, MSG_MORE)
            if self.state == CLOSED:  # sending the head failed; the body has no reader
                body.close()
            elif type(body) is FileBody:
                self.write(body)
            else:
                self.out.extend(body.parts)
                self.flush()
        else:
            self.write(head + body if body else head)

    def reject(self, error) -> None:
        """Answer a protocol error, then close: the stream can no longer be trusted."""
        worker = self.worker
        log.info("%s from %s: %s", error.status, _peer(self.addr), error.detail)
        resp = error_response(error.status, error.reason)
        head = (worker.status_line(error.status) + worker.date_block + worker.header_block(resp.headers)
                + f"Content-Length: {len(resp.body)}\r\n" + CLOSE_END).encode("latin-1")
        self.write(head + resp.body)
        worker.requests += 1
        worker.by_status[error.status // 100] += 1
        self.state = CLOSING
        self.parser = None  # nothing more is read as requests

    # ------------------------------------------------------------------ output

    def write(self, item, flags: int = 0) -> None:
        if self.out:
            self.out.append(item)
            return
        if type(item) is FileBody:
            self.out.append(item)
            self.flush()
            return
        try:
            sent = self.sock.send(item, flags)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(item):
            self.out.append(memoryview(item)[sent:])

    def flush(self) -> bool:
        """Send what is queued; True when the queue is empty. Bytes followed by more
        queued output go with MSG_MORE, so that a head and what follows share packets."""
        out = self.out
        sock = self.sock
        while out:
            item = out[0]
            try:
                if type(item) is FileBody:
                    while item.count:
                        sent = os.sendfile(self.fd, item.fd, item.offset, min(item.count, SENDFILE_CHUNK))
                        if sent == 0:  # the file shrank under us: the response is broken
                            log.error("file ended early while sending; closing the connection")
                            self.close()
                            return False
                        item.offset += sent
                        item.count -= sent
                    item.close()
                else:
                    sent = sock.send(item, MSG_MORE if len(out) > 1 else 0)
                    if sent < len(item):
                        out[0] = item[sent:] if type(item) is memoryview else memoryview(item)[sent:]
                        return False
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                self.close()
                return False
            out.popleft()
        return True

    def after_write(self) -> None:
        """Register for what the connection waits on next, or close it."""
        if self.state == CLOSED:
            return
        if self.out:
            if not self.writing:
                self.writing = True
                self.worker.watch_write(self)
            return
        if self.state == CLOSING:
            if self.parser is None or self.linger_on_close:
                self.linger()
            else:
                self.close()
            return
        if self.writing:
            self.writing = False
            self.worker.watch_read(self)

    def linger(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.state = LINGER
        self.pending = None
        self.last_active = self.worker.now
        if self.writing:
            self.writing = False
            self.worker.watch_read(self)

    def idle_for(self, now: float) -> float:
        return now - self.last_active

    def is_idle(self) -> bool:
        """Between requests: nothing half-received, nothing to answer or send."""
        return not self.out and self.pending is None and self.parser is not None and \
            self.parser.pending is None and not self.parser_has_partial()

    def parser_has_partial(self) -> bool:
        # A request whose head is still arriving is not idle; the parser keeps those
        # bytes, so ask it. The twins expose it as `buffered` where built; fall back.
        return bool(getattr(self.parser, "buffered", 0))

    def close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        for item in self.out:
            if type(item) is FileBody:
                item.close()
        self.out.clear()
        self.pending = None
        self.worker.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass


def _peer(addr) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr) or "unix socket"


def clf_time(now: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
