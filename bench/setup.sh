#!/bin/sh
# What bench/run_all.py needs beyond pip: wrk (the load generator), taskset (util-linux),
# nginx (the static-file peer) and libev-dev (bjoern builds against it), then the `bench`
# extra (granian, bjoern, uWSGI, uvicorn, gunicorn, Starlette, FastAPI, websockets, ...).
# Debian/Ubuntu, as root; run from the repository, with the venv active.
set -e
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y wrk util-linux nginx libev-dev build-essential
# nginx's package may start a system nginx on port 80; the benchmark runs its own, so stop
# that one if it is running (it is not needed and takes a little CPU).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx
fi
pip install -e '.[bench]'
