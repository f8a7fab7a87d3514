"""The access log's twins: prefork.logs.AccessLog (pure) and CAccessLog (the combined line
in Cython, prefork/_accesslog.pyx) write the same bytes for the same requests, with either
parser's requests."""

from __future__ import annotations

import pytest

from conftest import PARSERS, REQUIRE_EXTENSION, require_parser
from prefork import logs
from prefork.http import parser as parser_choice
from prefork.proxy import FORWARDING_FIELDS, TrustedProxies, parse_networks
from prefork.workers.connection import Connection, WorkerState

pytestmark = pytest.mark.timeout(30)


def require_c_log() -> None:
    if logs.CAccessLog is None:
        if REQUIRE_EXTENSION:
            pytest.fail("PREFORK_REQUIRE_EXTENSION=1 but prefork._accesslog does not import")
        pytest.skip("the Cython access log is not built")


HEADS = [
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",  # no referer, no agent
    b"GET /plain?q=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: wrk\r\nReferer: http://r/\r\n\r\n",
    b'GET /a"b\\c HTTP/1.1\r\nHost: t\r\nUser-Agent: x\\y "z"\r\nReferer: http://r/"q"\\\r\n\r\n',
    b'GET /only"quote HTTP/1.0\r\nUser-Agent: \\\r\n\r\n',
    b"HEAD /x HTTP/1.1\r\nHost: t\r\nReferer: http://r/\xc3\xa9\r\nUser-Agent: \xe2\x82\xac\r\n\r\n",  # non-ASCII
    b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nUser-Agent: \r\n\r\n",  # empty agent
    b"OPTIONS * HTTP/1.1\r\nHost: t\r\nUser-Agent: a\tb\r\n\r\n",
]
ADDRS = [("10.1.2.3", 5000), ("::1", 1, 0, 0), "", "/run/sock", None]
OUTCOMES = [(200, 13), (404, None), (304, 0), (500, 123456789), (200, 2**70), (200, True),
            (-1, -(2**63)), (2**63 - 1, -(2**63) - 1)]  # (no server sends these: the twins must agree anyway)
DURATIONS = [-0.5, -0.0000003, 0.0, 0.000123, 0.0000004999, 0.0000005, 0.123456789, 0.25, 0.9999994, 0.9999995,
             0.9999996, 1.0, 1.0000004, 1.5, 12.25, 3600.0000001]
# The clock the stamps are read from, in turn: within a second, across the boundary, back.
CLOCK = [1_700_000_000.25, 1_700_000_000.999999, 1_700_000_001.0, 1_700_000_001.5,
         1_699_999_999.5, 1_700_000_100.0]


def requests(name: str):
    module = parser_choice.load(name)
    reqs = []
    for head in HEADS:
        got = module.RequestParser().feed(head)
        assert len(got) == 1, head
        reqs.append(got[0])
    # The parsers refuse a non-ASCII target; a request object may still carry one.
    reqs.append(Stand("GET", "/caf\u00e9/\u20ac\udcff\"", "HTTP/1.1", {"user-agent": "\u00e9\\"}))
    return reqs


class Stand:
    """A request as the access log reads it: method, target, version, header()."""

    def __init__(self, method, target, version, headers) -> None:
        self.method, self.target, self.version, self._headers = method, target, version, headers

    def header(self, name, default=None):
        return self._headers.get(name, default)


def lines_of(log, reqs, clock) -> list:
    n = 0
    for req in reqs:
        for addr in ADDRS:
            for status, length in OUTCOMES:
                for d in DURATIONS:
                    clock.now = CLOCK[n % len(CLOCK)]
                    n += 1
                    log(addr, req, status, length, d)
    return log.pending().split(b"\n")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """The wall clock of the stamps and the monotonic clock of the request times, both twins'."""
    c = Clock()
    mono = Clock()
    c.mono = mono
    monkeypatch.setattr(logs, "_time", c)
    monkeypatch.setattr(logs, "_monotonic", mono)
    if logs._accesslog is not None:
        logs._accesslog.set_clock(c, mono)
    yield c
    if logs._accesslog is not None:
        logs._accesslog.set_clock(None)


