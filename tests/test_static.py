"""Static files as a user of nginx expects them: validators, conditional requests, ranges,
precompressed variants, folders, dotfiles, symlinks, caching headers. Through the real
server (the `start_server` fixture), plus curl as a real client, plus the pure readers of
prefork.apps.fileheaders on their own."""

from __future__ import annotations

import email.utils
import hashlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, read_response
from prefork.apps import fileheaders as fh

pytestmark = pytest.mark.timeout(60)

BIG = 3 * 1024 * 1024 + 123  # past the in-memory limit: served with sendfile


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    rng = random.Random(6)
    (root / "small.bin").write_bytes(rng.randbytes(5000))
    (root / "big.bin").write_bytes(rng.randbytes(BIG))
    (root / "app.js").write_text("console.log('plain');\n" * 50)
    (root / "app.js.gz").write_bytes(b"GZ" * 40)
    (root / "app.js.br").write_bytes(b"BR" * 30)
    (root / "only.css").write_text("body{}\n")
    (root / "only.css.gz").write_bytes(b"gz-css")
    (root / "index.html").write_text("<h1>home</h1>\n")
    return root


def request(sock, path, headers=(), method="GET"):
    lines = [f"{method} {path} HTTP/1.1", "Host: t", *(f"{k}: {v}" for k, v in headers)]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return read_response(sock, head_only=(method == "HEAD"))


def fetch(srv, path, headers=(), method="GET"):
    with srv.connect() as s:
        return request(s, path, headers, method)


# ---------------------------------------------------------------------- validators and 304/412


def test_etag_and_last_modified_are_sent_and_strong(start_server, site):
    srv = start_server(root=site)
    status, h, body = fetch(srv, "/small.bin")
    assert status == 200 and body == (site / "small.bin").read_bytes()
    st = os.stat(site / "small.bin")
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', h["etag"])  # strong: no W/
    assert f"{st.st_ino:x}" in h["etag"] and f"-{st.st_size:x}-" in h["etag"]
    assert h["last-modified"] == email.utils.formatdate(st.st_mtime, usegmt=True)
    assert h["accept-ranges"] == "bytes"
    assert fetch(srv, "/big.bin", method="HEAD")[1]["etag"] != h["etag"]


def test_if_none_match_gives_304_without_body(start_server, site):
    srv = start_server(root=site)
    etag = fetch(srv, "/big.bin", method="HEAD")[1]["etag"]
    with srv.connect() as s:
        for value in (etag, f'"nope", {etag}', f"W/{etag}", "*", f'"x",W/{etag} '):
            status, h, body = request(s, "/big.bin", [("If-None-Match", value)])
            assert (status, body) == (304, b""), value
            assert h["etag"] == etag and "content-length" not in h
        # HEAD too, and the connection stays usable after bodiless answers
        assert request(s, "/big.bin", [("If-None-Match", etag)], "HEAD")[0] == 304
        status, _, body = request(s, "/big.bin", [("If-None-Match", '"other"')])
        assert status == 200 and len(body) == BIG
    # a list split over two field lines still matches
    with srv.connect() as s:
        s.sendall(f'GET /big.bin HTTP/1.1\r\nHost: t\r\nIf-None-Match: "a"\r\nIf-None-Match: {etag}\r\n'
                  f'If-None-Match: "b"\r\n\r\n'.encode())
        assert read_response(s)[0] == 304


def test_if_modified_since(start_server, site):
    srv = start_server(root=site)
    _, h, _ = fetch(srv, "/small.bin")
    lm = h["last-modified"]
    mtime = email.utils.parsedate_to_datetime(lm).timestamp()
    later = email.utils.formatdate(mtime + 3600, usegmt=True)
    earlier = email.utils.formatdate(mtime - 3600, usegmt=True)
    rfc850 = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(mtime))
    asctime = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(mtime))
    for value, expect in ((lm, 304), (later, 304), (rfc850, 304), (asctime, 304),
                          (earlier, 200), ("not a date", 200)):
        status, h2, body = fetch(srv, "/small.bin", [("If-Modified-Since", value)])
        assert status == expect, value
        assert (body == b"") == (expect == 304)
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)
    assert fetch(srv, "/small.bin", [("If-None-Match", '"x"'), ("If-Modified-Since", later)])[0] == 200


