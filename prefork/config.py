"""The frozen configuration: defaults, parsing of bind addresses, validation.

Imports nothing from prefork. Everything the user can get wrong is checked here, so that
a bad value is one line on stderr and exit code 2 before anything binds or forks.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import NamedTuple, Optional, Tuple


# RFC 9111 §1.2.2: a cache-directive's delta-seconds is capped at 2**31.
MAX_AGE_LIMIT = 2 ** 31
# The largest size or count limit (1 PiB): the parser twins clamp anything above it to it
# (prefork/http/_pyparser.py LIMIT_MAX, the same number), so a larger value would not mean
# what it says; refused instead.
SIZE_LIMIT = 1 << 50


class ConfigError(ValueError):
    """A value the user gave is unusable; the message says which and why."""


class BindSpec(NamedTuple):
    kind: str  # "tcp", "unix" or "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_bind(spec: str) -> BindSpec:
    """HOST:PORT, [IPv6]:PORT, :PORT (all interfaces), unix:PATH or fd://N."""
    if spec.startswith("unix:"):
        path = spec[5:]
        if not path:
            raise ConfigError(f"--bind {spec!r}: unix: needs a path")
        return BindSpec("unix", path=path)
    if spec.startswith("fd://"):
        try:
            fd = int(spec[5:])
        except ValueError:
            raise ConfigError(f"--bind {spec!r}: fd:// needs a file descriptor number") from None
        if fd < 0:
            raise ConfigError(f"--bind {spec!r}: negative file descriptor")
        return BindSpec("fd", fd=fd)
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0 or spec[close + 1:close + 2] != ":":
            raise ConfigError(f"--bind {spec!r}: expected [IPv6]:PORT")
        host, port_s = spec[1:close], spec[close + 2:]
    else:
        host, sep, port_s = spec.rpartition(":")
        if not sep:
            raise ConfigError(f"--bind {spec!r}: expected HOST:PORT, unix:PATH or fd://N")
        if ":" in host:
            raise ConfigError(f"--bind {spec!r}: write IPv6 addresses as [ADDR]:PORT")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ConfigError(f"--bind {spec!r}: port must be a number from 0 to 65535")
    return BindSpec("tcp", host=host or "0.0.0.0", port=int(port_s))


# module:attribute or module:factory() — what the positional argument of the command names.
APP_SPEC = re.compile(r"([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)(\(\))?")
ACCESS_LOG_FORMATS = ("combined", "json")
INTERFACES = ("auto", "app", "wsgi", "asgi")
LOOPS = ("auto", "asyncio", "uvloop")
LIFESPANS = ("auto", "on", "off")
CERT_REQS = ("none", "optional", "required")
TLS_VERSIONS = ("1.2", "1.3")
# Mozilla's "intermediate" configuration (ssl-config.mozilla.org, guideline 5.7): TLS 1.2
# suites with forward secrecy and AEAD only. TLS 1.3 suites are OpenSSL's defaults, which
# are the same three Mozilla lists; set_ciphers() does not touch them.
DEFAULT_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                   "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                   "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                   "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")