@pytest.fixture
def keep_all(monkeypatch):
    """Every line stays in memory (no batch is written) in both twins."""
    batch = logs.ACCESS_BATCH
    monkeypatch.setattr(logs, "ACCESS_BATCH", 10**9)
    if logs._accesslog is not None:
        logs._accesslog.configure(logs.clf_time, 10**9, FORWARDING_FIELDS)
    yield
    if logs._accesslog is not None:
        logs._accesslog.configure(logs.clf_time, batch, FORWARDING_FIELDS)


@pytest.mark.parametrize("name", [p.values[0] for p in PARSERS])
def test_twins_write_the_same_lines(name, tmp_path, clock, keep_all):
    require_parser(name)
    require_c_log()
    reqs = requests(name)
    pure = logs.AccessLog(str(tmp_path / "pure.log"))
    c = logs.CAccessLog(str(tmp_path / "c.log"))
    want = lines_of(pure, reqs, clock)
    got = lines_of(c, reqs, clock)
    assert want.pop() == got.pop() == b""  # after the last line's end
    assert len(want) == (len(HEADS) + 1) * len(ADDRS) * len(OUTCOMES) * len(DURATIONS)
    assert c.waiting == pure.waiting == len(want)
    for w, g in zip(want, got):
        assert g == w
    assert got == want
    # the stamp follows the clock across the second boundary and back
    assert len({line.split(b"[", 1)[1].split(b"]", 1)[0] for line in want}) == 4
    assert c.lines[0].encode() + c.lines[1].encode() == b"\n".join(got[:2]) + b"\n"
    pure.flush()
    c.flush()
    assert (tmp_path / "c.log").read_bytes() == (tmp_path / "pure.log").read_bytes()


def test_c_twin_writes_a_batch_when_full(tmp_path, clock):
    require_c_log()
    clock.now = 1_700_000_000.5
    req = requests("python")[1]
    log = logs.CAccessLog(str(tmp_path / "a.log"))
    for _ in range(logs.ACCESS_BATCH - 1):
        log(("1.2.3.4", 1), req, 200, 5, 0.001)
    assert (tmp_path / "a.log").read_bytes() == b""
    log(("1.2.3.4", 1), req, 200, 5, 0.001)
    assert log.lines == []
    assert (tmp_path / "a.log").read_bytes().count(b"\n") == logs.ACCESS_BATCH


def test_open_access_log_picks_the_c_line_for_combined_only(tmp_path):
    require_c_log()
    assert type(logs.open_access_log(str(tmp_path / "a.log"))) is logs.CAccessLog
    assert type(logs.open_access_log(str(tmp_path / "b.log"), "combined")) is logs.CAccessLog
    assert type(logs.open_access_log(str(tmp_path / "c.log"), "json")) is logs.AccessLog


def test_c_twin_stamps_with_the_real_clock(tmp_path):
    """Without a test clock, the C twin's coarse clock gives the same second as time()."""
    require_c_log()
    import time

    req = requests("python")[0]
    log = logs.CAccessLog(str(tmp_path / "a.log"))
    for _ in range(3):  # a second boundary between the reads: try again
        before = time.time()
        log(("1.2.3.4", 1), req, 200, 5, 0.001)
        after = time.time()
        stamps = {logs.clf_time(int(before - 0.02)), logs.clf_time(int(before)), logs.clf_time(int(after))}
        if log.lines[-1].split("[", 1)[1].split("]", 1)[0] in stamps:
            return
    pytest.fail(log.lines[-1])


# ---------------------------------------------------------------------- log(conn, ...)

# What a trusted peer may claim, and what an untrusted one sends anyway.
FORWARDED = [
    b"",
    b"X-Forwarded-For: 203.0.113.7\r\n",
    b"X-Forwarded-For: 203.0.113.7, 10.0.0.9\r\n",  # a client behind two proxies
    b"X-Forwarded-For: 198.51.100.1, 203.0.113.7\r\n",  # a client that wrote its own first
    b"X-Forwarded-For: unknown\r\n",
    b"X-Forwarded-For: [2001:db8::1]:443\r\n",
    b"X-Forwarded-Proto: https\r\n",  # a scheme, no address
    b"Forwarded: for=192.0.2.60;proto=https, for=10.0.0.9\r\n",
    b'Forwarded: for="[2001:db8::7]:80"\r\nX-Forwarded-For: 203.0.113.7\r\n',
    b"Forwarded: for=_hidden\r\n",
]
PEERS = [("10.0.0.9", 5000), ("127.0.0.1", 40000), ("198.51.100.4", 1), ("::1", 2, 0, 0),
         ("::ffff:10.0.0.9", 3, 0, 0), ("", 0), "", "/run/sock", None]
