"""Handler threads for `--threads N`: blocking applications without blocking the loop.

The loop hands (connection, request) to the pool and goes on serving other connections;
a pool thread runs the handler, appends the answer to `done` and, unless the loop has
already been told, writes to an eventfd that the loop's epoll watches; the loop sends the
answers (`Connection.finish`). Only the loop thread touches sockets and connection state;
a connection has at most one request in the pool, so its answers stay in order.

What a request through the pool costs is thread switches (every switch is a trip through
the GIL and futexes), so the pool wakes as few threads as keep the handlers going:
- A thread that finishes a job takes the next one without sleeping.
- Jobs are queued during a pass of the loop and a sleeping thread is woken once, as the
  loop is about to wait (`kick`), and only when no other thread is already on its way to
  take one (`waking`); the thread that takes a job wakes the next sleeper if jobs
  are still waiting. A handler that blocks releases the GIL, the woken thread runs and
  takes the next job: blocking handlers still run side by side, one wake-up per job, while
  quick handlers are run one after the other by the thread that is awake.
- Sleepers are woken last-in first-out: the thread that slept last has warm caches, and
  the others stay asleep.
- The eventfd is written once per batch of answers: a thread that finds `signalled` set
  knows the loop will drain `done` anyway.
- Handler threads are SCHED_BATCH (Linux, per thread; the loop thread keeps the default
  policy): a woken handler thread does not preempt the thread that is running on its CPU.
  With the default policy, on a busy core, each wake-up (a kick, and the GIL handed over
  as the loop enters epoll_wait) switched to the woken thread at once, only for it to find
  the GIL still held and switch back: six switches per batch of jobs, where two are needed
  (to the handler thread as the loop waits, back as it sleeps), and the wrong half of them
  cost each request about 1.5 µs. A handler thread still runs as soon as its CPU is free,
  so a handler that blocks lets the others run as before; what it gives up is preempting
  on wake-up, which would only have met the held GIL.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from time import monotonic, perf_counter


class HandlerPool:
    def __init__(self, size: int) -> None:
        self.jobs: deque = deque()  # (conn, req) waiting for a thread; (None, None): stop
        self.done: deque = deque()  # (conn, req, resp, t0); append/popleft are thread-safe
        # thread ident → (request, monotonic start): what the hang detector reports
        self.running: dict = {}
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.signalled = False  # the eventfd was written since the loop last drained
        self._mutex = threading.Lock()  # taken to wake a thread (pop `_idle`, set `_waking`)
        self._idle: list = []  # locks of sleeping threads, each held until it is woken
        self._waking = False  # a sleeper was woken and has not looked at the jobs yet
        self.threads = [threading.Thread(target=self._run, name=f"prefork-handler-{i}", daemon=True)
                        for i in range(size)]
        for t in self.threads:
            t.start()

    def submit(self, conn, req) -> None:
        """Queue a job; the loop calls kick() before it waits for events again."""
        self.jobs.append((conn, req))

    def kick(self) -> None:
        """Wake a sleeping thread if jobs wait and no thread is on its way to them. The loop
        calls it once per pass, as it is about to wait (and release the GIL): a thread woken
        earlier would only wait for the GIL, and take it at each of the loop's sends and
        recvs, a switch every time.

        The first look takes no lock. Whoever queues a job looks at `_waking` and `_idle`
        after the append; a thread that goes to sleep looks at `jobs` after joining
        `_idle`: one of the two sees the other (the GIL orders them), so no job is left
        waiting with every thread asleep."""
        if self._waking or not self._idle or not self.jobs:
            return
        with self._mutex:
            if self.jobs and not self._waking and self._idle:
                self._waking = True
                self._idle.pop().release()

    def _run(self) -> None:
        try:  # see the module's docstring
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except (AttributeError, OSError):  # not Linux, or a sandbox that forbids it
            pass
        jobs = self.jobs
        done = self.done
        idle = self._idle
        fd = self.fd
        running = self.running
        me = threading.get_ident()
        sleep = threading.Lock()  # held while this thread is awake; released to wake it
        sleep.acquire()
        woken = False
        while True:
            if woken:
                woken = False
                self._waking = False  # before the look at jobs (see kick)
            try:
                job = jobs.popleft()
            except IndexError:
                idle.append(sleep)
                if jobs:  # queued while we looked: make sure someone takes it
                    self.kick()
                sleep.acquire()
                woken = True
                continue
            conn, req = job
            if conn is None:  # stop(): leave the marker for the other threads
                with self._mutex:
                    jobs.appendleft(job)
                    while idle:
                        idle.pop().release()
                return
            if jobs:  # more waiting: another thread, in case this handler blocks
                self.kick()
            t0 = perf_counter()
            running[me] = (req, monotonic())
            resp = conn.call_handler(req)
            del running[me]
            done.append((conn, req, resp, t0))
            if not self.signalled:
                self.signalled = True
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
        # Cleared before `done` is emptied: an answer appended after this point either is
        # popped below or writes the eventfd again; none waits unseen.
        self.signalled = False
        done = self.done
        while done:
            conn, req, resp, t0 = done.popleft()
            conn.finish(req, resp, t0)

    def stop(self) -> None:
        """Ask the threads to end after their current job (daemon threads: a handler that
        never returns does not keep the worker alive)."""
        with self._mutex:
            self.jobs.append((None, None))
            while self._idle:
                self._idle.pop().release()
