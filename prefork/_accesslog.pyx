# cython: language_level=3
"""The access log's combined line in Cython: the twin of prefork.logs.AccessLog's `log` and
`__call__`.

`Combined` builds each line as UTF-8 bytes straight into a C buffer (what the pure twin's
flush would encode) and keeps the per-line state (the stamp of the current second) in C;
prefork.logs.CAccessLog puts it in front of the pure AccessLog, which keeps everything
else (opening, writing a batch, dropping lines that cannot be written, reopening).
`log(conn, req, status, length, t0)` is the server's entry: the client's host (the
connection's `client()` only when a trusted peer's request claims forwarding, the rule
of prefork.proxy.claims_forwarding) and the request time (CLOCK_MONOTONIC now - t0) are
found here, without Python calls in the common case. A JSON log is the pure twin's
(prefork.logs.open_access_log). Lines must be byte-identical to the pure twin's
(tests/test_accesslog_twins.py)."""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memcpy
from libc.time cimport time_t

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec *tp)
    clockid_t CLOCK_REALTIME_COARSE
    clockid_t CLOCK_MONOTONIC

cdef object _clock = None  # tests: a callable returning the wall clock (float seconds)
cdef object _monotonic = None  # tests: a callable returning the monotonic clock
cdef object _stamp_of = None  # clf_time, given by prefork.logs
cdef Py_ssize_t _batch = 256  # ACCESS_BATCH, given by prefork.logs
cdef tuple _forwarding = ()  # prefork.proxy.FORWARDING_FIELDS, given by prefork.logs


def configure(stamp_of, Py_ssize_t batch, tuple forwarding=()):
    """prefork.logs hands over clf_time, ACCESS_BATCH and the names of the fields that
    claim forwarding (no import cycle; the rules live once)."""
    global _stamp_of, _batch, _forwarding
    _stamp_of = stamp_of
    _batch = batch
    _forwarding = forwarding


def set_clock(clock, monotonic=None):
    """Tests: read the wall clock from `clock()` instead of CLOCK_REALTIME_COARSE, and the
    request time's clock from `monotonic()` instead of CLOCK_MONOTONIC (None: back)."""
    global _clock, _monotonic
    _clock = clock
    _monotonic = monotonic


cdef inline double _now() except? -1.0:
    """The clock of time.monotonic() and time.perf_counter() on Linux (CLOCK_MONOTONIC)."""
    cdef timespec ts
    if _monotonic is not None:
        return _monotonic()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline str _q(str text):
    return text.replace("\\", "\\\\").replace('"', '\\"')


cdef inline bint _claims_forwarding(req) except -1:
    """prefork.proxy.claims_forwarding(req), without its Python frame."""
    for name in _forwarding:
        if req.header(name) is not None:
            return True
    return False


