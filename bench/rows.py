"""Result rows every benchmark can hand to run_all.py: JSON lines appended to the file named
by `--rows` or $DRCHECK_BENCH_ROWS. Each row: {name, drcheck_seconds, baseline_seconds,
ratio, goal, met} (plus optional extra keys: a figure that is not a time, such as a peak
memory or a count, sets `value` and `unit` and leaves the seconds None)."""

from __future__ import annotations

import json
from pathlib import Path


def emit(path: str | None, rows: list[dict]) -> None:
    """Append `rows` to `path` as JSON lines; do nothing when no path is given."""
    if not path:
        return
    with Path(path).open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
