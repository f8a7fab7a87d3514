"""prefork-http: a pre-fork HTTP/1.1 server for Linux.

Public API: `App`, `Request`, `Response` (and `HTTPError`), imported on first use so that
the server's own start-up does not pay for the application layer.
"""

__version__ = "0.1.0"
__all__ = ["App", "Request", "Response", "HTTPError", "__version__"]


def __getattr__(name: str):
    if name in ("App", "Request", "Response", "HTTPError"):
        from prefork.apps import app

        return getattr(app, name)
    raise AttributeError(f"module 'prefork' has no attribute {name!r}")
