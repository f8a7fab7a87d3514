"""Request parsing speed: the two prefork twins against httptools, h11 and a naive parser.

    python bench/parser.py [--repeat 15] [--min-time 0.05] [--clock cpu|wall]

Every contender parses the same inputs into the same data: for each request its method,
target, header list and body (checked once, before timing, after normalising bytes/str
and name case). Times are per request, the best of --repeat rounds (timeit-style); each
round times every cell once, for about --min-time seconds.

- prefork twins: one RequestParser reused, as on a keep-alive connection; the timed code
  reads method, target, headers and body of every request (the Cython twin builds its
  header list on that first read).
- httptools: one parser reused, Python callbacks collecting URL, header list, body, with
  the method read in on_message_complete: the fair comparison. "httptools core" has no
  callbacks: its C parser alone, producing nothing (not verified, for reference).
- h11: a new Connection per input; between pipelined requests it must send a minimal
  response and start the next cycle (its state machine requires it).
- naive: split/partition, no validation at all; a floor for "Python with bytes methods".

"same, all values unique" cycles through 4096 copies of the browser GET whose field values
all differ: the Cython twin keeps a small process-wide cache of recent (name, value)
tuples (field lines repeat on keep-alive connections), and this column shows the cost
when it never hits. Every cell includes one call that fetches the next input.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from prefork.http import _pyparser  # noqa: E402

try:
    from prefork.http import _parser as _cparser  # noqa: E402
except ImportError:
    _cparser = None
try:
    import httptools  # noqa: E402
except ImportError:
    httptools = None
try:
    import h11  # noqa: E402
except ImportError:
    h11 = None

# ---------------------------------------------------------------------- inputs

SMALL_GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"

BROWSER_GET = (  # 603 bytes, 10 header fields
    b"GET /articles/2024/prefork-http-servers?utm_source=newsletter&page=2 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.7,fr;q=0.3\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: https://www.example.com/articles/?ref=home\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=7f3a9c2e41b84d0f; theme=dark; consent=1; _ga=GA1.2.1234567890.1700000000; "
    b"lang=en-GB; tz=Europe%2FParis%2C1\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"Cache-Control: max-age=0\r\n"
    b"\r\n"
)

BODY_1K = bytes(range(256)) * 4
POST_1K = (
    b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Length: 1024\r\n\r\n" + BODY_1K
)
CHUNKED_POST = (
    b"POST /stream HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n" % len(part) + part + b"\r\n" for part in (BODY_1K[:300], BODY_1K[300:700], BODY_1K[700:]))
    + b"0\r\n\r\n"
)
PIPELINED_10 = b"".join(
    b"GET /item/%d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: bench/1.0\r\n\r\n" % i
    for i in range(10)
)



def unique_browser_gets(n=4096):
    """The browser GET n times over, every field value different in each copy (same
    sizes): nothing can be reused from one request to the next."""
    out = []
    for i in range(n):
        tag = b"%05d" % i
        lines = BROWSER_GET.split(b"\r\n")
        for k in range(1, len(lines) - 2):
            name, _, value = lines[k].partition(b": ")
            lines[k] = name + b": " + (value[:-5] + tag if len(value) >= 5 else tag[-len(value):])
        out.append(b"\r\n".join(lines))
    return out


# (label, the inputs cycled through, requests per input)
INPUTS = [
    ("small GET", [SMALL_GET], 1),
    (f"browser GET ({len(BROWSER_GET)} B, 10 hdrs)", [BROWSER_GET], 1),
    ("same, all values unique", unique_browser_gets(), 1),
    ("POST 1 KiB", [POST_1K], 1),
    ("chunked POST", [CHUNKED_POST], 1),
    ("10 pipelined GETs", [PIPELINED_10], 10),
]

# ---------------------------------------------------------------------- contenders


def twin_runner(mod):
    parser = mod.RequestParser()

    def run(data):
        return [(r.method, r.target, r.headers, r.body) for r in parser.feed(data)]

    return run


def httptools_runner():
    class Collector:
        def __init__(self):
            self.out = []
            self.parser = None

        def on_message_begin(self):
            self.url = b""
            self.headers = []
            self.body = []

        def on_url(self, url):
            self.url += url

        def on_header(self, name, value):
            self.headers.append((name, value))

        def on_body(self, body):
            self.body.append(body)

        def on_message_complete(self):
            self.out.append((self.parser.get_method(), self.url, self.headers, b"".join(self.body)))

    proto = Collector()
    parser = httptools.HttpRequestParser(proto)
    proto.parser = parser

    def run(data):
        proto.out = []
        parser.feed_data(data)
        return proto.out

    return run


def httptools_core_runner():
    parser = httptools.HttpRequestParser(object())

    def run(data):
        parser.feed_data(data)

    return run


def h11_runner():
    def run(data):
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(data)
        out = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return out
            if event is h11.PAUSED:
                conn.send(h11.Response(status_code=204, headers=[]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            elif isinstance(event, h11.Request):
                current = (event.method, event.target, list(event.headers), [])
            elif isinstance(event, h11.Data):
                current[3].append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                out.append(current[:3] + (b"".join(current[3]),))

    return run


def naive_parse(data):
    """No validation, no limits, no incremental feeding: what `split` alone costs."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.lower().decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        fields = dict(headers)
        if "content-length" in fields:
            n = int(fields["content-length"])
            body, data = rest[:n], rest[n:]
        elif fields.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    data = rest.partition(b"\r\n")[2]
                    break
                parts.append(rest[:size])
                rest = rest[size + 2:]
            body = b"".join(parts)
        else:
            body, data = b"", rest
        out.append((method.decode("ascii"), target.decode("ascii"), headers, body))
    return out


