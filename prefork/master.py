"""The master: binds, forks workers, supervises them, handles signals.

The loop's bet: everything happens in one place. Signal handlers do nothing; the kernel
writes each signal's number into a self-pipe (signal.set_wakeup_fd), the loop reads those
bytes as its signal queue, then reads the workers' status pipes, reaps children, kills
silent or stuck workers, retires old ones and tops the pool back up, on every pass.

Capacity never drops on purpose: a worker is only told to stop (reload, --max-requests)
once enough new workers have reported ready to keep `workers` serving.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import resource
import selectors
import signal
import sys
import time
from typing import Dict, List, Optional

from prefork import __version__
from prefork.http import parser as parser_choice
from prefork import privileges, systemd
from prefork.config import Config
from prefork.logs import error_log_dropped, setup_logging
from prefork.metrics import MetricsServer, Totals, render
from prefork.sockets import BindError, Listener, open_listeners
from prefork.workers.epoll import (EXIT_BOOT_ERROR, FLAG_RETIRING, STATUS, STATUS_MAGIC, Worker,
                            set_process_title)

log = logging.getLogger("prefork.error")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD,
                   signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2)
QUICK_STOP_GRACE = 2.0  # seconds workers get to exit on INT/QUIT before SIGKILL
HANG_DUMP_GRACE = 2.0  # seconds between the stack-dump signal and SIGKILL
CRASH_WINDOW = 1.0  # a worker dying sooner than this after start counts towards a crash loop
MAX_BACKOFF = 10.0
SPAWN_RETRY = 1.0  # seconds before forking again after pipe() or fork() failed (EMFILE, EAGAIN)


class WorkerHandle:
    """The master's view of one worker."""

    __slots__ = ("pid", "index", "pipe", "started", "last_beat", "ready", "requests", "by_class",
                 "connections", "busy_since", "buf", "retiring", "old", "stopping", "kill_at",
                 "cause", "log_dropped", "websockets", "tls")

    def __init__(self, pid: int, index: int, pipe: int, now: float) -> None:
        self.pid = pid
        self.index = index
        self.pipe = pipe
        self.started = now
        self.last_beat = now
        self.ready = False  # has sent its first status record
        self.requests = 0
        self.by_class = [0] * 5
        self.connections = 0
        self.busy_since = 0.0
        self.buf = b""
        self.retiring = False  # reached --max-requests
        self.old = False  # from before a reload
        self.stopping = False  # told to stop (TERM sent)
        self.kill_at = 0.0  # when to SIGKILL a worker whose stacks were dumped
        self.cause = ""  # why the master is replacing it, for the log and metrics
        self.log_dropped = (0, 0)  # access-log and error-log lines it could not write
        self.websockets = 0  # open WebSockets (asyncio workers)
        self.tls = (0, 0)  # TLS handshakes finished, failed

    @property
    def counted(self) -> bool:
        """Part of the pool the master keeps at `workers`."""
        return not (self.retiring or self.old or self.stopping)


