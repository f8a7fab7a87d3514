"""module:factory() loading: a fresh App per worker."""

import os

from prefork import App


def create_app():
    app = App()

    @app.get("/")
    def index(req):
        return f"made in {os.getpid()}"

    @app.get("/script")
    def script(req):
        return req.path

    return app


def broken():
    raise RuntimeError("factory failed")


not_callable = 42