@dataclasses.dataclass(frozen=True)
class Config:
    binds: Tuple[BindSpec, ...] = (BindSpec("tcp", "127.0.0.1", 8000),)
    workers: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    root: str = "."
    parser: str = "auto"  # auto | cython | python
    wsgi: str = "auto"  # the WSGI adapter twin: auto | cython | python
    timeout: float = 30.0  # a worker silent (or stuck in one request) this long is killed
    boot_timeout: float = 60.0  # a worker that has not reported ready by then is killed
    max_requests: int = 0  # 0: never; else a worker retires after about this many
    max_requests_jitter: int = 0  # each worker retires after max_requests + randint(0, J)
    metrics_bind: Optional[BindSpec] = None  # Prometheus text on this address
    graceful_timeout: float = 30.0  # how long a graceful stop may take
    keepalive: float = 5.0  # idle seconds before a keep-alive connection is closed
    header_timeout: float = 20.0  # a request head must arrive whole within this (slowloris)
    body_timeout: float = 30.0  # longest silence while a request body arrives
    write_timeout: float = 30.0  # longest stall while a client does not read its answer
    forwarded_allow_ips: str = "127.0.0.1,::1"  # peers whose X-Forwarded-*/PROXY are believed
    proxy_protocol: bool = False  # trusted peers start each connection with a PROXY header
    backlog: int = 2048
    max_connections: int = 1000  # per worker; a full worker stops accepting
    access_log: Optional[str] = None  # None: off; "-": stdout; else a file path
    log_level: str = "info"
    pid_file: Optional[str] = None
    limit_request_line: int = 8190
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    max_body_size: int = 16 * 1024 * 1024
    # Static files.
    listing: bool = False  # an HTML listing for a folder without index.html (else 403)
    serve_dotfiles: bool = False  # paths with a segment starting with "." (else 404)
    follow_symlinks: bool = False  # symlinks that lead out of the root (else 404)
    static_max_age: Optional[int] = None  # seconds for Cache-Control: public, max-age=N
    app: Optional[str] = None  # "module:app" or "module:create_app()"; None serves root
    root_path: str = ""  # the prefix the application is mounted under (SCRIPT_NAME)
    threads: int = 1  # handler threads per worker; 1 runs handlers in the loop
    access_log_format: str = "combined"  # combined | json
    spool_threshold: int = 1024 * 1024  # request bodies larger than this go to a temp file
    # ASGI (the asyncio worker).
    interface: str = "auto"  # auto | app | wsgi | asgi: what the application speaks
    loop: str = "auto"  # auto | asyncio | uvloop (auto: uvloop when installed)
    lifespan: str = "auto"  # auto | on | off: ASGI lifespan startup/shutdown per worker
    ws_max_size: int = 16 * 1024 * 1024  # largest WebSocket message, else close 1009
    ws_ping_interval: float = 20.0  # seconds between pings to an idle WebSocket; 0: never
    ws_ping_timeout: float = 20.0  # seconds to wait for the pong, then close 1011
    # Development reload (prefork/reloader.py).
    reload: bool = False  # watch the application's files; a change does a rolling reload
    reload_dirs: Tuple[str, ...] = ()  # folders to watch (empty: the working folder)
    reload_include: Tuple[str, ...] = ("*.py",)  # file name globs whose change reloads
    reload_exclude: Tuple[str, ...] = (".*", "*.py[cod]", "*~", "*.sw?")  # globs never watched
    # Privileges (prefork/privileges.py).
    user: Optional[str] = None  # workers run as this user (name or uid) and its groups
    group: Optional[str] = None  # ... and this group (default: the user's primary group)
    umask: Optional[int] = None  # the master's and workers' umask
    socket_mode: Optional[int] = None  # chmod of unix sockets the master creates
    allow_root: bool = False  # let workers run as root without a warning (or --user root)
    chdir: Optional[str] = None  # the folder changed to at startup (cli.parse_config does it)
    config_file: Optional[str] = None  # the TOML file read (absolute), re-read on HUP
    # TLS (prefork/tls.py). With a certificate, every --bind serves TLS; --bind-plain adds
    # plain listeners beside them.
    certfile: Optional[str] = None  # PEM certificate chain; with keyfile, TLS on every --bind
    keyfile: Optional[str] = None  # PEM private key (default: in certfile)
    keyfile_password_file: Optional[str] = None  # a file whose first line decrypts keyfile
    ca_certs: Optional[str] = None  # PEM CA bundle that client certificates must chain to
    cert_reqs: str = "none"  # none | optional | required: ask for a client certificate
    ciphers: str = DEFAULT_CIPHERS  # OpenSSL cipher list for TLS 1.2
    tls_min_version: str = "1.2"  # 1.2 | 1.3
    tls_handshake_timeout: float = 10.0  # seconds from accept to a finished handshake
    plain_binds: Tuple[BindSpec, ...] = ()  # plain HTTP listeners beside the TLS ones

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    def validate(self) -> "Config":
        if not self.binds:
            raise ConfigError("at least one --bind is needed")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1 (got {self.workers})")
        if self.parser not in ("auto", "cython", "python"):
            raise ConfigError(f"--parser must be auto, cython or python (got {self.parser!r})")
        if self.wsgi not in ("auto", "cython", "python"):
            raise ConfigError(f"--wsgi must be auto, cython or python (got {self.wsgi!r})")
        for name in ("timeout", "boot_timeout", "graceful_timeout", "keepalive",
                     "header_timeout", "body_timeout", "write_timeout", "tls_handshake_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be greater than 0")
        for name in ("backlog", "max_connections", "limit_request_line",
                     "limit_request_fields", "limit_request_field_size", "max_body_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("limit_request_line", "limit_request_fields", "limit_request_field_size",
                     "max_body_size", "spool_threshold"):
            if getattr(self, name) > SIZE_LIMIT:
                raise ConfigError(f"--{name.replace('_', '-')} must be at most {SIZE_LIMIT} (1 PiB) "
                                  f"(got {getattr(self, name)})")
        for name in ("max_requests", "max_requests_jitter"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more")
        if self.static_max_age is not None and not 0 <= self.static_max_age <= MAX_AGE_LIMIT:
            raise ConfigError(f"--static-max-age must be 0 to {MAX_AGE_LIMIT} seconds "
                              f"(got {self.static_max_age})")
        for name in ("threads", "spool_threshold"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.app is not None and APP_SPEC.fullmatch(self.app) is None:
            raise ConfigError(f"application {self.app!r}: expected module:name or module:factory()")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ConfigError(f"--root-path {self.root_path!r} must start with / and not end with /")
        if self.access_log_format not in ACCESS_LOG_FORMATS:
            raise ConfigError(f"--access-log-format must be one of {', '.join(ACCESS_LOG_FORMATS)}")
        for name, choices in (("interface", INTERFACES), ("loop", LOOPS), ("lifespan", LIFESPANS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"--{name} must be one of {', '.join(choices)}")
        if self.ws_max_size < 1:
            raise ConfigError("--ws-max-size must be at least 1")
        if self.ws_ping_interval < 0 or self.ws_ping_timeout <= 0:
            raise ConfigError("--ws-ping-interval must be 0 or more and --ws-ping-timeout more than 0")
        for name in ("umask", "socket_mode"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 0o777:
                raise ConfigError(f"--{name.replace('_', '-')} must be an octal mode from 000 to 777")
        for folder in self.reload_dirs:
            if not os.path.isdir(folder):
                raise ConfigError(f"--reload-dir {folder!r} is not a directory")
        self._validate_tls()
        if not os.path.isdir(self.root):
            raise ConfigError(f"--root {self.root!r} is not a directory")
        if self.log_level not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"--log-level {self.log_level!r} is not a log level")
        for name, path in (("--access-log", self.access_log), ("--pid", self.pid_file)):
            if path and path != "-":
                folder = os.path.dirname(os.path.abspath(path))
                if not os.path.isdir(folder):
                    raise ConfigError(f"{name} {path!r}: folder {folder!r} does not exist")
        return self

    def _validate_tls(self) -> None:
        """The TLS options agree with each other and name readable files; whether the files
        hold a usable certificate and key is prefork.tls.check's (it needs ssl)."""
        if self.cert_reqs not in CERT_REQS:
            raise ConfigError(f"--cert-reqs must be one of {', '.join(CERT_REQS)}")
        if self.tls_min_version not in TLS_VERSIONS:
            raise ConfigError(f"--tls-min-version must be one of {', '.join(TLS_VERSIONS)}")
        if self.certfile is None:
            for name in ("keyfile", "keyfile_password_file", "ca_certs"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"--{name.replace('_', '-')} needs --certfile")
            if self.cert_reqs != "none":
                raise ConfigError("--cert-reqs needs --certfile")
            if self.plain_binds:
                raise ConfigError("--bind-plain needs --certfile (without it every --bind is plain)")
            return
        if self.cert_reqs != "none" and self.ca_certs is None:
            raise ConfigError(f"--cert-reqs {self.cert_reqs} needs --ca-certs (the CAs client "
                              "certificates must chain to)")
        for name in ("certfile", "keyfile", "keyfile_password_file", "ca_certs"):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                why = "does not exist" if not os.path.exists(path) else "is not readable"
                raise ConfigError(f"--{name.replace('_', '-')} {path!r} {why}")
