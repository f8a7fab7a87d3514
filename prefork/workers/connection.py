"""One client connection: receive buffer → parser → handler → output queue / sendfile.

The HTTP rules (response heads and framing, error answers, chunks, 100 Continue, the
keep/close/linger decision, timeouts, how long a lingering close lasts) are the sans-I/O
core's (prefork.http.core), shared with the asyncio worker; this module does the I/O.
The rules it keeps:
- Requests on a connection are answered in order. While output is waiting for the socket
  (EPOLLOUT), no new request is handled and nothing more is read: a client that does not
  read cannot make the worker buffer without bound.
- The common case costs one recv, one feed and one send: a response goes out directly
  when nothing is queued before it; the queue is only for what the socket refused.
  Answers to requests read together (pipelined) are gathered and go out in one send
  (`answer`, `cork`, up to CORK_MAX bytes), as nginx does.
- The fused path (`serve`) answers the common case, a body of bytes, without the general
  machinery: the head is core.response_head's, remembered by the worker (`heads`); the
  bookkeeping is the general path's. Anything else goes through answered() in its turn.
  `fused` turns it off per connection (a subclass whose socket needs more than send()).
  That path (on_readable → serve → deliver) has two twins: PyCore here, the reference,
  and prefork/workers/_conn.pyx in Cython, which the workers use (PREFORK_CONN=python:
  the pure one).
  Its answer-writing (`deliver`) also writes the thread pool's answers, in the loop thread.
- After a protocol error the client gets its status with `Connection: close`; then the
  write side is shut and what the client still sends is read and dropped for a moment
  (lingering close), so that the answer is not destroyed by a reset.
- Bodies are read before the handler runs. One that may grow past the spool threshold
  is taken from the parser as it arrives (`take_body`) and kept in a temporary file.
  `Expect: 100-continue` is answered when the request's turn comes: `100 Continue` if the
  handler's `check_expect` (when it has one) accepts it, else its final answer and close.
- With a thread pool (`--threads N`), one request per connection is in the pool at a
  time. The connection stays registered for reading meanwhile (a request/answer client
  sends nothing until it has its answer, so that costs no epoll_ctl); only if it does send
  or close meanwhile does it leave epoll (`hold`), until its answer is queued.
- A stream body is pulled from its iterable only as fast as the socket takes it.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections import deque
from itertools import islice

from prefork.http.core import (
    CHUNKED, CONTINUE, HEAD_ONLY, LAST_CHUNK, LINGER as AFTER_LINGER, after_response, chunk as chunk_of, error_answer,
    fit_length, refuse_head, response_head,
)
from prefork.http.errors import ParseError, RequestTimeout, ResponseHeadError  # noqa: F401
from prefork.proxy import ProxyProtocolError, claims_forwarding, forwarded_client, parse_proxy_header
from prefork.apps.response import FileBody, Parts, Response, StreamBody, error_response

log = logging.getLogger("prefork.error")

RECV_SIZE = 65536
SENDFILE_CHUNK = 1 << 30  # os.sendfile moves at most ~2 GiB a call; ask for 1 GiB
MSG_MORE = getattr(socket, "MSG_MORE", 0)
SPOOL_THRESHOLD = 1 << 20  # the default of --spool-threshold
STREAM_BURST = 1 << 20  # bytes one flush pulls from a stream before the loop serves others
# Answers to requests read together are gathered (corked) and sent together, up to this
# many bytes; a larger answer, or a file or stream body, sends what was gathered first.
CORK_MAX = 1 << 16
# Response heads the fused path remembers (core.response_head's results, by what decides
# them); the worker empties the memo when its Date changes, once a second.
HEADS_MAX = 256

# How a StreamBody is framed (its `length`, set by respond()): exactly `length` bytes,
# chunked (-1), or delimited by the close (None).
EXACT, CHUNK, UNTIL_CLOSE = range(3)
_EMPTY = iter(())

class InsufficientStorage(ParseError):
    """No room to keep a request body (the spool folder's disk is full). 507 rather than
    503: it names the cause in the access log and the metrics, and no other path answers it."""
    status = 507
    reason = "Insufficient Storage"


# Connection states.
OPEN, CLOSING, LINGER, CLOSED = range(4)


# The connection's state that its hot path (on_readable → serve → deliver) reads and
# writes: the slots of the pure core (PyCore), the C fields of the Cython one.
CORE_SLOTS = (
    "worker", "sock", "fd", "parser", "out", "pending", "state", "last_active", "writing",
    "busy", "body", "spooled", "spool_req", "proxy", "head_started", "fused", "with_conn",
    "cork", "served",
)
# The worker's state that the hot path reads and writes (WorkerState).
WORKER_SLOTS = (
    "now", "busy_since", "current", "handler", "heads", "access", "by_status", "stopping", "requests",
)
# The rest of a connection's state.
SLOTS = (
    "addr", "linger_on_close", "spool", "spool_size", "continued", "local", "trusted", "held",
    "corked",
)


class ConnectionBase:
    """Everything of a connection but its hot path: Connection is this over one of the two
    twins of that path, PyCore (pure) or prefork.workers._conn.ConnectionCore (Cython)."""

    scheme = "http"  # of a request that no trusted proxy speaks for; TLSConnection: https
    tls = None  # prefork.tls.TLSInfo on a TLS connection

    __slots__ = ()

    # The fused path (serve) for this class of connection; a subclass whose socket needs
    # more than send() (TLS) sets it False.
    FUSED = True

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
        self.served = 0  # requests answered on this connection
        self.busy = False  # a request of ours is in the thread pool
        self.held = False  # out of epoll until the pool's answer (see hold)
        # The body of the request being handled when the parser's Request.body is not it
        # (bytes gathered here, or a temporary file); handlers read it through `body`.
        self.body = None
        self.spooled = None  # completed request → its body (bytes or file), until handled
        self.spool_req = None  # the parser's pending request whose body we are taking
        self.spool = None  # list of bytes, then a temporary file once over the threshold
        self.spool_size = 0
        self.continued = None  # the request that got its 100 Continue or refusal
        self.local = None  # getsockname(), asked once
        self.head_started = 0.0  # when the head now arriving began; 0.0: none is arriving
        self.trusted = worker.trusted.trusts(addr)  # may it speak for the client?
        # Bytes of a PROXY protocol header still expected from a trusted peer, else None.
        self.proxy = b"" if worker.proxy_protocol and self.trusted else None
        # May the answers go through serve()? Not with a thread pool; the worker must keep
        # the head memo (`heads`).
        self.fused = self.FUSED and getattr(worker, "heads", None) is not None \
            and getattr(worker, "pool", None) is None
        self.with_conn = getattr(worker.handler, "wants_connection", False)  # handler(req, conn)
        self.cork = None  # answers gathered for one send, while answering several requests
        self.corked = 0  # their bytes

    # ------------------------------------------------------------------ events

    def on_writable(self) -> None:
        self.last_active = self.worker.now
        if self.flush() and self.pending is not None:
            pending = self.pending
            self.pending = None
            self.answer(pending)
            if self.pending is None and self.state == OPEN and self.parser.error is not None:
                self.reject(self.parser.error)
        self.after_write()

    def finish(self, req, resp: Response, t0: float) -> None:
        """The thread pool's answer to `req` (called in the loop thread)."""
        self.busy = False
        if self.state == CLOSED:  # closed while the handler ran
            _release(resp)
            self._drop_body()
            return
        self.last_active = self.worker.now
        if self.held:
            self.held = False
            self.worker.resume(self)
        pending = self.pending
        self.pending = None
        # Answered as serve() answers (the head memo, one send), unless the class says not.
        deliver = self.deliver if self.FUSED else self.answered
        if deliver(req, resp, t0, bool(pending)) and pending:
            if self.out:
                self.pending = pending
            else:
                self.handle(pending)
        if self.pending is None and not self.busy and self.state == OPEN and self.parser.error is not None:
            self.reject(self.parser.error)
        self.after_write()

    def hold(self) -> None:
        """Input (or a close) while our request is in the pool: nothing is read until its
        answer is queued, as before it was handled; out of epoll meanwhile, else the event
        would fire on every pass."""
        self.held = True
        self.worker.pause(self)

    def proxy_header(self, data: bytes) -> bytes:
        """Take the PROXY header that a trusted peer sends first; what follows it."""
        buf = self.proxy + data
        try:
            found = parse_proxy_header(buf)
        except ProxyProtocolError as exc:
            log.warning("closing a connection from %s: %s", _peer(self.addr), exc)
            self.close()
            return b""
        if found is None:
            self.proxy = buf
            return b""
        used, client = found
        self.proxy = None
        if client is not None:
            self.addr = client
        return buf[used:]

    def client(self, req) -> tuple:
        """(client host, scheme) for `req`: the peer's, unless a trusted peer says otherwise
        in Forwarded / X-Forwarded-For / X-Forwarded-Proto."""
        addr = self.addr
        host = addr[0] if isinstance(addr, tuple) else ""
        if self.trusted and self.worker.trusted and claims_forwarding(req):
            return forwarded_client(req.headers, host, self.worker.trusted)
        return host, "http"

    def time_out(self, what: str) -> None:
        """A request that did not arrive in time: 408, then close."""
        self.reject(RequestTimeout(what))
        self.after_write()

    # ------------------------------------------------------------------ bodies

    def collect_body(self, reqs) -> None:
        """Take a possibly large body from the parser as it arrives; over the spool
        threshold it goes to a temporary file. Called after a feed that left a body
        pending or completed the one being taken."""
        parser = self.parser
        sreq = self.spool_req
        try:
            if sreq is not None and reqs and reqs[0] is sreq:  # its last bytes arrived
                spool = self.spool
                if type(spool) is list:
                    spool.append(sreq.body)
                    body = b"".join(spool)
                else:
                    spool.write(sreq.body)
                    spool.seek(0)
                    body = spool
                if self.spooled is None:
                    self.spooled = {}
                self.spooled[sreq] = body
                self.spool_req = self.spool = None
            p = parser.pending
            if p is None:
                return
            threshold = getattr(self.worker, "spool_threshold", SPOOL_THRESHOLD)
            if p is not self.spool_req:
                if not p.chunked and p.content_length <= threshold:
                    return  # the parser holds it; it cannot grow past the threshold
                self.spool_req = p
                self.spool_size = 0
                self.spool = [] if p.chunked else tempfile.TemporaryFile()
            data = parser.take_body()
            if data:
                spool = self.spool
                if type(spool) is list:
                    spool.append(data)
                    self.spool_size += len(data)
                    if self.spool_size > threshold:
                        f = tempfile.TemporaryFile()
                        self.spool = f  # before the write: close() must release it
                        f.write(b"".join(spool))
                else:
                    spool.write(data)
        except OSError as exc:  # no room for the temporary file (ENOSPC, EMFILE...)
            self.spool_failed(reqs, exc)

    def spool_failed(self, reqs, exc: OSError) -> None:
        """A body could not be kept: drop what was kept of it; its request is answered 507
        (with `Connection: close`) when its turn comes, after the requests before it, the
        way a protocol error is; nothing after it is answered."""
        log.error("cannot keep a request body from %s: %s", _peer(self.addr), exc)
        sreq, spool = self.spool_req, self.spool
        self.spool_req = self.spool = None
        if spool is not None and type(spool) is not list:
            _release(spool)  # its buffered bytes cannot be written either: close() raises
        if sreq is not None and reqs and reqs[0] is sreq:
            del reqs[:]  # completed, but without all its body: never handled
        self.parser.error = InsufficientStorage(str(exc))

    def _drop_body(self) -> None:
        body = self.body
        if body is not None:
            self.body = None
            if type(body) is not bytes:
                _release(body)

    def local_address(self):
        """The server's own address for this connection (getsockname, asked once)."""
        local = self.local
        if local is None:
            try:
                local = self.sock.getsockname()
            except OSError:
                local = ("", 0)
            self.local = local
        return local

    # ------------------------------------------------------------------ requests

    def answer(self, reqs) -> None:
        """Answer requests read together, in order: by the fused path when it may take
        them, else by handle(). The answers to several go out together, in one send (up to
        CORK_MAX bytes), not one send each."""
        serve = self.serve if self.fused and not self.spooled else self.handle
        if len(reqs) == 1:
            serve(reqs)
            return
        self.cork = []
        try:
            serve(reqs)
        finally:
            self.uncork()
            self.cork = None

    def handle(self, reqs) -> None:
        """Answer requests in order until one has to wait for the socket (or the pool)."""
        worker = self.worker
        handler = worker.handler
        with_conn = getattr(handler, "wants_connection", False)
        pool = getattr(worker, "pool", None)
        n = len(reqs)
        i = 0
        for req in reqs:
            i += 1
            if self.spooled:
                self.body = self.spooled.pop(req, None)
            if pool is not None:
                self.pending = deque(islice(reqs, i, None))
                self.busy = True
                if self.writing:  # still registered for EPOLLOUT: it would fire at once
                    self.writing = False
                    worker.watch_read(self)
                pool.submit(self, req)
                return
            worker.current = req
            worker.busy_since = worker.now
            try:
                resp = handler(req, self) if with_conn else handler(req)
            except Exception:
                log.exception("error handling %s %s", req.method, req.target)
                resp = error_response(500, "Internal Server Error")
            worker.busy_since = 0.0
            worker.current = None
            if not self.answered(req, resp, worker.now, i < n):  # timed from this loop pass
                return
            if self.out and i < n:
                self.pending = deque(islice(reqs, i, None))
                return

    def call_handler(self, req) -> Response:
        """Run the handler for `req` (in a pool thread); never raises."""
        try:
            if self.with_conn:
                return self.worker.handler(req, self)
            return self.worker.handler(req)
        except Exception:
            log.exception("error handling %s %s", req.method, req.target)
            return error_response(500, "Internal Server Error")

    def answered(self, req, resp: Response, t0: float, more: bool) -> bool:
        """Send `resp`; False when the connection takes no more requests."""
        worker = self.worker
        if self.state == CLOSED:
            _release(resp)
            self._drop_body()
            return False
        keep = self.respond(req, resp, req.keep_alive and not worker.stopping, t0)
        worker.requests += 1
        self.served += 1
        if self.body is not None:
            self._drop_body()
        if self.state == CLOSED:
            return False
        if not keep:
            self.ends(more)
            return False
        return True

    def ends(self, more: bool) -> None:
        """The answer just written is the connection's last (`more`: requests after it
        were read and go unanswered)."""
        if self.state == CLOSED:
            return
        self.state = CLOSING
        # Its body was read whole before the handler ran: the core says close, or
        # linger when later pipelined requests go unanswered (so that the close
        # does not reset the connection before the client reads this answer).
        self.linger_on_close = after_response(False, True, more) == AFTER_LINGER

    def respond(self, req, resp: Response, keep: bool, t0: float = 0.0) -> bool:
        """Queue the head and body of `resp`; returns `keep`, turned off when the body is
        delimited by the close."""
        worker = self.worker
        try:
            block = resp.block
            if block is None:
                block = worker.header_block(resp.headers)
            status_line = worker.status_line(resp.status)
        except ResponseHeadError as exc:
            _release(resp)
            resp = error_response(*refuse_head(req.method, req.target, exc))
            block = worker.header_block(resp.headers)
            status_line = worker.status_line(resp.status)
        status = resp.status
        body = resp.body
        tbody = type(body)
        size = len(body) if tbody is bytes else resp.length  # Response.length, without its call
        head, mode, keep = response_head(req.method, req.version, keep, status_line, worker.date_block,
                                         block, status, size)
        head_only = mode == HEAD_ONLY
        if mode == CHUNKED:
            body.length = -1  # tells the stream to frame chunks
        worker.by_status[status // 100] += 1
        if worker.access is not None:
            worker.access.log(self, req, status, 0 if head_only else size, t0)
        if head_only:
            _release(resp)
            self.write(head)
            return keep
        if tbody is bytes:
            self.write(head + body if body else head)
        elif tbody is FileBody or tbody is Parts:
            if not body.count:
                body.close()
                self.write(head)
                return keep
            # MSG_MORE: the head waits for the first bytes of the body to share a packet.
            self.write(head, MSG_MORE)
            if self.state == CLOSED:  # sending the head failed; the body has no reader
                body.close()
            elif tbody is FileBody:
                self.write(body)
            else:
                self.out.extend(body.parts)
                self.flush()
        elif tbody is StreamBody:
            self.write(head)
            if self.cork:
                self.uncork()  # the stream is queued after the head, never before it
            if self.state == CLOSED:  # sending the head failed: nobody reads the stream
                _release(body)
            else:
                self.out.append(body)
                if len(self.out) == 1:
                    self.flush()
        else:
            self.write(head + bytes(body))
        return keep

    def reject(self, error) -> None:
        """Answer a protocol error, then close: the stream can no longer be trusted."""
        worker = self.worker
        log.info("%s from %s: %s", error.status, _peer(self.addr), error.detail)
        resp = error_response(error.status, error.reason)
        self.write(error_answer(worker.status_line(error.status), worker.date_block,
                                worker.header_block(resp.headers), resp.body))
        worker.requests += 1
        worker.by_status[error.status // 100] += 1
        self.state = CLOSING
        self.parser = None  # nothing more is read as requests

    # ------------------------------------------------------------------ output

    def write(self, item, flags: int = 0) -> None:
        if self.out:
            self.out.append(item)
            return
        cork = self.cork
        if cork is not None:
            if type(item) is bytes and self.corked + len(item) <= CORK_MAX:
                cork.append(item)
                self.corked += len(item)
                if flags:  # MSG_MORE: a file body follows at once
                    self.uncork(flags)
                return
            if cork:  # a larger answer, or a file: what was gathered goes first
                self.uncork(MSG_MORE)
                if self.state == CLOSED:
                    if type(item) is FileBody:
                        _release(item)  # nobody will send it
                    return
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

    def uncork(self, flags: int = 0) -> None:
        """Send the answers gathered so far, in one send; the cork stays on."""
        cork = self.cork
        if not cork:
            return
        data = cork[0] if len(cork) == 1 else b"".join(cork)
        cork.clear()
        self.corked = 0
        if self.state == CLOSED:
            return
        self.cork = None  # write() sends it (and queues what the socket refuses)
        try:
            self.write(data, flags)
        finally:
            self.cork = cork

    def flush(self) -> bool:
        """Send what is queued; True when the queue is empty. Bytes followed by more
        queued output go with MSG_MORE, so that a head and what follows share packets."""
        out = self.out
        sock = self.sock
        while out:
            item = out[0]
            try:
                if type(item) is StreamBody:
                    if not self.stream(item):
                        return False
                elif type(item) is FileBody:
                    if not self.send_file(item):
                        return False
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

    def send_file(self, item: FileBody) -> bool:
        """flush()'s step for a file: True once it has all gone out (and is closed); False
        or BlockingIOError when flush must stop here (the socket is full, or the connection
        was closed). TLSConnection overrides it: sendfile cannot encrypt."""
        while item.count:
            ask = min(item.count, SENDFILE_CHUNK)
            sent = os.sendfile(self.fd, item.fd, item.offset, ask)
            if sent == 0:  # the file shrank under us: the response is broken
                log.error("file ended early while sending; closing the connection")
                self.close()
                return False
            item.offset += sent
            item.count -= sent
            if sent < ask:  # the socket is full: another call now would only
                return False  # fail with EAGAIN (EPOLLOUT says when it has room)
        item.close()
        return True

    def stream(self, item: StreamBody) -> bool:
        """Send what the stream has until the socket is full (False) or it ends (True)."""
        sock = self.sock
        burst = STREAM_BURST
        while True:
            try:
                piece = self.pull(item)
            except Exception:
                log.exception("error while streaming a response body to %s; closing", _peer(self.addr))
                self.close()
                return False
            if piece is None:
                return True
            try:
                sent = sock.send(piece)  # another OSError: flush() closes the connection
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent < len(piece):
                self.out.appendleft(memoryview(piece)[sent:])
                return False
            burst -= sent
            if burst <= 0:  # let the loop serve other connections; EPOLLOUT brings us back
                return False

    @staticmethod
    def pull(item: StreamBody):
        """The next bytes of a stream, framed; None once it has all gone out."""
        if item.length == -1:  # set by respond(): chunked; then EXACT left of 0
            mode, left = CHUNK, 0
        elif item.length is None:
            mode, left = UNTIL_CLOSE, 0
        else:
            mode, left = EXACT, item.length
        try:
            chunk = next(item.chunks)
            while not chunk:
                chunk = next(item.chunks)
        except StopIteration:
            item.chunks = _EMPTY
            _release(item)
            if mode == CHUNK:
                item.length = None  # the last chunk goes out once; then nothing
                return LAST_CHUNK
            if mode == EXACT and left:
                raise ValueError(f"the body ended {left} bytes short of its Content-Length")
            return None
        if type(chunk) is not bytes:
            chunk = chunk.encode("utf-8") if type(chunk) is str else bytes(chunk)
        if mode == CHUNK:
            return chunk_of(chunk)
        if mode == EXACT:
            if len(chunk) >= left:
                chunk = fit_length(chunk, left)
                item.chunks = _EMPTY
                _release(item)
            item.length = left - len(chunk)
        return chunk

    def after_write(self) -> None:
        """Register for what the connection waits on next, or close it."""
        if self.state == CLOSED or self.busy:
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
        parser = self.parser
        if parser is not None and parser.pending is not None and self.pending is None:
            p = parser.pending
            if p.expect_continue and p is not self.continued:
                self.continued = p
                self.answer_expect(p)
                self.after_write()
                return
        if self.writing:
            self.writing = False
            self.worker.watch_read(self)

    def answer_expect(self, req) -> None:
        """It is the turn of a request that waits for `100 Continue` before its body:
        accept it, or answer it now (the handler's check_expect) and close."""
        check = getattr(self.worker.handler, "check_expect", None)
        resp = check(req) if check is not None else None
        if resp is None:
            self.write(CONTINUE)
            return
        self.respond(req, resp, False)
        self.worker.requests += 1
        if self.state != CLOSED:
            self.state = CLOSING
            # Answered before its body arrived: the client may send it anyway.
            self.linger_on_close = after_response(False, False, False) == AFTER_LINGER

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
        parser = self.parser
        return not self.out and self.pending is None and not self.busy and parser is not None \
            and parser.pending is None and not parser.buffered

    def close_idle(self) -> None:
        """Close a connection that looks idle, unless request bytes wait in the kernel:
        then they are read and answered instead (closing with unread input would reset
        the connection under the client's request). The caller tries again later."""
        try:
            waiting = self.sock.recv(1, socket.MSG_PEEK)
        except OSError:  # nothing waiting (EAGAIN), or the connection is already broken
            waiting = b""
        if waiting:
            self.on_readable()
        else:
            self.close()

    def close(self) -> None:
        """Release everything the connection holds, then the socket. Idempotent, and it
        never raises: what fails to close (a stream's close(), a spool file whose buffered
        bytes meet a full disk) is logged and the rest is released all the same."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        out = self.out
        while out:
            item = out.popleft()
            if type(item) is FileBody or type(item) is StreamBody:
                _release(item)
        self.pending = None
        spool, spooled = self.spool, self.spooled
        self.spool = self.spool_req = self.spooled = None
        if spool is not None and type(spool) is not list:
            _release(spool)
        if spooled:
            for body in spooled.values():
                if type(body) is not bytes:
                    _release(body)
        if self.body is not None and not self.busy:  # else the pool thread may still read it; finish() drops it
            self._drop_body()
        try:
            self.worker.forget(self)
        finally:
            try:
                self.sock.close()
            except OSError:
                pass


class PyCore:
    """The connection's hot path, pure twin: prefork.workers._conn.ConnectionCore is the
    Cython one, and a difference between them is a bug (the connection tests run on both,
    ids py-conn / c-conn; tests/test_conn_twins.py compares them)."""

    __slots__ = CORE_SLOTS

    def on_readable(self) -> None:
        if self.busy:
            self.hold()
            return
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
        if self.proxy is not None:
            data = self.proxy_header(data)
            if not data:
                return
        parser = self.parser
        reqs = parser.feed(data)
        if parser.buffered and parser.pending is None:
            if not self.head_started:
                self.head_started = self.worker.now
        else:
            self.head_started = 0.0
        if parser.pending is not None or self.spool_req is not None:
            self.collect_body(reqs)
            if self.state == CLOSED:
                return
        if reqs:
            if self.pending is not None or self.out:
                self.pending.extend(reqs)
            elif len(reqs) == 1 and self.fused and not self.spooled:
                self.serve(reqs)  # the common case: one request, answered by the fused path
            else:
                self.answer(reqs)
        if parser.error is not None and self.state == OPEN and self.pending is None:
            self.reject(parser.error)
        if self.out or self.writing or self.state != OPEN or parser.pending is not None:
            self.after_write()  # (else it has nothing to do: read on)

    def serve(self, reqs) -> None:
        """The fused path: handler → head and body as bytes → write, for answers whose body
        is bytes. The head is core.response_head's, remembered by the worker (`heads`, by
        block, status, length, method, version and keep-alive): the rules are the core's,
        this skips only their cost. The bookkeeping is handle()'s and answered()'s: the
        hang watch (current, busy_since), status counters, access log, request counts, and
        the keep/close/linger decision. An answer it does not take (not bytes, a head the
        application got wrong) goes through answered(), in its turn; the requests after one
        that has to wait for the socket wait their turn in `pending`, as in handle()."""
        worker = self.worker
        handler = worker.handler
        n = len(reqs)
        i = 0
        for req in reqs:
            i += 1
            worker.current = req
            worker.busy_since = worker.now
            try:
                resp = handler(req, self) if self.with_conn else handler(req)
            except Exception:
                log.exception("error handling %s %s", req.method, req.target)
                resp = error_response(500, "Internal Server Error")
            worker.busy_since = 0.0
            worker.current = None
            if not self.deliver(req, resp, worker.now, i < n):
                return
            if i < n and (self.out or self.state != OPEN):
                if self.state == OPEN:  # the socket is full: the rest wait their turn
                    self.pending = deque(islice(reqs, i, None))
                return

    def deliver(self, req, resp: Response, t0: float, more: bool) -> bool:
        """The fused path's answer, for serve() and the thread pool's finish(): a body of
        bytes goes out with its remembered head in one send; anything else (not bytes, a
        head the application got wrong) through answered(). False when the connection
        takes no more requests, as answered()."""
        worker = self.worker
        body = resp.body
        hit = None
        if type(body) is bytes:
            block = resp.block
            if block is None:
                try:
                    block = worker.header_block(resp.headers)
                except ResponseHeadError:
                    block = None  # answered() refuses it, with its log line
            if block is not None:
                key = (block, resp.status, len(body), req.method, req.version,
                       req.keep_alive and not worker.stopping)
                hit = worker.heads.get(key) or memo_head(worker, key)
        if hit is None:
            return self.answered(req, resp, t0, more)
        head, mode, keep = hit
        status = resp.status
        worker.by_status[status // 100] += 1
        if mode == HEAD_ONLY:
            size = 0
            data = head
        else:
            size = len(body)
            data = head + body
        access = worker.access
        if access is not None:
            access.log(self, req, status, size, t0)
        if self.out or self.cork is not None:
            self.write(data)
        else:  # write(), inlined: the common case
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = -1
                self.close()
            if 0 <= sent < len(data):
                self.out.append(memoryview(data)[sent:])
        worker.requests += 1
        self.served += 1
        if self.body is not None:  # a spooled body (through the pool; serve() has none)
            self._drop_body()
        if not keep:
            self.ends(more)
            return False
        return self.state != CLOSED


def memo_head(worker, key: tuple):
    """core.response_head for `key` (block, status, length, method, version, keep), kept
    in the worker's memo while it has room; None when the status is not one
    (answered() then refuses it, with its log line)."""
    block, status, size, method, version, keep = key
    try:
        status_line = worker.status_line(status)
    except ResponseHeadError:
        return None
    hit = response_head(method, version, keep, status_line, worker.date_block, block, status, size)
    heads = worker.heads
    if len(heads) < HEADS_MAX:
        heads[key] = hit
    return hit


class PyConnection(ConnectionBase, PyCore):
    """A connection over the pure core."""
    __slots__ = SLOTS


class PyWorkerState:
    """The worker's state that the connections' hot path reads and writes (WORKER_SLOTS):
    plain attributes here; C fields in the Cython twin, prefork.workers._conn.WorkerState,
    which the Cython core needs."""
    __slots__ = ()


CConnection = None  # a connection over the Cython core, when it is built
WorkerState = PyWorkerState  # the base of a worker (the epoll Worker, the tests' fakes)
try:
    from prefork.workers import _conn
except ImportError:  # not built: the pure core serves
    _conn = None
else:
    assert (_conn.CORE_SLOTS, _conn.WORKER_SLOTS) == (CORE_SLOTS, WORKER_SLOTS)
    assert (_conn.OPEN, _conn.CLOSING, _conn.CLOSED, _conn.RECV_SIZE) == (OPEN, CLOSING, CLOSED, RECV_SIZE)
    _conn.configure(memo_head)
    WorkerState = _conn.WorkerState  # either core works with it

    class CConnection(ConnectionBase, _conn.ConnectionCore):
        """A connection over the Cython core."""
        __slots__ = SLOTS


# The connection the workers make: over the Cython core unless it failed to build or
# PREFORK_CONN=python asks for the pure one.
Connection = CConnection if CConnection is not None and os.environ.get("PREFORK_CONN", "auto") != "python" \
    else PyConnection


def _release(thing) -> None:
    """thing.close(), logged instead of raised: a close path must go on whatever an
    application's close() or a file's last flush does."""
    try:
        thing.close()
    except Exception:
        log.exception("error closing %s", type(thing).__name__)


def _peer(addr) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr) or "unix socket"


def clf_time(now: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
