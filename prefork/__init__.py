"""prefork-http: a pre-fork HTTP/1.1 server for Linux."""

__version__ = "0.1.0"
