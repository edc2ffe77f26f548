"""Run every drcheck benchmark, one after the other, each in its own process.

Exit status: 0 when every benchmark ran and printed its figures, whether or not it met its
goal (a missed goal is printed as MISS, not turned into a failure); non-zero when a
benchmark could not run (missing tool, broken lab, a drcheck restore test that did not
pass, outputs that do not match). No wall-clock assertions anywhere.

With `--json FILE`, every figure is also written to FILE as a JSON list of
`{name, drcheck_seconds, baseline_seconds, ratio, goal, met}`: each benchmark appends its
rows to the file named by $DRCHECK_BENCH_ROWS, which this script sets and collects.

    .venv/bin/python bench/run_all.py [--layout nested|flat] [--mb 150] [--systems 10000]
                                      [--history-days 30,365] [--vms 5000] [--veeam-vms 1000]
                                      [--veeam-points 30] [--messages 10000] [--report-systems 1000]
                                      [--report-days 365] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=("nested", "flat"), default="nested",
                        help="source tree layout for bench_restore.py (default nested)")
    parser.add_argument("--mb", type=float, default=150, help="source tree size for bench_restore.py")
    parser.add_argument("--systems", type=int, default=10_000, help="systems for bench_metrics.py")
    parser.add_argument("--history-days", default="30,365", help="store ages for bench_history.py")
    parser.add_argument("--vms", type=int, default=5000, help="VMs in the simulator for bench_vmware.py")
    parser.add_argument("--veeam-vms", type=int, default=1000, help="VMs in the Veeam replay for bench_veeam.py")
    parser.add_argument("--veeam-points", type=int, default=30, help="restore points per VM and copy for "
                                                                     "bench_veeam.py")
    parser.add_argument("--messages", type=int, default=10_000, help="report e-mails in the mailbox for "
                                                                      "bench_barracuda.py")
    parser.add_argument("--report-systems", type=int, default=1000, help="systems for bench_reports.py")
    parser.add_argument("--report-days", type=int, default=365, help="days of daily results for bench_reports.py")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    args = parser.parse_args(argv)

    runs = [
        ("restore test", [HERE / "bench_restore.py", "--mb", str(args.mb), "--layout", args.layout]),
        ("metrics scrape", [HERE / "bench_metrics.py", "--systems", str(args.systems)]),
        ("history", [HERE / "bench_history.py", "--days", args.history_days]),
        ("vmware", [HERE / "bench_vmware.py", "--vms", str(args.vms)]),
        ("veeam", [HERE / "bench_veeam.py", "--vms", str(args.veeam_vms), "--points", str(args.veeam_points)]),
        ("barracuda", [HERE / "bench_barracuda.py", "--messages", str(args.messages)]),
        ("reports", [HERE / "bench_reports.py", "--systems", str(args.report_systems), "--days", str(args.report_days)]),
    ]
    fd, rows_path = tempfile.mkstemp(prefix="drcheck-bench-rows-", suffix=".jsonl")
    os.close(fd)
    env = {**os.environ, "DRCHECK_BENCH_ROWS": rows_path}
    failed = []
    try:
        for title, cmd in runs:
            print(f"=== {title}: {' '.join(str(c) for c in cmd)}", flush=True)
            t0 = time.perf_counter()
            code = subprocess.call([sys.executable, *map(str, cmd)], env=env)
            print(f"=== {title}: exit {code} after {time.perf_counter() - t0:.0f}s\n", flush=True)
            if code != 0:
                failed.append(f"{title} (exit {code})")
        rows = [json.loads(line) for line in Path(rows_path).read_text().splitlines() if line.strip()]
    finally:
        os.unlink(rows_path)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"{len(rows)} figures written to {args.json}")
    if failed:
        print("could not run: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
