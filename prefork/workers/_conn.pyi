"""Type stub for prefork/workers/_conn.pyx, the Cython twin of the connection's hot path
(PyCore in prefork/workers/connection.py)."""

from typing import Any, Callable

CORE_SLOTS: tuple[str, ...]
WORKER_SLOTS: tuple[str, ...]
OPEN: int
CLOSING: int
CLOSED: int
RECV_SIZE: int

def configure(memo_head: Callable[[Any, tuple], Any]) -> None: ...

class WorkerState:
    now: float
    busy_since: float
    current: Any
    handler: Any
    heads: Any
    access: Any
    by_status: Any
    stopping: bool
    requests: int

class ConnectionCore:
    worker: WorkerState
    sock: Any
    fd: int
    parser: Any
    out: Any
    pending: Any
    state: int
    last_active: float
    writing: bool
    busy: bool
    body: Any
    spooled: Any
    spool_req: Any
    proxy: Any
    head_started: float
    fused: bool
    with_conn: bool
    cork: Any
    served: int
    def on_readable(self) -> None: ...
    def serve(self, reqs: Any) -> None: ...
    def deliver(self, req: Any, resp: Any, t0: float, more: bool) -> bool: ...
