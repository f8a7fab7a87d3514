"""argv → Config → Master.run(). The only place that prints usage errors."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Optional, Sequence, Tuple

from prefork import __version__
from prefork.config import Config, ConfigError, parse_bind

EPILOG = """\
examples:
  prefork-http                                  serve the current folder on 127.0.0.1:8000
  prefork-http --workers 4 --root ./public      serve ./public with 4 workers
  prefork-http --workers 4 myapp:app            serve a prefork App, a WSGI or an ASGI application
  prefork-http --threads 8 'myapp:create_app()' call a factory in each worker; 8 handler threads
  prefork-http --bind 0.0.0.0:8080 --bind unix:/run/app.sock
  prefork-http --bind 127.0.0.1:0               pick a free port (printed at startup)
  prefork-http --certfile cert.pem --keyfile key.pem --bind 0.0.0.0:443 --bind-plain 0.0.0.0:80 app:app
                                                HTTPS on 443, plain HTTP on 80

signals to the master:
  TERM graceful stop            INT, QUIT quick stop
  HUP  rolling reload           TTIN / TTOU one worker more / less
  USR1 reopen log files         USR2 start a new master on the same sockets (upgrade)
exit codes: 1 cannot bind, 2 bad command line, 3 a worker could not boot,
            4 the application could not be loaded.
