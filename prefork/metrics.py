"""The master's metrics: counters aggregated from the workers' status records, served in
the Prometheus text format (version 0.0.4) on --metrics-bind.

Counters survive worker restarts: when a worker exits, its last reported figures move
into the totals of the dead, and a live worker's figures are added on top at scrape time.
The server is a few lines on purpose: it answers any GET with the metrics and closes, from
the master's own loop, never blocking it for long.
"""

from __future__ import annotations

import socket
from typing import Callable, Dict

from prefork.config import BindSpec
from prefork.sockets import open_listeners

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
RESTART_CAUSES = ("crash", "timeout", "max_requests", "reload", "scale_down", "boot_failure")
MAX_REQUEST_HEAD = 8192


class Totals:
    """Counters of workers that have exited, and of the master's own decisions."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_class = [0] * 5
        self.restarts: Dict[str, int] = dict.fromkeys(RESTART_CAUSES, 0)
        self.timeouts = 0

    def absorb(self, handle) -> None:
        self.requests += handle.requests
        for i, n in enumerate(handle.by_class):
            self.by_class[i] += n


def render(totals: Totals, workers) -> bytes:
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
    ]
    return ("\n".join(lines) + "\n").encode()


class MetricsServer:
    """Registered in the master's selector: `on_ready(key)` for the listener and clients."""

    def __init__(self, spec: BindSpec, backlog: int = 64) -> None:
        self.listener = open_listeners([spec], backlog)[0]
        self.url = self.listener.url

    def fileno(self) -> int:
        return self.listener.fileno()

    def accept(self):
        try:
            conn, _ = self.listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.setblocking(False)
        return MetricsClient(conn)

    def close(self) -> None:
        self.listener.close()


class MetricsClient:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self, body: Callable[[], bytes]) -> bool:
        """Read; answer once the request head is complete. True when done with it."""
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        self.buf += data
        if data and b"\r\n\r\n" not in self.buf and len(self.buf) < MAX_REQUEST_HEAD:
            return False
        if self.buf.startswith(b"GET ") or self.buf.startswith(b"HEAD "):
            payload = body()
            head = ("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
            answer = head + (b"" if self.buf.startswith(b"HEAD ") else payload)
        else:
            answer = b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        try:
            self.sock.settimeout(1.0)  # small answer to a local scraper: bounded blocking
            self.sock.sendall(answer)
        except OSError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()
