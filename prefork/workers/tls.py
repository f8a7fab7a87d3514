"""TLS on the epoll worker: a Connection whose bytes go through a non-blocking SSLSocket.

Why an SSLSocket and not an SSLObject over memory BIOs: with the socket, OpenSSL reads and
writes the descriptor itself, one recv or send syscall per record batch and no copy
through Python objects; with BIOs every read is sock.recv → bio.write → obj.read and every
write obj.write → bio.read → sock.send: three Python calls and two extra copies a
direction. The BIO pair earns its cost only when the bytes do not come from a socket.

A connection goes through phases before it is an ordinary Connection:
- HELLO: the PROXY header first when the peer is trusted to send one (consumed exactly,
  by peeking, so that no byte of the handshake is taken with it); then the first byte is
  peeked: a TLS handshake record starts with 0x16. Anything else is plain HTTP sent to a
  TLS port: a plain-text 400 with `Connection: close` (nginx answers its 497), then close.
- HANDSHAKE: do_handshake() until it is done; epoll interest follows what TLS wants.
  The whole of both phases is bounded by --tls-handshake-timeout from the accept (the
  core's expired() says "handshake"); a failed handshake is one log line (the worker's
  flood filter limits them) and a close.
- READY: Connection's own code runs unchanged on a TLSSocket, whose recv and send turn
  "TLS wants to read / write" into BlockingIOError (remembering which, when it is the
  other direction than the call's: a KeyUpdate or a renegotiation attempt). What this
  class changes: files go out read in bounded chunks and written through TLS with
  back-pressure (sendfile cannot encrypt), decrypted bytes OpenSSL holds (pending()) are
  read without waiting for epoll, the close sends close_notify, and peeking for waiting
  requests looks at the raw socket. The fused fast path of a plain connection is not
  taken here (`fast` is False).
"""

from __future__ import annotations

import os
import socket
import ssl

from prefork.apps.response import FileBody
from prefork.http.errors import ParseError
from prefork.proxy import ProxyProtocolError, claims_forwarding, forwarded_client, parse_proxy_header
from prefork.tls import TLSInfo
from prefork.workers.connection import CLOSED, OPEN, STREAM_BURST, Connection, _peer, log

HELLO, HANDSHAKE, READY = range(3)
TLS_HANDSHAKE = 0x16  # the content type of a TLS record that carries a handshake
PROXY_PEEK = 536  # the longest PROXY v1 header is 107 bytes; v2 with TLVs fits in 536 here
FILE_CHUNK = 1 << 16  # bytes of a file read and encrypted at a time
_MSG_PEEK = socket.MSG_PEEK


class PlainHTTPOnTLSPort(ParseError):
    status = 400
    reason = "Bad Request: plain HTTP sent to an HTTPS port"  # the body says it


def take_proxy_header(sock: socket.socket, held: bytes):
    """Take the PROXY header from `sock`, and not one byte after it (the TLS handshake
    follows): (None, client address or None) once it is whole, else (the bytes taken so
    far, None). Raises ProxyProtocolError, BlockingIOError, or ConnectionResetError on EOF."""
    data = sock.recv(PROXY_PEEK, _MSG_PEEK)
    if not data:
        raise ConnectionResetError("closed before its PROXY header")
    buf = held + data
    found = parse_proxy_header(buf)
    if found is None:  # all of it belongs to the header
        sock.recv(len(data))
        return buf, None
    used, client = found
    sock.recv(used - len(held))
    return None, client


class TLSSocket(ssl.SSLSocket):
    """An SSLSocket for Connection's non-blocking code: "no data yet" is BlockingIOError, as
    on a plain socket; `want_read` / `want_write`: a send that waits for the socket to be
    readable, a recv that waits for it to be writable."""

    want_read = False
    want_write = False

    def recv(self, size=1024, flags=0):
        sslobj = self._sslobj
        if sslobj is None:  # after shutdown (a lingering close): raw bytes, dropped anyway
            return socket.socket.recv(self, size, flags)
        try:
            return sslobj.read(size)
        except ssl.SSLWantReadError:
            raise BlockingIOError from None
        except ssl.SSLWantWriteError:
            self.want_write = True
            raise BlockingIOError from None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # the client closed its side
            return b""  # (with close_notify or without: as suppress_ragged_eofs)

    def send(self, data, flags=0):
        # flags (flush's MSG_MORE) do not apply: OpenSSL writes whole records itself.
        sslobj = self._sslobj
        if sslobj is None:
            raise BrokenPipeError("TLS already shut down")
        try:
            return sslobj.write(data)
        except ssl.SSLWantWriteError:
            raise BlockingIOError from None
        except ssl.SSLWantReadError:
            self.want_read = True
            raise BlockingIOError from None