"""


def _int_at_least(minimum: int):
    """An argparse type: a whole number no smaller than `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds greater than 0")
    return value


def _non_negative_float(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return _positive_float(text)


def _seconds(text: str) -> int:
    """A whole number of seconds, 0 or more (for Cache-Control: max-age)."""
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds (0 or more)")
    return int(text)


def _size(text: str) -> int:
    """A byte count, with an optional K, M or G suffix (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale != 1 else text
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (like 1048576, 512K, 16M, 1G)")
    return int(digits) * scale


def _networks(text: str) -> str:
    from prefork.proxy import parse_networks

    try:
        parse_networks(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _octal(text: str) -> int:
    """A permission mode or umask in octal: 660, 0660 or 0o660."""
    digits = text[2:] if text[:2].lower() == "0o" else text
    if not digits or any(c not in "01234567" for c in digits) or int(digits, 8) > 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode (like 660 or 022)")
    return int(digits, 8)


def _bind(text: str):
    try:
        return parse_bind(text)
    except ConfigError as exc:  # "--bind 'x': ..."; argparse names the option (--bind or --metrics-bind)
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--bind ")) from None


# argparse words an option's error "argument --workers/-w: ..."; we say "--workers: ...".
_ARGUMENT_PREFIX = re.compile(r"argument (\S+?)(?:/-\S+?)*: ")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line on stderr and exit code 2:
    `prefork-http: error: --workers: '0' must be at least 1 (see --help)`, without the
    usage block (23 lines that hide the one that matters)."""

    def error(self, message: str):  # type: ignore[override]
        m = _ARGUMENT_PREFIX.match(message)
        if m is not None:
            message = f"{m.group(1)}: {message[m.end():]}"
        message = " ".join(message.split())  # one line, whatever the message held
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_argparser() -> argparse.ArgumentParser:
    p = _ArgumentParser(
        prog="prefork-http",
        description="A pre-fork HTTP/1.1 server: serves an application (a prefork App or any "
                    "WSGI callable) or a folder's files.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Config()
    p.add_argument("app", nargs="?", default=None, metavar="MODULE:APP",
                   help="the application: module:name or module:factory() (an App or a WSGI "
                        "callable); without it, the files under --root are served")
    p.add_argument("--chdir", metavar="DIR", default=None,
                   help="change to DIR before loading the application (it is also put on sys.path)")
    p.add_argument("--root-path", default=d.root_path, metavar="PREFIX",
                   help="the URL prefix the application is mounted under, e.g. /api "
                        "(WSGI SCRIPT_NAME; requests outside it are 404)")
    p.add_argument("--threads", type=_positive_int, default=d.threads,
                   help="handler threads per worker, for blocking applications "
                        "(default %(default)s: handlers run in the event loop)")
    p.add_argument("--bind", "-b", action="append", type=_bind, metavar="ADDR",
                   help="HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeatable "
                        "(default 127.0.0.1:8000; port 0 picks a free port)")
    p.add_argument("--workers", "-w", type=_positive_int, default=d.workers,
                   help="worker processes (default: CPU count, %(default)s here)")
    p.add_argument("--root", default=".", help="folder to serve (default: the current folder)")
    p.add_argument("--parser", choices=("auto", "cython", "python"), default=None,
                   help="request parser (default: PREFORK_PARSER or auto = Cython when built)")
    p.add_argument("--wsgi", choices=("auto", "cython", "python"), default=None,
                   help="WSGI adapter (default: PREFORK_WSGI or auto = Cython when built)")
    p.add_argument("--timeout", type=_positive_float, default=d.timeout,
                   help="seconds a silent worker lives before it is killed (default %(default)s)")
    p.add_argument("--boot-timeout", type=_positive_float, default=d.boot_timeout,
                   help="seconds a new worker has to report ready (default %(default)s)")
    p.add_argument("--max-requests", type=_non_negative_int, default=0,
                   help="a worker is replaced after this many requests; 0 never (default)")
    p.add_argument("--max-requests-jitter", type=_non_negative_int, default=0,
                   help="add randint(0, N) to --max-requests per worker, so they do not all "
                        "retire at once (default 0)")
    p.add_argument("--metrics-bind", type=_bind, metavar="ADDR",
                   help="serve Prometheus metrics from the master on HOST:PORT or unix:PATH")
    p.add_argument("--graceful-timeout", type=_positive_float, default=d.graceful_timeout,
                   help="seconds a graceful stop may take (default %(default)s)")
    p.add_argument("--keepalive", type=_positive_float, default=d.keepalive,
                   help="idle seconds before a keep-alive connection closes (default %(default)s)")
    p.add_argument("--header-timeout", type=_positive_float, default=d.header_timeout,
                   help="seconds a request head may take to arrive, else 408 (default %(default)s)")
    p.add_argument("--body-timeout", type=_positive_float, default=d.body_timeout,
                   help="longest silence while a request body arrives, else 408 (default %(default)s)")
    p.add_argument("--write-timeout", type=_positive_float, default=d.write_timeout,
                   help="longest stall while a client does not read, then close (default %(default)s)")
    p.add_argument("--forwarded-allow-ips", type=_networks, default=d.forwarded_allow_ips, metavar="IPS",
                   help="addresses and CIDRs (comma-separated, '*' for all) whose X-Forwarded-For, "
                        "X-Forwarded-Proto, Forwarded and PROXY headers are believed; unix-socket "
                        "peers always are (default %(default)s)")
    p.add_argument("--proxy-protocol", action="store_true",
                   help="trusted peers begin each connection with a PROXY protocol v1 or v2 header "
                        "(HAProxy send-proxy / send-proxy-v2)")
    p.add_argument("--backlog", type=_positive_int, default=d.backlog,
                   help="listen queue length (default %(default)s)")
    p.add_argument("--max-connections", type=_positive_int, default=d.max_connections,
                   help="open connections per worker (default %(default)s)")
    p.add_argument("--access-log", metavar="PATH", default=None,
                   help="access log in combined format; '-' for stdout (default: off)")
    p.add_argument("--access-log-format", choices=("combined", "json"), default=d.access_log_format,
                   help="combined (plus the request time) or one JSON object per line")
    p.add_argument("--log-level", default=d.log_level,
                   choices=("debug", "info", "warning", "error", "critical"))
    p.add_argument("--pid", dest="pid_file", metavar="PATH", help="write the master's pid here")
    p.add_argument("--limit-request-line", type=_positive_int, default=d.limit_request_line,
                   help="longest request line in bytes, else 414 (default %(default)s)")
    p.add_argument("--limit-request-fields", type=_positive_int, default=d.limit_request_fields,
                   help="most header fields, else 431 (default %(default)s)")
    p.add_argument("--limit-request-field-size", type=_positive_int,
                   default=d.limit_request_field_size,
                   help="longest header field line in bytes, else 431 (default %(default)s)")
    p.add_argument("--max-body-size", type=_size, default=d.max_body_size,
                   help="largest request body, else 413 (default 16M)")
    p.add_argument("--listing", action="store_true",
                   help="list a folder that has no index.html (default: 403)")
    p.add_argument("--serve-dotfiles", action="store_true",
                   help="serve paths with a segment starting with '.' (default: 404; "
                        ".well-known is always served)")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="follow symlinks that lead out of --root (default: 404)")
    p.add_argument("--static-max-age", type=_seconds, default=None, metavar="SECONDS",
                   help="send Cache-Control: public, max-age=SECONDS with files (default: none)")
    p.add_argument("--spool-threshold", type=_size, default=d.spool_threshold,
                   help="request bodies larger than this are kept in a temporary file "
                        "instead of memory (default 1M)")
    p.add_argument("--interface", choices=("auto", "app", "wsgi", "asgi"), default=d.interface,
                   help="what the application speaks: a prefork App, WSGI or ASGI 3 "
                        "(default auto: detected)")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default=d.loop,
                   help="the ASGI worker's event loop (default auto: uvloop when installed)")
    p.add_argument("--lifespan", choices=("auto", "on", "off"), default=d.lifespan,
                   help="ASGI lifespan startup/shutdown in each worker; auto runs it when the "
                        "application supports it (default %(default)s)")
    p.add_argument("--ws-max-size", type=_size, default=d.ws_max_size,
                   help="largest WebSocket message, else close 1009 (default 16M)")
    p.add_argument("--ws-ping-interval", type=_non_negative_float, default=d.ws_ping_interval,
                   help="seconds between pings on a WebSocket, 0 for none (default %(default)s)")
    p.add_argument("--ws-ping-timeout", type=_positive_float, default=d.ws_ping_timeout,
                   help="seconds to wait for a pong before closing with 1011 (default %(default)s)")
    g = p.add_argument_group("TLS", "with --certfile, every --bind serves HTTPS; --bind-plain adds plain "
                                    "HTTP listeners beside them. HUP reloads the files.")
    g.add_argument("--certfile", metavar="FILE",
                   help="PEM certificate (chain); turns TLS on for every --bind")
    g.add_argument("--keyfile", metavar="FILE", help="PEM private key (default: in --certfile)")
    g.add_argument("--keyfile-password-file", metavar="FILE",
                   help="a file whose first line is the password of an encrypted --keyfile")
    g.add_argument("--ca-certs", metavar="FILE",
                   help="PEM CA bundle that client certificates must chain to (mutual TLS)")
    g.add_argument("--cert-reqs", choices=("none", "optional", "required"), default=d.cert_reqs,
                   help="ask clients for a certificate: none, optional (verified when given) or "
                        "required (default %(default)s)")
    g.add_argument("--ciphers", default=d.ciphers, metavar="LIST",
                   help="OpenSSL cipher list for TLS 1.2 (default: Mozilla intermediate)")
    g.add_argument("--tls-min-version", choices=("1.2", "1.3"), default=d.tls_min_version,
                   help="oldest TLS version accepted (default %(default)s)")
    g.add_argument("--tls-handshake-timeout", type=_positive_float, default=d.tls_handshake_timeout,
                   help="seconds from accept to a finished handshake, else close (default %(default)s)")
    g.add_argument("--bind-plain", dest="plain_binds", action="append", type=_bind, metavar="ADDR",
                   help="a plain HTTP listener beside the TLS ones (with --certfile); repeatable")
    g = p.add_argument_group("configuration")
    g.add_argument("--config", metavar="FILE",
                   help="read options from this TOML file (keys are the long option names); "
                        "default: [tool.prefork-http] in ./pyproject.toml when present")
    g.add_argument("--print-config", action="store_true",
                   help="print the effective configuration and where each value came from, then exit")
    g = p.add_argument_group("development")
    g.add_argument("--reload", action="store_true",
                   help="watch the application's files and do a rolling reload when one changes "
                        "(for development; needs pip install 'prefork-http[reload]')")
    g.add_argument("--reload-dir", dest="reload_dirs", action="append", metavar="DIR",
                   help="a folder to watch; repeatable (default: the working folder)")
    g.add_argument("--reload-include", action="append", metavar="GLOB",
                   help="file names whose change reloads; repeatable (default: *.py)")
    g.add_argument("--reload-exclude", action="append", metavar="GLOB",
                   help="file names never watched; repeatable (default: .* *.py[cod] *~ *.sw?)")
    g = p.add_argument_group("privileges")
    g.add_argument("--user", metavar="NAME|UID",
                   help="the master binds, then workers run as this user and its groups")
    g.add_argument("--group", metavar="NAME|GID",
                   help="the workers' group (default: the --user's primary group)")
    g.add_argument("--umask", type=_octal, metavar="MODE", help="umask of the server, in octal (e.g. 027)")
    g.add_argument("--socket-mode", type=_octal, metavar="MODE",
                   help="permissions of unix sockets, in octal (e.g. 660); with --user/--group "
                        "they are also given that owner")
    g.add_argument("--allow-root", action="store_true",
                   help="allow --user root, and silence the warning about workers running as root")
    p.add_argument("--version", action="version", version=version_text())
    return p


def version_text() -> str:
    """`prefork-http 1.2.3 (parser cython, wsgi cython, connection cython, CPython 3.12.1)`:
    the parser and the WSGI adapter auto would pick, and the connection core the workers
    use."""
    import platform

    from prefork.http import parser as parser_choice

    try:
        parser_name = parser_choice.name_of(parser_choice.load("auto"))
    except Exception:  # noqa: BLE001 (version output must not fail)
        parser_name = "unknown"
    try:
        from prefork.apps import wsgi as wsgi_choice

        wsgi_name = wsgi_choice.name_of(wsgi_choice.handler_class("auto"))
    except Exception:  # noqa: BLE001
        wsgi_name = "unknown"
    try:
        from prefork.workers import connection

        conn_name = "cython" if connection.Connection is connection.CConnection else "python"
    except Exception:  # noqa: BLE001
        conn_name = "unknown"
    return (f"prefork-http {__version__} (parser {parser_name}, wsgi {wsgi_name}, connection {conn_name}, "
            f"{platform.python_implementation()} {platform.python_version()})")


# ---------------------------------------------------------------------- option sources
#
# The argparse parser above is the one table of options. Each long option is also a key of
# the TOML file and an environment variable PREFORK_<NAME>; --print-config walks the same
# table. Values from the file and the environment go through the option's own argparse type
# and choices, so they are checked exactly like the command line.

NOT_IN_FILE = {"help", "version", "config", "print-config"}  # command line only
FILE_TABLE = "tool.prefork-http"
WEB_CONCURRENCY = "WEB_CONCURRENCY"
SOURCE_DEFAULT = "default"
SOURCE_CLI = "command line"

_INT_TYPES = (_positive_int, _non_negative_int, _seconds)
_FLOAT_TYPES = (_positive_float, _non_negative_float)


class SourceError(Exception):
    """A bad value in the file or the environment: `where: key: why`."""


def options(ap: argparse.ArgumentParser):
    """(key, action) for every option the file and the environment may set."""
    for action in ap._actions:
        if action.option_strings:
            key = next((o[2:] for o in action.option_strings if o.startswith("--")), None)
        else:
            key = action.dest  # the positional application: `app`
        if key and key not in NOT_IN_FILE:
            yield key, action


def env_name(key: str) -> str:
    return "PREFORK_" + key.upper().replace("-", "_")


def _convert(action: argparse.Action, text: str):
    value = action.type(text) if action.type else text
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(action.choices)}")
    return value


def _from_toml(action: argparse.Action, value):
    """A TOML value, type-checked for the option, then checked by its argparse type."""
    def want(kind: str):
        return argparse.ArgumentTypeError(f"expected {kind}, got {type(value).__name__} {value!r}")

    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise want("true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise want("a string or a list of strings")
        return [_convert(action, v) for v in items]
    if isinstance(value, bool):
        raise want("a number or a string")
    if action.type in _INT_TYPES:
        if not isinstance(value, int):
            raise want("a whole number")
    elif action.type in _FLOAT_TYPES:
        if not isinstance(value, (int, float)):
            raise want("a number")
    elif action.type in (_size, _octal):
        if isinstance(value, int):  # a byte count, or a TOML octal literal like 0o660
            return _convert(action, oct(value) if action.type is _octal else str(value))
        if not isinstance(value, str):
            raise want("a whole number or a string")
    elif not isinstance(value, str):
        raise want("a string")
    return _convert(action, str(value))


def _from_env(action: argparse.Action, text: str):
    """An environment variable's text; "" for a non-boolean option means not set (None)."""
    if isinstance(action, argparse._StoreTrueAction):
        word = text.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("", "0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (1/0, true/false, yes/no)")
    if isinstance(action, argparse._AppendAction):  # comma-separated, like WEB_CONCURRENCY's peers
        return [_convert(action, v.strip()) for v in text.split(",") if v.strip()]
    return _convert(action, text)


def read_toml(path: str, table: Optional[str] = None) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover (Python 3.9, 3.10)
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SourceError(f"{path}: not valid TOML: {exc}") from None
    if table is not None:
        for part in table.split("."):
            data = data.get(part, None) if isinstance(data, dict) else None
        if not isinstance(data, dict):
            return {}
    return data


def _table_of(path: Optional[str]) -> Optional[str]:
    """A pyproject.toml holds our keys in [tool.prefork-http]; any other file at the top."""
    return FILE_TABLE if path and os.path.basename(path) == "pyproject.toml" else None


def find_config_file(explicit: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """(path, table): --config FILE, else ./pyproject.toml when it has [tool.prefork-http]."""
    if explicit:
        return os.path.abspath(explicit), _table_of(explicit)
    path = os.path.abspath("pyproject.toml")
    if os.path.isfile(path):
        try:
            if read_toml(path, FILE_TABLE):
                return path, FILE_TABLE
        except SourceError:
            return None, None  # someone else's broken pyproject.toml is not ours to judge
    return None, None


def layered_values(ap: argparse.ArgumentParser, cli: argparse.Namespace, environ,
                   path: Optional[str], table: Optional[str]):
    """{dest: value} and {dest: source}: command line > environment > file > defaults
    (WEB_CONCURRENCY counts as a default for --workers). Raises SourceError."""
    values: dict = {}
    sources: dict = {}
    table_of = dict(options(ap))
    if WEB_CONCURRENCY in environ:
        try:
            values["workers"] = _positive_int(environ[WEB_CONCURRENCY])
        except argparse.ArgumentTypeError as exc:
            raise SourceError(f"{WEB_CONCURRENCY}: {exc}") from None
        sources["workers"] = WEB_CONCURRENCY
    if path is not None:
        where = f"{path} [{table}]" if table else path
        for key, value in read_toml(path, table).items():
            action = table_of.get(key)
            if action is None:
                import difflib

                close = difflib.get_close_matches(key, list(table_of), 1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise SourceError(f"{where}: {key}: unknown option{hint}")
            try:
                values[action.dest] = _from_toml(action, value)
            except argparse.ArgumentTypeError as exc:
                raise SourceError(f"{where}: {key}: {exc}") from None
            sources[action.dest] = f"file {where}"
    for key, action in table_of.items():
        name = env_name(key)
        if environ.get(name, "") != "" or (name in environ and isinstance(action, argparse._StoreTrueAction)):
            try:
                values[action.dest] = _from_env(action, environ[name])
            except argparse.ArgumentTypeError as exc:
                raise SourceError(f"{name}: {exc}") from None
            sources[action.dest] = f"env {name}"
    for dest, value in vars(cli).items():
        values[dest] = value
        sources[dest] = SOURCE_CLI
    return values, sources


def _parse_cli(argv) -> Tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The command line alone: only the options it gives appear in the namespace."""
    ap = build_argparser()
    ap.parse_args(argv)  # --help (which shows the defaults), --version and usage errors
    for action in ap._actions:
        if action.dest not in ("help", "version"):
            action.default = argparse.SUPPRESS
    return ap, ap.parse_args(argv)


# Config fields that are not options of the same name, and options that are not fields.
_FIELD_OF = {"bind": "binds"}
_NOT_FIELDS = {"config", "print_config"}


def _make_config(values: dict, **fixed) -> Config:
    kwargs = {}
    for dest, value in values.items():
        if dest in _NOT_FIELDS:
            continue
        if isinstance(value, list):
            value = tuple(value)
        kwargs[_FIELD_OF.get(dest, dest)] = value
    kwargs.update(fixed)
    return Config(**kwargs)


def _blame(message: str, sources: dict) -> str:
    """Prefix a validation error with the file or variable that gave the value."""
    m = re.match(r"--([a-z-]+)", message)
    if m is not None:
        dest = m.group(1).replace("-", "_")
        source = sources.get(_FIELD_OF.get(dest, dest), sources.get(dest, ""))
        if source.startswith("file "):
            return f"{source[5:]}: {m.group(1)}: {message}"
        if source.startswith("env "):
            return f"{source[4:]}: {message}"
    return message


def reread_config(argv, old: Config) -> Config:
    """HUP: the configuration again from the same command line, the environment and the
    file (its new contents). Raises ConfigError; the caller keeps what cannot change."""
    ap, cli = _parse_cli(argv)
    try:
        values, sources = layered_values(ap, cli, os.environ, old.config_file,
                                         _table_of(old.config_file))
        # Bind addresses the sources no longer name stay as they are; a changed one is
        # compared (and reported as ignored) by the master.
        keep = {"config_file": old.config_file}
        if not values.get("bind"):
            keep["binds"] = old.binds
        if values.get("metrics_bind") is None:
            keep["metrics_bind"] = old.metrics_bind
        return _make_config(values, **keep).validate()
    except SourceError as exc:
        raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        raise ConfigError(_blame(str(exc), sources)) from None


def parse_config(argv: Optional[Sequence[str]] = None, environ=None):
    """Parse argv, the environment and the config file into a validated Config, and the
    source of each value; exits 2 with one line on stderr on any error."""
    environ = os.environ if environ is None else environ
    ap, cli = _parse_cli(argv)
    config = getattr(cli, "config", None) or environ.get(env_name("config")) or None
    # ./pyproject.toml is looked for where the server was started, before --chdir.
    path, table = find_config_file(config)
    try:
        values, sources = layered_values(ap, cli, environ, path, table)
    except SourceError as exc:
        ap.error(str(exc))
    if values.get("chdir"):
        # Before validation, so that --root and the application are found from there.
        try:
            os.chdir(values["chdir"])
        except OSError as exc:
            ap.error(f"--chdir {values['chdir']!r}: {exc.strerror}")

    from prefork.systemd import inherited_binds, inherited_metrics_bind, inherited_plain_fds

    inherited, source = inherited_binds()
    # An upgrade hands over every socket; systemd's sockets serve when no --bind is given.
    if inherited and (source == "upgrade" or not values.get("bind")):
        plain = inherited_plain_fds() if source == "upgrade" else set()
        values["bind"] = [b for b in inherited if b.fd not in plain]
        sources["bind"] = source
        if plain:  # the old master's --bind-plain listeners: plain here too
            values["plain_binds"] = [b for b in inherited if b.fd in plain]
            sources["plain_binds"] = source
    metrics = inherited_metrics_bind()
    if metrics:
        values["metrics_bind"] = metrics
    try:
        cfg = _make_config(values, config_file=path).validate()
        from prefork.privileges import check

        check(cfg)
    except ConfigError as exc:
        ap.error(_blame(str(exc), sources))
    return cfg, sources


def format_config(cfg: Config, sources: dict) -> str:
    """--print-config: one `key = value  # source` line per option, in TOML."""
    import json

    lines = []
    if cfg.config_file:
        lines.append(f"# configuration file: {cfg.config_file}")
    for key, action in options(build_argparser()):
        dest = action.dest
        value = getattr(cfg, _FIELD_OF.get(dest, dest))
        if isinstance(value, tuple):
            value = [str(v) for v in value]
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            value = str(value)
        if value is None:
            text = "# (not set)"
            line = f"# {key} ="
        else:
            if dest in ("umask", "socket_mode"):
                text = f'"{value:03o}"'
            else:
                text = json.dumps(value)
            line = f"{key} = {text}"
        lines.append(f"{line:<50} # {sources.get(dest, SOURCE_DEFAULT)}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, sources = parse_config(argv)
    if "print_config" in sources:
        sys.stdout.write(format_config(cfg, sources))
        return 0
    from prefork.http import parser as parser_choice

    try:
        parser_choice.load(cfg.parser)
    except parser_choice.ParserUnavailable as exc:
        print(f"prefork-http: error: --parser cython: {exc}", file=sys.stderr)
        return 2
    if cfg.certfile is not None:
        from prefork import tls

        error = tls.check(cfg)
        if error:
            print(f"prefork-http: error: {error}", file=sys.stderr)
            return 2
    from prefork.apps import wsgi as wsgi_choice

    try:
        wsgi_choice.handler_class(cfg.wsgi)
    except wsgi_choice.WSGIAdapterUnavailable as exc:
        print(f"prefork-http: error: --wsgi cython: {exc}", file=sys.stderr)
        return 2
    if cfg.loop == "uvloop":
        import importlib.util

        if importlib.util.find_spec("uvloop") is None:
            print("prefork-http: error: --loop uvloop: uvloop is not installed "
                  "(pip install 'prefork-http[uvloop]')", file=sys.stderr)
            return 2
    if cfg.app is not None:
        # Try the import in a throwaway child, before anything binds: a typo is one line
        # and exit code 4 instead of a crash loop, and the master stays free of the
        # application, so that each worker (and each reload) imports it fresh.
        from prefork.loader import EXIT_APP_ERROR, check_importable

        error = check_importable(cfg.app, cfg.boot_timeout)
        if error:
            print(f"prefork-http: error: {error}", file=sys.stderr)
            return EXIT_APP_ERROR
    from prefork.master import Master

    return Master(cfg, reread=lambda old: reread_config(argv, old)).run()


if __name__ == "__main__":
    sys.exit(main())
