"""Does a system's newest restore point still hold the system? One judgement, for every
file-level backup kind (restic, borg): a newest point that no longer covers the system's
configured paths, or holds a fraction of what the previous point held, was taken of the
wrong source (a changed backup job, an unmounted volume, a wrong working directory). Its
probe reports a CRITICAL `wrong_source` finding at once, instead of the system staying
green until its RPO runs out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pydantic import Field

from drcheck.config_types import Strict
from drcheck.mapping import within
from drcheck.results import Finding, Severity


class WrongSourceConfig(Strict):
    """When a system's newest restore point counts as taken of the wrong source."""

    enabled: bool = Field(True, description="judge each system's newest point (coverage and size)")
    min_fraction: float = Field(
        0.5, strict=False, ge=0, le=1,
        description="a newest point holding less than this share of the previous point's bytes or "
                    "files is a wrong source (0 turns the size comparison off)",
    )


@dataclass(frozen=True)
class PointFacts:
    """What the judgement reads of a restore point: its recorded paths, and its restore size
    in bytes and files when known (None: not measured)."""

    id: str
    paths: Sequence[str]
    bytes: int | None = None
    files: int | None = None


def uncovered(configured: Sequence[str], recorded: Sequence[str]) -> list[str]:
    """The configured source paths that no recorded path of the point is or contains."""
    return [str(p) for p in configured if not any(within(str(p), r) for r in recorded)]


def wrong_source(system: str, copy: str, configured: Sequence[str], newest: PointFacts,
                 previous: PointFacts | None, config: WrongSourceConfig) -> Finding | None:
    """Return a CRITICAL `wrong_source` finding when `newest` (the system's newest point in
    `copy`) misses a configured path, or holds less than `config.min_fraction` of the bytes
    or files `previous` held; None when it looks like the system (or cannot be judged)."""
    if not config.enabled:
        return None
    short = newest.id[:8]
    missing = uncovered(configured, newest.paths)
    if missing:
        return Finding(Severity.CRITICAL, "wrong_source",
                       f"newest restore point {short} of {system} in {copy} does not cover "
                       f"{', '.join(missing)} (it holds {', '.join(newest.paths) or 'no paths'})", system)
    if previous is None or not config.min_fraction:
        return None
    shrunk = []
    for unit, now, before in (("bytes", newest.bytes, previous.bytes), ("files", newest.files, previous.files)):
        if now is not None and before and now < config.min_fraction * before:
            shrunk.append(f"{now} of {before} {unit} ({now / before:.0%})")
    if shrunk:
        return Finding(Severity.CRITICAL, "wrong_source",
                       f"newest restore point {short} of {system} in {copy} holds {' and '.join(shrunk)} "
                       f"of the previous point {previous.id[:8]} (limit {config.min_fraction:.0%})", system)
    return None
