"""Static files under a root folder: safe paths, validators, ranges, variants, sendfile plan.

The bet on safety: a path is safe when what was actually opened lies under the root. So
the path is decoded and refused early for anything suspicious (dot segments, encoded
slashes, backslashes, NUL, dotfiles unless asked for), then the file is opened once, and
the descriptor itself is checked with fstat (regular file) and /proc/self/fd (its real
path is under the root, unless --follow-symlinks), which leaves no window between a check
and the open.

The bet on speed: what a path resolves to is kept for about a second (an open-file cache,
like nginx's open_file_cache): the descriptor, its stat, the validators and the header
block already serialized, and the bytes themselves for small files. A request for a hot
file is then a dict lookup and a Response; the cache's descriptor is shared with the
responses in flight through a reference count (response.SharedFd), so an entry can be
dropped while a slow client is still being sent its file.

What the request headers mean (conditionals, ranges, Accept-Encoding) is read by
prefork.apps.fileheaders; this module decides what to send.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import stat
import time
from typing import Dict, List, Optional, Tuple, Union
from urllib.parse import unquote_to_bytes

from prefork.apps import fileheaders as fh
from prefork.http._pyparser import header_block  # off the hot path: once per file and second
from prefork.apps.listing import render_listing
from prefork.apps.response import FileBody, Parts, Response, SharedFd, error_response

ALLOWED = "GET, HEAD"
INDEX = "index.html"
# What the operator can do about a folder without index.html when listings are off: in
# the 403 body (for files served from the command line) and in the startup log line.
NO_INDEX_ADVICE = ("Start prefork-http with --listing to list the folder's files, "
                   "or with --root DIR to serve another folder.")
# Files up to this size are read once, kept in memory, and leave with their head in one
# send(); larger ones go out with sendfile from a descriptor kept open. Each cache entry
# is trusted for REVALIDATE seconds, then the path is opened and checked again (nginx's
# open_file_cache_valid, which defaults to 60 s, is the same bet).
SMALL_FILE = 64 * 1024
CACHE_BYTES = 32 * 1024 * 1024  # file bytes kept in memory, per worker
CACHE_OPEN_FILES = 256  # descriptors kept open by the cache, per worker
REVALIDATE = 1.0
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO never hangs us
# Precompressed files beside the plain one, in the server's order of preference.
VARIANTS = (("br", ".br"), ("gzip", ".gz"))
# Request headers that need more than the plain 200 answer.
_CONDITIONAL = frozenset({"if-match", "if-none-match", "if-modified-since",
                          "if-unmodified-since", "range"})
# Types that are text but not text/*; they get charset=utf-8 too.
_TEXTUAL = frozenset({"text/javascript", "application/json", "application/xml",
                      "image/svg+xml", "application/manifest+json"})
# The machine's mime database varies; the web's common types must not.
_TYPES = {
    ".html": "text/html", ".htm": "text/html", ".css": "text/css", ".js": "text/javascript",
    ".mjs": "text/javascript", ".json": "application/json", ".svg": "image/svg+xml",
    ".wasm": "application/wasm", ".webp": "image/webp", ".avif": "image/avif",
    ".woff2": "font/woff2", ".woff": "font/woff", ".mp4": "video/mp4", ".pdf": "application/pdf",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".txt": "text/plain", ".xml": "application/xml", ".ico": "image/vnd.microsoft.icon",
    ".webmanifest": "application/manifest+json", ".map": "application/json",
}


class Representation:
    """One file as it is sent: the plain file or one precompressed variant of it."""

    __slots__ = ("key", "size", "mtime", "etag", "content_type", "coding", "headers", "block",
                 "headers_304", "block_304", "body", "shared")

    def file_body(self, offset: int, count: int) -> Union[bytes, FileBody]:
        if self.body is not None:
            return self.body if count == self.size else self.body[offset:offset + count]
        shared = self.shared
        return FileBody(shared.acquire(), offset, count, shared)


class Entry:
    """What a request path resolves to, trusted until `until` (time.monotonic())."""

    __slots__ = ("until", "plain", "codings", "variants", "cost")

    def release(self) -> None:
        for rep in (self.plain, *self.variants.values()):
            if rep.shared is not None:
                rep.shared.release()


class StaticFiles:
    """Serves GET and HEAD for the files under `root`; a handler: request → Response."""

    def __init__(self, root: str, *, listing: bool = False, serve_dotfiles: bool = False,
                 follow_symlinks: bool = False, max_age: Optional[int] = None,
                 no_index_advice: str = NO_INDEX_ADVICE) -> None:
        """`no_index_advice` is added to the 403 for a folder without index.html when
        `listing` is off (the command line's options by default; "" for none)."""
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip("/") + "/"
        self.listing = listing
        self._no_index = (f"403 Forbidden: this folder has no index.html, and listings are off.\n"
                          f"{no_index_advice}\n".encode("utf-8") if no_index_advice else b"403 Forbidden\n")
        self.serve_dotfiles = serve_dotfiles
        self.follow_symlinks = follow_symlinks
        self.cache_control = None if max_age is None else f"public, max-age={max_age}"
        self._content_types: Dict[str, str] = {}
        self._last_modified: Dict[float, str] = {}
        self._entries: Dict[str, Entry] = {}  # request path → entry, oldest first
        self._cached_bytes = 0
        self._open_files = 0
        self._boundaries = 0

    # ------------------------------------------------------------------ answering

    def __call__(self, req) -> Response:
        method = req.method
        if method != "GET" and method != "HEAD":
            return error_response(405, "Method Not Allowed", [("Allow", ALLOWED)])
        entry = self._entries.get(req.path)
        if entry is None or entry.until <= time.monotonic():
            loaded = self._load(req, entry)
            if type(loaded) is Response:
                if entry is not None:  # it was a file a moment ago: let its descriptor go
                    self._forget(self._entries.pop(req.path))
                return loaded
            entry = loaded
        rep = entry.plain
        fields = dict(req.headers)  # last value wins; list fields are joined where it matters
        if entry.codings:
            accept = fields.get("accept-encoding")
            if accept:
                for coding in fh.acceptable_codings(accept, entry.codings):
                    rep = entry.variants[coding]
                    break
        if _CONDITIONAL.isdisjoint(fields):
            return Response(200, rep.headers, rep.file_body(0, rep.size), rep.block)
        return self._conditional(req, fields, rep)

    def _conditional(self, req, fields: Dict[str, str], rep: Representation) -> Response:
        """RFC 9110 §13.2.2: If-Match, else If-Unmodified-Since; then If-None-Match, else
        If-Modified-Since; then If-Range and Range (GET only)."""
        # A client usually sends back exactly the tag it was given: compare that first.
        if "if-match" in fields:
            if fields["if-match"] != rep.etag and \
                    not fh.strong_match(fh.etag_list(_joined(req, "if-match")), rep.etag):
                return error_response(412, "Precondition Failed")
        elif "if-unmodified-since" in fields:
            since = fh.http_date(fields["if-unmodified-since"])
            if since is not None and rep.mtime > since:
                return error_response(412, "Precondition Failed")
        if "if-none-match" in fields:
            if fields["if-none-match"] == rep.etag or \
                    fh.weak_match(fh.etag_list(_joined(req, "if-none-match")), rep.etag):
                return Response(304, rep.headers_304, b"", rep.block_304)
        elif "if-modified-since" in fields:
            since = fh.http_date(fields["if-modified-since"])
            if since is not None and rep.mtime <= since:
                return Response(304, rep.headers_304, b"", rep.block_304)
        spec = fields.get("range")
        if spec is None or req.method != "GET" or ("if-range" in fields and not self._if_range(fields["if-range"], rep)):
            return Response(200, rep.headers, rep.file_body(0, rep.size), rep.block)
        ranges = fh.byte_ranges(spec, rep.size)
        if ranges is fh.UNSATISFIABLE:
            return error_response(416, "Range Not Satisfiable", [("Content-Range", f"bytes */{rep.size}")])
        if ranges is fh.WHOLE or (len(ranges) > 1 and rep.coding is not None):
            # Several ranges of a compressed variant would need the coding in each part's
            # head, which clients do not expect: the whole variant is sent instead.
            return Response(200, rep.headers, rep.file_body(0, rep.size), rep.block)
        if len(ranges) == 1:
            first, last = ranges[0]
            content_range = f"bytes {first}-{last}/{rep.size}"
            return Response(206, rep.headers + [("Content-Range", content_range)],
                            rep.file_body(first, last - first + 1),
                            rep.block + f"Content-Range: {content_range}\r\n")
        return self._multipart(rep, ranges)

    @staticmethod
    def _if_range(value: str, rep: Representation) -> bool:
        """Does If-Range still hold? An entity-tag must match strongly; a date must be
        exactly the Last-Modified (RFC 9110 §13.1.5)."""
        value = value.strip()
        if value.startswith('"') or value.startswith("W/"):
            return value == rep.etag
        return fh.http_date(value) == rep.mtime

    def _multipart(self, rep: Representation, ranges: List[Tuple[int, int]]) -> Response:
        self._boundaries += 1
        boundary = f"{os.getpid():x}{self._boundaries:012x}"
        pieces: List[Union[bytes, FileBody]] = []
        for i, (first, last) in enumerate(ranges):
            opening = "--" if i == 0 else "\r\n--"
            pieces.append(f"{opening}{boundary}\r\n"
                          f"Content-Type: {rep.content_type}\r\n"
                          f"Content-Range: bytes {first}-{last}/{rep.size}\r\n\r\n".encode("latin-1"))
            pieces.append(rep.file_body(first, last - first + 1))
        pieces.append(f"\r\n--{boundary}--\r\n".encode("latin-1"))
        headers = [("Content-Type", f"multipart/byteranges; boundary={boundary}")]
        headers += [h for h in rep.headers if h[0] != "Content-Type"]
        if rep.body is not None:
            return Response(206, headers, b"".join(pieces))
        return Response(206, headers, Parts(pieces))

    # ------------------------------------------------------------------ resolving a path

    def _load(self, req, old: Optional[Entry]) -> Union[Entry, Response]:
        """Open and check what the request path names; a cache Entry, or the answer
        (404, 403, 301, a listing) when it is not a file."""
        rel = self.decode_path(req.path)
        if rel is None or (not self.serve_dotfiles and "/." in rel and _hidden(rel)):
            return error_response(404, "Not Found")
        path = self.root + rel
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except PermissionError:
            return error_response(403, "Forbidden")
        except OSError:  # missing, not a folder on the way, a symlink loop, too long...
            return error_response(404, "Not Found")
        variant_fds: List[Tuple[str, int, os.stat_result]] = []
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                if not rel.endswith("/"):
                    location = "/" + req.path.lstrip("/") + "/"
                    if req.query:
                        location += "?" + req.query
                    return error_response(301, "Moved Permanently", [("Location", location)])
                dir_fd, fd = fd, -1
                try:
                    fd = os.open(INDEX, _OPEN_FLAGS, dir_fd=dir_fd)
                except FileNotFoundError:
                    if self.listing and (self.follow_symlinks or self._inside(dir_fd)):
                        return render_listing(dir_fd, rel, self.serve_dotfiles)
                    if self.listing:  # a listing outside the root is refused, not advised
                        return error_response(403, "Forbidden")
                    return Response(403, [("Content-Type", "text/plain; charset=utf-8")], self._no_index)
                except OSError:
                    return error_response(403, "Forbidden")
                finally:
                    os.close(dir_fd)
                rel += INDEX
                path += INDEX
                st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not (self.follow_symlinks or self._inside(fd)):
                return error_response(404, "Not Found")
            for coding, suffix in VARIANTS:
                vfd = self._open_variant(path + suffix)
                if vfd is not None:
                    variant_fds.append((coding, vfd, os.fstat(vfd)))
            entry = Entry()
            entry.cost = 0
            entry.variants = {}
            old_reps = {} if old is None else {r.key: r for r in (old.plain, *old.variants.values())}
            vary = bool(variant_fds)
            plain_fd, fd = fd, -1  # _representation takes each descriptor over
            entry.plain = self._representation(plain_fd, st, rel, None, vary, old_reps)
            try:
                while variant_fds:
                    coding, vfd, vst = variant_fds.pop(0)
                    entry.variants[coding] = self._representation(vfd, vst, rel, coding, vary, old_reps)
            except BaseException:
                entry.release()
                raise
            entry.codings = tuple(entry.variants)
            entry.until = time.monotonic() + REVALIDATE
            self._store(req.path, entry)
            return entry
        finally:
            if fd >= 0:
                os.close(fd)
            for _, vfd, _ in variant_fds:
                os.close(vfd)

    def _open_variant(self, path: str) -> Optional[int]:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and (self.follow_symlinks or self._inside(fd)):
                fd, ok = -1, fd
                return ok
            return None
        finally:
            if fd >= 0:
                os.close(fd)

    def _representation(self, fd: int, st: os.stat_result, name: str, coding: Optional[str],
                        vary: bool, old_reps: Dict[tuple, Representation]) -> Representation:
        """Build what is sent for the open file `fd` (which this takes over): validators,
        the header blocks, and the bytes (small files) or a SharedFd (large ones). An
        unchanged file keeps the representation it had."""
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, coding, vary)
        rep = old_reps.get(key)
        if rep is not None:
            os.close(fd)
            if rep.shared is not None:
                rep.shared.acquire()  # the new entry's reference; the old entry drops its own
            return rep
        rep = Representation()
        rep.key = key
        rep.size = st.st_size
        rep.body = rep.shared = None
        if st.st_size <= SMALL_FILE:
            try:
                rep.body = os.pread(fd, st.st_size, 0)
            finally:
                os.close(fd)
            rep.size = len(rep.body)  # shorter if the file is changing under us: briefly
        else:
            rep.shared = SharedFd(fd)
        rep.mtime = int(st.st_mtime)
        rep.etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
        rep.content_type = self.content_type(name)
        rep.coding = coding
        last_modified = self.last_modified(st.st_mtime)
        headers = [("Content-Type", rep.content_type), ("Last-Modified", last_modified),
                   ("ETag", rep.etag), ("Accept-Ranges", "bytes")]
        common = [("ETag", rep.etag), ("Last-Modified", last_modified)]
        if self.cache_control is not None:
            headers.append(("Cache-Control", self.cache_control))
            common.append(("Cache-Control", self.cache_control))
        headers.append(("X-Content-Type-Options", "nosniff"))
        if coding is not None:
            headers.append(("Content-Encoding", coding))
        if vary:
            headers.append(("Vary", "Accept-Encoding"))
            common.append(("Vary", "Accept-Encoding"))
        rep.headers, rep.block = headers, header_block(headers)
        rep.headers_304, rep.block_304 = common, header_block(common)
        return rep

    def _store(self, path: str, entry: Entry) -> None:
        old = self._entries.pop(path, None)
        if old is not None:
            self._forget(old)
        reps = (entry.plain, *entry.variants.values())
        entry.cost = sum(len(r.body) for r in reps if r.body is not None)
        opened = sum(1 for r in reps if r.shared is not None)
        entries = self._entries
        while entries and (self._cached_bytes + entry.cost > CACHE_BYTES
                           or self._open_files + opened > CACHE_OPEN_FILES):
            self._forget(entries.pop(next(iter(entries))))
        self._cached_bytes += entry.cost
        self._open_files += opened
        entries[path] = entry

    def _forget(self, entry: Entry) -> None:
        self._cached_bytes -= entry.cost
        self._open_files -= sum(1 for r in (entry.plain, *entry.variants.values()) if r.shared is not None)
        entry.release()

    def close(self) -> None:
        """Drop the cache (responses in flight keep their descriptors until sent)."""
        for entry in self._entries.values():
            entry.release()
        self._entries.clear()
        self._cached_bytes = self._open_files = 0

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


def _hidden(rel: str) -> bool:
    """Does a segment of the path start with a dot (other than .well-known, RFC 8615)?"""
    for segment in rel.split("/"):
        if segment[:1] == "." and segment != ".well-known":
            return True
    return False


def _joined(req, name: str) -> str:
    """All the values of a list field, as one list (a field may be sent on several lines)."""
    return ", ".join(value for key, value in req.headers if key == name)
