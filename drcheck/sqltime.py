"""Timestamps in the store: UTC ISO-8601 text (sortable), read back as aware datetimes."""

from __future__ import annotations

from datetime import datetime, timezone


def ts(value: datetime | None) -> str | None:
    """Return a UTC ISO-8601 string for an aware datetime (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use timezone-aware UTC")
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_ts(value: str | None) -> datetime | None:
    """Return an aware UTC datetime from a stored timestamp."""
    return datetime.fromisoformat(value) if value else None
