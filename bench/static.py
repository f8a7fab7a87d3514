"""Static files end to end: prefork-http vs nginx vs Starlette's StaticFiles on uvicorn.

    python bench/static.py                       # 1 KiB, 64 KiB and 10 MiB; 10 s each
    python bench/static.py --duration 3 --servers prefork,nginx

One worker each. The server runs on core 0 (taskset -c 0), wrk on core 1 (taskset -c 1,
`wrk -t1 -c32 -dNs`), so the two never share a core. nginx gets its own configuration in
a temporary folder (`sendfile on`, one worker, access_log off, 127.0.0.1 on a free port)
and is started and stopped by this script; so are the others. Prints a markdown table of
requests/s and body MiB/s with ratios to nginx (and prefork-http to Starlette).

Needs wrk and taskset; nginx (Debian package `nginx`) and starlette + uvicorn (pip) for
their rows, which are left out with a note when missing. Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import NGINX_CONF, free_port, start_prefork, start_process, stop, wrk  # noqa: E402

SIZES = (("1 KiB", 1024), ("64 KiB", 64 * 1024), ("10 MiB", 10 * 1024 * 1024))
SERVER_CPU, WRK_CPU = "0", "1"


STARLETTE_APP = """\
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

app = Starlette(routes=[Mount("/", app=StaticFiles(directory={www!r}))])
"""


def start_nginx(www: str, tmp: str):
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, www=www, port=port))
    server = start_process(["nginx", "-c", conf, "-p", tmp], port, SERVER_CPU, probe="/1024.bin")
    return server.proc, server.url


def start_starlette(www: str, tmp: str):
    port = free_port()
    with open(os.path.join(tmp, "static_app.py"), "w") as f:
        f.write(STARLETTE_APP.format(www=www))
    server = start_process([sys.executable, "-m", "uvicorn", "static_app:app", "--app-dir", tmp,
                            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                            "--no-access-log", "--log-level", "warning"], port, SERVER_CPU, probe="/1024.bin")
    return server.proc, server.url


def start_prefork_http(www: str, tmp: str):
    server = start_prefork(["--root", www, "--parser", "auto"], SERVER_CPU)
    return server.proc, server.url


SERVERS = {"prefork": start_prefork_http, "nginx": start_nginx, "starlette": start_starlette}


def available(name: str) -> str:
    """'' when the server can run here, else why not."""
    if name == "nginx" and not shutil.which("nginx"):
        return "nginx is not installed (apt-get install nginx)"
    if name == "starlette":
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            return "starlette and uvicorn are not installed (pip install starlette uvicorn)"
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--servers", default="prefork,nginx,starlette")
    args = ap.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    servers = []
    for name in args.servers.split(","):
        why = available(name)
        if why:
            print(f"note: {name} left out: {why}", file=sys.stderr)
        else:
            servers.append(name)
    tmp = tempfile.mkdtemp(prefix="prefork-bench-static-")
    os.chmod(tmp, 0o755)  # nginx's worker runs as another user
    www = os.path.join(tmp, "www")
    os.mkdir(www)
    for label, size in SIZES:
        with open(os.path.join(www, f"{size}.bin"), "wb") as f:
            f.write(os.urandom(size))
    results = {}  # (server, size) → wrk figures
    try:
        for name in servers:
            proc, url = SERVERS[name](www, tmp)
            try:
                for label, size in SIZES:
                    target = f"{url}/{size}.bin"
                    wrk(target, WRK_CPU, 1, args.connections)  # warm-up
                    r = wrk(target, WRK_CPU, args.duration, args.connections)
                    if r["errors"] or r["non2xx"]:
                        print(f"warning: {name} {label}: errors {r['errors']!r}, non-2xx {r['non2xx']}",
                              file=sys.stderr)
                    results[name, size] = r
            finally:
                stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"`wrk -t1 -c{args.connections} -d{args.duration}s`, keep-alive, one worker; server on core "
          f"{SERVER_CPU}, wrk on core {WRK_CPU}; one run. MiB/s counts response bodies.\n")
    print("| file | server | req/s | MiB/s | req/s vs nginx | vs Starlette |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, size in SIZES:
        base = results.get(("nginx", size))
        slow = results.get(("starlette", size))
        for name in servers:
            r = results[name, size]
            rps = r["rps"]
            mib = rps * size / (1 << 20)
            vs_nginx = f"{rps / base['rps']:.0%}" if base else "-"
            vs_starlette = f"{rps / slow['rps']:.1f}x" if slow and name != "starlette" else "-"
            print(f"| {label} | {name} | {rps:,.0f} | {mib:,.1f} | {vs_nginx} | {vs_starlette} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
