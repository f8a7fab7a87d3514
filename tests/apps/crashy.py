"""A worker that dies 0.2 s after it boots, every time: a crash loop after boot."""

import os
import threading

from prefork import App


def create_app():
    threading.Timer(0.2, os._exit, [1]).start()
    app = App()

    @app.get("/")
    def index(req):
        return "alive for now"

    return app
