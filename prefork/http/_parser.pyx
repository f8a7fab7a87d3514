# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython request parser: the fast twin of prefork/http/_pyparser.py.

The rules, and the order in which they are checked, are those of the pure twin's module
docstring; this file implements them, byte for byte, and a difference is a bug.

Where the speed comes from: few Python objects. The head is scanned in C (memchr for line
ends, 256-entry tables for tchar and field-value bytes); Host, Content-Length,
Transfer-Encoding, Connection and Expect are checked in C while the head is parsed; for
every other field the parser only records where its name and value lie in a bytes object
the Request keeps. `Request.headers` is built on first use (and cached), `header(name)`
scans the recorded offsets without building it. When a feed() starts with an empty buffer
and gets `bytes`, heads are parsed in place and the Request keeps a reference to that
object: nothing is copied. Field lines repeat on keep-alive connections, so the (name,
value) tuples of recent lines are kept in a small process-wide cache (see _field_tuple).

Exceptions never cross C frames for protocol errors: the C code records an error code and
a message, and feed() turns them into the ParseError of prefork.http.errors.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memmove, memset

import re
from http import HTTPStatus

from prefork.http.errors import (
    BadRequest,
    BodyTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    ParseError,
    RequestLineTooLong,
    ResponseHeadError,
    UnsupportedTransferCoding,
    VersionNotSupported,
)
from prefork.http._pyparser import (
    LIMIT_MAX,
    MAX_BODY_SIZE,
    MAX_FIELD_SIZE,
    MAX_FIELDS,
    MAX_HEAD_SIZE,
    MAX_REQUEST_LINE,
    SERVER_OWNED,
)

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)
    int PyUnicode_KIND(object o)
    bint PyUnicode_IS_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    enum: PyUnicode_1BYTE_KIND
    bint PyUnicode_CheckExact(object o)

# Limits larger than this are clamped, by both twins (the pure twin's LIMIT_MAX, 1 PiB):
# no buffer gets near it, and it keeps pos + limit from overflowing a Py_ssize_t and
# every Content-Length over it to 16 digits (see _content_length).
cdef Py_ssize_t LIMIT_CLAMP = LIMIT_MAX

# ---------------------------------------------------------------------- byte classes

# One table, one bit per class (RFC 9110 §5.6.2, RFC 9112 §3, §5, §7.1).
cdef enum:
    C_TCHAR = 1   # token characters
    C_VCHAR = 2   # 0x21-0x7e, request-target
    C_FVAL = 4    # field-value: HTAB, SP, VCHAR, obs-text
    C_HOST = 8    # unreserved / pct-encoded / sub-delims / ":" / "[" / "]"
    C_HEX = 16
    C_DIGIT = 32
    C_OWS = 64    # SP / HTAB
    C_PLAIN = 128  # letters, digits, "-": the names the field cache keeps

cdef unsigned char CLS[256]
cdef unsigned char LOWER[256]


cdef void _init_tables():
    cdef int c
    for c in range(256):
        CLS[c] = 0
        LOWER[c] = c + 32 if 65 <= c <= 90 else c
    for c in b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        CLS[c] |= C_TCHAR
    for c in range(0x21, 0x7f):
        CLS[c] |= C_VCHAR | C_FVAL
    for c in range(0x80, 0x100):
        CLS[c] |= C_FVAL
    CLS[9] |= C_FVAL | C_OWS
    CLS[32] |= C_FVAL | C_OWS
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:[]%":
        CLS[c] |= C_HOST
    for c in b"0123456789abcdefABCDEF":
        CLS[c] |= C_HEX
    for c in b"0123456789":
        CLS[c] |= C_DIGIT
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-":
        CLS[c] |= C_PLAIN


_init_tables()

# ---------------------------------------------------------------------- constants

# Parser states (the same numbering as the pure twin).
cdef enum:
    S_HEAD = 0
    S_BODY = 1
    S_CHUNK_SIZE = 2
    S_CHUNK_DATA = 3
    S_CHUNK_END = 4
    S_TRAILERS = 5
    S_DEAD = 6

# Error codes, turned into prefork.http.errors classes by feed().
cdef enum:
    E_NONE = 0
    E_400 = 1
    E_413 = 2
    E_414 = 3
    E_417 = 4
    E_431 = 5
    E_501 = 6
    E_505 = 7

cdef tuple _ERROR_CLASSES = (
    None, BadRequest, BodyTooLarge, RequestLineTooLong, ExpectationFailed,
    HeadersTooLarge, UnsupportedTransferCoding, VersionNotSupported,
)

# Header kinds the framing code cares about.
cdef enum:
    K_OTHER = 0
    K_HOST = 1
    K_CL = 2
    K_TE = 3
    K_CONN = 4
    K_EXPECT = 5

cdef str S_GET = "GET"
cdef str S_HEAD_M = "HEAD"
cdef str S_POST = "POST"
cdef str S_PUT = "PUT"
cdef str S_DELETE = "DELETE"
cdef str S_PATCH = "PATCH"
cdef str S_OPTIONS = "OPTIONS"
cdef str S_CONNECT = "CONNECT"
cdef str S_TRACE = "TRACE"
cdef str S_HTTP11 = "HTTP/1.1"
cdef str S_HTTP10 = "HTTP/1.0"
cdef str S_EMPTY = ""
cdef str S_SLASH = "/"
cdef str S_STAR = "*"
cdef bytes B_EMPTY = b""

# Field names common enough to be worth one shared str each (lower-case).
cdef tuple _COMMON_NAMES = (
    "host", "user-agent", "accept", "accept-language", "accept-encoding", "accept-charset",
    "connection", "cookie", "referer", "origin", "upgrade-insecure-requests",
    "cache-control", "pragma", "content-type", "content-length", "transfer-encoding",
    "authorization", "if-none-match", "if-modified-since", "range", "expect", "te",
    "upgrade", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip",
    "x-requested-with", "dnt", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-user",
    "sec-fetch-dest", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "priority",
    "keep-alive", "trailer", "forwarded", "via", "date", "if-match", "if-range",
)
cdef tuple _COMMON_NAMES_B = tuple(s.encode("ascii") for s in _COMMON_NAMES)


cdef inline Py_ssize_t _find(const unsigned char* p, Py_ssize_t start, Py_ssize_t end,
                            unsigned char c) noexcept:
    """The index of the first c in p[start:end], or -1."""
    cdef const unsigned char* q
    if end <= start:
        return -1
    q = <const unsigned char*>memchr(p + start, c, end - start)
    return -1 if q is NULL else q - p


cdef inline bint _all(const unsigned char* p, Py_ssize_t start, Py_ssize_t end,
                      unsigned char cls) noexcept:
    """Every byte of p[start:end] is in the class `cls` (four independent chains)."""
    cdef unsigned char a0 = cls, a1 = cls, a2 = cls, a3 = cls
    cdef Py_ssize_t i = start
    while i + 4 <= end:
        a0 &= CLS[p[i]]
        a1 &= CLS[p[i + 1]]
        a2 &= CLS[p[i + 2]]
        a3 &= CLS[p[i + 3]]
        i += 4
    while i < end:
        a0 &= CLS[p[i]]
        i += 1
    return (a0 & a1 & a2 & a3) != 0


cdef inline uint64_t _swar_ctl(uint64_t w) noexcept:
    """Non-zero when a byte of w is below 0x20 or is 0x7f (HTAB included: the caller
    rechecks byte by byte). Bytes 0x80-0xff pass."""
    cdef uint64_t x = w ^ 0x7f7f7f7f7f7f7f7fULL
    return (((w - 0x2020202020202020ULL) & ~w) | ((x - 0x0101010101010101ULL) & ~x)) & 0x8080808080808080ULL


