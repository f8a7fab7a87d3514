"""The access log's twins: prefork.logs.AccessLog (pure) and CAccessLog (the combined line
in Cython, prefork/_accesslog.pyx) write the same bytes for the same requests, with either
parser's requests."""

from __future__ import annotations

import pytest

from conftest import PARSERS, REQUIRE_EXTENSION, require_parser
from prefork import logs
from prefork.http import parser as parser_choice

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
OUTCOMES = [(200, 13), (404, None), (304, 0), (500, 123456789), (200, 2**70), (200, True)]
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
    return log.lines


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(logs, "_time", c)
    if logs._accesslog is not None:
        logs._accesslog.set_clock(c)
    yield c
    if logs._accesslog is not None:
        logs._accesslog.set_clock(None)


@pytest.mark.parametrize("name", [p.values[0] for p in PARSERS])
def test_twins_write_the_same_lines(name, tmp_path, monkeypatch, clock):
    require_parser(name)
    require_c_log()
    batch = logs.ACCESS_BATCH
    monkeypatch.setattr(logs, "ACCESS_BATCH", 10**9)  # keep every line in memory (pure twin)
    logs._accesslog.configure(logs.clf_time, 10**9)
    try:
        reqs = requests(name)
        pure = logs.AccessLog(str(tmp_path / "pure.log"))
        c = logs.CAccessLog(str(tmp_path / "c.log"))
        want = lines_of(pure, reqs, clock)
        got = lines_of(c, reqs, clock)
    finally:
        logs._accesslog.configure(logs.clf_time, batch)
    assert len(want) == (len(HEADS) + 1) * len(ADDRS) * len(OUTCOMES) * len(DURATIONS)
    for w, g in zip(want, got):
        assert g == w
    assert got == want
    # the stamp follows the clock across the second boundary and back
    assert len({line.split("[", 1)[1].split("]", 1)[0] for line in want}) == 4
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
