"""Type stub for prefork/http/_parser.pyx, the Cython twin of prefork/http/_pyparser.py."""

from typing import Iterable

from prefork.http.errors import ParseError

MAX_REQUEST_LINE: int
MAX_FIELDS: int
MAX_FIELD_SIZE: int
MAX_HEAD_SIZE: int
MAX_BODY_SIZE: int

class Request:
    method: str
    target: str
    path: str
    query: str
    version: str
    headers: list[tuple[str, str]]  # built on first access, then cached
    host: str | None
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool
    body: bytes
    trailers: list[tuple[str, str]]
    def header(self, name: str, default: str | None = None) -> str | None: ...

class RequestParser:
    max_request_line: int
    max_fields: int
    max_field_size: int
    max_head_size: int
    max_body_size: int
    error: ParseError | None
    pending: Request | None
    def __init__(
        self,
        max_request_line: int = ...,
        max_fields: int = ...,
        max_field_size: int = ...,
        max_head_size: int = ...,
        max_body_size: int = ...,
    ) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview) -> list[Request]: ...
    @property
    def buffered(self) -> int: ...
    def take_body(self) -> bytes: ...

SERVER_OWNED: frozenset[str]  # fields header_block drops: framing and hop-by-hop

def status_line(status: int) -> str: ...
def response_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes: ...
def header_block(headers: Iterable[tuple[str, str]]) -> str: ...