cdef inline bint _ieq(const unsigned char* p, const char* lower, Py_ssize_t n) noexcept:
    """p[:n] equals the lower-case ASCII `lower`, ignoring ASCII case."""
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[p[i]] != <unsigned char>lower[i]:
            return False
    return True


cdef inline bint _name_eq(const unsigned char* p, const unsigned char* c, Py_ssize_t n) noexcept:
    """Does the token p[:n] equal c[:n], a lower-case name of letters, digits and "-"?
    OR-ing 0x20 lower-cases letters; the only other tchar it changes ("^", "_") become
    "~" and DEL, which c never holds, and no tchar turns into a digit or "-": exact for
    tokens. Reads p[:n] and c[:n] only, a word (or half-word) at a time."""
    cdef uint64_t a, b
    cdef uint32_t a4, b4
    cdef Py_ssize_t i = 0
    if n >= 8:
        while i + 8 <= n:
            memcpy(&a, p + i, 8)
            memcpy(&b, c + i, 8)
            if (a | 0x2020202020202020ULL) != b:
                return False
            i += 8
        if i < n:
            memcpy(&a, p + n - 8, 8)
            memcpy(&b, c + n - 8, 8)
            return (a | 0x2020202020202020ULL) == b
        return True
    if n >= 4:
        memcpy(&a4, p, 4)
        memcpy(&b4, c, 4)
        if (a4 | 0x20202020U) != b4:
            return False
        memcpy(&a4, p + n - 4, 4)
        memcpy(&b4, c + n - 4, 4)
        return (a4 | 0x20202020U) == b4
    for i in range(n):
        if (p[i] | 0x20) != c[i]:
            return False
    return True


# An open-addressing table from a cheap hash of a lower-cased name to its common str.
cdef enum:
    NAME_SLOTS = 256
cdef int _NAME_TABLE[NAME_SLOTS]
cdef unsigned char _NAME_C[64][32]  # the common names, lower-case
cdef Py_ssize_t _NAME_LEN[64]
cdef PyObject* _NAME_OBJ[64]


cdef inline unsigned int _name_hash(const unsigned char* p, Py_ssize_t n) noexcept:
    return (<unsigned int>n * 31 + LOWER[p[0]] * 7 + LOWER[p[n - 1]] * 3 + LOWER[p[n >> 1]]) & (NAME_SLOTS - 1)


cdef void _init_names():
    cdef int k
    cdef unsigned int slot
    cdef bytes name
    for slot in range(NAME_SLOTS):
        _NAME_TABLE[slot] = -1
    assert len(_COMMON_NAMES) <= 64
    for k in range(len(_COMMON_NAMES_B)):
        name = _COMMON_NAMES_B[k]
        assert len(name) < 32
        memset(_NAME_C[k], 0, 32)
        memcpy(_NAME_C[k], <const char*>name, len(name))
        _NAME_LEN[k] = len(name)
        _NAME_OBJ[k] = <PyObject*>_COMMON_NAMES[k]
        slot = _name_hash(name, len(name))
        while _NAME_TABLE[slot] >= 0:
            slot = (slot + 1) & (NAME_SLOTS - 1)
        _NAME_TABLE[slot] = k


_init_names()


cdef object _name_str(const unsigned char* p, Py_ssize_t n):
    """The lower-cased str of a field name (a token, so ASCII, never empty)."""
    cdef Py_ssize_t i
    cdef int k
    cdef unsigned int slot = _name_hash(p, n)
    while True:
        k = _NAME_TABLE[slot]
        if k < 0:
            break
        if _NAME_LEN[k] == n and _name_eq(p, _NAME_C[k], n):
            return <object>_NAME_OBJ[k]
        slot = (slot + 1) & (NAME_SLOTS - 1)
    s = PyUnicode_New(n, 127)
    cdef unsigned char* d = <unsigned char*>PyUnicode_DATA(s)
    for i in range(n):
        d[i] = LOWER[p[i]]
    return s


cdef inline object _ascii_str(const unsigned char* p, Py_ssize_t n):
    """A str of bytes known to be ASCII."""
    if n == 0:
        return S_EMPTY
    s = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(s), p, n)
    return s


cdef inline object _latin1_str(const unsigned char* p, Py_ssize_t n):
    return PyUnicode_DecodeLatin1(<const char*>p, n, NULL)


cdef inline object _method_str(const unsigned char* p, Py_ssize_t n):
    if n == 3:
        if memcmp(p, b"GET", 3) == 0:
            return S_GET
        if memcmp(p, b"PUT", 3) == 0:
            return S_PUT
    elif n == 4:
        if memcmp(p, b"POST", 4) == 0:
            return S_POST
        if memcmp(p, b"HEAD", 4) == 0:
            return S_HEAD_M
    elif n == 5:
        if memcmp(p, b"PATCH", 5) == 0:
            return S_PATCH
        if memcmp(p, b"TRACE", 5) == 0:
            return S_TRACE
    elif n == 6:
        if memcmp(p, b"DELETE", 6) == 0:
            return S_DELETE
    elif n == 7:
        if memcmp(p, b"OPTIONS", 7) == 0:
            return S_OPTIONS
        if memcmp(p, b"CONNECT", 7) == 0:
            return S_CONNECT
    return _ascii_str(p, n)


cdef inline Py_ssize_t _clamp(object value) except? -1:
    if value > LIMIT_CLAMP:
        return LIMIT_CLAMP
    return value


cdef bint _host_ok(const unsigned char* h, Py_ssize_t i, Py_ssize_t e, bint need_host) noexcept:
    """Is h[i:e] a Host value (RFC 9112 §3.2)? With need_host, the host part may not be
    empty (an absolute-form authority, RFC 9110 §4.2.1).

    Host       = uri-host [ ":" port ]; port = *DIGIT
    uri-host   = IP-literal / IPv4address / reg-name                 (RFC 3986 §3.2.2)
    IP-literal = "[" ... "]": here 1* host bytes other than "[" and "]"
    reg-name   = *( unreserved / pct-encoded / sub-delims ), IPv4address as well
    """
    cdef Py_ssize_t j
    cdef unsigned char c
    if i < e and h[i] == 91:  # "["
        i += 1
        j = i
        while i < e and h[i] != 93:
            c = h[i]
            if not CLS[c] & C_HOST or c == 91:
                return False
            i += 1
        if i >= e or i == j:
            return False
        i += 1
    else:
        j = i
        while i < e and h[i] != 58:
            c = h[i]
            if not CLS[c] & C_HOST or c == 91 or c == 93:
                return False
            i += 1
        if need_host and i == j:
            return False
    if i < e:
        if h[i] != 58:
            return False
        i += 1
        while i < e:
            if not CLS[h[i]] & C_DIGIT:
                return False
            i += 1
    return True


