#!/usr/bin/env bash
# requires-python is honest: the oldest and the newest CPython we claim (from pyenv, when
# present) build the extension and run the parser and unit tests and a core end-to-end
# subset. The full suite runs on the default python in .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=${PREFORK_CI_PYTHONS:-"3.9 3.13"}
subset=(tests/test_parser.py tests/test_http_core.py tests/test_config.py tests/test_server.py
        tests/test_wsgi_twins.py tests/test_accesslog_twins.py tests/test_app_twins.py)
for v in $versions; do
    py=$(ls -d /root/.pyenv/versions/"$v".*/bin/python3 2>/dev/null | sort -V | tail -1 || true)
    [ -n "$py" ] || py=$(command -v "python$v" || true)
    if [ -z "$py" ]; then echo "python $v: not installed here; skipped"; continue; fi
    venv=".venv-$v"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q -e . pytest pytest-timeout hypothesis 2>&1 | grep -v "^WARNING: Location" || true
    "$venv/bin/python" -c "import prefork.http.parser as p; assert p.cython_available(), 'no Cython parser'"
    "$venv/bin/python" -c "import prefork.apps.wsgi as w; assert w.cython_available(), 'no Cython WSGI adapter'"
    "$venv/bin/python" -c "import prefork.logs as l; assert l.CAccessLog is not None, 'no Cython access log'"
    "$venv/bin/python" -c "import prefork.apps._app, prefork; assert prefork.App.__call__ is prefork.apps._app.call, 'no Cython App dispatch'"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "${subset[@]}"
done
