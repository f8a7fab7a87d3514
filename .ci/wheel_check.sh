#!/usr/bin/env bash
# The wheel and sdist build, pass twine check, and the wheel runs with the Cython parser
# (and has the Cython WSGI adapter and access log)
# in a fresh venv on a machine with no C compiler (PATH without cc/gcc, CC=/bin/false).
# Usage: .ci/wheel_check.sh PYTHON (a python with build and twine installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
ls "$work/dist"
"$PY" -m twine check --strict "$work"/dist/*
# A PATH with python's own folder only: no cc, gcc or make to fall back on.
"$PY" -m venv "$work/venv"
mkdir "$work/bin"
env PATH="$work/venv/bin:$work/bin" CC=/bin/false CXX=/bin/false \
    /bin/bash -c 'command -v cc gcc >/dev/null && { echo "a compiler is on PATH"; exit 1; }
             pip install -q --only-binary :all: "$0"/dist/*.whl' "$work"
mkdir "$work/www" && echo "wheel ok" > "$work/www/index.html"
cd "$work"  # away from the source tree: the installed package must be the one imported
env PATH="$work/venv/bin:$work/bin" "$work/venv/bin/prefork-http" --version | tee "$work/version.txt"
grep -q "parser cython, wsgi cython," "$work/version.txt" || { echo "the wheel lacks an extension"; exit 1; }
"$work/venv/bin/python" -c "import prefork.logs as l; assert l.CAccessLog is not None" \
    || { echo "the wheel lacks the Cython access log"; exit 1; }
env PATH="$work/venv/bin:$work/bin" "$work/venv/bin/prefork-http" --parser cython \
    --bind 127.0.0.1:0 --workers 1 --root "$work/www" >"$work/out.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "Booted worker" "$work/out.log" && break; sleep 0.1; done
url=$(grep -o 'Listening at http://[0-9.:]*' "$work/out.log" | head -1 | cut -d' ' -f3)
answer=$("$work/venv/bin/python" -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode().strip())" "$url/")
kill -TERM "$pid"; wait "$pid" || true
grep -q "parser cython" "$work/out.log" || { cat "$work/out.log"; exit 1; }
[ "$answer" = "wheel ok" ] || { echo "wrong answer: $answer"; cat "$work/out.log"; exit 1; }
echo "wheel check: OK (parser cython, no compiler, answered $url/)"
