"""Metrics scrape benchmark: drcheck's StoreCollector vs prometheus_client gauges set directly.

A store holds 10,000 systems (one restore point each, in one copy, from the latest run of
the probe that covers it, except three the first repository holds nothing of; and one
passed restore test with RTO/RPO), and a configuration holds their 10,000 runbooks and a
weekly schedule for each test. drcheck's side is `generate_latest(registry_for(loaded))`,
which reads the store on every scrape, as `/metrics` does. The baseline is a registry of
plain `Gauge(...).labels(...).set(...)` built from drcheck's metric catalogue, holding the
same families, label sets and values, set once before timing, so only `generate_latest` is
timed: what a scrape costs an exporter that keeps its numbers in memory. Its rule values
(`drcheck_compliance_rule_passing`, `drcheck_unprotected_assets`) come from one
`drcheck.rules.evaluate()` of the same store, in that untimed setup; both sides judge at
the same fixed time.

Both outputs are checked to be the same text, line for line (order aside), before any
figure is printed. Scrapes alternate between the two sides; medians are compared and the
ratio is printed beside the goal (no wall-clock asserts). When the ratio misses the goal,
a cProfile summary of one drcheck scrape shows where the time goes.

    .venv/bin/python bench/bench_metrics.py [--systems 10000] [--probes 10] [--repeat 7]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402

GOAL = 2.0
COPY = "offsite-restic"


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def build(work: Path, systems: int, probes: int):
    """Create the store and configuration; return (loaded, expected series, the time both
    sides judge the rules at, setup seconds)."""
    from drcheck.config import Config, Runbook
    from drcheck.config_loader import LoadedConfig
    from drcheck.results import Finding, ProbeResult, RestorePoint, RestoreTestResult, Severity, Status
    from drcheck.store import Store, parse_ts, ts

    t0 = time.perf_counter()
    names = [f"sys{n:05d}" for n in range(systems)]
    probe_names = [f"repo{p:02d}" for p in range(probes)]
    probe_of = {s: probe_names[n % probes] for n, s in enumerate(names)}
    runbooks = {
        s: Runbook.model_validate({
            "name": f"System {n}", "tier": 1 + n % 4, "owner": "ops",
            "rto": f"{4 + n % 20}h", "rpo": f"{1 + n % 24}h", "mtd": "3d",
        })
        for n, s in enumerate(names)
    }
    # The collector exports only what the configuration defines, so configure every
    # probe (each mapping its systems) and one restore test per system, as a site would.
    config = Config.model_validate({
        "agent": {"name": "bench-agent", "state_dir": str(work / "state"), "sandbox_root": str(work / "sandbox"),
                  "runbooks_dir": str(work)},
        "sites": {"office": {}}, "copies": {COPY: {"site": "office"}},
        "probes": {p: {"kind": "restic", "copy": COPY, "repository": f"/repos/{p}", "password": {"file": "/pw"},
                       "systems": [{"system": s, "paths": [f"/srv/{s}"]} for s in names if probe_of[s] == p]}
                   for p in probe_names},
        # weekly tests, spread over the week's early hours (R8.test_cadence judges each)
        "restore_tests": {f"{s}-files": {"kind": "files", "probe": probe_of[s], "system": s,
                                         "schedule": {"cron": f"{n % 60} {n % 5} * * {n % 7}"}}
                          for n, s in enumerate(names)},
    }, context={"base_dir": work})
    loaded = LoadedConfig(path=work / "drcheck.toml", config=config, runbooks=runbooks)
    t_config = time.perf_counter() - t0

    t0 = time.perf_counter()
    now = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    store = Store(loaded.database_path, agent=config.agent.name)
    probe_rows, point_rows, finding_rows, test_rows = [], [], [], []
    run_id = {}
    next_id = 1
    for p, probe in enumerate(probe_names):
        for action in ("snapshots", "check"):
            started = now - timedelta(minutes=30 + p)
            finished = started + timedelta(seconds=2 + p % 5 + (action == "check") * 40)
            probe_rows.append({
                "id": next_id, "probe": probe, "kind": "restic", "action": action, "copy": COPY,
                "status": "failed" if (action == "snapshots" and p == 0) else "ok", "reason": "",
                "started_at": ts(started), "finished_at": ts(finished),
                "duration_seconds": (finished - started).total_seconds(), "details": "{}",
                "agent": config.agent.name,
            })
            run_id[probe, action] = next_id
            next_id += 1
    # The first repository holds no backup of three of its systems (unprotected), and says so.
    unprotected = set(names[:3 * probes:probes])
    for s in sorted(unprotected):
        finding_rows.append({"probe_run_id": run_id[probe_names[0], "snapshots"], "probe": probe_names[0],
                             "severity": "critical", "code": "no_restore_point",
                             "system": s, "message": "no snapshot", "recorded_at": ts(now)})
    for n, s in enumerate(names):
        point_time = now - timedelta(hours=n % 20, minutes=n % 60, seconds=n % 7)
        probe = probe_of[s]
        if s not in unprotected:
            point_rows.append({
                "probe_run_id": run_id[probe, "snapshots"], "probe": probe, "system": s, "copy": COPY,
                "point_time": ts(point_time), "point_id": f"{n:064x}", "size_bytes": None, "status": "ok",
                "host": s, "paths": f'["/srv/{s}"]', "point_count": 1 + n % 30, "recorded_at": ts(now),
            })
        started = now - timedelta(days=n % 7, minutes=n % 50)
        restore_s, verify_s = 60.0 + n % 600 + 0.25, 5.0 + n % 90 + 0.5
        rb = runbooks[s]
        test_rows.append({
            "test": f"{s}-files", "kind": "files", "system": s, "probe": probe, "copy": COPY,
            "status": "passed", "reason": "", "started_at": ts(started),
            "finished_at": ts(started + timedelta(seconds=restore_s + verify_s + 3)),
            "point_id": f"{n:064x}", "point_time": ts(point_time), "restore_seconds": restore_s,
            "verify_seconds": verify_s, "rto_seconds": restore_s + verify_s,
            "rpo_seconds": (started - point_time).total_seconds(), "rpo_source": "restore_point",
            "rto_target_seconds": rb.rto.total_seconds(), "rpo_target_seconds": rb.rpo.total_seconds(),
            "files_restored": 100 + n, "bytes_restored": 10_000 * n, "sandbox": f"/sb/{s}",
            "agent": config.agent.name,
        })
    # Written through drcheck's own Store API (one outer transaction), so the rows, and the
    # current-state tables the scrape reads, are the ones the agent itself writes.
    points_of: dict[str, list] = {}
    for r in point_rows:
        points_of.setdefault(r["probe"], []).append(r)
    findings_of: dict[int, list] = {}
    for f in finding_rows:
        findings_of.setdefault(f["probe_run_id"], []).append(f)
    with store.write_lock():
        for r in probe_rows:
            listed = points_of.get(r["probe"], []) if r["action"] == "snapshots" else []
            store.record_probe(ProbeResult(
                probe=r["probe"], kind="restic", action=r["action"], status=Status(r["status"]),
                started_at=parse_ts(r["started_at"]), finished_at=parse_ts(r["finished_at"]), copy=COPY,
                newest=[RestorePoint(system=p["system"], copy=COPY, point_time=parse_ts(p["point_time"]),
                                     point_id=p["point_id"], host=p["host"], paths=(f"/srv/{p['system']}",),
                                     count=p["point_count"])
                        for p in listed],
                findings=[Finding(Severity(f["severity"]), f["code"], f["message"], f["system"])
                          for f in findings_of.get(r["id"], [])]))
        for t in test_rows:
            store.record_restore_test(RestoreTestResult(
                **{k: v for k, v in t.items() if k not in ("status", "started_at", "finished_at", "point_time",
                                                            "agent")},
                status=Status(t["status"]), started_at=parse_ts(t["started_at"]),
                finished_at=parse_ts(t["finished_at"]), point_time=parse_ts(t["point_time"])))
    store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    t_store = time.perf_counter() - t0
    return loaded, (probe_rows, point_rows, finding_rows, test_rows), now, t_config, t_store


def baseline_registry(loaded, rows, now):
    """The same families, label sets and values as drcheck exposes, as plain client metrics
    built from drcheck's metric catalogue. The rule values come from one evaluation of the
    same store at the same `now`, in this untimed setup."""
    from prometheus_client import CollectorRegistry, Gauge

    from drcheck import __version__
    from drcheck.metric_catalogue import CATALOGUE
    from drcheck.metrics import rule_passing, unprotected_by_probe
    from drcheck.rules import evaluate
    from drcheck.store import Store

    probe_rows, point_rows, finding_rows, test_rows = rows
    reg = CollectorRegistry(auto_describe=False)
    client_types = {"gauge": Gauge}
    gauges = {spec.name: client_types[spec.type](spec.name, spec.help, spec.labels, registry=reg)
              for spec in CATALOGUE.values()}

    def g(name):
        return gauges[name]

    g("drcheck_info").labels(loaded.config.agent.name, __version__).set(1)
    g("drcheck_store_up").set(1)
    rpo_target, rto_target, tier = (g("drcheck_system_rpo_target_seconds"), g("drcheck_system_rto_target_seconds"),
                                    g("drcheck_system_tier"))
    for system, rb in loaded.runbooks.items():
        rpo_target.labels(system).set(rb.rpo.total_seconds())
        rto_target.labels(system).set(rb.rto.total_seconds())
        tier.labels(system).set(rb.tier)

    newest, count = g("drcheck_restore_point_newest_timestamp_seconds"), g("drcheck_restore_points")
    newest_of_system = dict.fromkeys(loaded.runbooks, 0.0)
    for r in point_rows:
        newest.labels(r["system"], r["copy"]).set(epoch(r["point_time"]))
        count.labels(r["system"], r["copy"]).set(r["point_count"])
        newest_of_system[r["system"]] = max(newest_of_system[r["system"]], epoch(r["point_time"]))

    last_run, passed = g("drcheck_restore_test_last_run_timestamp_seconds"), g("drcheck_restore_test_last_passed")
    restore, verify = g("drcheck_restore_test_restore_seconds"), g("drcheck_restore_test_verify_seconds")
    rto_t, rpo_t = g("drcheck_restore_test_rto_target_seconds"), g("drcheck_restore_test_rpo_target_seconds")
    success = g("drcheck_restore_test_last_success_timestamp_seconds")
    rto, rpo = g("drcheck_restore_test_rto_seconds"), g("drcheck_restore_test_rpo_seconds")
    tested_at = dict.fromkeys(loaded.runbooks, 0.0)
    for r in test_rows:
        tested_at[r["system"]] = max(tested_at[r["system"]], epoch(r["started_at"]))
        key = (r["system"], r["test"])
        last_run.labels(*key).set(epoch(r["started_at"]))
        passed.labels(*key).set(1 if r["status"] == "passed" else 0)
        restore.labels(*key).set(r["restore_seconds"])
        verify.labels(*key).set(r["verify_seconds"])
        rto_t.labels(*key).set(r["rto_target_seconds"])
        rpo_t.labels(*key).set(r["rpo_target_seconds"])
        success.labels(*key).set(epoch(r["started_at"]))
        rto.labels(*key).set(r["rto_seconds"])
        rpo.labels(*key).set(r["rpo_seconds"])

    up, ok = g("drcheck_probe_up"), g("drcheck_probe_success")
    duration, last = g("drcheck_probe_duration_seconds"), g("drcheck_probe_last_run_timestamp_seconds")
    for r in probe_rows:
        key = (r["probe"], r["action"])
        up.labels(*key).set(0 if r["status"] == "error" else 1)
        ok.labels(*key).set(1 if r["status"] == "ok" else 0)
        duration.labels(*key).set(r["duration_seconds"])
        last.labels(*key).set(epoch(r["finished_at"]))
    g("drcheck_sandbox_leases_open").set(0)
    for name, values in (("drcheck_system_newest_restore_point_timestamp_seconds", newest_of_system),
                         ("drcheck_system_last_test_timestamp_seconds", tested_at)):
        gauge = g(name)
        for system, value in values.items():
            gauge.labels(system).set(value)

    with Store(loaded.database_path) as store:
        results = evaluate(loaded, store, now)
    rule = g("drcheck_compliance_rule_passing")
    for (rule_id, system), good in rule_passing(results).items():
        rule.labels(rule_id, system).set(1 if good else 0)
    unprotected = g("drcheck_unprotected_assets")
    for probe, n in unprotected_by_probe(results).items():
        unprotected.labels(probe).set(n)
    return reg


def samples(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", type=int, default=10_000, help="systems (default 10000)")
    parser.add_argument("--probes", type=int, default=10, help="repositories the systems are spread over (default 10)")
    parser.add_argument("--repeat", type=int, default=7, help="timed scrapes of each side (default 7)")
    parser.add_argument("--profile", action="store_true", help="print the drcheck scrape profile even on PASS")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--rows", default=os.environ.get("DRCHECK_BENCH_ROWS"),
                        help="append result rows (JSON lines) to this file (run_all.py sets it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from prometheus_client import generate_latest

    from drcheck.metrics import registry_for

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drcheck-bench-metrics-", dir=args.tmpdir) as tmp:
        work = Path(tmp).resolve()
        print(f"building a store with {args.systems:,} systems in {work} ...", flush=True)
        loaded, rows, now, t_config, t_store = build(work, args.systems, args.probes)
        size = loaded.database_path.stat().st_size
        print(f"  {args.systems:,} runbooks validated in {t_config:.1f}s; store rows inserted in "
              f"{t_store:.1f}s ({size / 1e6:.1f} MB)", flush=True)
        t0 = time.perf_counter()
        base_reg = baseline_registry(loaded, rows, now)
        print(f"  baseline gauges set in {time.perf_counter() - t0:.1f}s (not timed)", flush=True)
        drc_reg = registry_for(loaded, clock=lambda: now)

        # Warm-up (untimed) and the honesty check: the same text on both sides.
        drc_out, base_out = generate_latest(drc_reg), generate_latest(base_reg)
        drc_lines, base_lines = sorted(drc_out.splitlines()), sorted(base_out.splitlines())
        if drc_lines != base_lines:
            only_d = sorted(set(drc_lines) - set(base_lines))[:5]
            only_b = sorted(set(base_lines) - set(drc_lines))[:5]
            print(f"bench: the two sides do not expose the same series ({samples(drc_out)} vs "
                  f"{samples(base_out)} samples)\n  only drcheck: {only_d}\n  only baseline: {only_b}",
                  file=sys.stderr)
            return 1
        n_samples = samples(drc_out)

        drc_times, base_times = [], []
        for n in range(args.repeat):
            order = ((drc_reg, drc_times), (base_reg, base_times))
            for reg, times in (order if n % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                out = generate_latest(reg)
                times.append(time.perf_counter() - t0)
                if samples(out) != n_samples:
                    print("bench: sample count changed between scrapes", file=sys.stderr)
                    return 1

        d, b = statistics.median(drc_times), statistics.median(base_times)
        ratio = d / b
        # The rule evaluation caches each test's next due run per (schedule, timezone, start):
        # the first scrape after the agent starts (or after every test ran again) computes them.
        from drcheck.rules import _next_run

        _next_run.cache_clear()
        t0 = time.perf_counter()
        generate_latest(drc_reg)
        cold = time.perf_counter() - t0
        print()
        print(f"Metrics scrape, {args.systems:,} systems, {n_samples:,} samples "
              f"({len(drc_out) / 1e6:.1f} MB of text, identical on both sides), "
              f"median of {args.repeat} alternating scrapes")
        print(f"  drcheck  generate_latest(registry_for(...))  {d:7.3f}s  "
              f"(min {min(drc_times):.3f}s, max {max(drc_times):.3f}s)")
        print(f"  baseline generate_latest(plain Gauges)       {b:7.3f}s  "
              f"(min {min(base_times):.3f}s, max {max(base_times):.3f}s)")
        print(f"  ratio {ratio:.2f}x   goal <= {GOAL}x   {'PASS' if ratio <= GOAL else 'MISS'}")
        print(f"  (one drcheck scrape with a cold next-run cache, not in the ratio: {cold:.3f}s)")
        emit(args.rows, [{"name": f"metrics scrape, {args.systems} systems", "drcheck_seconds": d,
                          "baseline_seconds": b, "ratio": ratio, "goal": f"<= {GOAL}x", "met": ratio <= GOAL}])

        if ratio > GOAL or args.profile:
            prof = cProfile.Profile()
            prof.enable()
            generate_latest(drc_reg)
            prof.disable()
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf)
            stats.sort_stats("tottime").print_stats(12)
            print("\nWhere one drcheck scrape spends its time (cProfile, sorted by own time; "
                  "profiling inflates Python-heavy parts):")
            body = buf.getvalue()
            start = body.find("   ncalls")
            print(body[start:].rstrip() if start >= 0 else body)
        print(f"\n  benchmark wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
