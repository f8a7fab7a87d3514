"""Type stub for prefork/_accesslog.pyx, the Cython twin of prefork.logs.AccessLog.__call__."""

from typing import Any, Callable, Optional

def configure(stamp_of: Callable[[int], str], batch: int) -> None: ...
def set_clock(clock: Optional[Callable[[], float]]) -> None: ...

class Combined:
    lines: list[str]
    _next_second: float
    _stamp: str
    def __call__(self, addr: Any, req: Any, status: int, length: Optional[int], duration: float = 0.0) -> None: ...
