# cython: language_level=3, boundscheck=False, wraparound=False, auto_pickle=False
"""Cython twin of the connection's hot path (prefork/workers/connection.py, `PyCore`):
`on_readable` → parser → `serve` → `deliver` → send, the common keep-alive request, in C.

`ConnectionCore` is the base of `CConnection`: it holds the state that path reads and
writes as C fields (the rest of the connection's slots, and every other method, are the
Python class's), and its three methods are line for line the pure twin's. What differs is
only how they do it: a plain non-blocking socket.socket is read with recv(2) into a C
buffer and written with one sendmsg(2) of the head and the body (no joined copy); any
other socket (TLS, a test's) through its recv/send methods, as the pure twin does. Every
path the pure twin leaves to a Python method (a PROXY header, bodies that are taken as
they arrive, several requests, errors, output waiting for the socket) calls the same
Python method here. A difference between the twins is a bug: the connection tests run on
both (ids py-conn / c-conn) and tests/test_conn_twins.py compares them.

The worker's state that the path reads and writes (its clock, counters, hang watch, the
handler, the head memo, the access log) is a `WorkerState`, the base of the epoll
Worker (and of the tests' fake workers): C fields here too, attributes for Python.
"""

import logging
import socket as _socket_mod

cimport cython
from collections import deque
from itertools import islice

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno

cdef extern from "<errno.h>":
    int EWOULDBLOCK

from prefork.apps.response import error_response
from prefork.http.core import HEAD_ONLY
from prefork.http.errors import ResponseHeadError

cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_recv "recv" (int fd, void *buf, size_t n, int flags)
    int MSG_NOSIGNAL

cdef extern from *:
    """
    #include <sys/socket.h>
    #include <sys/uio.h>
    /* head then body in one sendmsg(2); -1 and errno as sendmsg's. */
    static Py_ssize_t prefork_send2(int fd, const char *a, Py_ssize_t na, const char *b, Py_ssize_t nb) {
        struct iovec iov[2];
        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        iov[0].iov_base = (void *)a; iov[0].iov_len = (size_t)na;
        iov[1].iov_base = (void *)b; iov[1].iov_len = (size_t)nb;
        msg.msg_iov = iov;
        msg.msg_iovlen = nb ? 2 : 1;
        return sendmsg(fd, &msg, MSG_NOSIGNAL);
    }
    """
    Py_ssize_t prefork_send2(int fd, const char *a, Py_ssize_t na, const char *b, Py_ssize_t nb) nogil

log = logging.getLogger("prefork.error")

# Connection states: connection.py's (it asserts that they agree).
cdef enum:
    _OPEN = 0
    _CLOSING = 1
    _CLOSED = 3
    _RECV_SIZE = 65536  # connection.RECV_SIZE
OPEN, CLOSING, CLOSED, RECV_SIZE = _OPEN, _CLOSING, _CLOSED, _RECV_SIZE

cdef char _rbuf[_RECV_SIZE]  # one worker thread reads at a time (the loop's)

cdef object _socket = _socket_mod.socket
cdef object _head_only = HEAD_ONLY
cdef object _error_response = error_response
cdef object _deque = deque
cdef object _islice = islice

CORE_SLOTS = (
    "worker", "sock", "fd", "parser", "out", "pending", "state", "last_active", "writing",
    "busy", "body", "spooled", "spool_req", "proxy", "head_started", "fused", "with_conn",
    "cork", "served",
)


WORKER_SLOTS = (
    "now", "busy_since", "current", "handler", "heads", "access", "by_status", "stopping", "requests",
)


cdef class WorkerState:
    """The worker's state the connections' hot path uses (see connection.WorkerState)."""
    cdef public double now, busy_since
    cdef public object current, handler, heads, access, by_status
    cdef public bint stopping
    cdef public long long requests