cdef bint _chunk_ext_ok(const unsigned char* b, Py_ssize_t i, Py_ssize_t e) noexcept:
    """Is b[i:e] a chunk-ext (RFC 9112 §7.1.1, RFC 9110 §5.6)?

    chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    chunk-ext-name = token
    chunk-ext-val  = token / quoted-string
    quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE
    qdtext         = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
    quoted-pair    = "\\" ( HTAB / SP / VCHAR / obs-text );   BWS = OWS
    """
    cdef Py_ssize_t j
    cdef unsigned char c
    while i < e:
        while i < e and CLS[b[i]] & C_OWS:
            i += 1
        if i >= e or b[i] != 59:  # ";"
            return False
        i += 1
        while i < e and CLS[b[i]] & C_OWS:
            i += 1
        j = i
        while i < e and CLS[b[i]] & C_TCHAR:
            i += 1
        if i == j:
            return False
        j = i  # the end of the name: without "=", whatever follows starts again at ";"
        while i < e and CLS[b[i]] & C_OWS:
            i += 1
        if i >= e or b[i] != 61:  # "="
            i = j
            continue
        i += 1
        while i < e and CLS[b[i]] & C_OWS:
            i += 1
        if i < e and b[i] == 34:  # DQUOTE
            i += 1
            while True:
                if i >= e:
                    return False
                c = b[i]
                if c == 34:
                    i += 1
                    break
                if c == 92:  # quoted-pair: any field-value byte after the backslash
                    i += 1
                    if i >= e or not CLS[b[i]] & C_FVAL:
                        return False
                elif not CLS[c] & C_FVAL:
                    return False
                i += 1
        else:
            j = i
            while i < e and CLS[b[i]] & C_TCHAR:
                i += 1
            if i == j:
                return False
    return True


cdef enum:
    INLINE_SPANS = 16  # fields a Request holds without a separate allocation

# Where a field line lies, relative to the start of the head.
cdef struct Span:
    Py_ssize_t name_off
    Py_ssize_t name_len
    Py_ssize_t value_off
    Py_ssize_t value_len
    int kind
    bint ascii  # the value has no obs-text byte


cdef object _UNSET = object()


# ---------------------------------------------------------------------- field cache

# The (name, value) tuples of recent field lines, shared by every Request of the process:
# on a keep-alive connection most lines repeat from one request to the next (User-Agent,
# Accept-*, Cookie...), and tuples and str are immutable, so a repeated line costs a hash
# and a compare instead of three objects. Direct-mapped; a line enters on its second
# miss in a row in its slot, so lines that never repeat neither evict nor touch cold
# objects. Only names of letters, digits and "-" are kept, which makes _name_eq exact.
cdef enum:
    FIELD_SLOTS = 512
    FIELD_MAX_VALUE = 256
cdef PyObject* _FIELD_CACHE[FIELD_SLOTS]
cdef uint32_t _FIELD_HASH[FIELD_SLOTS]  # the hash of the cached line: a miss reads no object
cdef uint32_t _FIELD_SEEN[FIELD_SLOTS]  # the hash of the last line missed in the slot
memset(_FIELD_CACHE, 0, sizeof(_FIELD_CACHE))
memset(_FIELD_HASH, 0, sizeof(_FIELD_HASH))
memset(_FIELD_SEEN, 0, sizeof(_FIELD_SEEN))


cdef inline uint32_t _field_hash(const unsigned char* np, Py_ssize_t nl,
                                     const unsigned char* vp, Py_ssize_t vl) noexcept:
    cdef uint64_t a = 0, b = 0
    cdef uint64_t x = ((<uint64_t>nl << 32) | <uint64_t>vl) * 0x9E3779B97F4A7C15ULL
    x ^= (<uint64_t>LOWER[np[0]] | (<uint64_t>LOWER[np[nl >> 1]] << 8)
          | (<uint64_t>LOWER[np[nl - 1]] << 16)) * 0xC2B2AE3D27D4EB4FULL
    if vl >= 8:
        memcpy(&a, vp, 8)
        memcpy(&b, vp + vl - 8, 8)
    elif vl > 0:
        a = vp[0] | (<uint64_t>vp[vl - 1] << 8) | (<uint64_t>vp[vl >> 1] << 16)
    x ^= a * 0x165667B19E3779F9ULL
    x ^= (b ^ (x >> 29)) * 0x27D4EB2F165667C5ULL
    return <uint32_t>(x >> 32)  # the slot in the low bits, a tag above


cdef object _field_tuple(const unsigned char* h, Span* sp):
    """The (name, value) tuple of a field line, from the cache when it holds the line."""
    cdef const unsigned char* np = h + sp.name_off
    cdef const unsigned char* vp = h + sp.value_off
    cdef Py_ssize_t nl = sp.name_len
    cdef Py_ssize_t vl = sp.value_len
    cdef uint32_t hash = 0, slot = 0
    cdef PyObject* old
    cdef bint cacheable = vl <= FIELD_MAX_VALUE
    if cacheable:
        hash = _field_hash(np, nl, vp, vl)
        slot = hash & (FIELD_SLOTS - 1)
        old = _FIELD_CACHE[slot]
        if old is not NULL and _FIELD_HASH[slot] == hash:
            name = <object>PyTuple_GET_ITEM(<object>old, 0)
            value = <object>PyTuple_GET_ITEM(<object>old, 1)
            if (PyUnicode_GET_LENGTH(name) == nl and PyUnicode_GET_LENGTH(value) == vl
                    and memcmp(vp, PyUnicode_DATA(value), vl) == 0
                    and _name_eq(np, <const unsigned char*>PyUnicode_DATA(name), nl)):
                return <object>old
    if sp.ascii:
        value = _ascii_str(vp, vl)
    else:
        value = _latin1_str(vp, vl)
    item = (_name_str(np, nl), value)
    if cacheable:
        if _FIELD_SEEN[slot] != hash:
            _FIELD_SEEN[slot] = hash
        elif _all(np, 0, nl, C_PLAIN):
            old = _FIELD_CACHE[slot]
            Py_INCREF(item)
            _FIELD_CACHE[slot] = <PyObject*>item
            _FIELD_HASH[slot] = hash
            Py_XDECREF(old)
    return item


# ---------------------------------------------------------------------- Request

@cython.freelist(32)
@cython.final
cdef class Request:
    """One complete request. Header names are lower-cased; names and values are str
    decoded as latin-1, the body is bytes. `headers` is built on first use."""

    cdef public object method
    cdef public object target
    cdef public object path
    cdef public object query
    cdef public object version
    cdef public object content_length
    cdef public object body
    cdef public bint chunked
    cdef public bint keep_alive
    cdef public bint expect_continue
    cdef object _raw  # the bytes object the head lies in
    cdef const unsigned char* _head  # the head's first byte, inside _raw
    cdef Span* _spans  # _inline, or a block of its own for many fields
    cdef Py_ssize_t _nspans
    cdef Span _inline[INLINE_SPANS]
    cdef Py_ssize_t _host_index  # the span of the Host field, or -1
    cdef object _host
    cdef object _headers
    cdef object _trailers

    def __cinit__(self):
        self._spans = NULL
        self._nspans = 0
        self._host_index = -1
        self._host = None
        self.body = B_EMPTY

    def __dealloc__(self):
        if self._spans is not NULL and self._spans is not &self._inline[0]:
            PyMem_Free(self._spans)
        self._spans = NULL

    # ------------------------------------------------------------------ lazy fields

    @property
    def headers(self):
        if self._headers is None:
            self._headers = self._build_headers()
        return self._headers

    @headers.setter
    def headers(self, value):
        self._headers = value

    @property
    def host(self):
        cdef Span* sp
        if self._host is _UNSET:
            if self._host_index < 0:
                self._host = None
            else:
                sp = &self._spans[self._host_index]
                self._host = _latin1_str(self._head + sp.value_off, sp.value_len)
        return self._host

    @host.setter
    def host(self, value):
        self._host = value

    @property
    def trailers(self):
        if self._trailers is None:
            self._trailers = []
        return self._trailers

    @trailers.setter
    def trailers(self, value):
        self._trailers = value

    cdef list _build_headers(self):
        cdef list out = PyList_New(self._nspans)
        cdef Py_ssize_t i
        cdef tuple item
        for i in range(self._nspans):
            item = _field_tuple(self._head, &self._spans[i])
            Py_INCREF(item)
            PyList_SET_ITEM(out, i, item)
        return out

    def header(self, name, default=None):
        """The first value of the field `name` (lower-case), or `default`."""
        cdef Py_ssize_t i, j, n
        cdef Span* sp
        cdef const unsigned char* p
        cdef const unsigned char* q
        if self._headers is not None or not PyUnicode_CheckExact(name):
            for key, value in self.headers:
                if key == name:
                    return value
            return default
        if not PyUnicode_IS_ASCII(name):
            return default  # field names are tokens: ASCII only
        n = PyUnicode_GET_LENGTH(name)
        q = <const unsigned char*>PyUnicode_DATA(name)
        for i in range(self._nspans):
            sp = &self._spans[i]
            if sp.name_len != n:
                continue
            p = self._head + sp.name_off
            for j in range(n):
                if LOWER[p[j]] != q[j]:
                    break
            else:
                return _latin1_str(self._head + sp.value_off, sp.value_len)
        return default

    def __repr__(self):
        return f"<Request {self.method} {self.target} {self.version}>"


