"""Open corrective actions (POA&M style): a failing compliance rule opens an item (rule,
system, subject, since when); it closes when the rule passes; the history is kept.

CONTRACT (implemented by the compliance work of issue 8):
- `sync(store, results, now) -> Changes`: open an item for every failing result without an
  open one, close the open items whose rule now passes (or no longer applies); append-only.
- `actions(store, open_only=True) -> list[Action]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Action:
    """One corrective action: what failed, for whom, since when, and (once closed) until when."""

    id: int
    rule: str
    system: str | None
    subject: str | None
    severity: str
    message: str
    opened_at: datetime
    closed_at: datetime | None = None


def actions(store, open_only: bool = True) -> list[Action]:
    """Corrective actions, oldest first (stub until the compliance work lands: none)."""
    return []


def sync(store, results, now: datetime):
    """Open and close corrective actions from rule results (stub: does nothing)."""
    return None
