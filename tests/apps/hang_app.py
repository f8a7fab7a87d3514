"""A handler that never returns, for the hung-worker test."""

import time

from prefork import App

app = App()


@app.get("/ok")
def ok(req):
    return "ok"


@app.get("/sleep")
def sleep_forever(req):
    while True:
        time.sleep(3600)
