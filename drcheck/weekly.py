"""The weekly report's sections beyond the week's tests: copies and runbook facts per
system, every probe run of the week, canary and check coverage, what changed since last
week, and the measured-RTO history the chart draws.

Every section is computed from rows fetched once for the whole report (one query per
section, never one per system), so the report stays cheap for a thousand systems; the
store is only read (`Store.query`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable

from drcheck.config_loader import LoadedConfig
from drcheck.coverage import uncovered
from drcheck.rules import Facts
from drcheck.status import SystemStatus
from drcheck.store import Store, parse_ts, ts

FAILING = ("failed", "error")
CHART_WEEKS = 8


# -- copies and runbook facts -------------------------------------------------------------


@dataclass
class CopyRow:
    """One copy of one system as the report lists it. `point_id` is the full id an auditor
    can look up in the backup tool; `problem` says why the row is red (None: fine)."""

    copy: str
    site: str | None
    distance_km: float | None
    media: str | None
    point_time: datetime | None = None
    point_id: str | None = None
    age_seconds: float | None = None
    within_rpo: bool = False
    problem: str | None = None
    configured_paths: list[str] = field(default_factory=list)  # file-level copies: the system's source paths
    uncovered_paths: list[str] = field(default_factory=list)  # of those, what the newest point does not hold


@dataclass
class SystemCopies:
    system: str
    name: str
    rpo_seconds: float
    copies: list[CopyRow] = field(default_factory=list)
    offsite: str | None = None  # the copy that counts as off-site, None: no copy far enough away

    @property
    def ok(self) -> bool:
        return self.offsite is not None and all(c.problem is None for c in self.copies)


def system_copies(loaded: LoadedConfig, facts: Facts, statuses: list[SystemStatus]) -> list[SystemCopies]:
    """Each system's copies: the ones its probes watch (each judged by R2.backup_age: a
    missing point is a red row) and any other copy holding a current point of it, with
    site, distance, media, the newest point's full id and its age against the RPO.

    A copy counts as off-site when its site is at least `policy.offsite_km` away
    (`[sites.X].distance_km`) and it holds a current restore point of the system (a
    configured copy holding nothing protects nothing); a system without one gets no
    `offsite`, which the report shows as a red "no off-site copy" row.

    For a file-level copy (restic, borg) the row also says whether the newest point holds
    the system's configured source paths (`drcheck.coverage.uncovered`, the same judgement
    as the probes' `wrong_source` finding): a point missing one is a red row. A point
    stored without its paths is not judged here."""
    cfg = loaded.config
    rows = []
    for status in statuses:
        system = status.system
        points = {p.copy: p for p in status.points}
        recorded = {row["copy"]: row for row in facts.points.get(system, [])}
        expected: list[str] = []
        for probe in facts.probes_of.get(system, []):
            expected += [c for c in cfg.probes[probe].copies_of(system) if c not in expected]
        expected += [c for c in points if c not in expected]
        item = SystemCopies(system, status.name, status.rpo_target_seconds)
        for name in expected:
            copy = cfg.copies.get(name)
            site = cfg.sites.get(copy.site) if copy else None
            row = CopyRow(name, copy.site if copy else None, site.distance_km if site else None,
                          copy.media if copy else None)
            point = points.get(name)
            if point is None:
                row.problem = f"no restore point in {name}"
            else:
                row.point_time, row.point_id, row.age_seconds = point.point_time, point.point_id, point.age_seconds
                row.within_rpo = point.within_rpo
                if not point.within_rpo:
                    row.problem = "older than the RPO"
                stored = recorded.get(name)
                source = cfg.probes.get(stored["probe"]) if stored else None
                if source is not None and hasattr(source, "source_paths") and _paths(stored):
                    row.configured_paths = [str(p) for p in source.source_paths(system)]
                    row.uncovered_paths = uncovered(row.configured_paths, _paths(stored))
                    if row.uncovered_paths and row.problem is None:
                        row.problem = f"newest point does not hold {', '.join(row.uncovered_paths)}"
            item.copies.append(row)
        far = [c for c in item.copies
               if c.point_id and c.distance_km is not None and c.distance_km >= cfg.policy.offsite_km]
        item.offsite = max(far, key=lambda c: c.distance_km or 0).copy if far else None
        rows.append(item)
    return rows


@dataclass
class RunbookFacts:
    system: str
    name: str
    tier: int
    owner: str
    alternate: str
    rto_seconds: float
    rpo_seconds: float
    mtd_seconds: float
    wrt_seconds: float | None
    depends_on: list[str]


def _paths(row: dict[str, Any]) -> list[str]:
    try:
        paths = json.loads(row.get("paths") or "[]")
    except ValueError:
        return []
    return [str(p) for p in paths] if isinstance(paths, list) else []


def runbook_facts(loaded: LoadedConfig, statuses: list[SystemStatus]) -> list[RunbookFacts]:
    """The runbook facts a reader needs in an outage, in the systems table's order."""
    facts = []
    for status in statuses:
        rb = loaded.runbooks[status.system]
        facts.append(RunbookFacts(status.system, rb.name, rb.tier, rb.owner, rb.alternate, rb.rto.total_seconds(),
                                  rb.rpo.total_seconds(), rb.mtd.total_seconds(),
                                  rb.wrt.total_seconds() if rb.wrt else None, list(rb.depends_on)))
    return facts


