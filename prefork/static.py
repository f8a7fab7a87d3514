"""Static files under a root folder: safe paths, types, and a sendfile plan.

The bet: a path is safe when what was actually opened lies under the root. So the path is
decoded and refused early for anything suspicious (dot segments, encoded slashes,
backslashes, NUL), then the file is opened once, and the descriptor itself is checked with
fstat (regular file) and /proc/self/fd (its real path is under the root), which leaves no
window between a check and the open.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import stat
import time
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote_to_bytes

from prefork._pyparser import header_block  # off the hot path: once per file and second
from prefork.response import FileBody, Response, error_response

ALLOWED = "GET, HEAD"
INDEX = "index.html"
# Files up to this size are read once, kept in memory, and leave with their head in one
# send(); larger ones go out with sendfile. Each cached answer is trusted for at most
# REVALIDATE seconds, then the path is opened and checked again (nginx's
# open_file_cache_valid, which defaults to 60 s, is the same bet).
SMALL_FILE = 64 * 1024
CACHE_BYTES = 32 * 1024 * 1024  # per worker; the cache is emptied when it would grow past
REVALIDATE = 1.0
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO never hangs us
# Types that are text but not text/*; they get charset=utf-8 too.
_TEXTUAL = frozenset({"application/javascript", "application/json", "application/xml",
                      "image/svg+xml", "application/manifest+json"})
# The machine's mime database varies; the web's common types must not.
_TYPES = {
    ".html": "text/html", ".htm": "text/html", ".css": "text/css", ".js": "text/javascript",
    ".mjs": "text/javascript", ".json": "application/json", ".svg": "image/svg+xml",
    ".wasm": "application/wasm", ".webp": "image/webp", ".avif": "image/avif",
    ".woff2": "font/woff2", ".woff": "font/woff", ".mp4": "video/mp4", ".pdf": "application/pdf",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".txt": "text/plain", ".xml": "application/xml", ".ico": "image/vnd.microsoft.icon",
}


class StaticFiles:
    """Serves GET and HEAD for the files under `root`; a handler: request → Response."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip("/") + "/"
        self._content_types: Dict[str, str] = {}
        self._last_modified: Dict[float, str] = {}
        # request path → (valid until, headers, body, serialized headers) for small files
        self._cache: Dict[str, Tuple[float, List[Tuple[str, str]], bytes, str]] = {}
        self._cached_bytes = 0

    def __call__(self, req) -> Response:
        if req.method != "GET" and req.method != "HEAD":
            return error_response(405, "Method Not Allowed", [("Allow", ALLOWED)])
        hit = self._cache.get(req.path)
        if hit is not None and hit[0] > time.monotonic():
            return Response(200, hit[1], hit[2], hit[3])
        rel = self.decode_path(req.path)
        if rel is None:
            return error_response(404, "Not Found")
        try:
            fd = os.open(self.root + rel, _OPEN_FLAGS)
        except PermissionError:
            return error_response(403, "Forbidden")
        except OSError:  # missing, not a folder on the way, a symlink loop, too long...
            return error_response(404, "Not Found")
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                if not rel.endswith("/"):
                    os.close(fd)
                    fd = -1
                    location = "/" + req.path.lstrip("/") + "/"
                    if req.query:
                        location += "?" + req.query
                    return error_response(301, "Moved Permanently", [("Location", location)])
                dir_fd, fd = fd, -1
                try:
                    fd = os.open(INDEX, _OPEN_FLAGS, dir_fd=dir_fd)
                except OSError:  # no index, and listings are not served
                    return error_response(403, "Forbidden")
                finally:
                    os.close(dir_fd)
                rel += INDEX
                st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not self._inside(fd):
                return error_response(404, "Not Found")
            headers = [("Content-Type", self.content_type(rel)),
                       ("Last-Modified", self.last_modified(st.st_mtime))]
            if st.st_size <= SMALL_FILE:
                body = os.pread(fd, st.st_size, 0)
                if len(body) == st.st_size:
                    self._remember(req.path, headers, body)
                return Response(200, headers, body)
            response = Response(200, headers, FileBody(fd, 0, st.st_size))
            fd = -1  # the response owns it now
            return response
        finally:
            if fd >= 0:
                os.close(fd)

    def _remember(self, path: str, headers, body: bytes) -> None:
        if self._cached_bytes + len(body) > CACHE_BYTES:
            self._cache.clear()
            self._cached_bytes = 0
        old = self._cache.get(path)
        if old is not None:
            self._cached_bytes -= len(old[2])
        self._cache[path] = (time.monotonic() + REVALIDATE, headers, body, header_block(headers))
        self._cached_bytes += len(body)

    def last_modified(self, mtime: float) -> str:
        text = self._last_modified.get(mtime)
        if text is None:
            if len(self._last_modified) > 4096:
                self._last_modified.clear()
            text = self._last_modified[mtime] = email.utils.formatdate(mtime, usegmt=True)
        return text

    @staticmethod
    def decode_path(path: str) -> Optional[str]:
        """The percent-decoded path if it is safe to join to the root, else None."""
        if not path.startswith("/"):
            return None
        if "%" in path:
            lowered = path.lower()
            if "%2f" in lowered or "%5c" in lowered or "%00" in lowered:
                return None
            try:
                path = unquote_to_bytes(path).decode("utf-8")
            except UnicodeDecodeError:
                return None
        if "\\" in path or "\x00" in path:
            return None
        for segment in path.split("/"):
            if segment == ".." or segment == ".":
                return None
        return path

    def _inside(self, fd: int) -> bool:
        """Does the descriptor's real path lie under the root (no symlink led out)?"""
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return False
        return real.startswith(self._prefix) or real == self.root

    def content_type(self, name: str) -> str:
        ext = os.path.splitext(name)[1].lower()
        ctype = self._content_types.get(ext)
        if ctype is None:
            ctype = _TYPES.get(ext) or mimetypes.guess_type("f" + ext)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype in _TEXTUAL:
                ctype += "; charset=utf-8"
            self._content_types[ext] = ctype
        return ctype