# ---------------------------------------------------------------------- RequestParser

@cython.final
cdef class RequestParser:
    """Incremental HTTP/1.1 request parser.

    `feed(data)` returns the requests completed so far, in order. It never raises a
    protocol error: after one, `error` holds it (a ParseError with the status to answer),
    the requests before it are still returned, and the parser accepts nothing more.
    `pending` is the request whose body is being read, if any (for 100-continue);
    `take_body()` hands over the part of its body received so far (for spooling).
    """

    cdef public Py_ssize_t max_request_line
    cdef public Py_ssize_t max_fields
    cdef public Py_ssize_t max_field_size
    cdef public Py_ssize_t max_head_size
    cdef public Py_ssize_t max_body_size
    cdef public object error
    cdef public object pending

    # The buffer: bytes not consumed yet, kept between feeds.
    cdef unsigned char* _buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _pos  # first unconsumed byte of the working buffer
    cdef Py_ssize_t _checked  # [_pos, _checked) of a head in progress holds no bare LF
    cdef int _state
    cdef Py_ssize_t _remaining  # bytes left of the Content-Length body or of the chunk
    cdef list _parts
    cdef long long _body_size
    cdef list _trailers
    # The last protocol error, until feed() raises it into `error`.
    cdef int _ecode
    cdef const char* _emsg
    # Scratch spans of the head being parsed.
    cdef Span* _spans
    cdef Py_ssize_t _spans_cap
    # LFs of the head in progress, as offsets from its first byte (found once, in the
    # bare-LF scan, and reused to split the head into lines).
    cdef Py_ssize_t* _lfs
    cdef Py_ssize_t _nlfs
    cdef Py_ssize_t _lfs_cap

    def __cinit__(self):
        self._buf = NULL
        self._spans = NULL
        self._lfs = NULL

    def __init__(
        self,
        max_request_line=MAX_REQUEST_LINE,
        max_fields=MAX_FIELDS,
        max_field_size=MAX_FIELD_SIZE,
        max_head_size=MAX_HEAD_SIZE,
        max_body_size=MAX_BODY_SIZE,
    ):
        self.max_request_line = _clamp(max_request_line)
        self.max_fields = _clamp(max_fields)
        self.max_field_size = _clamp(max_field_size)
        self.max_head_size = _clamp(max_head_size)
        self.max_body_size = _clamp(max_body_size)
        self.error = None
        self.pending = None
        self._len = 0
        self._pos = 0
        self._checked = 0
        self._state = S_HEAD
        self._remaining = 0
        self._parts = []
        self._body_size = 0
        self._trailers = []
        self._ecode = E_NONE
        self._emsg = NULL
        if self._spans is NULL:
            self._spans_cap = 16
            self._spans = <Span*>PyMem_Malloc(self._spans_cap * sizeof(Span))
            if self._spans is NULL:
                raise MemoryError()
        if self._lfs is NULL:
            self._lfs_cap = 32
            self._lfs = <Py_ssize_t*>PyMem_Malloc(self._lfs_cap * sizeof(Py_ssize_t))
            if self._lfs is NULL:
                raise MemoryError()
        self._nlfs = 0

    def __dealloc__(self):
        PyMem_Free(self._buf)
        PyMem_Free(self._spans)
        PyMem_Free(self._lfs)

    # ------------------------------------------------------------------ public API

    def feed(self, data):
        cdef list out = []
        cdef const unsigned char* b
        cdef Py_ssize_t n
        cdef Py_buffer view
        cdef object src = None
        cdef int rc
        if self._state == S_DEAD:
            return out
        if self._len == 0 and PyBytes_CheckExact(data):
            # Parse in place: Requests keep a reference to `data`, nothing is copied.
            src = data
            b = <const unsigned char*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                self._append(<const unsigned char*>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
            b = self._buf
            n = self._len
        rc = self._run(out, b, n, src)
        if rc < 0:
            self.error = (<type>_ERROR_CLASSES[self._ecode])(
                self._emsg.decode("ascii") if self._emsg is not NULL else "")
            self._state = S_DEAD
            self.pending = None
            self._len = self._pos = self._checked = 0
            return out
        # Keep what is not consumed.
        cdef Py_ssize_t pos = self._pos
        if src is not None:
            self._pos = 0
            if pos < n:
                self._append(b + pos, n - pos)
        elif pos:
            memmove(self._buf, self._buf + pos, self._len - pos)
            self._len -= pos
            self._pos = 0
        if self._len == 0 and self._cap > 262144:
            PyMem_Free(self._buf)  # a large body passed through: do not keep its memory
            self._buf = NULL
            self._cap = 0
        self._checked = self._checked - pos if self._checked > pos else 0
        return out

    @property
    def buffered(self):
        """Bytes received and kept that belong to no completed request yet (a head still
        arriving, or the start of a chunk line): what a header timeout watches."""
        return self._len - self._pos

    def take_body(self):
        """The body bytes received so far for `pending`, which the parser then forgets:
        the completed Request.body holds only what arrived after the last call. Lets the
        caller move a large body to a file as it arrives. b"" when nothing is pending.
        Limits still count the whole body."""
        cdef list parts
        if self.pending is None or not self._parts:
            return B_EMPTY
        parts = self._parts
        self._parts = []
        return parts[0] if len(parts) == 1 else B_EMPTY.join(parts)

    # ------------------------------------------------------------------ machinery

    cdef int _append(self, const unsigned char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t need = self._len + n
        cdef Py_ssize_t cap
        cdef unsigned char* nb
        if need > self._cap:
            cap = self._cap * 2 if self._cap else 1024
            if cap < need:
                cap = need
            nb = <unsigned char*>PyMem_Realloc(self._buf, cap)
            if nb is NULL:
                raise MemoryError()
            self._buf = nb
            self._cap = cap
        if n:
            memcpy(self._buf + self._len, p, n)
        self._len = need
        return 0

    cdef inline int _fail(self, int code, const char* msg) noexcept:
        self._ecode = code
        self._emsg = msg
        return -1

    cdef int _run(self, list out, const unsigned char* b, Py_ssize_t n, object src) except -2:
        """Parse b[_pos:n]: 0 when more data is needed, -1 on a protocol error."""
        cdef int rc
        cdef int state
        while self._pos < n:
            state = self._state
            if state == S_HEAD:
                rc = self._parse_head(out, b, n, src)
                if rc <= 0:
                    return rc
            elif state == S_BODY:
                self._take(b, n)
                if self._remaining == 0:
                    out.append(self._finish())
            elif state == S_CHUNK_SIZE:
                rc = self._read_chunk_size(b, n)
                if rc <= 0:
                    return rc
            elif state == S_CHUNK_DATA:
                self._take(b, n)
                if self._remaining == 0:
                    self._state = S_CHUNK_END
            elif state == S_CHUNK_END:
                rc = self._read_chunk_end(b, n)
                if rc <= 0:
                    return rc
            elif state == S_TRAILERS:
                rc = self._read_trailer(b, n)
                if rc <= 0:
                    return rc
                if rc == 2:
                    out.append(self._finish())
            else:
                return 0
        return 0

    # ------------------------------------------------------------------ head

    cdef int _parse_head(self, list out, const unsigned char* b, Py_ssize_t n, object src) except -2:
        """Find a complete head, enforcing the bare-LF rule and the head limits exactly
        where the pure twin does; then parse it. 1: progress, 0: need more, -1: error."""
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t checked, cap, line_cap, lim, i
        cdef int over
        cdef const unsigned char* q
        # Empty lines before a request line are ignored (RFC 9112 §2.2).
        while pos + 1 < n and b[pos] == 13 and b[pos + 1] == 10:
            pos += 2
        self._pos = pos
        if pos >= n:
            return 0
        if not CLS[b[pos]] & C_TCHAR:
            # A request line starts with a method (a token). Anything else (a TLS
            # ClientHello, NUL, a CR not followed by LF) is answered now, not at a timeout.
            if b[pos] != 13 or pos + 1 < n:
                return self._fail(E_400, "not an HTTP request")
            return 0  # a lone CR may be the start of one more empty line
        if self._checked > pos:
            checked = self._checked
        else:
            checked = pos
            self._nlfs = 0

        # A request line needs its LF within max_request_line + 2 bytes; the whole head
        # must fit in max_head_size.
        cap = pos + self.max_head_size
        over = E_431
        line_cap = pos + self.max_request_line + 2
        if line_cap <= cap:
            lim = n if n < line_cap else line_cap
            if lim <= pos or memchr(b + pos, 10, lim - pos) is NULL:
                cap = line_cap
                over = E_414
        lim = n if n < cap else cap
        # Every LF before the end of the head (or the cap) must follow a CR; the first
        # CRLFCRLF ends the head.
        i = checked
        while i < lim:
            q = <const unsigned char*>memchr(b + i, 10, lim - i)
            if q is NULL:
                break
            i = q - b
            if i == pos or b[i - 1] != 13:
                return self._fail(E_400, "bare LF in request head")
            if i - 3 >= pos and b[i - 2] == 10 and b[i - 3] == 13:
                self._pos = i + 1
                self._checked = 0
                return self._start_request(out, b, n, src, pos, i - 3)
            if self._nlfs == self._lfs_cap:
                self._grow_lfs()
            self._lfs[self._nlfs] = i - pos
            self._nlfs += 1
            i += 1
        if lim > checked:
            self._checked = lim
        if n >= cap:
            return self._fail(over, NULL)
        return 0

    cdef int _start_request(self, list out, const unsigned char* b, Py_ssize_t n, object src,
                            Py_ssize_t hs, Py_ssize_t he) except -2:
        """Parse the head b[hs:he] (without its final CRLFCRLF), set up the body."""
        cdef const unsigned char* h
        cdef Py_ssize_t hl = he - hs
        cdef Py_ssize_t i, le, s, me, ts, te, ne, vs, ve
        cdef Py_ssize_t count, nspans, max_fields, max_field_size
        cdef unsigned char c
        cdef int kind
        cdef Span* sp
        cdef object raw
        if src is not None:
            raw = src
            h = b + hs
        else:
            raw = PyBytes_FromStringAndSize(<const char*>(b + hs), hl)
            h = <const unsigned char*>PyBytes_AS_STRING(raw)

        # Lines: the LFs inside the head were recorded by the scan (all follow a CR).
        cdef Py_ssize_t* lfs = self._lfs
        cdef Py_ssize_t nlfs = self._nlfs
        cdef Py_ssize_t line = 0
        self._nlfs = 0

        # request-line = method SP request-target SP HTTP-version
        le = lfs[0] - 1 if nlfs else hl
        # Each part ends at the next SP; SP is neither tchar nor VCHAR, so the part is
        # valid when all its bytes are (one AND over them, one branch).
        me = _find(h, 0, le, 32)
        if me <= 0 or not _all(h, 0, me, C_TCHAR):
            return self._fail(E_400, "malformed request line")
        ts = me + 1
        te = _find(h, ts, le, 32)
        if te <= ts or not _all(h, ts, te, C_VCHAR):
            return self._fail(E_400, "malformed request line")
        i = te + 1
        if (le - i != 8 or memcmp(h + i, b"HTTP/", 5) != 0 or not CLS[h[i + 5]] & C_DIGIT
                or h[i + 6] != 46 or not CLS[h[i + 7]] & C_DIGIT):
            return self._fail(E_400, "malformed request line")
        if h[i + 5] != 49 or (h[i + 7] != 48 and h[i + 7] != 49):
            return self._fail(E_505, NULL)
        cdef bint http11 = h[i + 7] == 49

        cdef Request req = Request.__new__(Request)
        req.method = _method_str(h, me)
        target = _ascii_str(h + ts, te - ts)
        req.target = target
        req.version = S_HTTP11 if http11 else S_HTTP10
        if self._split_target(req, target, h, me, ts, te) < 0:
            return -1

        # field-line = field-name ":" OWS field-value OWS, one per line, in order:
        # too many → 431, too long → 431, malformed → 400.
        max_fields = self.max_fields
        max_field_size = self.max_field_size
        count = 0
        nspans = 0
        cdef Py_ssize_t hosts = 0, host_index = -1
        cdef Py_ssize_t n_cl = 0, n_te = 0, n_conn = 0, n_expect = 0
        cdef uint64_t w, hi, bad
        cdef unsigned char ok
        while le < hl:
            s = le + 2
            line += 1
            le = lfs[line] - 1 if line < nlfs else hl
            count += 1
            if count > max_fields:
                return self._fail(E_431, "too many header fields")
            if le - s > max_field_size:
                return self._fail(E_431, "header field too large")
            ne = _find(h, s, le, 58)
            if ne <= s or not _all(h, s, ne, C_TCHAR):
                return self._fail(E_400, "malformed header field")
            i = ne + 1
            while i < le and CLS[h[i]] & C_OWS:
                i += 1
            vs = i
            # field-value bytes, eight at a time (the last word may overlap): any byte
            # below SP or DEL sends the value to the exact, byte-wise check.
            hi = 0
            if le - i >= 8:
                bad = 0
                while i + 8 <= le:
                    memcpy(&w, h + i, 8)
                    bad |= _swar_ctl(w)
                    hi |= w
                    i += 8
                memcpy(&w, h + le - 8, 8)
                bad |= _swar_ctl(w)
                hi |= w
                if bad and not _all(h, vs, le, C_FVAL):
                    return self._fail(E_400, "malformed header field")
            else:
                ok = C_FVAL
                while i < le:
                    ok &= CLS[h[i]]
                    hi |= h[i]
                    i += 1
                if not ok:
                    return self._fail(E_400, "malformed header field")
            ve = le
            while ve > vs and CLS[h[ve - 1]] & C_OWS:
                ve -= 1
            kind = K_OTHER
            c = LOWER[h[s]]
            if ne - s == 4:
                if c == 104 and _ieq(h + s, "host", 4):
                    kind = K_HOST
                    hosts += 1
                    host_index = nspans
            elif ne - s == 14:
                if c == 99 and _ieq(h + s, "content-length", 14):
                    kind = K_CL
                    n_cl += 1
            elif ne - s == 17:
                if c == 116 and _ieq(h + s, "transfer-encoding", 17):
                    kind = K_TE
                    n_te += 1
            elif ne - s == 10:
                if c == 99 and _ieq(h + s, "connection", 10):
                    kind = K_CONN
                    n_conn += 1
            elif ne - s == 6:
                if c == 101 and _ieq(h + s, "expect", 6):
                    kind = K_EXPECT
                    n_expect += 1
            if nspans == self._spans_cap:
                self._grow_spans()
            sp = &self._spans[nspans]
            sp.name_off = s
            sp.name_len = ne - s
            sp.value_off = vs
            sp.value_len = ve - vs
            sp.kind = kind
            sp.ascii = (hi & 0x8080808080808080ULL) == 0
            nspans += 1

        # Host, framing, keep-alive and Expect, in the order of the pure twin's docstring.
        cdef Span* spans = self._spans
        if hosts > 1 or (http11 and hosts == 0):
            return self._fail(E_400, "HTTP/1.1 needs exactly one Host" if http11 else "repeated Host")
        if hosts:
            sp = &spans[host_index]
            if not _host_ok(h, sp.value_off, sp.value_off + sp.value_len, False):
                return self._fail(E_400, "malformed Host")

        cdef bint chunked = False
        cdef long long length = 0
        if n_te:
            if n_cl:
                return self._fail(E_400, "both Transfer-Encoding and Content-Length")
            if not http11:
                return self._fail(E_400, "Transfer-Encoding on HTTP/1.0")
            if self._check_te(h, spans, nspans) < 0:
                return -1
            chunked = True
        elif n_cl:
            length = self._content_length(h, spans, nspans)
            if length < 0:
                return -1
            req.content_length = length

        cdef bint keep_alive = http11
        if n_conn:
            keep_alive = self._keep_alive(h, spans, nspans, keep_alive)
        cdef int expect_continue = 0
        if n_expect and http11:
            expect_continue = self._check_expect(h, spans, nspans)
            if expect_continue < 0:
                return -1

        req.chunked = chunked
        req.keep_alive = keep_alive
        req.expect_continue = expect_continue
        req._raw = raw
        req._head = h
        req._host_index = host_index
        if req._host is None:  # else the authority of an absolute-form target
            req._host = _UNSET
        if nspans:
            if nspans <= INLINE_SPANS:
                req._spans = &req._inline[0]
            else:
                req._spans = <Span*>PyMem_Malloc(nspans * sizeof(Span))
                if req._spans is NULL:
                    raise MemoryError()
            memcpy(req._spans, spans, nspans * sizeof(Span))
            req._nspans = nspans

        cdef Py_ssize_t pos
        if chunked:
            self._state = S_CHUNK_SIZE
            self._parts = []
            self._body_size = 0
            self._trailers = []
            self.pending = req
        elif length:
            pos = self._pos
            if n - pos >= length:  # the common case: the body came with the head
                req.body = PyBytes_FromStringAndSize(<const char*>(b + pos), <Py_ssize_t>length)
                self._pos = pos + length
                out.append(req)
            else:
                self._state = S_BODY
                self._remaining = <Py_ssize_t>length
                self._parts = []
                self.pending = req
        else:
            out.append(req)
        return 1

    cdef int _grow_lfs(self) except -1:
        cdef Py_ssize_t cap = self._lfs_cap * 2
        cdef Py_ssize_t* nl = <Py_ssize_t*>PyMem_Realloc(self._lfs, cap * sizeof(Py_ssize_t))
        if nl is NULL:
            raise MemoryError()
        self._lfs = nl
        self._lfs_cap = cap
        return 0

    cdef int _grow_spans(self) except -1:
        cdef Py_ssize_t cap = self._spans_cap * 2
        cdef Span* ns = <Span*>PyMem_Realloc(self._spans, cap * sizeof(Span))
        if ns is NULL:
            raise MemoryError()
        self._spans = ns
        self._spans_cap = cap
        return 0

    cdef int _split_target(self, Request req, str target, const unsigned char* h,
                           Py_ssize_t me, Py_ssize_t ts, Py_ssize_t te) except -2:
        """path and query from the request-target, by its form (RFC 9112 §3.2); the
        authority of an absolute-form target becomes req's host."""
        cdef bint connect = me == 7 and memcmp(h, b"CONNECT", 7) == 0
        cdef Py_ssize_t i, k, ps, q, auth
        cdef unsigned char c
        cdef unsigned char first = h[ts]
        cdef bint slash = False  # the path lacks its leading "/" (absolute-form)
        cdef const unsigned char* qp
        # request-target = origin-form / absolute-form / authority-form / asterisk-form;
        # none of them has a fragment ("#" is not in path, query or authority).
        if memchr(h + ts, 35, te - ts) is not NULL:
            return self._fail(E_400, "fragment in request target")
        if first == 47:  # origin-form
            ps = ts
        elif first == 42 and te - ts == 1:  # asterisk-form
            if not (me == 7 and memcmp(h, b"OPTIONS", 7) == 0):
                return self._fail(E_400, "asterisk-form is only for OPTIONS")
            req.path = S_STAR
            req.query = S_EMPTY
            return 0
        elif connect:  # authority-form: [^/?#@]+ ":" 1*DIGIT
            k = -1
            for i in range(ts, te):
                c = h[i]
                if c == 47 or c == 63 or c == 35 or c == 64:
                    return self._fail(E_400, "CONNECT needs authority-form")
                if c == 58:
                    k = i
            if k <= ts or k + 1 >= te:
                return self._fail(E_400, "CONNECT needs authority-form")
            for i in range(k + 1, te):
                if not CLS[h[i]] & C_DIGIT:
                    return self._fail(E_400, "CONNECT needs authority-form")
            req.path = S_EMPTY
            req.query = S_EMPTY
            return 0
        else:
            # absolute-form = absolute-URI; for http(s): scheme "://" authority
            # path-abempty [ "?" query ]; authority = [ userinfo "@" ] host [ ":" port ]
            k = ts + 4
            if k > te or not _ieq(h + ts, "http", 4):
                return self._fail(E_400, "malformed request target")
            if k < te and (h[k] == 115 or h[k] == 83):
                k += 1
            if (k + 3 >= te or h[k] != 58 or h[k + 1] != 47 or h[k + 2] != 47
                    or h[k + 3] == 47 or h[k + 3] == 63):
                return self._fail(E_400, "malformed request target")
            auth = k + 3
            k += 4
            while k < te and h[k] != 47 and h[k] != 63:
                k += 1
            if memchr(h + auth, 64, k - auth) is not NULL:
                return self._fail(E_400, "userinfo in request target")
            if not _host_ok(h, auth, k, True):
                return self._fail(E_400, "malformed authority in request target")
            req._host = _ascii_str(h + auth, k - auth)
            ps = k
            slash = True
        if connect:
            return self._fail(E_400, "CONNECT needs authority-form")
        q = -1
        if te > ps:
            qp = <const unsigned char*>memchr(h + ps, 63, te - ps)
            if qp is not NULL:
                q = qp - h
        if q < 0:
            if not slash:
                req.path = target
            elif ps == te:
                req.path = S_SLASH
            else:
                req.path = _ascii_str(h + ps, te - ps)
            req.query = S_EMPTY
        else:
            if slash and q == ps:
                req.path = S_SLASH
            else:
                req.path = _ascii_str(h + ps, q - ps)
            req.query = _ascii_str(h + q + 1, te - q - 1)
        return 0

    cdef int _check_te(self, const unsigned char* h, Span* spans, Py_ssize_t nspans) except -2:
        """Transfer-Encoding: every coding a token, the last one chunked, chunked once,
        no other coding (501). The values of all TE fields, joined by ",".
        Transfer-Encoding = #transfer-coding: empty elements are ignored (RFC 9110
        §5.6.1.2)."""
        cdef Py_ssize_t i, j, s, e, end, el = 0, n_chunked = 0
        cdef bint last_chunked = False
        cdef Span* sp
        for i in range(nspans):
            sp = &spans[i]
            if sp.kind != K_TE:
                continue
            s = sp.value_off
            end = s + sp.value_len
            while True:
                e = s
                while e < end and h[e] != 44:
                    e += 1
                j = e  # element h[s:e], stripped of OWS
                while s < j and CLS[h[s]] & C_OWS:
                    s += 1
                while j > s and CLS[h[j - 1]] & C_OWS:
                    j -= 1
                if s < j:
                    last_chunked = j - s == 7 and _ieq(h + s, "chunked", 7)
                    while s < j:
                        if not CLS[h[s]] & C_TCHAR:
                            return self._fail(E_400, "malformed Transfer-Encoding")
                        s += 1
                    el += 1
                    n_chunked += last_chunked
                if e >= end:
                    break
                s = e + 1
        if not last_chunked:
            return self._fail(E_400, "final transfer coding is not chunked")
        if n_chunked > 1:
            return self._fail(E_400, "chunked applied twice")
        if el > 1:
            return self._fail(E_501, NULL)
        return 0

    cdef long long _content_length(self, const unsigned char* h, Span* spans, Py_ssize_t nspans) except -2:
        """Content-Length: every element 1*DIGIT, at least one, all the same number
        (RFC 9110 §8.6), elements separated as in a list: OWS around them, empty ones
        ignored (RFC 9110 §5.6.1.2). -1 on error."""
        cdef Py_ssize_t i, s, e, j, end, z, fs = 0, fl = -1
        cdef long long value = 0
        cdef Span* sp
        for i in range(nspans):
            sp = &spans[i]
            if sp.kind != K_CL:
                continue
            s = sp.value_off
            end = s + sp.value_len
            while True:
                e = s
                while e < end and h[e] != 44:
                    e += 1
                j = e  # element h[s:j], stripped of OWS
                while s < j and CLS[h[s]] & C_OWS:
                    s += 1
                while j > s and CLS[h[j - 1]] & C_OWS:
                    j -= 1
                if s < j:
                    for z in range(s, j):
                        if not CLS[h[z]] & C_DIGIT:
                            return self._fail(E_400, "malformed Content-Length")
                    z = s  # compare numbers as digit strings without leading zeros
                    while z < j - 1 and h[z] == 48:
                        z += 1
                    if fl < 0:
                        fs = z
                        fl = j - z
                    elif j - z != fl or memcmp(h + z, h + fs, fl) != 0:
                        return self._fail(E_400, "conflicting Content-Length")
                if e >= end:
                    break
                s = e + 1
        if fl < 0:
            return self._fail(E_400, "malformed Content-Length")
        if fl > 18:
            return self._fail(E_413, NULL)
        for i in range(fs, fs + fl):
            value = value * 10 + (h[i] - 48)
        if value > self.max_body_size:
            return self._fail(E_413, NULL)
        return value

    cdef bint _keep_alive(self, const unsigned char* h, Span* spans, Py_ssize_t nspans, bint keep_alive) noexcept:
        cdef Py_ssize_t i, s, e, j, end
        cdef Span* sp
        for i in range(nspans):
            sp = &spans[i]
            if sp.kind != K_CONN:
                continue
            s = sp.value_off
            end = s + sp.value_len
            while True:
                e = s
                while e < end and h[e] != 44:
                    e += 1
                j = e
                while s < j and CLS[h[s]] & C_OWS:
                    s += 1
                while j > s and CLS[h[j - 1]] & C_OWS:
                    j -= 1
                if j - s == 5 and _ieq(h + s, "close", 5):
                    return False
                if j - s == 10 and _ieq(h + s, "keep-alive", 10):
                    keep_alive = True
                if e >= end:
                    break
                s = e + 1
        return keep_alive

    cdef int _check_expect(self, const unsigned char* h, Span* spans, Py_ssize_t nspans) except -2:
        """Expect = #expectation: 1 when it holds 100-continue, 0 when it holds no
        element (empty elements are ignored), -1 (417) for any other expectation."""
        cdef Py_ssize_t i, s, e, j, end
        cdef int found = 0
        cdef Span* sp
        for i in range(nspans):
            sp = &spans[i]
            if sp.kind != K_EXPECT:
                continue
            s = sp.value_off
            end = s + sp.value_len
            while True:
                e = s
                while e < end and h[e] != 44:
                    e += 1
                j = e
                while s < j and CLS[h[s]] & C_OWS:
                    s += 1
                while j > s and CLS[h[j - 1]] & C_OWS:
                    j -= 1
                if s < j:
                    if not (j - s == 12 and _ieq(h + s, "100-continue", 12)):
                        return self._fail(E_417, NULL)
                    found = 1
                if e >= end:
                    break
                s = e + 1
        return found

    # ------------------------------------------------------------------ bodies

    cdef int _take(self, const unsigned char* b, Py_ssize_t n) except -1:
        """Move up to _remaining bytes from the buffer into the body parts."""
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t take = n - pos
        if take > self._remaining:
            take = self._remaining
        self._parts.append(PyBytes_FromStringAndSize(<const char*>(b + pos), take))
        self._pos = pos + take
        self._remaining -= take
        return 0

    cdef Request _finish(self):
        cdef Request req = <Request>self.pending
        req.body = B_EMPTY.join(self._parts)
        self._parts = []
        if req.chunked:
            req._trailers = self._trailers
            self._trailers = []
        self.pending = None
        self._state = S_HEAD
        return req

    cdef Py_ssize_t _line(self, const unsigned char* b, Py_ssize_t n, Py_ssize_t limit,
                          int too_long) noexcept:
        """The end (its CR) of the next CRLF-terminated line; -1: need more, -2: error.
        The line's LF is consumed."""
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t lim = pos + limit + 2
        cdef const unsigned char* q
        cdef Py_ssize_t lf
        if lim > n:
            lim = n
        q = <const unsigned char*>memchr(b + pos, 10, lim - pos) if lim > pos else NULL
        if q is NULL:
            if n - pos >= limit + 2:
                self._fail(too_long, "line too long")
                return -2
            return -1
        lf = q - b
        if lf == pos or b[lf - 1] != 13:
            self._fail(E_400, "bare LF")
            return -2
        self._pos = lf + 1
        return lf - 1

    cdef int _read_chunk_size(self, const unsigned char* b, Py_ssize_t n) except -2:
        cdef Py_ssize_t s = self._pos
        cdef Py_ssize_t e = self._line(b, n, self.max_field_size, E_400)
        cdef Py_ssize_t i
        cdef unsigned long long size = 0
        cdef unsigned char c
        if e == -1:
            return 0
        if e == -2:
            return -1
        # chunk = chunk-size [ chunk-ext ] CRLF; chunk-size = 1*16HEXDIG here.
        i = s
        while i < e and i - s < 16 and CLS[b[i]] & C_HEX:
            c = b[i]
            size = (size << 4) | (c - 48 if c <= 57 else (c | 32) - 87)
            i += 1
        if i == s or not _chunk_ext_ok(b, i, e):
            return self._fail(E_400, "malformed chunk size line")
        cdef long long room = self.max_body_size - self._body_size
        if room < 0 or size > <unsigned long long>room:
            return self._fail(E_413, NULL)
        self._body_size += <long long>size
        if size == 0:
            self._state = S_TRAILERS
        else:
            self._remaining = <Py_ssize_t>size
            self._state = S_CHUNK_DATA
        return 1

    cdef int _read_chunk_end(self, const unsigned char* b, Py_ssize_t n) noexcept:
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t have = n - pos
        if have >= 2:
            if b[pos] != 13 or b[pos + 1] != 10:
                return self._fail(E_400, "chunk data not followed by CRLF")
            self._pos = pos + 2
            self._state = S_CHUNK_SIZE
            return 1
        if have == 1 and b[pos] != 13:
            return self._fail(E_400, "chunk data not followed by CRLF")
        return 0

    cdef int _read_trailer(self, const unsigned char* b, Py_ssize_t n) except -2:
        """2: the body is complete; 1: one trailer read; 0: need more; -1: error."""
        cdef Py_ssize_t s = self._pos
        cdef Py_ssize_t e = self._line(b, n, self.max_field_size, E_431)
        cdef Py_ssize_t i, ne, vs, ve
        if e == -1:
            return 0
        if e == -2:
            return -1
        if e == s:
            return 2
        if len(self._trailers) >= self.max_fields:
            return self._fail(E_431, "too many trailer fields")
        i = s
        while i < e and CLS[b[i]] & C_TCHAR:
            i += 1
        if i == s or i >= e or b[i] != 58:
            return self._fail(E_400, "malformed trailer field")
        ne = i
        i += 1
        while i < e and CLS[b[i]] & C_OWS:
            i += 1
        vs = i
        while i < e and CLS[b[i]] & C_FVAL:
            i += 1
        if i != e:
            return self._fail(E_400, "malformed trailer field")
        ve = e
        while ve > vs and CLS[b[ve - 1]] & C_OWS:
            ve -= 1
        self._trailers.append((_name_str(b + s, ne - s), _latin1_str(b + vs, ve - vs)))
        return 1


# ---------------------------------------------------------------------- response heads

cdef dict _STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n" for s in HTTPStatus}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def status_line(status):
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ResponseHeadError(f"status {status!r} is not three digits")
        line = f"HTTP/1.1 {status} \r\n"
    return line


cdef inline bint _is_token_str(str s):
    cdef Py_ssize_t i, n
    cdef const unsigned char* p
    if not PyUnicode_IS_ASCII(s):
        return False
    n = PyUnicode_GET_LENGTH(s)
    if n == 0:
        return False
    p = <const unsigned char*>PyUnicode_DATA(s)
    for i in range(n):
        if not CLS[p[i]] & C_TCHAR:
            return False
    return True


cdef inline int _value_ok_1byte(str s):
    """1: fine; 0: a control byte (not HTAB, not obs-text)."""
    cdef Py_ssize_t i, n = PyUnicode_GET_LENGTH(s)
    cdef const unsigned char* p = <const unsigned char*>PyUnicode_DATA(s)
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if (c < 32 and c != 9) or c == 127:
            return 0
    return 1


cdef inline bint _server_owned(str name) noexcept:
    """Is the token `name` one of SERVER_OWNED (the pure twin's set), in any case? A switch
    on the length, then one _name_eq: no Python call per field."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(name)
    cdef const unsigned char* p = <const unsigned char*>PyUnicode_DATA(name)
    if n == 2:
        return _name_eq(p, <const unsigned char*>b"te", 2)
    if n == 7:
        return (_name_eq(p, <const unsigned char*>b"trailer", 7)
                or _name_eq(p, <const unsigned char*>b"upgrade", 7))
    if n == 10:
        return (_name_eq(p, <const unsigned char*>b"connection", 10)
                or _name_eq(p, <const unsigned char*>b"keep-alive", 10))
    if n == 14:
        return _name_eq(p, <const unsigned char*>b"content-length", 14)
    if n == 16:
        return _name_eq(p, <const unsigned char*>b"proxy-connection", 16)
    if n == 17:
        return _name_eq(p, <const unsigned char*>b"transfer-encoding", 17)
    return False


cdef int _append_fields(bytearray out, headers) except -1:
    """header_block's checks and lines, appended to `out` as latin-1 bytes. The same
    checks, in the same order, as the pure twin: every name and value first, then
    "header text is not latin-1" for the first piece that is not. A valid field named in
    SERVER_OWNED is dropped after its checks, as in the pure twin."""
    cdef object not_latin1 = None
    for name, value in headers:
        if PyUnicode_CheckExact(name) and PyUnicode_CheckExact(value):
            if not _is_token_str(name):
                raise ResponseHeadError(f"invalid header name {name!r}")
            if PyUnicode_KIND(value) == PyUnicode_1BYTE_KIND:
                if not _value_ok_1byte(value):
                    raise ResponseHeadError(f"control character in header {name!r}")
                if _server_owned(name):
                    continue
                out += (<str>name).encode("ascii")
                out += b": "
                out += (<str>value).encode("latin-1")
                out += b"\r\n"
                continue
            if _BAD_VALUE.search(value) is not None:
                raise ResponseHeadError(f"control character in header {name!r}")
            if _server_owned(name):
                continue
            if not_latin1 is None:
                not_latin1 = value
            continue
        # Anything but plain str: exactly the pure twin's checks.
        if _TOKEN.fullmatch(name) is None:
            raise ResponseHeadError(f"invalid header name {name!r}")
        if _BAD_VALUE.search(value) is not None:
            raise ResponseHeadError(f"control character in header {name!r}")
        if name.lower() in SERVER_OWNED:
            continue
        piece = f"{name}: {value}\r\n"
        try:
            out += piece.encode("latin-1")
        except UnicodeEncodeError:
            if not_latin1 is None:
                not_latin1 = piece
    if not_latin1 is not None:
        try:
            not_latin1.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ResponseHeadError("header text is not latin-1") from exc
    return 0


def header_block(headers):
    """Serialize a handler's header fields as "Name: value\r\n" lines: the one place where
    every response head's handler fields pass (see the pure twin for the whole rule). A
    name that is not a token, or a value with CR, LF, NUL or another control byte, or text
    that is not latin-1, raises ResponseHeadError; a field named in SERVER_OWNED is
    dropped: the server alone writes the framing and the hop-by-hop fields."""
    cdef bytearray out = bytearray()
    _append_fields(out, headers)
    return PyUnicode_DecodeLatin1(out, len(out), NULL)


def response_head(status, headers):
    """A whole response head: status line, header_block(headers), blank line (so without
    any framing field: this is for tests and heads that carry none)."""
    cdef bytearray out = bytearray(status_line(status).encode("latin-1"))
    _append_fields(out, headers)
    out += b"\r\n"
    return bytes(out)