def test_if_match_and_if_unmodified_since_give_412(start_server, site):
    srv = start_server(root=site)
    _, h, _ = fetch(srv, "/small.bin")
    etag, lm = h["etag"], h["last-modified"]
    mtime = email.utils.parsedate_to_datetime(lm).timestamp()
    earlier = email.utils.formatdate(mtime - 60, usegmt=True)
    assert fetch(srv, "/small.bin", [("If-Match", etag)])[0] == 200
    assert fetch(srv, "/small.bin", [("If-Match", "*")])[0] == 200
    assert fetch(srv, "/small.bin", [("If-Match", f'"a", {etag}')])[0] == 200
    assert fetch(srv, "/small.bin", [("If-Match", '"other"')])[0] == 412
    assert fetch(srv, "/small.bin", [("If-Match", f"W/{etag}")])[0] == 412  # strong comparison
    assert fetch(srv, "/small.bin", [("If-Unmodified-Since", earlier)])[0] == 412
    assert fetch(srv, "/small.bin", [("If-Unmodified-Since", lm)])[0] == 200
    assert fetch(srv, "/small.bin", [("If-Unmodified-Since", "garbage")])[0] == 200
    # If-Unmodified-Since is not evaluated when If-Match is present
    assert fetch(srv, "/small.bin", [("If-Match", etag), ("If-Unmodified-Since", earlier)])[0] == 200
    # If-Match is evaluated before If-None-Match: 412, not 304
    assert fetch(srv, "/small.bin", [("If-Match", '"x"'), ("If-None-Match", etag)])[0] == 412
    # a failed precondition beats a range
    assert fetch(srv, "/big.bin", [("If-Match", '"x"'), ("Range", "bytes=0-1")])[0] == 412


def test_changed_file_gets_new_validators_after_revalidation(start_server, site):
    srv = start_server(root=site)
    _, h, _ = fetch(srv, "/small.bin")
    (site / "small.bin").write_bytes(b"new content")
    os.utime(site / "small.bin", (time.time() + 10, time.time() + 10))
    deadline = time.monotonic() + 5  # the open-file cache trusts an entry for about 1 s
    while True:
        status, h2, body = fetch(srv, "/small.bin", [("If-None-Match", h["etag"])])
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (status, body) == (200, b"new content")
    assert h2["etag"] != h["etag"] and h2["last-modified"] != h["last-modified"]


# ---------------------------------------------------------------------- ranges


@pytest.mark.parametrize("name", ["small.bin", "big.bin"])
def test_single_ranges(start_server, site, name):
    srv = start_server(root=site)
    data = (site / name).read_bytes()
    size = len(data)
    cases = [("bytes=0-0", 0, 0), ("bytes=10-19", 10, 19), (f"bytes={size - 5}-", size - 5, size - 1),
             ("bytes=-7", size - 7, size - 1), (f"bytes=100-{size * 2}", 100, size - 1),
             (f"bytes=-{size * 3}", 0, size - 1), ("Bytes=3-4", 3, 4), ("bytes = 3-4", None, None)]
    with srv.connect() as s:
        for spec, first, last in cases:
            status, h, body = request(s, f"/{name}", [("Range", spec)])
            if first is None:  # not a valid ranges-specifier: ignored, whole file
                assert status == 200 and body == data
                continue
            assert status == 206, spec
            assert h["content-range"] == f"bytes {first}-{last}/{size}"
            assert int(h["content-length"]) == last - first + 1
            assert body == data[first:last + 1]
            assert h["etag"] and h["accept-ranges"] == "bytes"


