"""--reload: a child of the master watches the application's files with watchfiles and
sends the master SIGHUP on a change; the master's HUP path does the rolling reload (and
keeps the old workers when the new code does not import). For development only: every
change restarts every worker."""

from __future__ import annotations

import fnmatch
import logging
import os
import signal

from prefork.config import Config

log = logging.getLogger("prefork.error")


def make_filter(cfg: Config):
    """Paths whose change reloads: a name matching --reload-include and no --reload-exclude,
    outside the folders watchfiles always ignores (.git, __pycache__, node_modules...)."""
    from watchfiles import DefaultFilter

    default = DefaultFilter()

    def accept(change, path: str) -> bool:
        if not default(change, path):
            return False
        name = os.path.basename(path)
        if any(fnmatch.fnmatch(name, g) for g in cfg.reload_exclude):
            return False
        return any(fnmatch.fnmatch(name, g) for g in cfg.reload_include)

    return accept


def watch(cfg: Config, master: int) -> int:
    """Run until the master is gone; 0 then."""
    try:
        import watchfiles
    except ImportError:
        log.error("--reload needs watchfiles: pip install 'prefork-http[reload]'")
        return 1
    dirs = [os.path.abspath(d) for d in (cfg.reload_dirs or (os.getcwd(),))]
    log.info("Watching %s for changes to %s (--reload)", ", ".join(dirs), " ".join(cfg.reload_include))
    for changes in watchfiles.watch(*dirs, watch_filter=make_filter(cfg), debounce=400,
                                    rust_timeout=1000, yield_on_timeout=True, raise_interrupt=False):
        if os.getppid() != master:
            return 0
        if changes:
            names = sorted({os.path.relpath(p) for _, p in changes})
            log.info("--reload: %s changed; reloading", ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
            try:
                os.kill(master, signal.SIGHUP)
            except ProcessLookupError:
                return 0
    return 0
