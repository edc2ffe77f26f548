"""Reports benchmark: what does rendering cost beyond reading the data it shows?

A site of `--systems` systems (default 1,000) in `--probes` restic repositories (default 20),
with a year (`--days`, default 365) of daily results: each repository listed once a night
after the backups and checked at 03:00, and one restore test per system per day (three
checks each; 95% pass, 4% fail a check, 1% error; three systems stop backing up on day 3,
one never had a backup). Every row is written through drcheck's own `Store` API
(`record_probe`, `record_restore_test`), one transaction per simulated day; the
configuration (drcheck.toml, the runbooks) is bench_history.py's, loaded with
`drcheck.config_loader.load`. The store is cached under the temp dir (`--cache`; keyed by
the shape and the schema; `--rebuild` regenerates).

Timed (median of `--repeat`, after one warm-up run), in this process:
- (a) the weekly report: `drcheck.reporting.render_weekly(loaded, store, out, now)`;
- (b) the DR plan's HTML: `drcheck.plan.render_plan(..., pdf=False)`;
- (d) the baseline: the queries those reports need, rows fetched and nothing else: the
  latest test and newest restore points per system, the week's tests with their checks,
  a year of measured RTO per system.
And once, in a fresh process stopped after `--pdf-timeout` seconds (a PDF of a thousand
systems is long):
- (c) the DR plan's HTML + PDF: `drcheck.plan.render_plan(..., pdf=True)`.
It prints (a), (b), (c) against (d) as ratios (goal: HTML <= 3x the query; the PDF is measured
and reported) and the peak memory of each, as the maximum resident size of a child
process doing only that one thing (VmHWM; the query child is the floor).

    .venv/bin/python bench/bench_reports.py [--systems 1000] [--probes 20] [--days 365] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_history import COPY, NEVER, STALE, START, Estate, write_config  # noqa: E402
from rows import emit  # noqa: E402

GENERATOR = 1  # bump when generate() changes what is written
HTML_GOAL = 3.0


def generate(loaded, days: int, systems: int, probes: int) -> float:
    """Simulate `days` days of daily results into the store of `loaded`."""
    from drcheck.results import RestorePoint
    from drcheck.store import Store

    estate = Estate(systems, probes)
    targets = {int(name[3:]): (rb.rpo.total_seconds(), rb.rto.total_seconds())
               for name, rb in loaded.runbooks.items()}
    started = time.perf_counter()
    loaded.database_path.unlink(missing_ok=True)
    with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
        for day in range(days):
            backup = START + timedelta(days=day, hours=1)
            with store.write_lock():
                for s in range(systems):  # nightly backups
                    if s == NEVER or (s in STALE and day >= 3):
                        continue
                    estate.count[s] = min(estate.count.get(s, 0) + 1, 30)
                    estate.points[s] = RestorePoint(
                        system=f"sys{s:04d}", copy=COPY, point_time=backup - timedelta(minutes=3),
                        point_id=hashlib.sha256(f"{s}-{day}".encode()).hexdigest(), size_bytes=1_000_000_000 + s,
                        host=f"sys{s:04d}", paths=(f"/srv/sys{s:04d}",))
                for probe in estate.probes:
                    store.record_probe(estate.listing(probe, backup + timedelta(minutes=30)))
                    store.record_probe(estate.check(probe, backup + timedelta(hours=2)))
                for s in range(systems):
                    when = backup + timedelta(hours=3, seconds=s * 60 * 60 * 18 // systems)
                    store.record_restore_test(estate.restore_test(s, when, *targets[s]))
            if (day + 1) % 73 == 0:
                print(f"  day {day + 1}: {time.perf_counter() - started:.0f}s", flush=True)
    return time.perf_counter() - started


def cache_key(systems: int, probes: int, days: int) -> str:
    from drcheck import migrations

    schema = [m.name for m in migrations.migrations._migrations]
    return hashlib.sha256(json.dumps([systems, probes, days, schema, GENERATOR]).encode()).hexdigest()[:12]


def newest(store) -> datetime:
    (last,) = store.db.execute("SELECT MAX(finished_at) FROM restore_tests").fetchone()
    return datetime.fromisoformat(last) + timedelta(minutes=5)


def query_baseline(store, now: datetime) -> int:
    """(d): the rows the reports show, fetched, nothing computed. Return the row count."""
    from drcheck.store import CURRENT_POINTS, LATEST_TESTS, ts

    db = store.db.conn
    week, year = ts(now - timedelta(days=7)), ts(now - timedelta(days=365))
    rows = db.execute(LATEST_TESTS).fetchall()
    rows += db.execute(CURRENT_POINTS).fetchall()
    tests = db.execute("SELECT * FROM restore_tests WHERE started_at >= ? AND started_at < ? ORDER BY started_at",
                       [week, ts(now)]).fetchall()
    rows += tests
    rows += db.execute("SELECT c.* FROM check_results c JOIN restore_tests t ON t.id = c.restore_test_id "
                       "WHERE t.started_at >= ? AND t.started_at < ?", [week, ts(now)]).fetchall()
    rows += db.execute("SELECT system, started_at, rto_seconds, rto_target_seconds FROM restore_tests "
                       "WHERE started_at >= ? AND rto_seconds IS NOT NULL ORDER BY system, started_at",
                       [year]).fetchall()
    rows += db.execute("SELECT * FROM probe_runs WHERE id IN (SELECT probe_run_id FROM probe_latest)").fetchall()
    return len(rows)


def figure(name: str, loaded, store, now: datetime, out: Path):
    """One run of figure `name`; raise NotImplementedError when the plan is not there yet."""
    if name == "query":
        return query_baseline(store, now)
    if name == "weekly":
        from drcheck.reporting import render_weekly

        return render_weekly(loaded, store, out, now)
    from drcheck.plan import render_plan

    return render_plan(loaded, store, out, now, pdf=(name == "pdf"))


def timed(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def child_peak(config: Path, name: str, out: Path) -> float | None:
    """Peak resident memory (bytes) of a fresh process doing one run of figure `name`."""
    done = subprocess.run([sys.executable, __file__, "--child", name, "--config", str(config), "--out", str(out)],
                          capture_output=True, text=True)
    if done.returncode == 3:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"{name} child failed: {done.stderr.strip()[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1].split()[1])


def child(args) -> int:
    from drcheck.config_loader import load
    from drcheck.store import Store

    logging.basicConfig(level=logging.ERROR)
    loaded = load(args.config)
    with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
        t0 = time.perf_counter()
        try:
            figure(args.child, loaded, store, newest(store), Path(args.out))
        except NotImplementedError:
            return 3
        took = time.perf_counter() - t0
    print(f"{took} {peak_rss()}")
    return 0


def child_pdf(config: Path, out: Path, timeout: float) -> tuple[float | None, float | None]:
    """(seconds, peak RSS bytes) of one fresh process rendering the plan's HTML + PDF, or
    (None, None) when it did not finish within `timeout` seconds (it is killed)."""
    try:
        done = subprocess.run([sys.executable, __file__, "--child", "pdf", "--config", str(config), "--out", str(out)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, None
    if done.returncode != 0:
        raise RuntimeError(f"pdf child failed: {done.stderr.strip()[-2000:]}")
    took, peak = done.stdout.strip().splitlines()[-1].split()
    return float(took), float(peak)


def peak_rss() -> int:
    """This process's peak resident size in bytes: VmHWM, which belongs to the program's own
    address space (ru_maxrss would carry over the parent's peak through fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each figure (median)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "drcheck-bench-reports"),
                        help="where the generated store is kept between runs (under the temp dir)")
    parser.add_argument("--rebuild", action="store_true", help="regenerate the store even if cached")
    parser.add_argument("--pdf-timeout", type=float, default=300,
                        help="stop the PDF rendering after this many seconds and report that (default 300)")
    parser.add_argument("--rows", default=os.environ.get("DRCHECK_BENCH_ROWS"),
                        help="append result rows (JSON lines) to this file (run_all.py sets it)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    logging.basicConfig(level=logging.ERROR)

    from drcheck.config_loader import load
    from drcheck.store import Store

    root = Path(args.cache) / cache_key(args.systems, args.probes, args.days)
    config = write_config(root, args.systems, args.probes)
    loaded = load(config)
    if args.rebuild or not (root / ".complete").exists():
        print(f"generating {args.systems:,} systems x {args.days} days of daily results through Store in {root} ...",
              flush=True)
        took = generate(loaded, args.days, args.systems, args.probes)
        print(f"  generated in {took:.0f}s", flush=True)
        (root / ".complete").touch()
    else:
        print(f"using the cached store in {root} (--rebuild to regenerate)", flush=True)

    out = Path(tempfile.mkdtemp(prefix="reports-", dir=root))
    seconds: dict[str, float | None] = {}
    try:
        with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
            now = newest(store)
            (tests,) = store.db.execute("SELECT COUNT(*) FROM restore_tests").fetchone()
            print(f"store: {os.path.getsize(loaded.database_path) / 1e6:.1f} MB, {tests:,} restore tests; "
                  f"query rows: {query_baseline(store, now):,}", flush=True)
            for name in ("query", "weekly", "html"):
                try:
                    figure(name, loaded, store, now, out / "warm-up")  # caches and templates, as a running agent
                    seconds[name] = timed(lambda n=name: figure(n, loaded, store, now, out / n), args.repeat)
                except NotImplementedError:
                    seconds[name] = None
                print(f"  {name:<7} {seconds[name]:8.3f}s", flush=True)
        peaks = {name: child_peak(config, name, out / f"peak-{name}") for name in ("query", "weekly", "html")
                 if seconds[name] is not None}
        # the PDF once, in its own process (its time and its peak together), within a time limit
        seconds["pdf"], peaks["pdf"] = child_pdf(config, out / "pdf", args.pdf_timeout)
        print("  pdf     " + (f"{seconds['pdf']:8.3f}s" if seconds["pdf"] is not None
                              else f"did not finish within {args.pdf_timeout:.0f}s (stopped)"), flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    shape = f"{args.systems} systems x {args.days} days"
    base = seconds["query"]
    print(f"\nReports, {args.systems:,} systems, {args.probes} repositories, {args.days} days of daily results "
          f"(median of {args.repeat}); baseline: the queries alone {base:.3f}s")
    print(f"  {'figure':<22} {'seconds':>9} {'vs query':>9}  {'peak RSS':>9}  goal")
    rows = []
    labels = {"weekly": "weekly report HTML", "html": "DR plan HTML", "pdf": "DR plan HTML + PDF"}
    for name, label in labels.items():
        if seconds[name] is None:
            print(f"  {label:<22} over {args.pdf_timeout:.0f}s: stopped (measured and reported, no goal)")
            rows.append({"name": f"reports {label} vs query ({shape})", "drcheck_seconds": None,
                         "baseline_seconds": base, "ratio": None, "goal": f"measured (stopped at "
                         f"{args.pdf_timeout:.0f}s)", "met": None})
            continue
        ratio = seconds[name] / base
        goal = f"<= {HTML_GOAL:g}x" if name != "pdf" else "measured"
        met = ratio <= HTML_GOAL if name != "pdf" else True
        verdict = ("PASS" if met else "MISS") if name != "pdf" else "(reported)"
        print(f"  {label:<22} {seconds[name]:8.3f}s {ratio:8.2f}x  {peaks[name] / 1e6:7.0f}MB  {goal} {verdict}")
        rows.append({"name": f"reports {label} vs query ({shape})", "drcheck_seconds": seconds[name],
                     "baseline_seconds": base, "ratio": ratio, "goal": goal, "met": met})
        rows.append({"name": f"reports {label} peak memory ({shape})", "drcheck_seconds": None,
                     "baseline_seconds": None, "value": peaks[name], "baseline_value": peaks["query"],
                     "unit": "bytes", "ratio": peaks[name] / peaks["query"], "goal": "reported", "met": True})
    print(f"  {'query (baseline)':<22} {base:8.3f}s {1:8.2f}x  {peaks['query'] / 1e6:7.0f}MB  "
          "(peak RSS of a child process doing only that, interpreter and imports included)")
    emit(args.rows, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