def test_unsatisfiable_range_is_416_and_bad_ones_are_ignored(start_server, site):
    srv = start_server(root=site)
    size = BIG
    with srv.connect() as s:
        for spec in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
            status, h, _ = request(s, "/big.bin", [("Range", spec)])
            assert status == 416, spec
            assert h["content-range"] == f"bytes */{size}"
        for spec in ("bytes=5-2", "bytes=abc", "items=0-5", "bytes=", "bytes=1-2-3"):
            status, _, body = request(s, "/big.bin", [("Range", spec)])
            assert status == 200 and len(body) == size, spec
        # HEAD: Range is only defined for GET
        status, h, _ = request(s, "/big.bin", [("Range", "bytes=0-1")], "HEAD")
        assert status == 200 and h["content-length"] == str(size)


def test_if_range(start_server, site):
    srv = start_server(root=site)
    _, h, _ = fetch(srv, "/big.bin", method="HEAD")
    etag, lm = h["etag"], h["last-modified"]
    rng = ("Range", "bytes=0-9")
    assert fetch(srv, "/big.bin", [rng, ("If-Range", etag)])[0] == 206
    assert fetch(srv, "/big.bin", [rng, ("If-Range", lm)])[0] == 206
    for stale in ('"old"', f"W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT"):
        status, _, body = fetch(srv, "/big.bin", [rng, ("If-Range", stale)])
        assert status == 200 and len(body) == BIG, stale


def test_resumable_download_assembled_from_ranges(start_server, site):
    srv = start_server(root=site)
    data = (site / "big.bin").read_bytes()
    rng = random.Random(1)
    got = bytearray()
    with srv.connect() as s:
        etag = request(s, "/big.bin", method="HEAD")[1]["etag"]
        while len(got) < len(data):
            n = rng.randint(1, 400_000)
            status, h, body = request(s, "/big.bin", [("Range", f"bytes={len(got)}-{len(got) + n - 1}"),
                                                      ("If-Range", etag)])
            assert status == 206 and h["etag"] == etag
            got += body
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def parse_multipart(headers, body):
    m = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", headers["content-type"])
    assert m, headers["content-type"]
    delimiter = b"--" + m.group(1).encode()
    assert body.startswith(delimiter + b"\r\n") and body.endswith(b"\r\n" + delimiter + b"--\r\n")
    parts = []
    for chunk in body[len(delimiter) + 2:-len(delimiter) - 6].split(b"\r\n" + delimiter + b"\r\n"):
        head, _, content = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((fields, content))
    return parts


@pytest.mark.parametrize("name", ["small.bin", "big.bin"])
def test_multipart_byteranges(start_server, site, name):
    srv = start_server(root=site)
    data = (site / name).read_bytes()
    size = len(data)
    status, h, body = fetch(srv, f"/{name}", [("Range", "bytes=-10, 0-99,2000-2099, 999999999-")])
    assert status == 206 and int(h["content-length"]) == len(body)
    parts = parse_multipart(h, body)
    # in the order asked; the unsatisfiable member is left out
    assert [p[0]["Content-Range"] for p in parts] == [
        f"bytes {size - 10}-{size - 1}/{size}", f"bytes 0-99/{size}", f"bytes 2000-2099/{size}"]
    assert [p[1] for p in parts] == [data[-10:], data[:100], data[2000:2100]]
    assert all(p[0]["Content-Type"] == "application/octet-stream" for p in parts)
    # overlapping ranges, or ranges adding up to the file, or too many: the whole file
    for spec in ("bytes=0-99,50-150", "bytes=0-,5-10", ",".join(f"{i * 3}-{i * 3}" for i in range(100))):
        status, h, body = fetch(srv, f"/{name}", [("Range", "bytes=" + spec.removeprefix("bytes="))])
        assert status == 200 and body == data, spec[:40]


# ---------------------------------------------------------------------- precompressed variants