# -- a failed test's partial timings ------------------------------------------------------


def phases(details: dict[str, Any]) -> list[dict[str, Any]]:
    """The phases a test got through, in start order, from its details' timeline (file
    tests: `timeline`; VM tests: `phases`), each {name, start, end, seconds} in seconds
    from the test's start. A phase still running when the test stopped has no end and is
    not in the timeline."""
    spans = details.get("timeline") or details.get("phases") or {}
    found = []
    if isinstance(spans, dict):
        for name, span in spans.items():
            if isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(v, (int, float)) for v in span):
                found.append({"name": str(name), "start": span[0], "end": span[1], "seconds": span[1] - span[0]})
    return sorted(found, key=lambda p: (p["start"], p["end"]))


# -- every probe run of the week -----------------------------------------------------------


@dataclass
class ProbeWeek:
    """The runs of one probe action in the period: how many ended in each status, the first
    and last, and the errors grouped by reason (count, first run id, first and last)."""

    probe: str
    action: str
    counts: dict[str, int] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def probe_runs_between(store: Store, start: datetime, end: datetime,
                       groups: Iterable[tuple[str, str]] = ()) -> list[ProbeWeek]:
    """Every run that finished in [start, end) of each (probe, action) in `groups` and in
    `probe_latest` (every action that ever ran to completion).

    Each action's runs are read newest first through the (probe, action, id) index and
    the reading stops at the first run that finished a day before `start`: the runs of one
    action never overlap (one lease per job), so its ids follow its finish times, and the
    cost follows the week's runs, not the years of history (probe_runs has no index on
    time)."""
    first, last, early = ts(start), ts(end), ts(start - timedelta(days=1))
    wanted = set(groups) | {(r["probe"], r["action"]) for r in store.query("SELECT probe, action FROM probe_latest")}
    weeks = []
    for probe, action in sorted(wanted):
        week = ProbeWeek(probe, action)
        errors: dict[str, dict[str, Any]] = {}
        cursor = store.db.execute("SELECT id, status, finished_at, reason FROM probe_runs WHERE probe = ? AND "
                                  "action = ? ORDER BY id DESC", [probe, action])
        done = False
        while not done and (rows := cursor.fetchmany(512)):
            for run_id, status, finished, reason in rows:
                if finished < early:
                    done = True
                    break
                if not first <= finished < last:
                    continue
                week.counts[status] = week.counts.get(status, 0) + 1
                when = parse_ts(finished)
                week.first = min(week.first, when) if week.first else when
                week.last = max(week.last, when) if week.last else when
                if status == "error":
                    entry = errors.setdefault(reason or "", {"reason": reason or "no reason recorded", "count": 0,
                                                             "first_id": run_id, "first": when, "last": when})
                    entry["count"] += 1
                    if when <= entry["first"]:
                        entry["first"], entry["first_id"] = when, run_id
                    entry["last"] = max(entry["last"], when)
        cursor.close()
        if week.counts:
            week.errors = sorted(errors.values(), key=lambda e: (e["first"], e["first_id"]))
            weeks.append(week)
    return weeks


# -- canary and check coverage --------------------------------------------------------------