def contenders():
    rows = [("prefork pure-Python twin", twin_runner(_pyparser), True)]
    if _cparser is not None:
        rows.append(("prefork Cython twin", twin_runner(_cparser), True))
    if httptools is not None:
        rows.append(("httptools + Python callbacks", httptools_runner(), True))
        rows.append(("httptools core, no callbacks", httptools_core_runner(), False))
    if h11 is not None:
        rows.append(("h11", h11_runner(), True))
    rows.append(("naive split/partition", naive_parse, True))
    return rows


# ---------------------------------------------------------------------- checking and timing


def normalise(requests):
    def text(x):
        return x.decode("latin-1") if isinstance(x, (bytes, bytearray)) else x

    return [
        (text(m), text(t), [(text(n).lower(), text(v)) for n, v in hs], bytes(b))
        for m, t, hs, b in requests
    ]


def verify(rows):
    reference = twin_runner(_pyparser)
    for label, datas, count in INPUTS:
        for data in datas[:3]:
            want = normalise(reference(data))
            assert len(want) == count, label
            for name, run, checked in rows:
                if checked:
                    got = normalise(run(data))
                    assert got == want, f"{name} disagrees on {label}: {got!r} != {want!r}"


def calibrated(run, datas, min_time, clock):
    """A timeit.Timer for one cell and the number of calls that fill about min_time."""
    following = itertools.cycle(datas).__next__
    timer = timeit.Timer(lambda: run(following()), timer=clock)
    number = 1
    while timer.timeit(number) < min_time / 2:
        number *= 2
    return timer, number


def best_per_request(rows, repeat, min_time, clock):
    """Seconds per request for every (contender, input): the best of `repeat` rounds,
    each round timing every cell once, so that a slow spell of a shared machine hits
    all cells alike instead of one cell's whole series."""
    cells = {}
    for name, run, _ in rows:
        for label, datas, count in INPUTS:
            cells[name, label] = (*calibrated(run, datas, min_time, clock), count, float("inf"))
    for _ in range(repeat):
        for key, (timer, number, count, best) in cells.items():
            cells[key] = (timer, number, count, min(best, timer.timeit(number) / number / count))
    return {key: cell[3] for key, cell in cells.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15, help="rounds; the best run of each cell counts")
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds per cell and round, about")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: this process's CPU time (steadier on a shared machine); wall: perf_counter")
    args = ap.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    rows = contenders()
    verify(rows)
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"httptools {getattr(httptools, '__version__', 'absent')}, h11 {getattr(h11, '__version__', 'absent')}; "
          f"best of {args.repeat}, {args.clock} clock; µs per request (thousand requests per second)")
    print()
    best = best_per_request(rows, args.repeat, args.min_time, clock)
    print("| parser | " + " | ".join(label for label, _, _ in INPUTS) + " |")
    print("|---|" + "---:|" * len(INPUTS))
    for name, _, _ in rows:
        cells = []
        for label, _, _ in INPUTS:
            sec = best[name, label]
            cells.append(f"{sec * 1e6:.2f} ({1 / sec / 1000:,.0f}k)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if _cparser is None:
        print("\n(the Cython twin is not built: `python setup.py build_ext --inplace`)")


if __name__ == "__main__":
    main()