cdef class ConnectionCore:
    cdef public WorkerState worker
    cdef public object sock, parser, out, pending, body, spooled, spool_req, proxy, cork
    cdef public int fd, state
    cdef public double last_active, head_started
    cdef public bint writing, busy, fused, with_conn
    cdef public Py_ssize_t served

    def on_readable(self):
        cdef object data, parser, reqs
        cdef WorkerState worker
        cdef Py_ssize_t n
        if self.busy:
            self.hold()
            return
        if type(self.sock) is _socket and self.state != _CLOSED:
            # recv(2) into the C buffer: sock.recv's result. (Closed, the descriptor may
            # be another connection's by now: the socket's recv says EBADF, as in PyCore.)
            while True:
                n = c_recv(self.fd, _rbuf, _RECV_SIZE, 0)
                if n >= 0:
                    break
                if errno == EINTR:
                    continue
                if errno == EAGAIN or errno == EWOULDBLOCK:
                    return
                self.close()
                return
            data = PyBytes_FromStringAndSize(_rbuf, n)
        else:
            try:
                data = self.sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
        worker = self.worker
        self.last_active = worker.now
        if self.state != _OPEN:  # lingering, or closing after an answer: drop input
            if not data:
                self.close()
            return
        if not data:  # the client closed its side: finish what it asked for, then close
            if self.out or self.pending:
                self.state = _CLOSING
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
                self.head_started = worker.now
        else:
            self.head_started = 0.0
        if parser.pending is not None or self.spool_req is not None:
            self.collect_body(reqs)
            if self.state == _CLOSED:
                return
        if reqs:
            if self.pending is not None or self.out:
                self.pending.extend(reqs)
            elif len(reqs) == 1 and self.fused and not self.spooled:
                self._serve(reqs)  # the common case: one request, answered by the fused path
            else:
                self.answer(reqs)
        if parser.error is not None and self.state == _OPEN and self.pending is None:
            self.reject(parser.error)
        if self.out or self.writing or self.state != _OPEN or parser.pending is not None:
            self.after_write()  # (else it has nothing to do: read on)

    def serve(self, reqs):
        """The fused path (see PyCore.serve)."""
        self._serve(reqs)

    cdef _serve(self, reqs):
        cdef WorkerState worker = self.worker
        cdef object handler = worker.handler
        cdef object req, resp
        cdef Py_ssize_t n = len(reqs)
        cdef Py_ssize_t i = 0
        for req in reqs:
            i += 1
            worker.current = req
            worker.busy_since = worker.now
            try:
                resp = handler(req, self) if self.with_conn else handler(req)
            except Exception:
                log.exception("error handling %s %s", req.method, req.target)
                resp = _error_response(500, "Internal Server Error")
            worker.busy_since = 0.0
            worker.current = None
            if not self._deliver(req, resp, worker.now, i < n):
                return
            if i < n and (self.out or self.state != _OPEN):
                if self.state == _OPEN:  # the socket is full: the rest wait their turn
                    self.pending = _deque(_islice(reqs, i, None))
                return

    def deliver(self, req, resp, t0, bint more):
        """The fused path's answer (see PyCore.deliver)."""
        return self._deliver(req, resp, t0, more)

    @cython.boundscheck(True)  # by_status[status // 100]: an IndexError, as in the pure twin
    @cython.wraparound(True)
    cdef bint _deliver(self, req, resp, t0, bint more) except -1:
        cdef WorkerState worker = self.worker
        cdef object body = resp.body
        cdef object hit = None
        cdef object block, key, mode, keep, status, data, access
        cdef bytes head
        cdef list by_status
        cdef Py_ssize_t size, sent, i, total
        if type(body) is bytes:
            block = resp.block
            if block is None:
                try:
                    block = (<object>worker).header_block(resp.headers)
                except ResponseHeadError:
                    block = None  # answered() refuses it, with its log line
            if block is not None:
                key = (block, resp.status, PyBytes_GET_SIZE(body), req.method, req.version,
                       req.keep_alive and not worker.stopping)
                hit = (<dict?>worker.heads).get(key)
                if hit is None:
                    hit = _memo(worker, key)
        if hit is None:
            return self.answered(req, resp, t0, more)
        head, mode, keep = <tuple?>hit
        status = resp.status
        by_status = worker.by_status
        i = status // 100
        by_status[i] = by_status[i] + 1
        if mode == _head_only:
            size = 0
        else:
            size = PyBytes_GET_SIZE(body)
        access = worker.access
        if access is not None:
            access.log(self, req, status, size, t0)
        if self.out or self.cork is not None:
            self.write(head + body if size else head)
        elif type(self.sock) is _socket and self.state != _CLOSED:
            # write(), in C: head and body in one sendmsg(2)
            total = PyBytes_GET_SIZE(head) + size
            while True:
                sent = prefork_send2(self.fd, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head),
                                     PyBytes_AS_STRING(body), size)
                if sent >= 0:
                    break
                if errno == EINTR:
                    continue
                if errno == EAGAIN or errno == EWOULDBLOCK:
                    sent = 0
                else:
                    sent = -1
                    self.close()
                break
            if 0 <= sent < total:
                data = head + body if size else head
                self.out.append(memoryview(data)[sent:])
        else:  # write(), inlined: the pure twin's
            data = head + body if size else head
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
        return self.state != _CLOSED


cdef object _memo = None  # connection.memo_head, given by connection.py (no import cycle)


def configure(memo_head):
    """connection.py hands over memo_head (the rule lives once)."""
    global _memo
    _memo = memo_head