@dataclass
class TestCoverage:
    """What one configured restore test proved this week: its runs, whether it plants a
    canary (planted this week, found in how many runs), and each check that ran with how
    often it passed."""

    test: str
    system: str
    kind: str
    runs: int = 0
    canary_configured: bool = False
    canaries_planted: int = 0
    canary_found: int = 0  # runs whose canary check passed
    canary_checked: int = 0  # runs with a canary check at all
    checks: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> {status: count}


def coverage(loaded: LoadedConfig, store: Store, runs: list[dict[str, Any]], start: datetime,
             end: datetime) -> list[TestCoverage]:
    """Coverage of every configured restore test over this week's `runs` (the report's
    items: {"row", "checks"}), plus one query for the canaries planted in [start, end)."""
    planted = {r["test"]: r["n"] for r in store.query(
        "SELECT test, COUNT(*) AS n FROM canaries WHERE written_at >= ? AND written_at < ? GROUP BY test",
        [ts(start), ts(end)])}
    found: dict[str, TestCoverage] = {}
    for name, target in sorted(loaded.config.restore_tests.items()):
        found[name] = TestCoverage(name, target.system, target.kind,
                                   canary_configured=getattr(target, "canary", None) is not None,
                                   canaries_planted=planted.get(name, 0))
    for item in runs:
        cov = found.get(item["row"]["test"])
        if cov is None:  # a test no longer configured: its runs are listed, not covered
            continue
        cov.runs += 1
        for check in item["checks"]:
            counts = cov.checks.setdefault(check["name"], {})
            counts[check["status"]] = counts.get(check["status"], 0) + 1
            if check["name"] == "canary":
                cov.canary_checked += 1
                cov.canary_found += check["status"] == "passed"
    return list(found.values())


# -- what changed since last week ----------------------------------------------------------


@dataclass
class Changes:
    """What changed between the start of the period and its end (see `changes`)."""

    new_failures: list[dict[str, Any]] = field(default_factory=list)
    recovered: list[dict[str, Any]] = field(default_factory=list)
    new_unprotected_vms: list[dict[str, Any]] = field(default_factory=list)
    newly_stale: list[dict[str, Any]] = field(default_factory=list)
    findings_opened: list[dict[str, Any]] = field(default_factory=list)
    findings_cleared: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any((self.new_failures, self.recovered, self.new_unprotected_vms, self.newly_stale,
                        self.findings_opened, self.findings_cleared))


