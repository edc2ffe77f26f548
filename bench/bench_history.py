"""History benchmark: does what drcheck costs follow the estate, or the clock?

A site of `--systems` systems (default 1,000) spread over `--probes` restic repositories
(default 20 of 50 systems), probed every 15 minutes, with a daily repository check and one
restore test per system per day (three checks each), is simulated for one month and for
one year. Every row is written through drcheck's own `Store` API (`record_probe`,
`record_restore_test`), one outer transaction per simulated day, so the store is the one
the agent itself would have written. The configuration (drcheck.toml, 1,000 runbooks,
20 probes, 1,000 restore tests) is generated as TOML files and loaded with
`drcheck.config_loader.load`.

For each store it prints the database size and the median time of:
- `drcheck status`: `drcheck.status.system_statuses(loaded, store, now)`
- the weekly report: `drcheck.reporting.render_weekly(loaded, store, out, now)`
- a metrics scrape: `generate_latest(drcheck.metrics.registry_for(loaded))`
and the 1-year / 1-month ratio of each (goal <= 1.5x for the times: the "baseline" is the
1-month figure), plus the absolute goals at one year (every figure < 2 s, database < 1 GB).
No wall-clock assertions: a missed goal prints MISS and still exits 0.

The shape: most systems back up nightly, one in ten every 4 hours; three stop backing up
after day 3 (RPO findings whose message changes every run); one was never backed up
(no_restore_point); one loses its snapshots on day 10 and gets them back on day 12; every
probe run fails to connect with probability 0.3%, and one repository is down for six hours
on day 15; restore tests pass 95%, fail 4% (a failed check), error 1%.

Generated stores are cached under the temp dir (`--cache`, default
$TMPDIR/drcheck-bench-history), keyed by the shape and the store's schema version; `--rebuild`
regenerates. The 1-month store is a copy of the 1-year one taken after day 30.

    .venv/bin/python bench/bench_history.py [--systems 1000] [--probes 20] [--days 30,365] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rows import emit  # noqa: E402

GENERATOR = 1  # bump when Estate or generate() changes what is written: cached stores are then rebuilt
RATIO_GOAL = 1.5
SECONDS_GOAL = 2.0
SIZE_GOAL = 1e9
START = datetime(2026, 1, 5, tzinfo=timezone.utc)
STEP = timedelta(minutes=15)
COPY = "office-restic"
STALE = {7, 307, 607}          # stop backing up after day 3
NEVER = 999                    # never backed up
VANISH = 500                   # snapshots gone on day 10, back on day 12


def write_config(root: Path, systems: int, probes: int) -> Path:
    """Write drcheck.toml and one runbook per system under `root`; return the toml path."""
    import tomli_w

    runbooks = root / "runbooks"
    runbooks.mkdir(parents=True, exist_ok=True)
    per_probe = -(-systems // probes)
    data = {
        "agent": {"name": "bench-history", "state_dir": str(root / "state"), "sandbox_root": str(root / "sandbox"),
                  "runbooks_dir": str(runbooks), "timezone": "UTC"},
        "reports": {"output_dir": str(root / "reports")},
        "sites": {"office": {}}, "copies": {COPY: {"site": "office"}},
        "probes": {}, "restore_tests": {},
    }
    for p in range(probes):
        members = [s for s in range(systems) if s // per_probe == p]
        data["probes"][f"repo{p:02d}"] = {
            "kind": "restic", "copy": COPY, "repository": f"/srv/restic/repo{p:02d}",
            "password": {"file": "/etc/drcheck/restic-password"}, "snapshots": {"schedule": {"interval": "15m"}},
            "check": {"schedule": {"cron": "0 3 * * *"}},
            "systems": [{"system": f"sys{s:04d}", "paths": [f"/srv/sys{s:04d}"]} for s in members],
        }
    for s in range(systems):
        minute = s * 1440 // systems
        data["restore_tests"][f"sys{s:04d}-files"] = {
            "kind": "files", "probe": f"repo{s // per_probe:02d}", "system": f"sys{s:04d}",
            "schedule": {"cron": f"{minute % 60} {minute // 60} * * *"}, "expected_paths": ["etc"],
        }
        (runbooks / f"sys{s:04d}.toml").write_text(tomli_w.dumps({
            "name": f"System {s}", "tier": 1 + s % 4, "owner": "ops", "rto": f"{4 + s % 20}h",
            "rpo": "6h" if s % 10 == 0 else "26h", "mtd": "3d"}))
    path = root / "drcheck.toml"
    path.write_text(tomli_w.dumps(data))
    return path


class Estate:
    """The simulated site: which restore points exist at each moment, and what probes see."""

    def __init__(self, systems: int, probes: int):
        from drcheck.results import RestorePoint

        self.RestorePoint = RestorePoint
        self.systems, self.per_probe = systems, -(-systems // probes)
        self.probes = [f"repo{p:02d}" for p in range(probes)]
        self.members = {name: [s for s in range(systems) if s // self.per_probe == p]
                        for p, name in enumerate(self.probes)}
        self.points: dict[int, object] = {}   # system -> newest RestorePoint
        self.count: dict[int, int] = {}       # system -> number of points
        self.rng = random.Random(42)

    def backup_due(self, s: int, at: datetime) -> bool:
        day = (at - START).days
        if s == NEVER or (s in STALE and day >= 3):
            return False
        minutes = at.hour * 60 + at.minute
        if s % 10 == 0:
            return minutes % 240 == (s % 16) * 15
        return minutes == 60 + (s % 12) * 15

    def advance(self, at: datetime) -> None:
        for s in range(self.systems):
            if self.backup_due(s, at) or (s not in self.points and s != NEVER and at == START):
                k = self.count.get(s, 0) + 1
                self.count[s] = min(k, 30)
                self.points[s] = self.RestorePoint(
                    system=f"sys{s:04d}", copy=COPY, point_time=at - timedelta(minutes=3),
                    point_id=hashlib.sha256(f"{s}-{at.isoformat()}".encode()).hexdigest(),
                    size_bytes=1_000_000_000 + s, host=f"sys{s:04d}", paths=(f"/srv/sys{s:04d}",))

    def listing(self, probe: str, at: datetime):
        from drcheck.results import Finding, ProbeResult, Severity, Status

        day = (at - START).days
        down = (probe == "repo07" and day == 15 and 8 <= at.hour < 14) or self.rng.random() < 0.003
        result = ProbeResult(probe=probe, kind="restic", action="snapshots", status=Status.OK, started_at=at,
                             finished_at=at + timedelta(seconds=3), copy=COPY)
        if down:
            result.status, result.reason = Status.ERROR, "restic: Fatal: unable to open repository: connection refused"
            return result
        for s in self.members[probe]:
            name = f"sys{s:04d}"
            point = self.points.get(s)
            if point is None or (s == VANISH and 10 <= day < 12):
                result.findings.append(Finding(Severity.CRITICAL, "no_restore_point",
                                               f"no snapshot in {COPY} matches {name}", name))
                continue
            result.newest.append(point)
            result.point_counts[name] = self.count[s]
            age = (at - point.point_time).total_seconds()
            if age > (6 if s % 10 == 0 else 26) * 3600:
                result.findings.append(Finding(Severity.CRITICAL, "rpo_breach",
                                               f"newest snapshot of {name} is {age / 3600:.1f}h old", name))
        if probe == "repo03":
            result.findings.append(Finding(Severity.WARNING, "unmapped_snapshots",
                                           f"{3 + day % 5} snapshot(s) match no system rule"))
        if any(f.severity is Severity.CRITICAL for f in result.findings):
            result.status = Status.FAILED
            result.reason = "; ".join(f.message for f in result.findings if f.severity is Severity.CRITICAL)
        result.details = {"snapshots": sum(self.count.get(s, 0) for s in self.members[probe])}
        return result

    def check(self, probe: str, at: datetime):
        from drcheck.results import Finding, ProbeResult, Severity, Status

        bad = probe == "repo05" and (at - START).days == 20
        return ProbeResult(probe=probe, kind="restic", action="check", status=Status.FAILED if bad else Status.OK,
                           started_at=at, finished_at=at + timedelta(seconds=95), copy=COPY,
                           reason="pack damaged" if bad else "",
                           findings=[Finding(Severity.CRITICAL, "check_failed", "pack damaged")] if bad else [])

    def restore_test(self, s: int, at: datetime, rpo_target: float, rto_target: float):
        from drcheck.results import CheckResult, RestoreTestResult, Status

        roll = self.rng.random()
        point = self.points.get(s)
        name = f"sys{s:04d}"
        base = dict(test=f"{name}-files", kind="files", system=name, probe=f"repo{s // self.per_probe:02d}",
                    copy=COPY, started_at=at, rto_target_seconds=rto_target, rpo_target_seconds=rpo_target)
        if point is None or roll < 0.01:
            return RestoreTestResult(**base, status=Status.ERROR, finished_at=at + timedelta(seconds=20),
                                     reason="no restore point to test" if point is None else "restic: timeout")
        restore, verify = 60.0 + s % 500, 5.0 + s % 60
        failed = roll < 0.05
        checks = [
            CheckResult("expected paths", Status.PASSED, "1 of 1 present", 0.01),
            CheckResult("canary", Status.PASSED, "canary 40m old", 0.02, {"token": f"{s}-{at:%j}"}),
            CheckResult("spot check", Status.FAILED if failed else Status.PASSED,
                        "3 of 20 files differ" if failed else "20 files match the live source", verify - 0.03,
                        {"sampled": 20, "mismatched": 3 if failed else 0}),
        ]
        return RestoreTestResult(
            **base, status=Status.FAILED if failed else Status.PASSED, reason="spot check failed" if failed else "",
            finished_at=at + timedelta(seconds=restore + verify), point_id=point.point_id,
            point_time=point.point_time, restore_seconds=restore, verify_seconds=verify,
            rto_seconds=None if failed else restore + verify, rpo_seconds=(at - point.point_time).total_seconds(),
            rpo_source="restore_point", files_restored=1000 + s, bytes_restored=10_000_000 * (1 + s % 50),
            sandbox=f"/var/lib/drcheck/sandbox/{name}-files-{at:%Y%m%dT%H%M%SZ}", checks=checks)


def generate(loaded, days: list[int], out: dict[int, Path], systems: int, probes: int) -> float:
    """Simulate max(days) days into the store of `loaded`, copying it to out[d] after day d."""
    from drcheck.store import Store

    estate = Estate(systems, probes)
    targets = {int(name[3:]): (rb.rpo.total_seconds(), rb.rto.total_seconds())
               for name, rb in loaded.runbooks.items()}
    test_minute = {s: s * 1440 // systems for s in range(systems)}
    by_minute: dict[int, list[int]] = {}
    for s, minute in test_minute.items():
        by_minute.setdefault(minute // 15 * 15, []).append(s)
    started = time.perf_counter()
    database = loaded.database_path
    database.unlink(missing_ok=True)
    with Store(database, agent=loaded.config.agent.name) as store:
        for day in range(max(days)):
            with store.write_lock():
                for step in range(96):
                    at = START + timedelta(days=day) + step * STEP
                    estate.advance(at)
                    for probe in estate.probes:
                        store.record_probe(estate.listing(probe, at))
                        if step == 12:  # 03:00
                            store.record_probe(estate.check(probe, at + timedelta(minutes=1)))
                    for s in by_minute.get(step * 15, []):
                        when = at + timedelta(minutes=test_minute[s] - step * 15, seconds=30)
                        store.record_restore_test(estate.restore_test(s, when, *targets[s]))
            if day + 1 in out:
                store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                copy_store(database, out[day + 1])
                print(f"  day {day + 1}: {time.perf_counter() - started:.0f}s", flush=True)
    return time.perf_counter() - started


def copy_store(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def cache_key(systems: int, probes: int, days: list[int]) -> str:
    from drcheck import migrations

    schema = [m.name for m in migrations.migrations._migrations]
    shape = json.dumps([systems, probes, sorted(days), schema, GENERATOR])
    return hashlib.sha256(shape.encode()).hexdigest()[:12]


def timed(func, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def measure(config_path: Path, repeat: int) -> dict[str, float]:
    from prometheus_client import generate_latest

    from drcheck.config_loader import load
    from drcheck.metrics import registry_for
    from drcheck.reporting import render_weekly
    from drcheck.status import system_statuses
    from drcheck.store import Store

    loaded = load(config_path)
    with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
        (last,) = store.db.execute("SELECT MAX(finished_at) FROM probe_runs").fetchone()
        now = datetime.fromisoformat(last) + timedelta(minutes=5)
        size = os.path.getsize(loaded.database_path)
        status, _ = timed(lambda: system_statuses(loaded, store, now), repeat)
        reports = Path(tempfile.mkdtemp(prefix="weekly-", dir=config_path.parent))
        counter = iter(range(10_000))
        weekly, _ = timed(lambda: render_weekly(loaded, store, reports / str(next(counter)), now), repeat)
        shutil.rmtree(reports)
    registry = registry_for(loaded)
    generate_latest(registry)  # warm-up, as bench_metrics does
    scrape, _ = timed(lambda: generate_latest(registry), repeat)
    return {"size": size, "status": status, "weekly": weekly, "scrape": scrape}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--days", default="30,365", help="store ages to compare, in days (default 30,365)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each figure (median)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "drcheck-bench-history"),
                        help="where generated stores are kept between runs (under the temp dir)")
    parser.add_argument("--rebuild", action="store_true", help="regenerate the stores even if cached")
    parser.add_argument("--rows", default=os.environ.get("DRCHECK_BENCH_ROWS"),
                        help="append result rows (JSON lines) to this file (run_all.py sets it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    days = sorted(int(d) for d in args.days.split(","))
    small, large = days[0], days[-1]

    from drcheck.config_loader import load

    root = Path(args.cache) / cache_key(args.systems, args.probes, days)
    configs = {d: write_config(root / f"{d}d", args.systems, args.probes) for d in days}
    stores = {d: load(configs[d]).database_path for d in days}
    if args.rebuild or not all((root / f"{d}d" / ".complete").exists() for d in days):
        print(f"generating {args.systems:,} systems x {large} days through Store in {root} ...", flush=True)
        work = load(configs[large])
        took = generate(work, days, {d: stores[d] for d in days if d != large}, args.systems, args.probes)
        print(f"  generated in {took:.0f}s", flush=True)
        for d in days:
            (root / f"{d}d" / ".complete").touch()
    else:
        print(f"using cached stores in {root} (--rebuild to regenerate)", flush=True)

    figures = {}
    for d in days:
        figures[d] = measure(configs[d], args.repeat)
        f = figures[d]
        print(f"  {d:>4} days: db {f['size'] / 1e6:8.1f} MB   status {f['status']:6.3f}s   "
              f"weekly {f['weekly']:6.3f}s   scrape {f['scrape']:6.3f}s", flush=True)

    a, b = figures[small], figures[large]
    print(f"\nHistory cost, {args.systems:,} systems, {args.probes} probes every 15 min, 1 restore test per system "
          f"per day; {large} days vs {small} days (median of {args.repeat})")
    print(f"  {'figure':<10} {f'{small} days':>12} {f'{large} days':>12} {'ratio':>7}  goal")
    rows = []
    for key, label in (("status", "status"), ("weekly", "weekly"), ("scrape", "scrape")):
        ratio = b[key] / a[key]
        met = ratio <= RATIO_GOAL and b[key] < SECONDS_GOAL
        print(f"  {label:<10} {a[key]:11.3f}s {b[key]:11.3f}s {ratio:6.2f}x  <= {RATIO_GOAL}x and < {SECONDS_GOAL:.0f}s "
              f"{'PASS' if met else 'MISS'}")
        rows.append({"name": f"history {label} ({large}d vs {small}d)", "drcheck_seconds": b[key],
                     "baseline_seconds": a[key], "ratio": ratio, "goal": f"<= {RATIO_GOAL}x and < {SECONDS_GOAL}s",
                     "met": met})
    ratio = b["size"] / a["size"]
    met = b["size"] < SIZE_GOAL
    print(f"  {'db size':<10} {a['size'] / 1e6:10.1f}MB {b['size'] / 1e6:10.1f}MB {ratio:6.2f}x  < 1 GB at {large} "
          f"days {'PASS' if met else 'MISS'}  (grows with restore tests: every test and check is kept)")
    rows.append({"name": f"history db bytes ({large}d vs {small}d)", "drcheck_seconds": None,
                 "baseline_seconds": None, "drcheck_value": b["size"], "baseline_value": a["size"], "ratio": ratio,
                 "goal": "< 1 GB", "met": met})
    emit(args.rows, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