cdef class Combined:
    cdef char* _buf  # the lines waiting, as the bytes flush writes
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef readonly Py_ssize_t waiting  # lines in _buf
    cdef public double _next_second
    cdef public str _stamp

    def __dealloc__(self):
        PyMem_Free(self._buf)
        self._buf = NULL

    # ------------------------------------------------------------------ the buffer

    cdef inline int _room(self, Py_ssize_t n) except -1:
        if self._len + n <= self._cap:
            return 0
        return self._grow(n)

    cdef int _grow(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef char* buf
        cap = max(self._cap * 2, self._len + n, 32768)
        buf = <char*>PyMem_Realloc(self._buf, cap)
        if buf is NULL:
            raise MemoryError()
        self._buf = buf
        self._cap = cap
        return 0

    cdef inline int _put(self, const char* p, Py_ssize_t n) except -1:
        self._room(n)
        memcpy(self._buf + self._len, p, n)
        self._len += n
        return 0

    cdef int _text(self, s, bint quote) except -1:
        """`s` as the pure twin's f-string and encode("utf-8", "backslashreplace") write it,
        `"` and `\\` escaped when `quote`."""
        cdef Py_ssize_t i, n
        cdef const char* p
        cdef char* d
        cdef char c
        if type(s) is not str:
            s = format(s, "")
        if PyUnicode_IS_ASCII(s):
            n = PyUnicode_GET_LENGTH(s)
            p = <const char*>PyUnicode_DATA(s)
            self._room(2 * n if quote else n)
            d = self._buf + self._len
            if quote:
                for i in range(n):
                    c = p[i]
                    if c == b'"' or c == b'\\':
                        d[0] = b'\\'
                        d += 1
                    d[0] = c
                    d += 1
                self._len = d - self._buf
            else:
                memcpy(d, p, n)
                self._len += n
            return 0
        if quote and ('"' in s or "\\" in s):
            s = _q(s)
        data = (<str>s).encode("utf-8", "backslashreplace")
        self._put(data, len(data))
        return 0

    cdef int _int(self, value) except -1:
        """An int as str() prints it (format() for anything else, as the f-string does)."""
        cdef char digits[24]
        cdef int i = 24
        cdef long long v
        cdef unsigned long long u
        cdef int overflow = 0
        if type(value) is int:
            v = PyLong_AsLongLongAndOverflow(value, &overflow)
            if overflow:  # beyond 64 bits
                return self._text(value, False)
            u = (0 - <unsigned long long>v) if v < 0 else <unsigned long long>v  # (LLONG_MIN too)
            while True:
                i -= 1
                digits[i] = <char>48 + <char>(u % 10)
                u //= 10
                if u == 0:
                    break
            if v < 0:
                i -= 1
                digits[i] = b'-'
            return self._put(digits + i, 24 - i)
        return self._text(value, False)

    # ------------------------------------------------------------------ lines

    def log(self, conn, req, status, length, double t0=0.0):
        """The server's entry: the line of `req` answered on `conn`, timed from `t0` (a
        time.monotonic()/perf_counter() reading; 0.0: untimed). The host is what the pure
        twin's `conn.client(req)[0] if conn.trusted else conn.addr` gives."""
        cdef double duration = _now() - t0 if t0 else 0.0
        addr = conn.addr
        if conn.trusted:
            # client(): the peer's host unless a trusted peer's request claims forwarding
            # (then client() decides, from the headers and --forwarded-allow-ips).
            if _claims_forwarding(req):
                host = conn.client(req)[0]
            else:
                host = addr[0] if isinstance(addr, tuple) else ""
            host = host or "-"
        else:
            host = addr[0] if type(addr) is tuple else (addr or "-")
        self._line(host, req, status, length, duration)

    def __call__(self, addr, req, status, length, double duration=0.0):
        """The line for a host already known (the asyncio worker's, and the tests')."""
        host = addr[0] if type(addr) is tuple else (addr or "-")
        self._line(host, req, status, length, duration)

    cdef int _line(self, host, req, status, length, double duration) except -1:
        cdef double wall
        cdef timespec ts
        cdef double x
        cdef long long us
        cdef char took[10]
        cdef int i
        cdef Py_ssize_t start = self._len
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
        # Everything that calls Python first; then only copies into the buffer.
        method = req.method
        target = req.target
        version = req.version
        referer = req.header("referer", "-")  # (no bound method: Cython calls it unbound)
        agent = req.header("user-agent", "-")
        x = duration * 1000000.0 + 0.5
        if 0.0 <= x < 1000000.0:
            us = <long long>x
            took[0] = b'0'
            took[1] = b'.'
            for i in range(7, 1, -1):
                took[i] = <char>48 + <char>(us % 10)
                us //= 10
            took[8] = b'\n'
            spelled = None
        elif x < 1000000.0:  # negative: never from the monotonic clock, but as the pure twin does
            spelled = "0." + str(1000000 + int(x))[1:]
        else:
            spelled = f"{duration:.6f}"
        try:
            self._text(host, False)
            self._put(" - - [", 6)
            self._text(self._stamp, False)
            self._put('] "', 3)
            self._text(method, False)
            self._put(" ", 1)
            self._text(target, True)
            self._put(" ", 1)
            self._text(version, False)
            self._put('" ', 2)
            self._int(status)
            self._put(" ", 1)
            if length is None:
                self._put("-", 1)
            else:
                self._int(length)
            self._put(' "', 2)
            self._text(referer, True)
            self._put('" "', 3)
            self._text(agent, True)
            self._put('" ', 2)
            if spelled is None:
                self._put(took, 9)
            else:
                self._text(spelled, False)
                self._put("\n", 1)
        except BaseException:
            self._len = start  # never half a line
            raise
        self.waiting += 1
        if self.waiting >= _batch:
            self.flush()
        return 0

    # ------------------------------------------------------------------ the batch

    def pending(self):
        """The bytes waiting to be written (what flush() writes next)."""
        return PyBytes_FromStringAndSize(self._buf, self._len)

    def take(self):
        """The bytes waiting, and forget them (AccessLog.flush writes them)."""
        data = PyBytes_FromStringAndSize(self._buf, self._len)
        self._len = 0
        self.waiting = 0
        if self._cap > (1 << 20):  # a burst of long lines: give the memory back
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0
        return data

    @property
    def lines(self):
        """The lines waiting, decoded (for tests and debugging)."""
        parts = self.pending().decode("utf-8").split("\n")
        parts.pop()  # after the last line's end
        return [line + "\n" for line in parts]

    @lines.setter
    def lines(self, value):
        if value:
            raise ValueError("the Cython access log keeps its lines as bytes")
        self.take()
