"""Human durations ("90s", "15m", "4h", "1d12h", "2w") to and from seconds."""

from __future__ import annotations

import math
import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?[smhdw]\s*)+$"


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Given "1h30m", 5400 (seconds) or a timedelta, return a timedelta.

    Raise ValueError naming the accepted forms when the value is not one of them or is
    negative.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError("expected a duration such as '15m', '4h', '1d' or seconds")
    elif isinstance(value, (int, float)):
        result = _seconds(value)
    elif isinstance(value, str) and re.fullmatch(DURATION_PATTERN, value):
        result = _seconds(sum(float(n) * _UNITS[u] for n, u in _PART.findall(value.replace(" ", ""))))
    else:
        raise ValueError(
            f"expected a duration such as '15m', '4h', '1d12h' or a number of seconds, got {value!r}"
        )
    if result < timedelta(0):
        raise ValueError("a duration cannot be negative")
    return result


def _seconds(seconds: int | float) -> timedelta:
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("duration is too large (at most 999999999 days)") from None


def format_duration(seconds: float | None) -> str:
    """Given seconds, return a short human form ("2d 3h", "4m 10s", "0.8s"); "—" for None."""
    if seconds is None:
        return "—"
    negative = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        text = f"{seconds:.2f}s"
    elif seconds < 10:
        text = f"{seconds:.1f}s"
    else:
        total = int(round(seconds))
        parts = []
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if total >= size:
                parts.append(f"{total // size}{unit}")
                total %= size
        text = " ".join(parts[:2])
    return f"-{text}" if negative else text