@pytest.mark.parametrize("accept, served", [
    (None, "plain"),
    ("gzip, deflate, br", "br"),
    ("gzip", "gz"),
    ("x-gzip", "gz"),
    ("br;q=0, gzip", "gz"),
    ("gzip;q=0.5, br;q=0.4", "gz"),
    ("gzip;q=0.5, br;q=0.9", "br"),
    ("*", "br"),
    ("*;q=0", "plain"),
    ("gzip;q=0, br;q=0", "plain"),
    ("identity", "plain"),
    ("gzip;q=0.5, identity;q=1", "plain"),
    ("deflate, zstd", "plain"),
])
def test_precompressed_variants_follow_accept_encoding(start_server, site, accept, served):
    srv = start_server(root=site)
    headers = [("Accept-Encoding", accept)] if accept else []
    status, h, body = fetch(srv, "/app.js", headers)
    expected = {"plain": (site / "app.js").read_bytes(), "gz": (site / "app.js.gz").read_bytes(),
                "br": (site / "app.js.br").read_bytes()}[served]
    assert status == 200 and body == expected
    assert h["content-type"] == "text/javascript; charset=utf-8"  # the original's type
    assert h["vary"] == "Accept-Encoding"  # on the plain file too: variants exist
    assert h.get("content-encoding") == {"plain": None, "gz": "gzip", "br": "br"}[served]


def test_variants_have_their_own_etag_and_conditionals(start_server, site):
    srv = start_server(root=site)
    tags = {enc: fetch(srv, "/app.js", [("Accept-Encoding", enc)] if enc else [])[1]["etag"]
            for enc in ("", "gzip", "br")}
    assert len(set(tags.values())) == 3
    # a validator for the gzip variant matches only when gzip is what would be sent
    assert fetch(srv, "/app.js", [("Accept-Encoding", "gzip"), ("If-None-Match", tags["gzip"])])[0] == 304
    assert fetch(srv, "/app.js", [("Accept-Encoding", "br"), ("If-None-Match", tags["gzip"])])[0] == 200
    status, h, body = fetch(srv, "/app.js", [("Accept-Encoding", "gzip"), ("Range", "bytes=2-5")])
    assert status == 206 and body == (site / "app.js.gz").read_bytes()[2:6]
    assert h["content-encoding"] == "gzip"
    # only a .gz beside it; the compressed file itself is an ordinary file
    assert fetch(srv, "/only.css", [("Accept-Encoding", "br, gzip")])[2] == b"gz-css"
    status, h, _ = fetch(srv, "/app.js.gz")
    assert status == 200 and "content-encoding" not in h and "vary" not in h
    assert "vary" not in fetch(srv, "/small.bin")[1]


# ---------------------------------------------------------------------- folders, listing


@pytest.fixture
def listed(tmp_path):
    root = tmp_path / "listed"
    d = root / "d"
    (d / "zsub").mkdir(parents=True)
    (d / "Asub").mkdir()
    (d / "b.txt").write_text("bb")
    (d / "a.txt").write_text("a")
    (d / '<img src=x onerror=alert(1)>&"q".txt').write_text("x")
    (d / "sp ace#?.txt").write_text("y")
    (d / ".hidden").write_text("h")
    return root


def test_listing_is_off_by_default(start_server, listed):
    srv = start_server(root=listed)
    assert fetch(srv, "/d/")[0] == 403
    status, h, _ = fetch(srv, "/d")
    assert (status, h["location"]) == (301, "/d/")


