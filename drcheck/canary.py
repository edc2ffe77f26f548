"""Canary files: a token and a timestamp drcheck writes into a live source.

Found in a restore, a canary proves the data went end to end through the backup, and its
timestamp is the true age of what was restored (the achieved RPO). Its token must be one
drcheck planted (recorded in the store), so a stray or forged file proves nothing.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

from drcheck.atomic import write_atomically
from drcheck.store import Store, ts

MAGIC = "drcheck-canary/1"


@dataclass(frozen=True)
class Canary:
    system: str
    token: str
    written_at: datetime


class CanaryRefused(ValueError):
    """The live source does not look like the system's data (empty, unmounted, marker
    missing): a canary planted there would prove nothing."""


def refusal(source: Path, canary_name: str, require: Sequence[str] = (), min_entries: int = 1,
            mount_point: bool = False) -> str | None:
    """Why a canary must not be planted in the live source directory `source` (None: fine).

    Refused: a source that does not exist or is not a directory (planting would create it);
    one with fewer than `min_entries` entries besides the canary (an empty directory is
    what an unmounted volume's mount point looks like); one lacking a `require`d marker
    path (relative to `source`); and, with `mount_point`, one on the same device as its
    parent (the volume is not mounted there).
    """
    if not source.is_dir() or source.is_symlink():
        return f"{source} is not a directory (not mounted?); a canary there would prove nothing"
    try:
        entries = [e for e in os.listdir(source) if e != canary_name and not e.startswith(f".{canary_name}.")]
        if mount_point and source.stat().st_dev == source.parent.stat().st_dev:
            return f"{source} is not a mount point (same device as {source.parent}); is its volume unmounted?"
    except OSError as exc:
        return f"cannot read {source}: {exc.strerror}"
    if len(entries) < min_entries:
        return (f"{source} holds {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} besides the canary "
                f"(at least {min_entries} required); is its volume unmounted?")
    missing = [m for m in require if not os.path.lexists(source / m)]
    if missing:
        return f"{source} lacks the marker {', '.join(missing)}; is its volume unmounted?"
    return None


def plant(store: Store, test: str, system: str, path: Path, now: datetime, *, source: Path | None = None,
          require: Sequence[str] = (), min_entries: int = 1, mount_point: bool = False) -> Canary:
    """Atomically (re)write the canary at `path` and record its token; return it. Raise
    CanaryRefused (nothing written) when the live source directory (`source`, default the
    canary's directory) looks empty or unmounted (see `refusal`)."""
    problem = refusal(source or path.parent, path.name, require, min_entries, mount_point)
    if problem:
        raise CanaryRefused(f"canary not planted: {problem}")
    canary = Canary(system=system, token=secrets.token_hex(16), written_at=now)
    body = json.dumps({"magic": MAGIC, "system": system, "token": canary.token, "written_at": ts(now)})
    # readable by whatever user the backup program runs as; it holds no secret
    write_atomically(path, body + "\n", mtime=now)
    store.record_canary(test, system, str(path), canary.token, now)
    return canary


def read(path: Path) -> Canary:
    """Parse a canary file; raise ValueError saying what is wrong with it."""
    try:
        data = json.loads(path.read_text()[:4096])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable canary: {exc}") from None
    if not isinstance(data, dict) or data.get("magic") != MAGIC:
        raise ValueError("not a drcheck canary")
    try:
        return Canary(system=data["system"], token=data["token"],
                      written_at=datetime.fromisoformat(data["written_at"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed canary: {exc}") from None
