"""Protocol errors, shared by both parser twins.

Every error carries the status the server answers with. After any of them the stream can
no longer be trusted: the server answers once, with `Connection: close`, and closes.
This module imports nothing from prefork and nothing that does I/O.
"""


class ParseError(Exception):
    """The request cannot be parsed; `status` is what the server answers."""

    status = 400
    reason = "Bad Request"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason


class BadRequest(ParseError):
    status = 400
    reason = "Bad Request"


class BodyTooLarge(ParseError):
    status = 413
    reason = "Content Too Large"


class RequestTimeout(ParseError):
    """The head or the body did not arrive in time (prefork.http.core.expired)."""
    status = 408
    reason = "Request Timeout"


class RequestLineTooLong(ParseError):
    status = 414
    reason = "URI Too Long"


class ExpectationFailed(ParseError):
    status = 417
    reason = "Expectation Failed"


class HeadersTooLarge(ParseError):
    status = 431
    reason = "Request Header Fields Too Large"


class UnsupportedTransferCoding(ParseError):
    status = 501
    reason = "Not Implemented"


class VersionNotSupported(ParseError):
    status = 505
    reason = "HTTP Version Not Supported"


class ResponseHeadError(ValueError):
    """An application asked for a response head that would split or corrupt the stream."""
