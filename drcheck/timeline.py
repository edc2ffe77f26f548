"""What a restore test did when: a timeline of its phases (kept in the result's details as
evidence), and progress reports while a restore writes into its sandbox."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from drcheck.restore_tests.checks import regular_files

if TYPE_CHECKING:
    from drcheck.context import RunContext


class Timeline:
    """Start and end of each phase of one test, in seconds since it began (kept in the
    result's details as evidence of what ran when)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.spans: dict[str, list[float]] = {}

    def start(self, name: str):
        """Start span `name`; return the function that ends it."""
        begun = time.perf_counter() - self.t0

        def end() -> None:
            self.spans[name] = [round(begun, 4), round(time.perf_counter() - self.t0, 4)]

        return end

    @contextmanager
    def span(self, name: str):
        end = self.start(name)
        try:
            yield
        finally:
            end()

    def timed(self, name: str, func):
        """`func`, recording its calls as span `name`."""
        def call(*args, **kwargs):
            with self.span(name):
                return func(*args, **kwargs)

        return call


class watch_progress:
    """While restoring, report bytes written into the sandbox (only when someone watches)."""

    def __init__(self, ctx: RunContext, dest: Path, total: int):
        self.ctx, self.dest, self.total = ctx, dest, total
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self):
        self.ctx.progress("restoring", 0, self.total)
        if getattr(self.ctx.progress, "watching", False):
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def finish(self) -> None:
        """Stop watching (the restore is done); idempotent."""
        if self.stop.is_set():
            return
        self.stop.set()
        if self.thread:
            self.thread.join()
        self.ctx.progress("restoring", self.total, self.total)

    def _poll(self) -> None:
        while not self.stop.wait(0.5):
            try:
                done = sum(regular_files(self.dest).values())
            except OSError:  # restic is creating and renaming files under our feet
                continue
            self.ctx.progress("restoring", done, self.total)

    def __exit__(self, *exc) -> None:
        self.finish()