def test_a_folder_without_index_says_how_to_list_it_or_serve_another(start_server, listed, docroot):
    """The quick start serves a folder whose / may have no index.html: the 403 and the
    startup log both say what to do (--listing or --root DIR)."""
    srv = start_server(root=listed)  # no index.html at its root, listings off
    for path in ("/", "/d/"):
        status, h, body = fetch(srv, path)
        assert status == 403 and h["content-type"] == "text/plain; charset=utf-8", body
        assert b"no index.html" in body and b"--listing" in body and b"--root DIR" in body, body
    assert fetch(srv, "/", method="HEAD")[0] == 403
    hint = [line for line in srv.log if "has no index.html" in line]
    assert len(hint) == 1 and str(listed) in hint[0], srv.log
    assert "--listing" in hint[0] and "--root DIR" in hint[0], hint
    # A root with index.html, or listings on: no hint at startup.
    for args, root in (((), docroot), (("--listing",), listed)):
        other = start_server(*args, root=root)
        assert not [line for line in other.log if "has no index.html" in line], other.log
    assert fetch(other, "/")[0] == 200  # the listing


def test_listing_escapes_sorts_and_hides_dotfiles(start_server, listed):
    srv = start_server("--listing", root=listed)
    status, h, body = fetch(srv, "/d/")
    assert status == 200 and h["content-type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert "<img" not in page
    assert ">&lt;img src=x onerror=alert(1)&gt;&amp;&quot;q&quot;.txt</a>" in page
    assert 'href="%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E%26%22q%22.txt"' in page
    assert 'href="sp%20ace%23%3F.txt"' in page
    assert ".hidden" not in page
    names = re.findall(r'<a href="[^"]*">([^<]*)</a>', page)
    assert names[:3] == ["../", "Asub/", "zsub/"]  # folders first, then files, each sorted
    assert names[3:5] == ["&lt;img src=x onerror=alert(1)&gt;&amp;&quot;q&quot;.txt", "a.txt"]
    assert re.search(r'href="b.txt">b.txt</a></td><td>2</td><td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d', page)
    # every link works
    for href in re.findall(r'href="([^"]+)"', page)[1:]:
        assert fetch(srv, "/d/" + href.replace("&amp;", "&"))[0] == 200, href
    # an index.html still wins over a listing
    (listed / "d" / "zsub" / "index.html").write_text("idx")
    assert fetch(srv, "/d/zsub/")[2] == b"idx"


# ---------------------------------------------------------------------- dotfiles and symlinks


@pytest.fixture
def dotted(tmp_path):
    root = tmp_path / "dotted"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "config").write_text("secret")
    (root / ".env").write_text("KEY=1")
    (root / ".well-known" / "acme-challenge").mkdir(parents=True)
    (root / ".well-known" / "acme-challenge" / "tok").write_text("token")
    (root / ".well-known" / ".private").write_text("p")
    (root / "ok.txt").write_text("ok")
    return root


def test_dotfiles_are_404_except_well_known(start_server, dotted):
    srv = start_server(root=dotted)
    for path in ("/.env", "/.git/config", "/.git/", "/%2egit/config", "/.well-known/.private"):
        assert fetch(srv, path)[0] == 404, path
    assert fetch(srv, "/.well-known/acme-challenge/tok")[2] == b"token"
    assert fetch(srv, "/ok.txt")[2] == b"ok"


def test_serve_dotfiles_option(start_server, dotted):
    srv = start_server("--serve-dotfiles", "--listing", root=dotted)
    assert fetch(srv, "/.env")[2] == b"KEY=1"
    assert fetch(srv, "/.git/config")[2] == b"secret"
    assert ".env" in fetch(srv, "/")[2].decode()


@pytest.fixture
def linked(tmp_path):
    root = tmp_path / "linked"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("outside")
    (root / "real.txt").write_text("inside")
    os.symlink(root / "real.txt", root / "alias.txt")
    os.symlink(outside / "secret.txt", root / "out.txt")
    os.symlink(outside, root / "outdir")
    return root


def test_symlinks_leaving_the_root_are_refused(start_server, linked):
    srv = start_server(root=linked)
    assert fetch(srv, "/alias.txt")[2] == b"inside"  # a link within the root is fine
    assert fetch(srv, "/out.txt")[0] == 404
    assert fetch(srv, "/outdir/secret.txt")[0] == 404


