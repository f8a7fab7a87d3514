"""The master's metrics: counters aggregated from the workers' status records, served in
the Prometheus text format (version 0.0.4) on --metrics-bind.

Counters survive worker restarts: when a worker exits, its last reported figures move
into the totals of the dead, and a live worker's figures are added on top at scrape time.
The server is a few lines on purpose: it answers any GET with the metrics and closes, from
the master's own loop. Nothing here may stop or stall that loop: sockets are non-blocking,
a client gets CLIENT_TIMEOUT seconds for its request and its answer, at most MAX_CLIENTS
are kept (a new one evicts the oldest), and when the master is out of file descriptors the
listener rests for a second instead of waking the loop in a spin.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
from typing import Callable, Dict

from prefork.config import BindSpec
from prefork.sockets import open_listeners

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
RESTART_CAUSES = ("crash", "timeout", "max_requests", "reload", "scale_down", "boot_failure")
MAX_REQUEST_HEAD = 8192
CLIENT_TIMEOUT = 5.0  # seconds a scraper gets to send its request and read the answer
MAX_CLIENTS = 16  # metrics connections kept at once; a new one evicts the oldest
ACCEPT_PAUSE = 1.0  # seconds the listener rests after EMFILE and the like
LOG_KINDS = ("access", "error")

log = logging.getLogger("prefork.error")


class Totals:
    """Counters of workers that have exited, and of the master's own decisions."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_class = [0] * 5
        self.restarts: Dict[str, int] = dict.fromkeys(RESTART_CAUSES, 0)
        self.timeouts = 0
        self.log_dropped = [0, 0]  # access, error: lines of exited workers
        self.tls = [0, 0]  # TLS handshakes finished, failed, by exited workers

    def absorb(self, handle) -> None:
        self.requests += handle.requests
        for i, n in enumerate(handle.by_class):
            self.by_class[i] += n
        for i, n in enumerate(handle.log_dropped):
            self.log_dropped[i] += n
        for i, n in enumerate(handle.tls):
            self.tls[i] += n


def render(totals: Totals, workers, master_log_dropped: int = 0) -> bytes:
    """`master_log_dropped`: error-log lines the master itself could not write."""
    requests = totals.requests + sum(h.requests for h in workers)
    by_class = list(totals.by_class)
    for h in workers:
        for i, n in enumerate(h.by_class):
            by_class[i] += n
    lines = [
        "# HELP prefork_requests_total Requests answered, by status class.",
        "# TYPE prefork_requests_total counter",
    ]
    lines += [f'prefork_requests_total{{code="{c}"}} {n}' for c, n in zip(STATUS_CLASSES, by_class)]
    lines += [
        "# HELP prefork_requests_all_total Requests answered.",
        "# TYPE prefork_requests_all_total counter",
        f"prefork_requests_all_total {requests}",
        "# HELP prefork_open_connections Connections open in the workers.",
        "# TYPE prefork_open_connections gauge",
        f"prefork_open_connections {sum(h.connections for h in workers)}",
        "# HELP prefork_websockets_open WebSockets open in the workers.",
        "# TYPE prefork_websockets_open gauge",
        f"prefork_websockets_open {sum(h.websockets for h in workers)}",
        "# HELP prefork_workers Worker processes alive.",
        "# TYPE prefork_workers gauge",
        f"prefork_workers {len(workers)}",
        "# HELP prefork_worker_restarts_total Workers replaced, by cause.",
        "# TYPE prefork_worker_restarts_total counter",
    ]
    lines += [f'prefork_worker_restarts_total{{cause="{c}"}} {n}' for c, n in totals.restarts.items()]
    lines += [
        "# HELP prefork_worker_timeouts_total Workers killed for being silent or stuck.",
        "# TYPE prefork_worker_timeouts_total counter",
        f"prefork_worker_timeouts_total {totals.timeouts}",
        "# HELP prefork_log_lines_dropped_total Log lines lost because writing failed (full disk, closed pipe).",
        "# TYPE prefork_log_lines_dropped_total counter",
    ]
    dropped = list(totals.log_dropped)
    dropped[1] += master_log_dropped
    for h in workers:
        dropped[0] += h.log_dropped[0]
        dropped[1] += h.log_dropped[1]
    lines += [f'prefork_log_lines_dropped_total{{log="{k}"}} {n}' for k, n in zip(LOG_KINDS, dropped)]
    tls = list(totals.tls)
    for h in workers:
        tls[0] += h.tls[0]
        tls[1] += h.tls[1]
    lines += [
        "# HELP prefork_tls_handshakes_total TLS handshakes, finished (ok) or not (failed: refused, "
        "timed out, or the client left).",
        "# TYPE prefork_tls_handshakes_total counter",
        f'prefork_tls_handshakes_total{{result="ok"}} {tls[0]}',
        f'prefork_tls_handshakes_total{{result="failed"}} {tls[1]}',
    ]
    return ("\n".join(lines) + "\n").encode()


