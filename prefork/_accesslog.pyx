# cython: language_level=3
"""The access log's combined line in Cython: the twin of prefork.logs.AccessLog.__call__.

`Combined` holds the per-line state of an AccessLog in C slots (lines, _next_second,
_stamp) and answers the call; prefork.logs.CAccessLog puts it in front of the pure
AccessLog, which keeps everything else (opening, batching writes, dropping lines). A JSON
log is the pure twin's (prefork.logs.open_access_log). Lines must be byte-identical to the pure twin's
(tests/test_accesslog_twins.py)."""

from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdio cimport snprintf
from libc.time cimport time_t

cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec *tp)
    clockid_t CLOCK_REALTIME_COARSE

cdef object _clock = None  # tests: a callable returning the wall clock (float seconds)
cdef object _stamp_of = None  # clf_time, given by prefork.logs
cdef Py_ssize_t _batch = 256  # ACCESS_BATCH, given by prefork.logs


def configure(stamp_of, Py_ssize_t batch):
    """prefork.logs hands over clf_time and ACCESS_BATCH (no import cycle)."""
    global _stamp_of, _batch
    _stamp_of = stamp_of
    _batch = batch


def set_clock(clock):
    """Tests: read the wall clock from `clock()` instead of CLOCK_REALTIME_COARSE (None: back)."""
    global _clock
    _clock = clock


cdef inline str _q(str text):
    return text.replace("\\", "\\\\").replace('"', '\\"')


cdef class Combined:
    cdef public list lines
    cdef public double _next_second
    cdef public str _stamp

    def __call__(self, addr, req, status, length, double duration=0.0):
        cdef double wall
        cdef timespec ts
        cdef double x
        cdef long long us
        # A coarse clock (a few ms) is enough for a stamp in whole seconds.
        if _clock is None:
            clock_gettime(CLOCK_REALTIME_COARSE, &ts)
            wall = <double>ts.tv_sec + ts.tv_nsec * 1e-9
        else:
            wall = _clock()
        if wall >= self._next_second or wall < self._next_second - 1.0:  # (or the clock went back)
            second = int(wall)
            self._next_second = second + 1
            self._stamp = _stamp_of(second)
        host = addr[0] if type(addr) is tuple else (addr or "-")
        cdef str target = req.target
        cdef str referer = req.header("referer", "-")  # (no bound method: Cython calls it unbound)
        cdef str agent = req.header("user-agent", "-")
        if '"' in target or "\\" in target:
            target = _q(target)
        if '"' in referer or "\\" in referer:
            referer = _q(referer)
        if '"' in agent or "\\" in agent:
            agent = _q(agent)
        cdef char buf[64]
        cdef int n
        # The numbers printed in C when they are plain ints (what the server passes),
        # as str() would print them.
        if type(status) is int and (length is None or type(length) is int):
            try:
                if length is None:
                    n = snprintf(buf, sizeof(buf), '%lld - "', <long long>status)
                else:
                    n = snprintf(buf, sizeof(buf), '%lld %lld "', <long long>status, <long long>length)
                mid = PyUnicode_DecodeASCII(buf, n, NULL)
            except OverflowError:  # beyond 64 bits
                mid = f'{status} {"-" if length is None else length} "'
        else:
            mid = f'{status} {"-" if length is None else length} "'
        x = duration * 1000000.0 + 0.5
        if 0.0 <= x < 1000000.0:
            us = <long long>x
            n = snprintf(buf, sizeof(buf), '0.%06lld\n', us)
            took = PyUnicode_DecodeASCII(buf, n, NULL)
        elif x < 1000000.0:  # negative: never from perf_counter, but as the pure twin does
            took = "0." + str(1000000 + int(x))[1:] + "\n"
        else:
            took = f"{duration:.6f}\n"
        line = (f'{host} - - [{self._stamp}] "{req.method} {target} {req.version}" {mid}'
                f'{referer}" "{agent}" {took}')
        lines = self.lines
        lines.append(line)
        if len(lines) >= _batch:
            self.flush()
