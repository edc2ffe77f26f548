"""Run every drcheck benchmark, one after the other, each in its own process.

Exit status: 0 when every benchmark ran and printed its figures, whether or not it met its
goal (a missed goal is printed as MISS, not turned into a failure); non-zero when a
benchmark could not run (missing tool, broken lab, a drcheck restore test that did not
pass, outputs that do not match). No wall-clock assertions anywhere.

    .venv/bin/python bench/run_all.py [--layout nested|flat] [--mb 150] [--systems 10000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=("nested", "flat"), default="nested",
                        help="source tree layout for bench_restore.py (default nested)")
    parser.add_argument("--mb", type=float, default=150, help="source tree size for bench_restore.py")
    parser.add_argument("--systems", type=int, default=10_000, help="systems for bench_metrics.py")
    args = parser.parse_args(argv)

    runs = [
        ("restore test", [HERE / "bench_restore.py", "--mb", str(args.mb), "--layout", args.layout]),
        ("metrics scrape", [HERE / "bench_metrics.py", "--systems", str(args.systems)]),
    ]
    failed = []
    for title, cmd in runs:
        print(f"=== {title}: {' '.join(str(c) for c in cmd)}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, *map(str, cmd)])
        print(f"=== {title}: exit {code} after {time.perf_counter() - t0:.0f}s\n", flush=True)
        if code != 0:
            failed.append(f"{title} (exit {code})")
    if failed:
        print("could not run: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
