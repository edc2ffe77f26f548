"""Open corrective actions (POA&M style): a failing rule opens an item (rule, system,
subject, since when); it closes when the rule passes there, or no longer applies; the
history is kept.

The store holds events, never updates: an `opened` row, and later a `closed` row naming
it (`opened_id`). An item is open while its `opened` row has no `closed` row. `sync` is
idempotent and runs under the store's write lock, so two jobs finishing at once never
open the same item twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from drcheck.store import Store, parse_ts, ts


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


@dataclass(frozen=True)
class Changes:
    opened: int
    closed: int


def _key(rule: str, system: str | None, subject: str | None) -> tuple[str, str, str]:
    return rule, system or "", subject or ""


_OPEN = """SELECT o.* FROM corrective_actions o WHERE o.event = 'opened'
    AND NOT EXISTS (SELECT 1 FROM corrective_actions c WHERE c.event = 'closed' AND c.opened_id = o.id)"""


def sync(store: Store, results: Iterable, now: datetime) -> Changes:
    """Open an item for every failing result without an open one; close every open item
    whose (rule, system, subject) passes now or was not judged at all."""
    failing = {_key(r.rule, r.system, r.subject): r for r in results if not r.passed}
    opened = closed = 0
    at = ts(now)
    with store.write_lock():
        conn = store.db.conn
        current = {_key(row["rule"], row["system"], row["subject"]): row["id"]
                   for row in store.query(_OPEN)}
        for key, result in failing.items():
            if key not in current:
                conn.execute("INSERT INTO corrective_actions (event, rule, system, subject, severity, message, at, "
                             "agent) VALUES ('opened', ?, ?, ?, ?, ?, ?, ?)",
                             [*key, result.severity.value, result.message, at, store.agent])
                opened += 1
        for key, opened_id in current.items():
            if key not in failing:
                conn.execute("INSERT INTO corrective_actions (event, rule, system, subject, at, opened_id, agent) "
                             "VALUES ('closed', ?, ?, ?, ?, ?, ?)", [*key, at, opened_id, store.agent])
                closed += 1
    return Changes(opened, closed)


def actions(store: Store, open_only: bool = True) -> list[Action]:
    """Corrective actions, oldest first: the open ones, or (open_only False) every item
    ever opened, with when it closed."""
    rows = store.query("""SELECT o.*, (SELECT c.at FROM corrective_actions c WHERE c.event = 'closed'
                                       AND c.opened_id = o.id) AS closed_at
                          FROM corrective_actions o WHERE o.event = 'opened' ORDER BY o.id""")
    found = [Action(row["id"], row["rule"], row["system"] or None, row["subject"] or None, row["severity"],
                    row["message"], parse_ts(row["at"]), parse_ts(row["closed_at"]) if row["closed_at"] else None)
             for row in rows]
    return [a for a in found if a.closed_at is None] if open_only else found