def changes(loaded: LoadedConfig, store: Store, facts: Facts, start: datetime, now: datetime) -> Changes:
    """What changed since `start` (a week ago), derived from stored results: the rules are
    not re-evaluated as of `start` (their inputs, the current-state tables, keep no past
    state). Instead:

    - restore tests: each configured test's latest run now (`facts.tests`) against its
      latest run that started before `start` (one query): now failed or error after a pass
      or no run before is a *new failure*; now passed after a failure or error is
      *recovered*. A test that did not run this week has not changed. (The earlier run is
      found newest-first by row id through the (system, test, id) index: the runs of one
      test never overlap, so their ids follow their starts.)
    - VMs: an inventory VM unprotected now (R3, `drcheck.protection.reconcile`) is *newly
      unprotected* when it became so inside the period: its newest restore point crossed
      its RPO after `start`, its exclusion expired after `start`, or, with no restore point
      at all, the inventory first reported it (an `appeared` asset event) after `start`.
      A VM whose last backup disappeared this week but was already over its RPO is not new.
    - copies: a current newest point over its system's RPO that was still within it at
      `start` (point time + RPO after `start`) *went stale* this week.
    - findings: warning and critical probe findings that appeared (or changed severity)
      and those cleared in the period, from the findings history (one query)."""
    cfg = loaded.config
    result = Changes()
    before = {(r["system"], r["test"]): r for r in store.query(
        "SELECT t.id, t.system, t.test, t.status, t.started_at, t.reason FROM test_latest l "
        "JOIN restore_tests t ON t.id = (SELECT r.id FROM restore_tests r WHERE r.system = l.system "
        "AND r.test = l.test AND r.started_at < ? AND r.status != 'skipped' ORDER BY r.id DESC LIMIT 1)",
        [ts(start)])}
    for name, target in sorted(cfg.restore_tests.items()):
        now_run = facts.tests.get((target.system, name))
        if now_run is None or parse_ts(now_run["started_at"]) < start:
            continue
        prior = before.get((target.system, name))
        entry = {"test": name, "system": target.system, "status": now_run["status"], "id": now_run["id"],
                 "reason": now_run["reason"] or "", "started_at": parse_ts(now_run["started_at"]),
                 "before": prior["status"] if prior else None, "before_id": prior["id"] if prior else None}
        if now_run["status"] in FAILING and (prior is None or prior["status"] == "passed"):
            result.new_failures.append(entry)
        elif now_run["status"] == "passed" and prior is not None and prior["status"] in FAILING:
            result.recovered.append(entry)

    from drcheck.protection import reconcile

    vms = [vm for vm in reconcile(loaded, facts.assets) if not vm.protected(now)]
    appeared = set()
    if vms:
        appeared = {(r["probe"], r["asset_id"]) for r in store.query(
            "SELECT a.probe, a.asset_id FROM probe_runs r JOIN assets a ON a.probe_run_id = r.id "
            "WHERE r.finished_at >= ? AND r.finished_at < ? AND a.kind = 'vm' AND a.event = 'appeared'",
            [ts(start), ts(now + timedelta(seconds=1))])}
    for vm in vms:
        best, why = vm.newest(), None
        expired = vm.exclusion is not None and vm.exclusion.expired(now.date())
        if expired and datetime.combine(vm.exclusion.expires + timedelta(days=1), datetime.min.time(),
                                        now.tzinfo) > start:
            why = f"its exclusion expired on {vm.exclusion.expires}"
        elif best is not None and best.newest + timedelta(seconds=vm.rpo_seconds) > start:
            why = f"its newest restore point ({best.copy}) went over its RPO"
        elif best is None and (vm.probe, vm.uuid) in appeared:
            why = "new in the inventory, with no restore point"
        if why:
            result.new_unprotected_vms.append({"name": vm.name, "path": vm.path, "uuid": vm.uuid,
                                               "systems": vm.systems, "why": why})

    for system, rows in sorted(facts.points.items()):
        rb = loaded.runbooks.get(system)
        if rb is None:
            continue
        for row in rows:
            crossed = parse_ts(row["point_time"]) + rb.rpo
            if start < crossed <= now:
                result.newly_stale.append({"system": system, "copy": row["copy"], "point_id": row["point_id"],
                                           "since": crossed})

    for row in store.query(
            "SELECT f.id, f.probe, f.action, f.event, f.severity, f.code, f.system, f.message, r.finished_at "
            "FROM probe_runs r JOIN findings f ON f.probe_run_id = r.id WHERE r.finished_at >= ? "
            "AND r.finished_at < ? AND f.severity IN ('warning', 'critical') ORDER BY r.finished_at, f.id",
            [ts(start), ts(now + timedelta(seconds=1))]):
        row["at"] = parse_ts(row.pop("finished_at"))
        (result.findings_cleared if row["event"] == "cleared" else result.findings_opened).append(row)
    return result


# -- measured RTO over the last weeks -------------------------------------------------------


def rto_history(loaded: LoadedConfig, store: Store, now: datetime, weeks: int = CHART_WEEKS
                ) -> dict[str, list[tuple[datetime, float]]]:
    """system -> [(middle of the week, worst measured RTO that week)] over the last `weeks`
    weeks ending at `now`, from every run that measured an RTO (one query; a test measures
    an RTO only when every check passed). Weeks without a measurement are absent."""
    start = now - timedelta(weeks=weeks)
    history: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for row in store.query(
            "SELECT system, MIN(CAST((julianday(started_at) - julianday(?)) / 7 AS INTEGER), ?) AS week, "
            "MAX(rto_seconds) AS worst FROM restore_tests WHERE started_at >= ? AND started_at < ? "
            "AND rto_seconds IS NOT NULL GROUP BY system, week ORDER BY system, week",
            [ts(start), weeks - 1, ts(start), ts(now + timedelta(seconds=1))]):
        if row["system"] in loaded.runbooks:
            history[row["system"]].append((start + timedelta(weeks=row["week"] + 0.5), row["worst"]))
    return dict(history)


def details_of(row: dict[str, Any]) -> dict[str, Any]:
    try:
        details = json.loads(row["details"]) if row.get("details") else {}
    except ValueError:
        return {}
    return details if isinstance(details, dict) else {}
