"""WSGI streams whose close() calls are recorded, one line each, in the file named by
$CLOSE_LOG: for the tests that check close() is called exactly once on every exit path."""

import os


class Endless:
    """An endless body; close() appends `closed <path>` to $CLOSE_LOG."""

    def __init__(self, path: str, fail_after: int = -1) -> None:
        self.path = path
        self.fail_after = fail_after

    def __iter__(self):
        n = 0
        while True:
            if n == self.fail_after:
                raise RuntimeError("the stream fails on purpose")
            n += 1
            yield b"x" * 65536

    def close(self) -> None:
        with open(os.environ["CLOSE_LOG"], "a") as f:
            f.write(f"closed {self.path}\n")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return Endless(path, fail_after=3 if path == "/fail" else -1)
