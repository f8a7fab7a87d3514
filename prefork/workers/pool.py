"""Handler threads for `--threads N`: blocking applications without blocking the loop.

The loop hands (connection, request) to the pool and goes on serving other connections;
a pool thread runs the handler, appends the answer to `done` and writes to an eventfd
that the loop's epoll watches, and the loop sends the answer (`Connection.finish`). Only
the loop thread touches sockets and connection state; a connection has at most one
request in the pool, so its answers stay in order.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from time import monotonic, perf_counter


class HandlerPool:
    def __init__(self, size: int) -> None:
        self.jobs: "queue.SimpleQueue" = queue.SimpleQueue()
        self.done: deque = deque()  # (conn, req, resp, t0); append/popleft are thread-safe
        # thread ident → (request, monotonic start): what the hang detector reports
        self.running: dict = {}
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.threads = [threading.Thread(target=self._run, name=f"prefork-handler-{i}", daemon=True)
                        for i in range(size)]
        for t in self.threads:
            t.start()

    def submit(self, conn, req) -> None:
        self.jobs.put((conn, req))

    def _run(self) -> None:
        jobs = self.jobs
        done = self.done
        fd = self.fd
        while True:
            job = jobs.get()
            if job is None:
                return
            conn, req = job
            t0 = perf_counter()
            me = threading.get_ident()
            self.running[me] = (req, monotonic())
            resp = conn.call_handler(req)
            del self.running[me]
            done.append((conn, req, resp, t0))
            os.eventfd_write(fd, 1)

    def oldest(self) -> float:
        """Since when the longest-running handler runs (time.monotonic), 0.0 if none."""
        starts = [start for _, start in list(self.running.values())]
        return min(starts) if starts else 0.0

    def drain(self) -> None:
        """In the loop thread, on the eventfd's readiness: send the finished answers."""
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass
        done = self.done
        while done:
            conn, req, resp, t0 = done.popleft()
            conn.finish(req, resp, t0)

    def stop(self) -> None:
        """Ask the threads to end after their current job (daemon threads: a handler that
        never returns does not keep the worker alive)."""
        for _ in self.threads:
            self.jobs.put(None)