class MetricsServer:
    """The listener and its clients, in the master's selector: `attach` registers them,
    the master passes each ready key's data to `on_ready`, and calls `tick` every pass."""

    def __init__(self, spec: BindSpec, backlog: int = 64) -> None:
        self.listener = open_listeners([spec], backlog)[0]
        self.url = self.listener.url
        self.clients: Dict[int, MetricsClient] = {}  # oldest first
        self.selector = None
        self.body: Callable[[], bytes] = lambda: b""
        self.listening = False
        self.resume_at = 0.0  # after EMFILE: when to listen again

    def fileno(self) -> int:
        return self.listener.fileno()

    def attach(self, selector, body: Callable[[], bytes]) -> None:
        self.selector = selector
        self.body = body
        self._listen(True)

    def detach(self) -> None:
        """Stop serving (USR2: the new master answers on the same socket); keep the socket."""
        self._listen(False)
        self.resume_at = 0.0
        for client in list(self.clients.values()):
            self._drop(client)

    def _listen(self, on: bool) -> None:
        if on != self.listening:
            self.listening = on
            if on:
                self.selector.register(self.fileno(), selectors.EVENT_READ, self)
            else:
                self.selector.unregister(self.fileno())

    def on_ready(self, data, now: float) -> None:
        if data is self:
            self._accept(now)
            return
        try:
            done = data.on_ready(self.body)
        except Exception:  # noqa: BLE001 - a scraper never takes the master down
            log.exception("metrics: error answering a client")
            done = True
        if done:
            self._drop(data)
        elif data.out:
            self.selector.modify(data.fileno(), selectors.EVENT_WRITE, data)

    def _accept(self, now: float) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                sock, _ = self.listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The connection stays queued and the listener readable: rest it, or
                    # the loop would spin. Free a descriptor for the next try.
                    log.warning("metrics: cannot accept: %s; pausing for %.0fs", exc, ACCEPT_PAUSE)
                    if self.clients:
                        self._drop(next(iter(self.clients.values())))
                    self._listen(False)
                    self.resume_at = now + ACCEPT_PAUSE
                return  # ECONNABORTED and the like: that client is gone
            if len(self.clients) >= MAX_CLIENTS:
                self._drop(next(iter(self.clients.values())))
            sock.setblocking(False)
            client = MetricsClient(sock, now + CLIENT_TIMEOUT)
            self.clients[client.fileno()] = client
            self.selector.register(client.fileno(), selectors.EVENT_READ, client)

    def tick(self, now: float) -> None:
        """Every pass of the master's loop: close clients past their deadline, and listen
        again after a pause."""
        if self.resume_at and now >= self.resume_at:
            self.resume_at = 0.0
            self._listen(True)
        for client in list(self.clients.values()):
            if now >= client.deadline:
                self._drop(client)

    def _drop(self, client: "MetricsClient") -> None:
        fd = client.fileno()
        if self.clients.pop(fd, None) is not None:
            try:
                self.selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        client.close()

    def close_in_child(self) -> None:
        """In a new worker: close the master's descriptors (never unlink a unix path)."""
        self.listener.sock.close()
        for client in self.clients.values():
            client.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        self.listener.close()


class MetricsClient:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.deadline = deadline
        self.buf = b""
        self.out = b""

    def fileno(self) -> int:
        return self.fd

    def on_ready(self, body: Callable[[], bytes]) -> bool:
        """Read the request, then send the answer; True when done with this client."""
        if self.out:
            return self._send()
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        self.buf += data
        if data and b"\r\n\r\n" not in self.buf and len(self.buf) < MAX_REQUEST_HEAD:
            return False
        if not data and not self.buf:
            return True  # connected and left
        if self.buf.startswith(b"GET ") or self.buf.startswith(b"HEAD "):
            payload = body()
            head = ("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
            self.out = head + (b"" if self.buf.startswith(b"HEAD ") else payload)
        else:
            self.out = (b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n"
                        b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        return self._send()

    def _send(self) -> bool:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        self.out = self.out[sent:]
        return not self.out

    def close(self) -> None:
        self.sock.close()
