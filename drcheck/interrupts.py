"""A job's interruptions (SIGTERM, its own deadline) as an exception in the main thread,
and cleanup that an interruption cannot cut short.

`interrupt(reason)` raises `Interrupted` at once, unless the main thread is inside
`shielded()`: then the interruption waits until the outermost shield ends, and is raised
there. Cleanup (removing a sandbox, destroying a sandbox VM, releasing a lease) runs
shielded, so a SIGTERM arriving halfway through it never leaves half a sandbox behind;
the agent gives a stopping job STOP_GRACE_SECONDS for exactly this.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class Interrupted(BaseException):
    """SIGTERM arrived (or the job's deadline passed) while a job ran; raised so `finally`
    blocks clean up."""


_depth = 0
_pending: str | None = None


def interrupt(reason: str) -> None:
    """Raise Interrupted(reason) now, or when the current shield ends (signal handlers run
    in the main thread; other threads are never interrupted)."""
    global _pending
    if _depth and threading.current_thread() is threading.main_thread():
        _pending = _pending or reason
        return
    raise Interrupted(reason)


@contextmanager
def shielded() -> Iterator[None]:
    """Defer interruptions of the main thread until the block ends. Nested shields defer
    to the outermost one. Only the main thread's shield counts (a worker thread's block
    never holds back the main thread's interruption)."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            reason, _pending = _pending, None
            raise Interrupted(reason)


def pending() -> str | None:
    """The interruption waiting for the current shield to end, if any."""
    return _pending