def test_follow_symlinks_option(start_server, linked):
    srv = start_server("--follow-symlinks", root=linked)
    assert fetch(srv, "/out.txt")[2] == b"outside"
    assert fetch(srv, "/outdir/secret.txt")[2] == b"outside"
    assert fetch(srv, "/../outside/secret.txt")[0] == 404  # paths still may not climb


# ---------------------------------------------------------------------- caching headers, types


def test_cache_control_only_when_asked(start_server, site):
    srv = start_server(root=site)
    assert "cache-control" not in fetch(srv, "/small.bin")[1]
    srv2 = start_server("--static-max-age", "3600", root=site)
    status, h, _ = fetch(srv2, "/small.bin")
    assert h["cache-control"] == "public, max-age=3600"
    status, h, _ = fetch(srv2, "/small.bin", [("If-None-Match", h["etag"])])
    assert status == 304 and h["cache-control"] == "public, max-age=3600"
    assert fetch(srv2, "/big.bin", [("Range", "bytes=0-0")])[1]["cache-control"] == "public, max-age=3600"


TYPES = {
    "a.html": "text/html; charset=utf-8", "a.css": "text/css; charset=utf-8",
    "a.js": "text/javascript; charset=utf-8", "a.mjs": "text/javascript; charset=utf-8",
    "a.json": "application/json; charset=utf-8", "a.svg": "image/svg+xml; charset=utf-8",
    "a.wasm": "application/wasm", "a.webp": "image/webp", "a.avif": "image/avif",
    "a.woff2": "font/woff2", "a.mp4": "video/mp4", "a.pdf": "application/pdf",
    "A.PDF": "application/pdf", "noext": "application/octet-stream",
}


def test_content_types_and_nosniff(start_server, tmp_path):
    root = tmp_path / "types"
    root.mkdir()
    for name in TYPES:
        (root / name).write_bytes(b"x")
    srv = start_server(root=root)
    with srv.connect() as s:
        for name, ctype in TYPES.items():
            status, h, _ = request(s, "/" + name)
            assert (status, h["content-type"]) == (200, ctype), name
            assert h["x-content-type-options"] == "nosniff"


# ---------------------------------------------------------------------- the open-file cache


def test_replaced_file_keeps_sending_to_a_slow_reader(start_server, site):
    """The cache drops its descriptor when the file changes; a response in flight keeps
    its own reference and finishes with the old bytes, byte for byte."""
    srv = start_server(root=site)
    old = (site / "big.bin").read_bytes()
    slow = srv.connect(timeout=30)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    slow.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    first = slow.recv(4096)  # the response has started
    assert first.startswith(b"HTTP/1.1 200")
    new = os.urandom(BIG)
    tmp = site / "big.bin.new"
    tmp.write_bytes(new)
    os.replace(tmp, site / "big.bin")
    deadline = time.monotonic() + 5
    while fetch(srv, "/big.bin", [("Range", "bytes=0-99")])[2] != new[:100]:
        assert time.monotonic() < deadline, "the cache never noticed the new file"
        time.sleep(0.1)
    buf = bytearray(first)
    while True:
        chunk = slow.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
        if len(buf) - buf.index(b"\r\n\r\n") - 4 >= BIG:
            break
    slow.close()
    assert bytes(buf[buf.index(b"\r\n\r\n") + 4:]) == old
    assert fetch(srv, "/big.bin")[2] == new


# ---------------------------------------------------------------------- curl as a real client


@pytest.fixture
def curl():
    path = shutil.which("curl")
    if path is None:
        pytest.skip("curl is not installed (Debian package 'curl'); CI installs it")
    return path


