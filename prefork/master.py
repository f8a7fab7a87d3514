"""The master: binds, forks workers, supervises them, handles signals.

The loop's bet: everything happens in one place. Signal handlers do nothing; the kernel
writes each signal's number into a self-pipe (signal.set_wakeup_fd), the loop reads those
bytes as its signal queue, then reads the workers' status pipes, reaps children, kills
silent workers and tops the pool back up, on every pass.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import sys
import time
from typing import Dict, List, Optional

from prefork import __version__
from prefork import parser as parser_choice
from prefork.config import Config
from prefork.sockets import BindError, Listener, open_listeners
from prefork.worker import EXIT_BOOT_ERROR, STATUS, STATUS_MAGIC, Worker

log = logging.getLogger("prefork.error")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                   signal.SIGCHLD, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1)
QUICK_STOP_GRACE = 2.0  # seconds workers get to exit on INT/QUIT before SIGKILL
# A worker that dies sooner than this after its start counts towards a crash loop.
CRASH_WINDOW = 1.0
MAX_BACKOFF = 10.0


class WorkerHandle:
    """The master's view of one worker."""

    __slots__ = ("pid", "index", "pipe", "started", "last_beat", "requests", "connections", "buf")

    def __init__(self, pid: int, index: int, pipe: int, now: float) -> None:
        self.pid = pid
        self.index = index
        self.pipe = pipe
        self.started = now
        self.last_beat = now
        self.requests = 0
        self.connections = 0
        self.buf = b""


