"""Type stub for prefork/apps/_app.pyx, the Cython twin of App.dispatch (prefork/apps/app.py)."""

from typing import Any

from prefork.apps.response import Response

def call(app: Any, req: Any, conn: Any = None) -> Response: ...
