"""What the probe benchmarks (bench_vmware, bench_veeam, bench_barracuda) share: the
result figure (a rows.py row), verdict and time formatting, timing one probe run, and
printing where a run spends its time."""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Figure:
    name: str
    drcheck_seconds: float | None
    baseline_seconds: float | None
    ratio: float | None
    goal: str | None
    met: bool | None
    value: float | None = None
    unit: str | None = None

    def row(self) -> dict:
        """The rows.py row: the five common keys always, `value`/`unit` when set."""
        return {k: v for k, v in vars(self).items() if v is not None or k not in ("value", "unit")}


def verdict(met: bool) -> str:
    return "MET" if met else "MISS"


def fmt_times(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def time_probe(loaded, store, probe: str, action: str | None = None) -> tuple[float, Any]:
    """drcheck's side of a probe benchmark: one `run_probe` end to end, in-process.
    Returns (seconds, result)."""
    from drcheck.engine import run_probe

    t0 = time.perf_counter()
    result = run_probe(loaded, store, probe, action)
    return time.perf_counter() - t0, result


def print_profile(run: Callable[[], float], what: str, note: str = "", top: int = 15) -> None:
    """Run `run` (which returns its own seconds) under cProfile and print its `top`
    functions by own time, headed "Where `what` spends its time"."""
    prof = cProfile.Profile()
    prof.enable()
    seconds = run()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    print(f"\nWhere {what} spends its time ({seconds:.2f}s under cProfile, sorted by own time; profiling inflates "
          f"Python-heavy parts{'; ' + note if note else ''}):")
    body = buf.getvalue()
    begin = body.find("   ncalls")
    print(body[begin:].rstrip() if begin >= 0 else body)


def add_common_arguments(parser, *, repeat: int | None = 5, profile: str | None = None) -> None:
    """The arguments every probe benchmark takes: --tmpdir and --rows, and (when given)
    --repeat with its default and --profile naming what it profiles."""
    import os

    if repeat is not None:
        parser.add_argument("--repeat", type=int, default=repeat,
                            help=f"rounds of each side; the best counts (default {repeat})")
    if profile is not None:
        parser.add_argument("--profile", action="store_true",
                            help=f"print a profile of {profile} even when the goals are met")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--rows", default=os.environ.get("DRCHECK_BENCH_ROWS"),
                        help="append result rows (JSON lines) to this file (run_all.py sets it)")
