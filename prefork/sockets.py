"""Listening sockets: bound by the master before it forks, inherited by the workers."""

from __future__ import annotations

import os
import socket
import stat
from typing import List

from prefork.config import BindSpec


class BindError(OSError):
    """A listening socket could not be created; the message says which and why."""


class Listener:
    __slots__ = ("sock", "spec", "url", "tls")

    def __init__(self, sock: socket.socket, spec: BindSpec, url: str) -> None:
        self.sock = sock
        self.spec = spec
        self.url = url
        self.tls = False  # its connections start with a TLS handshake (--certfile)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
        if self.spec.kind == "unix":
            try:
                os.unlink(self.spec.path)
            except OSError:
                pass


def _tcp(spec: BindSpec, backlog: int) -> Listener:
    try:
        infos = socket.getaddrinfo(spec.host, spec.port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot resolve {spec.host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {spec}: {exc.strerror}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return Listener(sock, BindSpec("tcp", host, port), f"http://{shown}:{port}")


def _unix(spec: BindSpec, backlog: int) -> Listener:
    path = spec.path
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # a stale socket from an earlier run
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on unix:{path}: {exc.strerror}") from None
    return Listener(sock, spec, f"unix:{path}")


def _inherited(spec: BindSpec) -> Listener:
    try:
        sock = socket.socket(fileno=spec.fd)
    except OSError as exc:
        raise BindError(f"fd://{spec.fd}: {exc.strerror}") from None
    if sock.type != socket.SOCK_STREAM or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 1:
        sock.detach()
        raise BindError(f"fd://{spec.fd} is not a listening stream socket")
    if sock.family == socket.AF_UNIX:
        url = f"unix:{sock.getsockname()}"
    else:
        host, port = sock.getsockname()[:2]
        url = f"http://{f'[{host}]' if sock.family == socket.AF_INET6 else host}:{port}"
    # An inherited socket is not ours to unlink on exit: keep spec.kind "fd".
    return Listener(sock, spec, url)


def open_listeners(specs, backlog: int, tls: bool = False) -> List[Listener]:
    """Bind `specs`; `tls`: they serve HTTPS (their URLs say https://)."""
    listeners: List[Listener] = []
    try:
        for spec in specs:
            if spec.kind == "tcp":
                listeners.append(_tcp(spec, backlog))
            elif spec.kind == "unix":
                listeners.append(_unix(spec, backlog))
            else:
                listeners.append(_inherited(spec))
    except BindError:
        for listener in listeners:
            listener.close()
        raise
    for listener in listeners:
        if tls:
            listener.tls = True
            if listener.url.startswith("http://"):
                listener.url = "https://" + listener.url[7:]
            else:
                listener.url += " (TLS)"
        listener.sock.setblocking(False)
        os.set_inheritable(listener.fileno(), False)  # workers get them by fork, not exec
    return listeners

