"""Loading the application named on the command line, and the handler that serves it.

`module:name` names an object; `module:factory()` names a callable that builds one. The
object is either a prefork `App` or any PEP 3333 callable. Before anything binds, a
throwaway child process imports it (`check_importable`), so that a typo fails at once with
one line and exit code 4; the master itself never imports the application, so each worker
imports it fresh after the fork: `kill -HUP` loads new code, and nothing the module opens
at import time (a database connection, a thread) is shared between processes. A factory
is called in each worker (`make_handler`).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable, Tuple

# Exit code of the command when the application cannot be loaded (1 is "cannot bind",
# 2 a bad command line, 3 a worker that could not boot).
EXIT_APP_ERROR = 4


class AppLoadError(Exception):
    """The application cannot be loaded; the message is the one line the user sees."""


def import_app(spec: str) -> Tuple[Any, bool]:
    """Import `spec` and return (object, is_factory). Raises AppLoadError."""
    module_name, _, name = spec.partition(":")
    is_factory = name.endswith("()")
    if is_factory:
        name = name[:-2]
    cwd = os.getcwd()
    if cwd not in sys.path:  # as gunicorn does: the application's folder is importable
        sys.path.insert(0, cwd)
    try:
        __import__(module_name)
        obj: Any = sys.modules[module_name]
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(f"cannot load {spec!r}: no module named {exc.name!r}") from None
        raise AppLoadError(f"cannot load {spec!r}: {_where(exc)}") from None
    except Exception as exc:  # anything the module raised while it was imported
        raise AppLoadError(f"cannot load {spec!r}: {_where(exc)}") from None
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"cannot load {spec!r}: module {module_name!r} has no attribute "
                               f"{name!r}") from None
    if not callable(obj):
        kind = "factory" if is_factory else "application"
        raise AppLoadError(f"cannot load {spec!r}: the {kind} is not callable "
                           f"(it is {type(obj).__name__})")
    return obj, is_factory


def check_importable(spec: str, timeout: float) -> "str | None":
    """Import `spec` in a forked child; the one-line error, or None when it loads."""
    import select
    import signal

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_fd)
            import_app(spec)
        except AppLoadError as exc:
            os.write(write_fd, str(exc).encode("utf-8", "replace")[:4000])
            code = EXIT_APP_ERROR
        except BaseException as exc:  # noqa: BLE001 - the child must always exit here
            os.write(write_fd, f"cannot load {spec!r}: {_where(exc)}".encode("utf-8", "replace")[:4000])
            code = EXIT_APP_ERROR
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return f"cannot load {spec!r}: importing it took longer than {timeout:g}s"
        message = os.read(read_fd, 8192).decode("utf-8", "replace")
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    return message or None


def make_handler(cfg) -> Callable:
    """The worker's handler for `cfg.app`: the App itself, or a WSGI adapter around it."""
    return load_app(cfg)[1]


def load_app(cfg) -> Tuple[str, Any]:
    """(interface, what serves it) for `cfg.app`: ("app", the App), ("wsgi", a WSGI
    adapter) or ("asgi", the ASGI 3 application itself). `cfg.interface` forces the
    interface; "auto" detects it (prefork.apps.asgi.detect_interface)."""
    from prefork.apps.app import App
    from prefork.apps.asgi import detect_interface
    from prefork.apps.wsgi import handler_class

    obj, is_factory = import_app(cfg.app)
    if is_factory:
        obj = obj()
        if not callable(obj):
            raise AppLoadError(f"{cfg.app!r} returned {type(obj).__name__}, not an application")
    interface = getattr(cfg, "interface", "auto")
    if interface == "auto":
        interface = "app" if isinstance(obj, App) else detect_interface(obj)
    if interface == "asgi":
        return "asgi", obj
    if interface == "app":
        if not isinstance(obj, App):
            raise AppLoadError(f"{cfg.app!r} is not a prefork App (--interface app)")
        obj.configure(root_path=cfg.root_path)
        return "app", obj
    if isinstance(obj, App):
        obj.configure(root_path=cfg.root_path)
        return "app", obj
    handler = handler_class(getattr(cfg, "wsgi", None))
    return "wsgi", handler(obj, root_path=cfg.root_path, multithread=cfg.threads > 1,
                           multiprocess=cfg.workers > 1)


def _where(exc: BaseException) -> str:
    """`Type: message (file:line)` of the innermost frame: one line that says what broke."""
    frames = traceback.extract_tb(exc.__traceback__)
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{text}"
    if frames:
        last = frames[-1]
        text += f" ({last.filename}:{last.lineno})"
    return text
