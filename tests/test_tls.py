"""TLS end to end (issue 14): the real server on 127.0.0.1:0 with certificates made here by
trustme; clients are Python's ssl, requests, curl, `openssl s_client` and websockets.

Both drivers: the epoll worker (App, WSGI, static files) and the asyncio one (ASGI).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import APPS, ROOT, Load, Server, read_response, recv_until_closed

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(90)

CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")


# ---------------------------------------------------------------------- certificates

class Certs:
    def __init__(self, folder) -> None:
        self.folder = folder
        self.ca = trustme.CA()
        self.ca_pem = self.write("ca.pem", self.ca.cert_pem)
        self.server = self.issue("server.pem", "localhost", "127.0.0.1")
        self.client = self.issue("client.pem", "alice@example.com", common_name="alice")
        other = trustme.CA()
        self.unknown_client = self.write("unknown-client.pem",
                                         other.issue_cert("mallory@example.com").private_key_and_cert_chain_pem)
        self.wrong_host = self.issue("wrong-host.pem", "elsewhere.example")
        past = datetime.datetime(2001, 1, 1)
        expired = self.ca.issue_cert("localhost", "127.0.0.1", not_before=past,
                                     not_after=past + datetime.timedelta(days=1))
        self.expired = self.write("expired.pem", expired.private_key_and_cert_chain_pem)

    def issue(self, name, *hosts, common_name=None):
        cert = self.ca.issue_cert(*hosts, common_name=common_name)
        return self.write(name, cert.private_key_and_cert_chain_pem)

    def write(self, name, blob) -> str:
        path = os.path.join(self.folder, name)
        blob.write_to_path(path)
        return path

    def client_context(self, cert=None, alpn=("http/1.1",)) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_pem)
        if cert:
            ctx.load_cert_chain(cert)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture
def tls_server(certs, tmp_path):
    """tls_server(*args, app=None, cert=None, workers=1) → a started Server."""
    servers = []
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<h1>home</h1>\n")

    def start(*extra, app=None, cert=None, workers=1, env=None):
        args = ["--bind", "127.0.0.1:0", "--workers", str(workers), "--root", str(root),
                "--certfile", cert or certs.server, *extra]
        if app is not None:
            args.append(app)
        full_env = {"PYTHONPATH": os.pathsep.join([APPS, ROOT, os.environ.get("PYTHONPATH", "")])}
        full_env.update(env or {})
        srv = Server(args, env=full_env)
        servers.append(srv)
        srv.root = root
        return srv.start(workers)

    yield start
    for srv in servers:
        if srv.proc.poll() is None:
            srv.stop(signal.SIGKILL)
        for pid in srv.children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def tls_connect(srv, ctx, server_hostname="localhost", timeout=10.0) -> ssl.SSLSocket:
    raw = srv.connect(timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def get(sock, path="/", extra=b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n" + extra + b"\r\n"


def port_of(srv) -> int:
    return srv.address[1]


# ---------------------------------------------------------------------- the epoll worker

@pytest.mark.parametrize("extra", [[], ["--threads", "2"]], ids=["loop", "threads"])
def test_handshake_keepalive_and_pipelining(tls_server, certs, extra):
    srv = tls_server(*extra, app="tls_apps:app")
    assert srv.urls[0].startswith("https://")
    with tls_connect(srv, certs.client_context()) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        buf = bytearray()
        for _ in range(3):  # keep-alive
            s.sendall(get(s, "/"))
            assert read_response(s, buf=buf)[2] == b"hello tls\n"
        s.sendall(get(s, "/") * 5 + get(s, "/tls"))  # pipelined, in one TLS write
        for _ in range(5):
            assert read_response(s, buf=buf)[:3:2] == (200, b"hello tls\n")
        status, _, body = read_response(s, buf=buf)
        info = json.loads(body)
        assert info["scheme"] == "https" and info["alpn"] == "http/1.1" and info["subject"] == ""
        # A protocol error over TLS: its status, then the close (close_notify, then FIN).
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        assert read_response(s, buf=buf)[0] == 400
        assert s.recv(100) == b""


def test_pipelined_requests_split_across_records(tls_server, certs):
    """Many small TLS records, each part of a request, then many requests in one record."""
    srv = tls_server(app="tls_apps:app")
    with tls_connect(srv, certs.client_context()) as s:
        data = get(s, "/") * 3
        for i in range(0, len(data), 7):
            s.sendall(data[i:i + 7])
        buf = bytearray()
        for _ in range(3):
            assert read_response(s, buf=buf)[2] == b"hello tls\n"


def test_large_static_file_and_ranges_byte_exact(tls_server, certs):
    srv = tls_server()
    blob = os.urandom(8 << 20)
    (srv.root / "big.bin").write_bytes(blob)
    ctx = certs.client_context()
    with tls_connect(srv, ctx) as s:
        s.sendall(get(s, "/big.bin"))
        buf = bytearray()
        # A slow reader first: the server must hold back, not buffer the file.
        time.sleep(0.3)
        status, headers, body = read_response(s, buf=buf)
        assert status == 200 and body == blob
        etag = headers["etag"]
        s.sendall(get(s, "/big.bin", b"Range: bytes=1000-2000999\r\n"))
        status, headers, body = read_response(s, buf=buf)
        assert status == 206 and body == blob[1000:2001000]
        assert headers["content-range"] == f"bytes 1000-2000999/{len(blob)}"
        s.sendall(get(s, "/big.bin", b"Range: bytes=0-9,-10\r\n"))
        status, headers, body = read_response(s, buf=buf)
        assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
        assert blob[:10] in body and blob[-10:] in body
        s.sendall(get(s, "/big.bin", b"If-None-Match: " + etag.encode() + b"\r\n"))
        assert read_response(s, buf=buf)[0] == 304


@pytest.mark.parametrize("reqs", ["none", "optional", "required"])
def test_mutual_tls(tls_server, certs, reqs):
    args = ["--cert-reqs", reqs] + (["--ca-certs", certs.ca_pem] if reqs != "none" else [])
    srv = tls_server(*args, app="tls_apps:wsgi")

    def ask(cert):
        with tls_connect(srv, certs.client_context(cert)) as s:
            s.sendall(get(s, "/"))
            return json.loads(read_response(s)[2])

    with_cert = ask(certs.client)
    assert with_cert["wsgi.url_scheme"] == "https" and with_cert["HTTPS"] == "on"
    if reqs == "none":  # not asked for: not sent
        assert with_cert["SSL_CLIENT_VERIFY"] == "NONE" and with_cert["SSL_CLIENT_S_DN"] is None
    else:
        assert with_cert["SSL_CLIENT_VERIFY"] == "SUCCESS" and with_cert["has_cert"]
        assert "CN=alice" in with_cert["SSL_CLIENT_S_DN"]
        assert with_cert["SSL_CLIENT_I_DN"]
    if reqs == "required":
        with pytest.raises((ssl.SSLError, ConnectionError)):
            ask(None)  # TLS 1.3: the alert arrives with the first read
        srv.wait_for(r"TLS handshake with 127\.0\.0\.1:\d+ failed")
    else:
        assert ask(None)["SSL_CLIENT_VERIFY"] == "NONE"
    if reqs != "none":
        with pytest.raises((ssl.SSLError, ConnectionError)):
            ask(certs.unknown_client)  # a certificate from a CA the server does not trust
    # The worker serves on.
    assert ask(certs.client)["HTTPS"] == "on"


def test_expired_and_wrong_host_certificates_seen_by_the_client(tls_server, certs):
    for cert in (certs.expired, certs.wrong_host):
        srv = tls_server(cert=cert, app="tls_apps:app")
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            tls_connect(srv, certs.client_context())
        assert ("expired" if cert == certs.expired else "match") in str(info.value)
        srv.stop()


def test_handshake_timeout_and_slowloris(tls_server, certs):
    srv = tls_server("--tls-handshake-timeout", "1", "--metrics-bind", "127.0.0.1:0", app="tls_apps:app")
    silent = srv.connect()
    t0 = time.monotonic()
    assert recv_until_closed(silent) == b""  # closed, nothing said
    assert time.monotonic() - t0 < 5
    silent.close()
    # Slowloris: a byte of a ClientHello every 0.2 s keeps the connection busy, not alive.
    slow = srv.connect()
    t0 = time.monotonic()
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40
    closed = False
    for b in hello:
        try:
            slow.send(bytes([b]))
        except OSError:
            closed = True
            break
        time.sleep(0.2)
        if time.monotonic() - t0 > 6:
            break
    if not closed:
        slow.settimeout(5)
        try:
            assert slow.recv(100) == b""
        except ConnectionResetError:
            pass
    assert time.monotonic() - t0 < 6
    slow.close()
    srv.wait_for(r"TLS handshake with .* failed: not finished after 1s")
    with tls_connect(srv, certs.client_context()) as s:  # the worker serves on
        s.sendall(get(s, "/"))
        assert read_response(s)[2] == b"hello tls\n"
    metrics_url = next(m.group(1) for m in map(re.compile(r"Metrics at (\S+)").search, srv.log) if m)
    deadline = time.monotonic() + 10
    while True:  # the counters arrive with the worker's next status record (once a second)
        with urllib.request.urlopen(metrics_url, timeout=5) as r:
            text = r.read().decode()
        if 'prefork_tls_handshakes_total{result="ok"} 1' in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert 'prefork_tls_handshakes_total{result="failed"} 2' in text


def test_plain_http_to_a_tls_port(tls_server, certs):
    srv = tls_server(app="tls_apps:app")
    with srv.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in data and b"plain HTTP sent to an HTTPS port" in data
    srv.wait_for(r"400 from .*plain HTTP sent to a TLS port")
    with tls_connect(srv, certs.client_context()) as s:
        s.sendall(get(s, "/"))
        assert read_response(s)[2] == b"hello tls\n"


def test_plain_listener_beside_tls(tls_server, certs):
    srv = tls_server("--bind-plain", "127.0.0.1:0", app="tls_apps:app")
    assert srv.urls[0].startswith("https://") and srv.urls[1].startswith("http://")
    host, port = srv.urls[1].split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /tls HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(read_response(s)[2])["scheme"] == "http"


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_versions_and_alpn_with_openssl_s_client(tls_server, certs):
    def s_client(port, *args):
        p = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                            "-CAfile", certs.ca_pem, *args], input=b"", capture_output=True, timeout=20)
        return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")

    srv = tls_server(app="tls_apps:app")
    port = port_of(srv)
    code, out = s_client(port, "-tls1_2", "-alpn", "http/1.1")
    assert code == 0 and "Protocol  : TLSv1.2" in out and "ALPN protocol: http/1.1" in out
    assert "Verify return code: 0 (ok)" in out
    code, out = s_client(port, "-tls1_3")
    assert code == 0 and "TLSv1.3" in out
    code, out = s_client(port, "-tls1_1")
    assert code != 0 or "Cipher is (NONE)" in out  # below the minimum
    code, out = s_client(port, "-tls1_2", "-cipher", "AES128-SHA")  # no forward secrecy: refused
    assert code != 0 or "Cipher is (NONE)" in out
    srv.stop()
    srv = tls_server("--tls-min-version", "1.3", app="tls_apps:app")
    code, out = s_client(port_of(srv), "-tls1_2")
    assert code != 0 or "Cipher is (NONE)" in out
    code, out = s_client(port_of(srv), "-tls1_3")
    assert code == 0


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_and_requests(tls_server, certs):
    requests = pytest.importorskip("requests")
    srv = tls_server("--cert-reqs", "optional", "--ca-certs", certs.ca_pem, app="tls_apps:app")
    port = port_of(srv)
    out = subprocess.run([CURL, "-sS", "--cacert", certs.ca_pem, "--cert", certs.client,
                          f"https://localhost:{port}/tls"], capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["verified"] and "CN=alice" in info["subject"]
    out = subprocess.run([CURL, "-sS", "--cacert", certs.ca_pem, f"https://localhost:{port}/",
                          f"https://localhost:{port}/"], capture_output=True, timeout=20)
    assert out.stdout == b"hello tls\n" * 2
    with requests.Session() as session:
        for _ in range(3):
            r = session.get(f"https://localhost:{port}/tls", verify=certs.ca_pem, cert=certs.client, timeout=10)
            assert r.json()["scheme"] == "https"


PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def test_proxy_v2_then_tls(tls_server, certs):
    srv = tls_server("--proxy-protocol", app="tls_apps:wsgi")
    raw = srv.connect()
    addrs = socket.inet_aton("203.0.113.7") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 4242, 443)
    raw.sendall(PROXY_V2_SIG + b"\x21\x11" + struct.pack("!H", len(addrs)) + addrs)
    with certs.client_context().wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(get(s, "/"))
        info = json.loads(read_response(s)[2])
    assert info["REMOTE_ADDR"] == "203.0.113.7" and info["HTTPS"] == "on"


class TLSLoad(Load):
    context = None

    def _connect(self):
        raw = super()._connect()
        return self.context.wrap_socket(raw, server_hostname="localhost")


def test_certificate_rotation_on_hup_under_load(tls_server, certs, tmp_path):
    cert = tmp_path / "live.pem"
    shutil.copy(certs.server, cert)
    srv = tls_server(app="tls_apps:app", cert=str(cert), workers=2)
    ctx = certs.client_context()
    first_serial = serial_of(srv, ctx)
    loads = []
    for keepalive in (True, False):
        load = TLSLoad(srv.address, "/", b"hello tls\n", threads=2, keepalive=keepalive, max_seconds=30)
        load.context = ctx
        loads.append(load.__enter__())
    try:
        for load in loads:
            load.wait_for_ok(20)
        # A bad certificate: the old workers serve on, the log says why.
        cert.write_text("not a certificate\n")
        os.kill(srv.pid, signal.SIGHUP)
        srv.wait_for(r"HUP: not reloading, the old workers serve on with the old certificate")
        # A new one (same CA): new workers load it, old ones drain.
        certs.ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
        os.kill(srv.pid, signal.SIGHUP)
        srv.wait_for(r"Booted worker", count=2, timeout=30)
        deadline = time.monotonic() + 20
        while serial_of(srv, ctx) == first_serial:
            assert time.monotonic() < deadline, "the new certificate is not served"
            time.sleep(0.1)
        before = [load.ok for load in loads]
        for load, n in zip(loads, before):
            load.wait_for_ok(n + 20)
    finally:
        for load in loads:
            load.stop()
    for load in loads:
        assert load.failures == [], load.failures[:5]
        assert load.ok > 40


def serial_of(srv, ctx) -> bytes:
    with tls_connect(srv, ctx) as s:
        return s.getpeercert(True)


def test_bad_certificate_at_startup_is_one_line_and_exit_2(certs, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("garbage\n")
    for args in (["--certfile", str(bad)],
                 ["--certfile", certs.server, "--cert-reqs", "required"],
                 ["--certfile", str(tmp_path / "missing.pem")],
                 ["--certfile", certs.server, "--ciphers", "NO-SUCH-CIPHER"],
                 ["--keyfile", certs.server]):
        p = subprocess.run([sys.executable, "-m", "prefork", "--bind", "127.0.0.1:0", *args],
                           capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, PYTHONPATH=ROOT))
        assert p.returncode == 2, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], (args, p.stderr)
        assert "Listening" not in p.stderr


def test_context_settings_and_key_password(certs, tmp_path):
    from cryptography.hazmat.primitives import serialization

    from prefork.config import Config
    from prefork.tls import TLSConfigError, make_context

    leaf = certs.ca.issue_cert("localhost")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    encrypted = tmp_path / "key.pem"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"s3cret")))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("s3cret\n")
    bad.write_text("wrong\n")
    base = dict(certfile=str(chain), keyfile=str(encrypted))
    ctx = make_context(Config(**base, keyfile_password_file=str(good)).validate())
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    assert not ctx.options & ssl.OP_NO_TICKET
    assert ctx.verify_mode == ssl.CERT_NONE
    assert all(c["protocol"] == "TLSv1.3" or "ECDHE" in c["name"] or "DHE" in c["name"] for c in ctx.get_ciphers())
    assert make_context(Config(**base, keyfile_password_file=str(good), tls_min_version="1.3").validate()
                        ).minimum_version == ssl.TLSVersion.TLSv1_3
    with pytest.raises(TLSConfigError):
        make_context(Config(**base, keyfile_password_file=str(bad)).validate())


# ---------------------------------------------------------------------- the asyncio worker

def test_asgi_over_tls(tls_server, certs):
    srv = tls_server("--cert-reqs", "optional", "--ca-certs", certs.ca_pem, app="tls_apps:asgi")
    with tls_connect(srv, certs.client_context(certs.client)) as s:
        buf = bytearray()
        for _ in range(2):
            s.sendall(get(s, "/"))
            info = json.loads(read_response(s, buf=buf)[2])
        assert info["scheme"] == "https"
        tls = info["tls"]
        assert tls["tls_version"] in (0x0303, 0x0304)
        assert tls["client_cert_chain"] and "BEGIN CERTIFICATE" in tls["client_cert_chain"][0]
        assert "CN=alice" in tls["client_cert_name"]
        assert "BEGIN CERTIFICATE" in tls["server_cert"]
        blob = os.urandom(3 << 20)
        path = srv.root / "blob.bin"
        path.write_bytes(blob)
        s.sendall(get(s, "/file?" + str(path)))
        assert read_response(s, buf=buf)[2] == blob
    with srv.connect() as s:  # plain HTTP
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert recv_until_closed(s).startswith(b"HTTP/1.1 400 ")


def test_asgi_handshake_timeout_and_proxy_v2(tls_server, certs):
    srv = tls_server("--tls-handshake-timeout", "1", "--proxy-protocol", app="tls_apps:asgi")
    silent = srv.connect()
    t0 = time.monotonic()
    assert recv_until_closed(silent) == b""
    assert time.monotonic() - t0 < 5
    silent.close()
    srv.wait_for(r"TLS handshake with .* failed")
    raw = srv.connect()
    addrs = socket.inet_aton("203.0.113.9") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 4242, 443)
    raw.sendall(PROXY_V2_SIG + b"\x21\x11" + struct.pack("!H", len(addrs)) + addrs)
    with certs.client_context().wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(get(s, "/"))
        info = json.loads(read_response(s)[2])
    assert info["client"][0] == "203.0.113.9" and info["scheme"] == "https"


def test_asgi_websocket_over_wss(tls_server, certs):
    websockets = pytest.importorskip("websockets")
    from websockets.asyncio.client import connect

    srv = tls_server(app="tls_apps:asgi")

    async def talk():
        async with connect(f"wss://localhost:{port_of(srv)}/ws", ssl=certs.client_context(alpn=None)) as ws:
            hello = json.loads(await ws.recv())
            await ws.send("ping")
            echo = await ws.recv()
            big = os.urandom(512 << 10)
            await ws.send(big)
            return hello, echo, await ws.recv() == big

    hello, echo, big_ok = asyncio.run(asyncio.wait_for(talk(), 30))
    assert hello["scheme"] == "wss" and hello["tls"]["tls_version"] in (0x0303, 0x0304)
    assert echo == "ping" and big_ok
    assert websockets is not None


def test_usr2_upgrade_keeps_plain_listeners_plain(tls_server, certs, tmp_path):
    """USR2 hands every socket to a new master; the --bind-plain ones stay plain there (they
    came back as TLS: a plain client got its connection closed as a failed handshake)."""
    pid_file = tmp_path / "master.pid"
    srv = tls_server("--bind-plain", "127.0.0.1:0", "--pid", str(pid_file), app="tls_apps:app")
    host, port = srv.urls[1].split("//")[1].rsplit(":", 1)
    new_pid = None
    try:
        srv.proc.send_signal(signal.SIGUSR2)
        srv.wait_for(r"USR2: started a new master")
        deadline = time.monotonic() + 20
        while new_pid is None:  # the new master writes its own pid file
            assert time.monotonic() < deadline, "no pid file from the new master"
            text = pid_file.read_text().strip() if pid_file.exists() else ""
            if text and text != str(srv.pid):
                new_pid = int(text)
            else:
                time.sleep(0.05)
        srv.wait_for(r"Booted worker", timeout=20)  # the new master's worker
        srv.proc.send_signal(signal.SIGTERM)  # only the new master serves from here
        assert srv.proc.wait(20) == 0
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"GET /tls HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = read_response(s)
            assert status == 200 and json.loads(body)["scheme"] == "http"
        with tls_connect(srv, certs.client_context()) as s:
            s.sendall(get(s, "/tls"))
            status, _, body = read_response(s)
            assert status == 200 and json.loads(body)["scheme"] == "https"
    finally:
        if new_pid:
            os.kill(new_pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while os.path.exists(f"/proc/{new_pid}") and time.monotonic() < deadline:
                time.sleep(0.05)
