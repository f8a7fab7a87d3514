"""argv → Config → Master.run(). The only place that prints usage errors."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Optional, Sequence

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
    p.add_argument("--version", action="version", version=f"prefork-http {__version__}")
    return p


def parse_config(argv: Optional[Sequence[str]] = None) -> Config:
    """Parse argv into a validated Config; exits 2 with one line on stderr on any error."""
    ap = build_argparser()
    ns = ap.parse_args(argv)
    import os

    parser = ns.parser or os.environ.get("PREFORK_PARSER") or "auto"
    if ns.chdir is not None:
        # Before validation, so that --root and the application are found from there.
        try:
            os.chdir(ns.chdir)
        except OSError as exc:
            ap.error(f"--chdir {ns.chdir!r}: {exc.strerror}")

    from prefork.systemd import inherited_binds, inherited_metrics_bind

    binds = tuple(ns.bind) if ns.bind else Config().binds
    inherited, source = inherited_binds()
    # An upgrade hands over every socket; systemd's sockets serve when no --bind is given.
    if inherited and (source == "upgrade" or not ns.bind):
        binds = tuple(inherited)
    try:
        cfg = Config(
            binds=binds,
            workers=ns.workers,
            root=ns.root,
            parser=parser,
            timeout=ns.timeout,
            boot_timeout=ns.boot_timeout,
            max_requests=ns.max_requests,
            max_requests_jitter=ns.max_requests_jitter,
            metrics_bind=inherited_metrics_bind() or ns.metrics_bind,
            graceful_timeout=ns.graceful_timeout,
            keepalive=ns.keepalive,
            header_timeout=ns.header_timeout,
            body_timeout=ns.body_timeout,
            write_timeout=ns.write_timeout,
            forwarded_allow_ips=ns.forwarded_allow_ips,
            proxy_protocol=ns.proxy_protocol,
            backlog=ns.backlog,
            max_connections=ns.max_connections,
            access_log=ns.access_log,
            log_level=ns.log_level,
            pid_file=ns.pid_file,
            limit_request_line=ns.limit_request_line,
            limit_request_fields=ns.limit_request_fields,
            limit_request_field_size=ns.limit_request_field_size,
            max_body_size=ns.max_body_size,
            listing=ns.listing,
            serve_dotfiles=ns.serve_dotfiles,
            follow_symlinks=ns.follow_symlinks,
            static_max_age=ns.static_max_age,
            app=ns.app,
            root_path=ns.root_path,
            threads=ns.threads,
            access_log_format=ns.access_log_format,
            spool_threshold=ns.spool_threshold,
            interface=ns.interface,
            loop=ns.loop,
            lifespan=ns.lifespan,
            ws_max_size=ns.ws_max_size,
            ws_ping_interval=ns.ws_ping_interval,
            ws_ping_timeout=ns.ws_ping_timeout,
        ).validate()
    except ConfigError as exc:
        ap.error(str(exc))
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_config(argv)
    from prefork.http import parser as parser_choice

    try:
        parser_choice.load(cfg.parser)
    except parser_choice.ParserUnavailable as exc:
        print(f"prefork-http: error: --parser cython: {exc}", file=sys.stderr)
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

    return Master(cfg).run()


if __name__ == "__main__":
    sys.exit(main())