class Master:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.workers: Dict[int, WorkerHandle] = {}
        self.listeners: List[Listener] = []
        self.stopping = False
        self.stop_deadline: Optional[float] = None
        self.exit_code = 0
        self.crashes = 0  # consecutive workers that died right after starting
        self.next_spawn = 0.0

    # ------------------------------------------------------------------ start

    def run(self) -> int:
        cfg = self.cfg
        setup_logging(cfg.log_level)
        module = parser_choice.load(cfg.parser)
        parser_name = parser_choice.name_of(module)
        if parser_name == "python" and cfg.parser == "auto":
            log.warning("the Cython parser is not built (%s); using the pure-Python parser",
                        parser_choice.CYTHON_IMPORT_ERROR)
        try:
            self.listeners = open_listeners(cfg.binds, cfg.backlog)
        except BindError as exc:
            log.error("%s", exc)
            return 1
        try:
            if cfg.pid_file:
                with open(cfg.pid_file, "w") as f:
                    f.write(f"{os.getpid()}\n")
            self._install_signals()
            log.info("Starting prefork-http %s (master pid %d)", __version__, os.getpid())
            for listener in self.listeners:
                log.info("Listening at %s", listener.url)
            log.info("Serving %s with %d workers, parser %s", os.path.abspath(cfg.root),
                     cfg.workers, parser_name)
            self._loop()
        finally:
            self._cleanup()
        return self.exit_code

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, _record_only)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self._wake_r, selectors.EVENT_READ)

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while True:
            for key, _ in self.selector.select(1.0):
                if key.fd == self._wake_r:
                    self._dispatch_signals()
                else:
                    self._read_status(key.data)
            self._reap()
            now = time.monotonic()
            if self.stopping:
                if not self.workers:
                    return
                if now >= self.stop_deadline:
                    for handle in self.workers.values():
                        log.warning("worker %d did not stop in time; killing it", handle.pid)
                        self._kill(handle.pid, signal.SIGKILL)
                    self.stop_deadline = now + 5.0
                continue
            self._check_timeouts(now)
            self._top_up(now)

    def _dispatch_signals(self) -> None:
        try:
            data = os.read(self._wake_r, 512)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGCHLD:
                continue  # reaping happens on every pass
            if signum == signal.SIGTERM:
                self._stop(graceful=True)
            elif signum in (signal.SIGINT, signal.SIGQUIT):
                self._stop(graceful=False)

    def _stop(self, graceful: bool) -> None:
        now = time.monotonic()
        if graceful and self.stopping:
            return
        log.info("%s stop: %d workers", "graceful" if graceful else "quick", len(self.workers))
        self.stopping = True
        grace = self.cfg.graceful_timeout if graceful else QUICK_STOP_GRACE
        deadline = now + grace
        self.stop_deadline = deadline if self.stop_deadline is None else min(self.stop_deadline, deadline)
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for pid in list(self.workers):
            self._kill(pid, sig)
        # The master does not accept; closing its copies lets the kernel drop the socket
        # as soon as the last worker has closed its own.
        for listener in self.listeners:
            listener.sock.close()

    # ------------------------------------------------------------------ workers

    def _top_up(self, now: float) -> None:
        missing = self.cfg.workers - len(self.workers)
        if missing <= 0 or now < self.next_spawn:
            return
        used = {h.index for h in self.workers.values()}
        index = 0
        for _ in range(missing):
            while index in used:
                index += 1
            self._spawn(index, now)
            used.add(index)

    def _spawn(self, index: int, now: float) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        worker = Worker(self.cfg, self.listeners, write_fd, index)
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(read_fd)
                self.selector.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                for handle in self.workers.values():
                    os.close(handle.pipe)
                os.set_blocking(write_fd, False)
                code = worker.run()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("worker crashed")
                code = 1
            finally:
                try:
                    logging.shutdown()
                    sys.stdout.flush()
                finally:
                    os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        handle = WorkerHandle(pid, index, read_fd, now)
        self.workers[pid] = handle
        self.selector.register(read_fd, selectors.EVENT_READ, handle)
        log.info("Booted worker %d (pid %d)", index, pid)

    def _read_status(self, handle: WorkerHandle) -> None:
        try:
            data = os.read(handle.pipe, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker is gone; _reap will tell how
            self.selector.unregister(handle.pipe)
            os.close(handle.pipe)
            handle.pipe = -1
            return
        handle.last_beat = time.monotonic()
        buf = handle.buf + data
        size = STATUS.size
        usable = len(buf) - len(buf) % size
        for off in range(0, usable, size):
            magic, requests, connections = STATUS.unpack_from(buf, off)
            if magic == STATUS_MAGIC:
                handle.requests = requests
                handle.connections = connections
        handle.buf = buf[usable:]

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            handle = self.workers.pop(pid, None)
            if handle is None:
                continue
            if handle.pipe >= 0:
                self.selector.unregister(handle.pipe)
                os.close(handle.pipe)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("worker %d (pid %d) exited", handle.index, pid)
                continue
            if code == EXIT_BOOT_ERROR:
                log.error("worker %d (pid %d) could not boot; stopping", handle.index, pid)
                self.exit_code = EXIT_BOOT_ERROR
                self._stop(graceful=False)
                continue
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            log.warning("worker %d (pid %d) %s; starting a new one", handle.index, pid, how)
            now = time.monotonic()
            if now - handle.started < CRASH_WINDOW:
                self.crashes += 1
                delay = min(MAX_BACKOFF, 0.1 * 2 ** self.crashes)
                self.next_spawn = now + delay
                log.warning("workers are dying right after start; waiting %.1fs before the next", delay)
            else:
                self.crashes = 0

    def _check_timeouts(self, now: float) -> None:
        limit = self.cfg.timeout
        for handle in list(self.workers.values()):
            if now - handle.last_beat > limit:
                log.error("worker %d (pid %d) silent for %.0fs; killing it", handle.index,
                          handle.pid, now - handle.last_beat)
                self._kill(handle.pid, signal.SIGKILL)
                handle.last_beat = now  # once; reaping does the rest

    @staticmethod
    def _kill(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------ exit

    def _cleanup(self) -> None:
        for handle in self.workers.values():
            self._kill(handle.pid, signal.SIGKILL)
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.workers.pop(pid, None)
        for listener in self.listeners:
            listener.close()
        if self.cfg.pid_file:
            try:
                os.unlink(self.cfg.pid_file)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.warning("cannot remove pid file: %s", exc)
        log.info("Shutting down")


def _record_only(signum, frame) -> None:
    """The wakeup fd carries the signal number to the loop; nothing else to do here."""


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"))
    root = logging.getLogger("prefork")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