class Master:
    def __init__(self, cfg: Config, reread=None) -> None:
        self.cfg = cfg
        self.reread = reread  # old Config -> new Config from the same sources (HUP)
        self.watcher = 0  # pid of the --reload file watcher
        self.last_load_error = ""  # the application's import error, said once per reload attempt
        self.num_workers = cfg.workers
        self.workers: Dict[int, WorkerHandle] = {}
        self.listeners: List[Listener] = []
        self.stopping = False
        self.stop_deadline: Optional[float] = None
        self.exit_code = 0
        self.crashes = 0  # consecutive workers that died right after starting
        self.next_spawn = 0.0
        self.totals = Totals()
        self.metrics: Optional[MetricsServer] = None
        self.handed_over = False  # after USR2: the sockets belong to the new master too
        self.successor = 0  # pid of the master USR2 started, while it runs
        self.reloading = False
        self.tls_context = None  # the ssl.SSLContext new workers get (--certfile)
        self.tls_server_cert = None  # its certificate in PEM (read here: workers may not read the file)
        self.watchdog: Optional[float] = None
        self.next_watchdog = 0.0

    # ------------------------------------------------------------------ start

    def run(self) -> int:
        cfg = self.cfg
        setup_logging(cfg.log_level)
        module = parser_choice.load(cfg.parser)
        parser_name = parser_choice.name_of(module)
        if parser_name == "python" and cfg.parser == "auto":
            log.warning("the Cython parser is not built (%s); using the pure-Python parser",
                        parser_choice.CYTHON_IMPORT_ERROR)
        raise_fd_limit(cfg.max_connections + 64)
        if cfg.tls:
            from prefork.tls import TLSConfigError, make_context, server_cert_pem

            try:  # made before the fork: the workers share its session-ticket keys
                self.tls_context = make_context(cfg)
            except TLSConfigError as exc:
                log.error("%s", exc)
                return 2
            self.tls_server_cert = server_cert_pem(cfg)
        if cfg.config_file:
            log.info("Configuration read from %s", cfg.config_file)
        if cfg.umask is not None:
            os.umask(cfg.umask)
        try:
            self.listeners = open_listeners(cfg.binds, cfg.backlog, tls=cfg.tls)
            self.listeners += open_listeners(cfg.plain_binds, cfg.backlog)
            self._socket_permissions()
            if cfg.metrics_bind is not None:
                self.metrics = MetricsServer(cfg.metrics_bind)
        except BindError as exc:
            log.error("%s", exc)
            for listener in self.listeners:
                listener.close()
            return 1
        try:
            self._write_pid_file()
            self._install_signals()
            set_process_title(f"master [{' '.join(l.url for l in self.listeners)}]")
            log.info("Starting prefork-http %s (master pid %d)", __version__, os.getpid())
            for listener in self.listeners:
                log.info("Listening at %s", listener.url)
            if self.metrics is not None:
                log.info("Metrics at %s/metrics", self.metrics.url)
            what = cfg.app if cfg.app is not None else os.path.abspath(cfg.root)
            log.info("Serving %s with %d workers, parser %s", what, cfg.workers, parser_name)
            if cfg.app is None and not cfg.listing and not os.path.isfile(os.path.join(what, "index.html")):
                from prefork.apps.static import NO_INDEX_ADVICE

                log.info("%s has no index.html, so / answers 403 Forbidden. %s", what, NO_INDEX_ADVICE)
            ident = privileges.resolve(cfg)
            if ident is not None:
                log.info("Workers run as uid %d, gid %d%s", ident.uid, ident.gid,
                         f" ({ident.name})" if ident.name else "")
                self._prepare_log_file(ident)
            elif os.geteuid() == 0 and not cfg.allow_root:
                log.warning("workers run as root: a flaw in the application would own the machine. "
                            "Give --user (e.g. --user nobody) to serve unprivileged, or --allow-root "
                            "to silence this warning")
            if cfg.reload:
                self._start_watcher()
            self.watchdog = systemd.watchdog_interval()
            self._loop()
        finally:
            self._cleanup()
        return self.exit_code

    def _socket_permissions(self) -> None:
        """--socket-mode, and the --user/--group owner, for the unix sockets bound here."""
        owner = privileges.owner_for_sockets(self.cfg)
        for listener in self.listeners:
            if listener.spec.kind != "unix":
                continue
            if self.cfg.socket_mode is not None:
                os.chmod(listener.spec.path, self.cfg.socket_mode)
            if owner is not None:
                os.chown(listener.spec.path, *owner)

    def _prepare_log_file(self, ident) -> None:
        """Workers open the access log after dropping privileges: create it for them."""
        path = self.cfg.access_log
        if path and path != "-" and os.geteuid() == 0:
            try:
                with open(path, "a"):
                    pass
                os.chown(path, ident.uid, ident.gid)
            except OSError as exc:
                log.warning("cannot hand the access log %s to uid %d: %s", path, ident.uid, exc)

    def _start_watcher(self) -> None:
        """--reload: a child process watches the files and sends the master HUP."""
        try:
            from prefork import reloader
        except ImportError as exc:  # pragma: no cover
            log.error("--reload: %s", exc)
            return
        pid = self._fork()
        if pid == 0:
            code = 1
            try:
                self.selector.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                for listener in self.listeners:
                    listener.sock.close()
                if self.metrics is not None:
                    self.metrics.close_in_child()
                set_process_title("reload watcher")
                code = reloader.watch(self.cfg, os.getppid())
            except BaseException:  # noqa: BLE001
                log.exception("the --reload watcher failed")
            finally:
                os._exit(code)
        self.watcher = pid

    def _write_pid_file(self) -> None:
        path = self.cfg.pid_file
        if path:
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, path)  # atomic: a reader never sees a half-written pid

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, _record_only)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self._wake_r, selectors.EVENT_READ, "signals")
        if self.metrics is not None:
            self.metrics.attach(self.selector, self._render_metrics)

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        notified_ready = False
        while True:
            for key, _ in self.selector.select(1.0):
                data = key.data
                if data == "signals":
                    self._dispatch_signals()
                elif isinstance(data, WorkerHandle):
                    self._read_status(data)
                else:
                    self._serve_metrics(data)
            self._reap()
            now = time.monotonic()
            if self.metrics is not None:
                self._guarded(self.metrics.tick, now)
            self._check_timeouts(now)
            if self.watchdog and now >= self.next_watchdog:
                self.next_watchdog = now + self.watchdog
                systemd.notify("WATCHDOG=1")
            if self.stopping:
                if not self.workers:
                    return
                if now >= self.stop_deadline:
                    for handle in self.workers.values():
                        log.warning("worker %d did not stop in time; killing it", handle.pid)
                        self._kill(handle.pid, signal.SIGKILL)
                    self.stop_deadline = now + 5.0
                continue
            self._top_up(now)
            self._retire(now)
            if (not notified_ready or self.reloading) and self.workers and \
                    all(h.ready for h in self.workers.values()):
                notified_ready = True
                self.reloading = False
                systemd.notify(f"READY=1\nSTATUS=serving with {len(self.workers)} workers\nMAINPID={os.getpid()}")

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
            elif self.stopping:
                continue
            elif signum == signal.SIGHUP:
                self._reload()
            elif signum == signal.SIGTTIN:
                self.num_workers += 1
                log.info("TTIN: %d workers", self.num_workers)
            elif signum == signal.SIGTTOU:
                if self.num_workers > 1:
                    self.num_workers -= 1
                log.info("TTOU: %d workers", self.num_workers)
            elif signum == signal.SIGUSR1:
                log.info("USR1: workers reopen their log files")
                for pid in self.workers:
                    self._kill(pid, signal.SIGUSR1)
            elif signum == signal.SIGUSR2:
                self._upgrade()

    def _stop(self, graceful: bool) -> None:
        now = time.monotonic()
        if graceful and self.stopping:
            return
        log.info("%s stop: %d workers", "graceful" if graceful else "quick", len(self.workers))
        systemd.notify("STOPPING=1")
        self.stopping = True
        grace = self.cfg.graceful_timeout if graceful else QUICK_STOP_GRACE
        deadline = now + grace
        self.stop_deadline = deadline if self.stop_deadline is None else min(self.stop_deadline, deadline)
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for pid in list(self.workers):
            self._kill(pid, sig)
        # The master never accepts; the workers take what is queued before they let go.
        for listener in self.listeners:
            listener.sock.close()

    def _reload(self) -> None:
        """HUP: re-read the configuration file, check that the application still imports,
        then new workers first; the old ones stop once the new ones are ready."""
        if self.reread is not None:
            self._reread_config()
        if self.cfg.app is not None:
            from prefork.loader import check_importable

            error = check_importable(self.cfg.app, self.cfg.boot_timeout)
            if error:
                if error != self.last_load_error:
                    log.error("HUP: not reloading, the old workers serve on: %s", error)
                self.last_load_error = error
                return
        if self.cfg.tls:
            # New certificate files (or new contents at the same paths): new workers get
            # them only if they load; else the old workers serve on with the old ones.
            from prefork.tls import TLSConfigError, make_context, server_cert_pem

            try:
                context = make_context(self.cfg)
            except TLSConfigError as exc:
                log.error("HUP: not reloading, the old workers serve on with the old certificate: %s", exc)
                return
            self.tls_context = context
            self.tls_server_cert = server_cert_pem(self.cfg)
        self.last_load_error = ""
        log.info("HUP: reloading: %d new workers, then the old ones drain", self.num_workers)
        systemd.notify("RELOADING=1")
        for handle in self.workers.values():
            if not handle.stopping:
                handle.old = True
                handle.cause = "reload"
        self.reloading = True

    # What a reload cannot change: the sockets are bound, the parser loaded, the privileges
    # and the watcher set up. Reported as ignored when the file changes them.
    FIXED_ON_RELOAD = ("binds", "plain_binds", "metrics_bind", "backlog", "parser", "pid_file", "user", "group",
                       "umask", "socket_mode", "allow_root", "chdir", "reload", "reload_dirs",
                       "reload_include", "reload_exclude")

    def _reread_config(self) -> None:
        from prefork.config import ConfigError

        old = self.cfg
        try:
            new = self.reread(old)
        except ConfigError as exc:
            log.error("HUP: configuration not re-read, the current one stays: %s", exc)
            return
        option = {"binds": "bind", "pid_file": "pid", "reload_dirs": "reload-dir"}
        for name in self.FIXED_ON_RELOAD:
            value = getattr(new, name)
            if value != getattr(old, name):
                shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
                log.warning("HUP: %s changed (to %s), but cannot change on reload (restart the "
                            "server); ignored", option.get(name, name.replace("_", "-")), shown)
        new = dataclasses.replace(new, **{name: getattr(old, name) for name in self.FIXED_ON_RELOAD})
        if new.tls != old.tls:  # the listeners were bound TLS or plain
            log.warning("HUP: certfile %s, but TLS cannot be turned on or off on reload (restart the "
                        "server); ignored", "set" if new.tls else "removed")
            new = dataclasses.replace(new, **{name: getattr(old, name) for name in TLS_FIELDS})
        changed = [f.name for f in dataclasses.fields(Config) if getattr(new, f.name) != getattr(old, f.name)]
        if changed:
            log.info("HUP: configuration changed: %s", ", ".join(n.replace("_", "-") for n in changed))
        if new.workers != old.workers:
            self.num_workers = new.workers
        if new.log_level != old.log_level:
            setup_logging(new.log_level)
        if new.max_connections != old.max_connections:
            raise_fd_limit(new.max_connections + 64)
        self.cfg = new

    def _upgrade(self) -> None:
        """USR2: exec a new master that inherits the listening sockets. Both run until the
        operator stops the old one (TERM): its workers drain while the new ones serve.
        Should the new master exit while this one runs (it failed to start, or the operator
        rolled back), this one takes its pid file and metrics back and accepts USR2 again."""
        if self.handed_over:
            log.warning("USR2: this master has already started its successor (pid %d)", self.successor)
            return
        fds = [l.fileno() for l in self.listeners]
        env = dict(os.environ, **{systemd.INHERIT_ENV: ",".join(map(str, fds))})
        plain = [str(l.fileno()) for l in self.listeners if not l.tls]
        if self.cfg.tls and plain:  # the --bind-plain ones stay plain in the new master
            env[systemd.INHERIT_PLAIN_ENV] = ",".join(plain)
        if self.metrics is not None:
            fds.append(self.metrics.fileno())
            env[systemd.INHERIT_METRICS_ENV] = str(self.metrics.fileno())
        # Before the fork: the new master writes its own pid file, which must not be renamed.
        self._move_pid_file(to_oldbin=True)
        try:
            pid = self._fork()
        except OSError as exc:
            log.error("USR2: cannot fork a new master: %s", exc)
            self._move_pid_file(to_oldbin=False)
            return
        if pid == 0:
            try:
                for fd in fds:
                    os.set_inheritable(fd, True)
                os.execve(sys.executable, [sys.executable, "-m", "prefork", *sys.argv[1:]], env)
            finally:
                os._exit(1)
        self.handed_over = True
        self.successor = pid
        if self.metrics is not None:  # the new master answers for the new workers
            self.metrics.detach()
        log.info("USR2: started a new master (pid %d) on the same sockets; stop this one "
                 "(pid %d) with TERM once it serves", pid, os.getpid())

    def _successor_exited(self, how: str, code: int) -> None:
        self.successor = 0
        if code == 0:
            log.warning("the new master %s; this master serves on", how)
        else:
            log.error("upgrade failed: new master %s", how)
        if self.stopping:
            return
        self.handed_over = False
        self._move_pid_file(to_oldbin=False)
        if self.metrics is not None:
            self._guarded(self.metrics.attach, self.selector, self._render_metrics)

    def _move_pid_file(self, to_oldbin: bool) -> None:
        """USR2 renames the pid file to PATH.oldbin; a failed upgrade writes it back."""
        path = self.cfg.pid_file
        if not path:
            return
        try:
            if to_oldbin:
                os.replace(path, path + ".oldbin")
            else:
                self._write_pid_file()
                os.unlink(path + ".oldbin")
        except OSError as exc:
            log.warning("cannot %s the pid file: %s", "rename" if to_oldbin else "restore", exc)

    # ------------------------------------------------------------------ workers

    def _top_up(self, now: float) -> None:
        counted = [h for h in self.workers.values() if h.counted]
        missing = self.num_workers - len(counted)
        if missing < 0:  # TTOU: stop the newest surplus workers
            for handle in sorted(counted, key=lambda h: h.started)[missing:]:
                self._ask_to_stop(handle, "scale_down")
            return
        if missing == 0 or now < self.next_spawn:
            return
        used = {h.index for h in counted}
        index = 0
        for _ in range(missing):
            while index in used:
                index += 1
            self._spawn(index, now)
            used.add(index)

    def _retire(self, now: float) -> None:
        """Stop retiring and old workers as far as ready replacements allow."""
        leaving = [h for h in self.workers.values() if (h.retiring or h.old) and not h.stopping]
        if not leaving:
            return
        ready = sum(1 for h in self.workers.values() if h.counted and h.ready)
        # Keep at least num_workers ready processes serving at every moment.
        can_stop = ready + len(leaving) - self.num_workers
        leaving.sort(key=lambda h: (not h.retiring, h.started))
        for handle in leaving[:max(0, can_stop)]:
            self._ask_to_stop(handle, handle.cause or "max_requests")

    def _ask_to_stop(self, handle: WorkerHandle, cause: str) -> None:
        handle.stopping = True
        handle.cause = cause
        log.info("stopping worker %d (pid %d): %s", handle.index, handle.pid, cause.replace("_", " "))
        self._kill(handle.pid, signal.SIGTERM)

    def _fork(self) -> int:
        """fork() with the handled signals blocked until the child has dropped the master's
        handlers. In between, a signal sent to the child would run the master's handler in
        the child, which writes into the wake-up pipe the master reads: a TERM meant for a
        just-forked worker would stop the whole server. Unblocked, a signal that arrived
        meanwhile hits the child's default disposition (a TERM ends that child)."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                for sig in HANDLED_SIGNALS:  # TTIN/TTOU would stop a process by default
                    signal.signal(sig, signal.SIG_IGN if sig in (signal.SIGTTIN, signal.SIGTTOU)
                                  else signal.SIG_DFL)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return pid

    def _spawn(self, index: int, now: float) -> None:
        try:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        except OSError as exc:  # EMFILE: try again shortly; the workers that run go on
            log.error("cannot start a worker: %s; retrying in %.0fs", exc, SPAWN_RETRY)
            self.next_spawn = now + SPAWN_RETRY
            return
        worker = Worker(self.cfg, self.listeners, write_fd, index)
        worker.tls_context = self.tls_context
        worker.tls_server_cert = self.tls_server_cert
        try:
            pid = self._fork()
        except OSError as exc:  # EAGAIN, ENOMEM
            os.close(read_fd)
            os.close(write_fd)
            log.error("cannot start a worker: %s; retrying in %.0fs", exc, SPAWN_RETRY)
            self.next_spawn = now + SPAWN_RETRY
            return
        if pid == 0:  # the child; the master's signal handlers are already gone
            code = 1
            try:
                os.close(read_fd)
                self.selector.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                for handle in self.workers.values():
                    if handle.pipe >= 0:
                        os.close(handle.pipe)
                if self.metrics is not None:
                    self.metrics.close_in_child()
                os.set_blocking(write_fd, False)
                try:
                    privileges.drop(self.cfg)
                except OSError as exc:
                    log.error("worker %d cannot switch to --user/--group: %s", index, exc)
                    code = EXIT_BOOT_ERROR
                    return  # the finally below exits the child
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
        log.debug("forked worker %d (pid %d)", index, pid)

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
            record = STATUS.unpack_from(buf, off)
            if record[0] != STATUS_MAGIC:
                continue
            handle.requests = record[1]
            handle.by_class = list(record[2:7])
            handle.connections, flags, handle.busy_since = record[7:10]
            handle.log_dropped = record[10:12]
            handle.websockets = record[12]
            handle.tls = record[13:15]
            if not handle.ready:
                handle.ready = True
                log.info("Booted worker %d (pid %d)", handle.index, handle.pid)
            if flags & FLAG_RETIRING and not handle.retiring:
                handle.retiring = True
                handle.cause = handle.cause or "max_requests"
                log.info("worker %d (pid %d) reached --max-requests; starting its replacement",
                         handle.index, handle.pid)
        handle.buf = buf[usable:]

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            handle = self.workers.pop(pid, None)
            if handle is None:
                if pid == self.watcher:
                    self.watcher = 0
                    if not self.stopping:
                        log.error("the --reload watcher %s; files are no longer watched", how)
                elif pid == self.successor:
                    self._successor_exited(how, code)
                continue
            if handle.pipe >= 0:
                self.selector.unregister(handle.pipe)
                os.close(handle.pipe)
            self.totals.absorb(handle)
            if self.stopping or handle.stopping:
                log.info("worker %d (pid %d) %s", handle.index, pid, how)
                if not self.stopping and handle.cause in self.totals.restarts:
                    self.totals.restarts[handle.cause] += 1
                continue
            if code == EXIT_BOOT_ERROR:
                log.error("worker %d (pid %d) could not boot; stopping", handle.index, pid)
                self.totals.restarts["boot_failure"] += 1
                self.exit_code = EXIT_BOOT_ERROR
                self._stop(graceful=False)
                continue
            cause = handle.cause or "crash"
            self.totals.restarts[cause] += 1
            log.warning("worker %d (pid %d) %s; starting a new one", handle.index, pid, how)
            now = time.monotonic()
            if cause == "crash" and now - handle.started < CRASH_WINDOW:
                self.crashes += 1
                delay = min(MAX_BACKOFF, 0.1 * 2 ** self.crashes)
                self.next_spawn = now + delay
                log.warning("workers are dying right after start; waiting %.1fs before the next", delay)
            elif cause == "crash":
                self.crashes = 0

    def _check_timeouts(self, now: float) -> None:
        for handle in list(self.workers.values()):
            if handle.kill_at:
                if now >= handle.kill_at:
                    self._kill(handle.pid, signal.SIGKILL)
                    handle.kill_at = now + 5.0  # again later, should it somehow survive
                continue
            if not handle.ready:
                if now - handle.started > self.cfg.boot_timeout:
                    self._hung(handle, now, f"not ready {self.cfg.boot_timeout:.0f}s after start")
            elif now - handle.last_beat > self.cfg.timeout:
                self._hung(handle, now, f"silent for {now - handle.last_beat:.0f}s")
            elif handle.busy_since and now - handle.busy_since > self.cfg.timeout:
                self._hung(handle, now, f"in one request for {now - handle.busy_since:.0f}s")

    def _hung(self, handle: WorkerHandle, now: float, why: str) -> None:
        """Dump its stacks (USR2 → faulthandler), then SIGKILL after a short grace."""
        log.error("worker %d (pid %d) %s: dumping its stacks, then killing it", handle.index,
                  handle.pid, why)
        self.totals.timeouts += 1
        handle.cause = "timeout"
        handle.kill_at = now + HANG_DUMP_GRACE
        self._kill(handle.pid, signal.SIGUSR2)

    @staticmethod
    def _kill(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------ metrics

    def _serve_metrics(self, data) -> None:
        if self.metrics is not None:
            self._guarded(self.metrics.on_ready, data, time.monotonic())

    def _render_metrics(self) -> bytes:
        return render(self.totals, list(self.workers.values()), error_log_dropped())

    @staticmethod
    def _guarded(call, *args) -> None:
        """Run a non-essential part of the loop (metrics): whatever it raises is logged,
        never allowed to end the loop that supervises the workers."""
        try:
            call(*args)
        except Exception:  # noqa: BLE001
            try:
                log.exception("error in the master's loop (%s); going on",
                              getattr(call, "__qualname__", call))
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------------ exit

    def _cleanup(self) -> None:
        if self.watcher:
            self._kill(self.watcher, signal.SIGKILL)
            try:
                os.waitpid(self.watcher, 0)
            except ChildProcessError:
                pass
        for handle in self.workers.values():
            self._kill(handle.pid, signal.SIGKILL)
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.workers.pop(pid, None)
        for listener in self.listeners:
            if self.handed_over:
                listener.sock.close()  # the new master serves the unix socket path now
            else:
                listener.close()
        if self.metrics is not None:
            if self.handed_over:
                self.metrics.detach()
                self.metrics.listener.sock.close()
            else:
                self.metrics.close()
        path = self.cfg.pid_file
        if path:
            if self.handed_over:
                path += ".oldbin"
            try:
                os.unlink(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.warning("cannot remove pid file: %s", exc)
        log.info("Shutting down")


TLS_FIELDS = ("certfile", "keyfile", "keyfile_password_file", "ca_certs", "cert_reqs", "ciphers",
              "tls_min_version", "tls_handshake_timeout")


def raise_fd_limit(needed: int) -> None:
    """Each worker may hold --max-connections sockets (plus files and pipes): raise the
    soft RLIMIT_NOFILE towards the hard one, as nginx's worker_rlimit_nofile does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning("open files are limited to %d (hard limit); --max-connections needs about %d",
                    target, needed)


def _record_only(signum, frame) -> None:
    """The wakeup fd carries the signal number to the loop; nothing else to do here."""
