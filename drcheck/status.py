"""Per-system status computed from the store and the runbooks: what `drcheck status`
prints and what the weekly report shows. Pure reads; no system is contacted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from drcheck.config_loader import LoadedConfig
from drcheck.durations import format_duration
from drcheck.kinds import probe_module
from drcheck.store import Store, newest_per, parse_ts

# The latest run that ran: a run skipped because another was in progress hides nothing.
LATEST_RUN_TESTS = newest_per("restore_tests", "system, test", "status != 'skipped'")


@dataclass
class CopyPoint:
    copy: str
    point_time: datetime
    point_id: str
    age_seconds: float
    within_rpo: bool
    point_count: int | None


@dataclass
class TestRun:
    id: int
    test: str
    status: str
    started_at: datetime
    reason: str
    rto_seconds: float | None
    rpo_seconds: float | None
    rpo_source: str | None
    restore_seconds: float | None
    verify_seconds: float | None
    point_time: datetime | None
    copy: str | None


@dataclass
class SystemStatus:
    system: str
    name: str
    tier: int
    owner: str
    rto_target_seconds: float
    rpo_target_seconds: float
    mtd_seconds: float
    points: list[CopyPoint] = field(default_factory=list)
    last_test: TestRun | None = None
    last_success_at: datetime | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def test_run(row: dict[str, Any]) -> TestRun:
    return TestRun(
        id=row["id"], test=row["test"], status=row["status"], started_at=parse_ts(row["started_at"]),
        reason=row["reason"] or "", rto_seconds=row["rto_seconds"], rpo_seconds=row["rpo_seconds"],
        rpo_source=row["rpo_source"], restore_seconds=row["restore_seconds"],
        verify_seconds=row["verify_seconds"], point_time=parse_ts(row["point_time"]), copy=row["copy"],
    )


def system_statuses(loaded: LoadedConfig, store: Store, now: datetime) -> list[SystemStatus]:
    """Return each runbook system's status, worst (problems, then tier) first.

    Only what the current configuration defines is judged: a renamed or removed test or
    probe keeps its history in the store but no longer decides a verdict.
    """
    cfg = loaded.config
    probes_of = {system: [n for n, p in cfg.probes.items() if system in p.systems_covered()]
                 for system in loaded.runbooks}
    tests_of = {system: [n for n, t in cfg.restore_tests.items() if t.system == system] for system in loaded.runbooks}
    copy_of = {name: probe.copy for name, probe in cfg.probes.items()}
    points: dict[str, list[dict]] = {}
    for row in store.current_restore_points():
        if row["probe"] in cfg.probes:
            points.setdefault(row["system"], []).append(row)
    runs = {(r["probe"], r["action"]): r for r in store.latest_probe_runs()}
    latest = {(r["system"], r["test"]): test_run(r) for r in store.query(LATEST_RUN_TESTS)}
    successes = {(r["system"], r["test"]): parse_ts(r["started_at"]) for r in store.last_successful_tests()}

    statuses = []
    for system, rb in sorted(loaded.runbooks.items()):
        status = SystemStatus(
            system=system, name=rb.name, tier=rb.tier, owner=rb.owner,
            rto_target_seconds=rb.rto.total_seconds(), rpo_target_seconds=rb.rpo.total_seconds(),
            mtd_seconds=rb.mtd.total_seconds(),
        )
        _judge_points(status, points.get(system, []), now)
        for probe in probes_of[system]:
            _judge_probe(status, probe, cfg.probes[probe].kind, copy_of[probe], runs)
        if not probes_of[system]:
            status.problems.append("no probe watches its backups")
        _judge_tests(status, loaded, tests_of[system], latest, now)
        known = [successes[(system, t)] for t in tests_of[system] if (system, t) in successes]
        status.last_success_at = max(known) if known else None
        statuses.append(status)
    return sorted(statuses, key=lambda s: (s.ok, s.tier, s.system))


def _judge_points(status: SystemStatus, rows: list[dict], now: datetime) -> None:
    for row in rows:
        when = parse_ts(row["point_time"])
        age = (now - when).total_seconds()
        status.points.append(CopyPoint(row["copy"], when, row["point_id"], age,
                                       age <= status.rpo_target_seconds, row["point_count"]))
        if age > status.rpo_target_seconds:
            status.problems.append(f"newest restore point in {row['copy']} is {format_duration(age)} old "
                                   f"(RPO {format_duration(status.rpo_target_seconds)})")


def _judge_probe(status: SystemStatus, probe: str, kind: str, copy: str, runs: dict) -> None:
    module = probe_module(kind)
    for action in module.ACTIONS:
        run = runs.get((probe, action))
        if action in module.LISTS_POINTS:
            if run is None:
                status.problems.append(f"probe {probe} has not run yet ({action})")
            elif run["status"] == "error":
                status.problems.append(f"probe {probe} could not list restore points: {run['reason']}")
            elif not any(p.copy == copy for p in status.points):
                status.problems.append(f"no restore point in {copy}")
        elif run is not None and run["status"] != "ok":
            status.problems.append(f"{action} of {probe} {run['status']}: {run['reason']}")


def _judge_tests(status: SystemStatus, loaded: LoadedConfig, tests: list[str], latest: dict, now: datetime) -> None:
    if not tests:
        status.problems.append("no restore test configured")
        return
    cfg = loaded.config
    for name in tests:
        run = latest.get((status.system, name))
        if run is None:
            status.problems.append(f"restore test {name} has never run")
            continue
        if status.last_test is None or run.started_at > status.last_test.started_at:
            status.last_test = run
        if run.status != "passed":
            status.problems.append(f"restore test {name} {run.status}: {run.reason}")
        test = cfg.restore_tests[name]
        if test.schedule is not None:
            # the run after this one; fire times are inclusive, so step past the start
            expected = test.schedule.trigger(cfg.agent.timezone).get_next_fire_time(
                None, run.started_at + timedelta(seconds=1))
            allowance = (test.timeout or cfg.agent.job_timeout) + cfg.agent.misfire_grace
            if expected is not None and now > expected + allowance:
                status.problems.append(f"restore test {name} is overdue: last ran "
                                       f"{format_duration((now - run.started_at).total_seconds())} ago")