class TLSConnection(Connection):
    __slots__ = ("context", "phase", "handshake_started", "tls", "in_pending")

    FUSED = False  # the fused path sends on the plain socket: not for TLS
    scheme = "https"

    def __init__(self, worker, sock: socket.socket, addr, context: ssl.SSLContext) -> None:
        super().__init__(worker, sock, addr)
        self.context = context
        self.phase = HELLO
        self.handshake_started = worker.now  # the core's expired() bounds HELLO + HANDSHAKE
        self.tls = None  # TLSInfo once the handshake is done
        self.in_pending = False

    # ------------------------------------------------------------------ events

    def on_readable(self) -> None:
        if self.phase != READY:
            if self.state != OPEN:  # the plain-text 400 is out: drop what still comes
                Connection.on_readable(self)
            elif self.phase == HELLO:
                self.hello()
            else:
                self.handshake()
            return
        sock = self.sock
        if sock.want_read:  # a send was waiting for this
            sock.want_read = False
            self.on_writable()
            return
        Connection.on_readable(self)
        if sock.want_write and self.state != CLOSED:
            self.watch(True)
        elif self.state == OPEN and not self.in_pending and sock._sslobj is not None and sock.pending():
            # Decrypted bytes wait in OpenSSL: after_write reads them (Connection.on_readable
            # calls it only when the plain path has something left to do).
            self.after_write()

    def on_writable(self) -> None:
        phase = self.phase
        if phase == HANDSHAKE:
            self.handshake()
            return
        sock = self.sock
        if phase == READY and sock.want_write:  # a recv was waiting for this
            sock.want_write = False
            Connection.on_readable(self)
            if self.state != CLOSED and not sock.want_write:
                self.after_write()
            return
        Connection.on_writable(self)

    def watch(self, write: bool) -> None:
        if write != self.writing:
            self.writing = write
            if write:
                self.worker.watch_write(self)
            else:
                self.worker.watch_read(self)

    # ------------------------------------------------------------------ before the handshake

    def hello(self) -> None:
        """The PROXY header (when expected), then the first byte: a handshake or not."""
        sock = self.sock
        try:
            if self.proxy is not None:
                try:
                    self.proxy, client = take_proxy_header(sock, self.proxy)
                except ProxyProtocolError as exc:
                    log.warning("closing a connection from %s: %s", _peer(self.addr), exc)
                    self.close()
                    return
                if self.proxy is not None:
                    return
                if client is not None:
                    self.addr = client
            first = sock.recv(1, _MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not first:
            self.close()
            return
        self.last_active = self.worker.now
        if first[0] != TLS_HANDSHAKE:
            # Answered in plain text on the raw socket: the client speaks plain HTTP.
            self.handshake_started = 0.0
            self.reject(PlainHTTPOnTLSPort("plain HTTP sent to a TLS port"))
            self.after_write()
            return
        try:
            self.sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as exc:
            self.handshake_failed(str(exc))
            return
        self.phase = HANDSHAKE
        self.handshake()

    def handshake(self) -> None:
        sock = self.sock
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.watch(False)
            return
        except ssl.SSLWantWriteError:
            self.watch(True)
            return
        except ssl.SSLError as exc:
            self.handshake_failed(exc.reason or exc.strerror or str(exc))
            return
        except OSError as exc:  # reset or EOF in the middle
            self.handshake_failed(exc.strerror or type(exc).__name__)
            return
        self.phase = READY
        self.handshake_started = 0.0
        self.worker.tls_handshakes += 1
        self.last_active = self.worker.now
        self.tls = TLSInfo(sock, self.worker.tls_server_cert)
        self.watch(False)
        # TLS 1.3 clients often send the request right behind their Finished message.
        self.on_readable()

    def handshake_failed(self, why: str) -> None:
        self.worker.tls_failures += 1
        log.info("TLS handshake with %s failed: %s", _peer(self.addr), why)
        self.close()

    def client(self, req) -> tuple:
        """As Connection.client, with "https" unless a trusted proxy says otherwise."""
        addr = self.addr
        host = addr[0] if isinstance(addr, tuple) else ""
        if self.trusted and self.worker.trusted and claims_forwarding(req):
            return forwarded_client(req.headers, host, self.worker.trusted, "https")
        return host, "https"

    # ------------------------------------------------------------------ output

    def send_file(self, item: FileBody) -> bool:
        """Connection.flush's step for a file, through TLS: read in FILE_CHUNK pieces, each
        encrypted and sent before the next is read. What the socket refuses waits at the
        head of the queue (before the rest of the file), so a slow reader holds one chunk,
        not the file; after STREAM_BURST bytes the loop serves others (EPOLLOUT brings us back)."""
        sock = self.sock
        burst = STREAM_BURST
        while item.count:
            if burst <= 0:
                return False
            data = os.pread(item.fd, min(item.count, FILE_CHUNK), item.offset)
            if not data:  # the file shrank under us: the response is broken
                log.error("file ended early while sending; closing the connection")
                self.close()
                return False
            item.offset += len(data)
            item.count -= len(data)
            burst -= len(data)
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent < len(data):
                self.out.appendleft(memoryview(data)[sent:])
                return False
        item.close()
        return True

    def after_write(self) -> None:
        if self.phase != READY:
            Connection.after_write(self)
            return
        sock = self.sock
        if sock.want_read and self.out and self.state != CLOSED and not self.busy:
            self.watch(False)  # TLS must read before it can write on
            return
        Connection.after_write(self)
        # Decrypted bytes OpenSSL holds raise no epoll event: read them now.
        if self.state == OPEN and not self.writing and not self.busy and self.pending is None \
                and not self.in_pending and sock._sslobj is not None and sock.pending():
            self.in_pending = True
            try:
                while self.state == OPEN and not self.writing and self.pending is None and sock.pending():
                    Connection.on_readable(self)
            finally:
                self.in_pending = False

    # ------------------------------------------------------------------ closing

    def close_idle(self) -> None:
        if self.phase != READY:
            self.close()
            return
        try:
            waiting = self.sock.pending() or socket.socket.recv(self.sock, 1, _MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            waiting = b""
        if waiting:
            self.on_readable()
        else:
            self.close()

    def linger(self) -> None:
        self.notify_close()
        Connection.linger(self)

    def close(self) -> None:
        if self.state != CLOSED:
            self.notify_close()
        Connection.close(self)

    def notify_close(self) -> None:
        """Send close_notify (best effort: the peer may be gone, or its reply pending)."""
        sock = self.sock
        sslobj = getattr(sock, "_sslobj", None)
        if self.phase != READY or sslobj is None:
            return
        try:
            sslobj.shutdown()
        except (ssl.SSLError, OSError, ValueError):
            pass
        sock._sslobj = None  # once; what is read after it is dropped