ALLOWED = ["127.0.0.1,::1,10.0.0.0/8", ""]
# (t0, the monotonic clock at the call): untimed, and request times either side of the formats'
# boundaries.
TIMES = [(0.0, 5.0), (100.0, 100.0), (100.0, 100.000123), (100.0, 100.9999996), (100.0, 101.5),
         (100.0, 99.5), (3.25, 3603.25)]


def connections():
    """Connections as the server makes them: addr, trusted (by --forwarded-allow-ips; a unix
    socket's peer always), the worker's TrustedProxies."""

    class Worker(WorkerState):
        pass

    for allowed in ALLOWED:
        worker = Worker()
        worker.trusted = TrustedProxies(parse_networks(allowed))
        for peer in PEERS:
            for trusted in sorted({worker.trusted.trusts(peer), False}):
                conn = Connection.__new__(Connection)
                conn.worker, conn.addr, conn.trusted = worker, peer, trusted
                yield conn


def logged(log, reqs, clock) -> list:
    n = 0
    for req in reqs:
        for conn in connections():
            for t0, now in TIMES:
                clock.now = CLOCK[n % len(CLOCK)]
                clock.mono.now = now
                n += 1
                log.log(conn, req, 200, 5, t0)
    lines = log.pending().split(b"\n")
    assert lines.pop() == b""  # after the last line's end
    return lines


@pytest.mark.parametrize("name", [p.values[0] for p in PARSERS])
def test_twins_find_the_same_client_and_request_time(name, tmp_path, clock, keep_all):
    """log(conn, req, ...): the host is conn.client(req)'s for a trusted peer (its forwarded
    claims believed as prefork.proxy says), the peer's otherwise; the time runs from t0."""
    require_parser(name)
    require_c_log()
    module = parser_choice.load(name)
    reqs = [module.RequestParser().feed(b"GET /f HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n")[0]
            for extra in FORWARDED]
    pure = logs.AccessLog(str(tmp_path / "pure.log"))
    c = logs.CAccessLog(str(tmp_path / "c.log"))
    want = logged(pure, reqs, clock)
    got = logged(c, reqs, clock)
    assert len(want) > len(reqs) * len(PEERS) * len(TIMES)
    for w, g in zip(want, got):
        assert g == w
    assert got == want
    hosts = {line.split(b" ", 1)[0] for line in want}
    # believed from a trusted peer only; a claim the peer's own list contradicts is not
    assert {b"203.0.113.7", b"192.0.2.60", b"2001:db8::1", b"2001:db8::7", b"10.0.0.9", b"-"} <= hosts
    assert b"198.51.100.1" not in hosts
    times = {line.rsplit(b" ", 1)[1] for line in want}
    assert {b"0.000000", b"0.000123", b"1.000000", b"1.500000", b"3600.000000"} < times  # (and t0 after now)


def test_request_time_clock_is_the_monotonic_clock_of_t0(tmp_path):
    """The Cython twin reads CLOCK_MONOTONIC: the clock of time.monotonic() (the epoll worker's
    loop time, its t0) and time.perf_counter() (the thread pool's t0)."""
    import time

    require_c_log()
    assert time.get_clock_info("monotonic").implementation == "clock_gettime(CLOCK_MONOTONIC)"
    assert time.get_clock_info("perf_counter").implementation == "clock_gettime(CLOCK_MONOTONIC)"
    req = requests("python")[0]
    conn = Connection.__new__(Connection)
    conn.addr, conn.trusted = ("1.2.3.4", 1), False
    log = logs.CAccessLog(str(tmp_path / "a.log"))
    before = time.monotonic()
    log.log(conn, req, 200, 5, before - 2.0)
    took = float(log.lines[-1].rsplit(" ", 1)[1])
    assert 2.0 <= took < 2.0 + (time.monotonic() - before) + 0.001
