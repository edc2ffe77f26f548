"""Canary files: a token and a timestamp drcheck writes into a live source.

Found in a restore, a canary proves the data went end to end through the backup, and its
timestamp is the true age of what was restored (the achieved RPO). Its token must be one
drcheck planted (recorded in the store), so a stray or forged file proves nothing.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from drcheck.atomic import write_atomically
from drcheck.store import Store, ts

MAGIC = "drcheck-canary/1"


@dataclass(frozen=True)
class Canary:
    system: str
    token: str
    written_at: datetime


def plant(store: Store, test: str, system: str, path: Path, now: datetime) -> Canary:
    """Atomically (re)write the canary at `path` and record its token; return it."""
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