def test_curl_ranges_resume_and_conditional_requests(start_server, site, curl, tmp_path):
    srv = start_server(root=site)
    url = srv.urls[0] + "/big.bin"
    data = (site / "big.bin").read_bytes()
    out = tmp_path / "part.bin"
    run = lambda *args: subprocess.run([curl, "-sS", "--max-time", "20", *args],  # noqa: E731
                                       capture_output=True, timeout=30)
    # a range
    r = run("-r", "1000-1999", "-o", str(out), "-w", "%{http_code}", url)
    assert r.stdout == b"206" and out.read_bytes() == data[1000:2000]
    # an interrupted download resumed with -C -
    out.write_bytes(data[:1_234_567])
    r = run("-C", "-", "-o", str(out), "-w", "%{http_code}", url)
    assert r.stdout == b"206", r.stderr
    assert out.read_bytes() == data
    # -z FILE sends If-Modified-Since with the file's mtime
    shutil.copystat(site / "big.bin", out)
    r = run("-z", str(out), "-o", os.devnull, "-w", "%{http_code}", url)
    assert r.stdout == b"304"
    # --etag-save / --etag-compare send If-None-Match
    etags = tmp_path / "etag.txt"
    r = run("--etag-save", str(etags), "-o", os.devnull, "-w", "%{http_code}", url)
    assert r.stdout == b"200" and etags.read_text().strip().startswith('"')
    r = run("--etag-compare", str(etags), "-o", os.devnull, "-w", "%{http_code}", url)
    assert r.stdout == b"304"
    # several ranges come back as multipart/byteranges
    r = run("-r", "0-9,100-109", "-D", "-", url)
    assert b"multipart/byteranges" in r.stdout and data[100:110] in r.stdout


# ---------------------------------------------------------------------- command line


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", str(2 ** 31 + 1)])
def test_bad_static_max_age_exits_2(value, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "prefork", "--bind", "127.0.0.1:0",
                           "--static-max-age", value], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("prefork-http: error: --static-max-age"), proc.stderr


# ---------------------------------------------------------------------- the pure readers


@pytest.mark.parametrize("value, size, expected", [
    ("bytes=0-0", 10, [(0, 0)]),
    ("bytes=-3", 10, [(7, 9)]),
    ("bytes=8-", 10, [(8, 9)]),
    ("bytes=5-100", 10, [(5, 9)]),
    ("bytes=10-", 10, fh.UNSATISFIABLE),
    ("bytes=-0", 10, fh.UNSATISFIABLE),
    ("bytes=0-", 0, fh.UNSATISFIABLE),
    ("bytes=3-1", 10, fh.WHOLE),
    ("bytes=x-1", 10, fh.WHOLE),
    ("bytes=\u0661-2", 10, fh.WHOLE),  # an Arabic-Indic digit is not DIGIT
    ("lines=1-2", 10, fh.WHOLE),
    ("bytes=1-2, ,4-5", 10, [(1, 2), (4, 5)]),
    ("bytes=4-5,1-2", 10, [(4, 5), (1, 2)]),
    ("bytes=1-5,5-6", 10, fh.WHOLE),  # overlap
    ("bytes=0-4,5-9", 10, fh.WHOLE),  # the whole file anyway
    ("bytes=20-30,2-3", 10, [(2, 3)]),
])
def test_byte_ranges(value, size, expected):
    assert fh.byte_ranges(value, size) == expected


def test_etag_lists_and_comparisons():
    assert fh.etag_list('"a", W/"b,c" ,"d"') == ['"a"', 'W/"b,c"', '"d"']
    assert fh.etag_list(" * ") is None
    assert fh.etag_list('"a", garbage, "b"') == ['"a"']
    assert fh.weak_match(['W/"x"'], '"x"') and not fh.strong_match(['W/"x"'], '"x"')
    assert fh.strong_match(None, '"x"') and fh.weak_match(None, '"x"')
    assert not fh.weak_match(['"y"'], '"x"')


def test_http_dates():
    t = 784111777
    for value in ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                  "Sun Nov  6 08:49:37 1994"):
        assert fh.http_date(value) == t
    assert fh.http_date("yesterday") is None
