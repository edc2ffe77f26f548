"""What a probe or restore test gets besides its own target configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Protocol

from drcheck.config_loader import LoadedConfig
from drcheck.results import utcnow
from drcheck.store import Store


class Progress(Protocol):
    def __call__(self, phase: str, done: float | None = None, total: float | None = None) -> None: ...


def no_progress(phase: str, done: float | None = None, total: float | None = None) -> None:
    return None


@dataclass
class RunContext:
    """`name` is the probe or restore test being run; `progress` receives phase updates
    for a human watching the CLI; `now` is the clock (tests may pin it)."""

    name: str
    loaded: LoadedConfig
    store: Store
    progress: Progress = no_progress
    now: Callable[[], datetime] = field(default=utcnow)
