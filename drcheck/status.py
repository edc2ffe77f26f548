"""Per-system status computed from the store and the runbooks: what `drcheck status`
prints and what the weekly report shows. Pure reads; no system is contacted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from drcheck.config_loader import LoadedConfig
from drcheck.durations import format_duration
from drcheck.store import Store, parse_ts


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
    """Return each runbook system's status, worst (most problems, then tier) first."""
    points: dict[str, list[dict]] = {}
    for row in store.latest_restore_points():
        points.setdefault(row["system"], []).append(row)
    latest_tests: dict[str, list[dict]] = {}
    for row in store.latest_restore_tests():
        latest_tests.setdefault(row["system"], []).append(row)
    successes: dict[str, datetime] = {}
    for row in store.last_successful_tests():
        when = parse_ts(row["started_at"])
        successes[row["system"]] = max(successes.get(row["system"], when), when)
    tested = {t.system for t in loaded.config.restore_tests.values()}

    statuses = []
    for system, rb in sorted(loaded.runbooks.items()):
        status = SystemStatus(
            system=system, name=rb.name, tier=rb.tier, owner=rb.owner,
            rto_target_seconds=rb.rto.total_seconds(), rpo_target_seconds=rb.rpo.total_seconds(),
            mtd_seconds=rb.mtd.total_seconds(), last_success_at=successes.get(system),
        )
        for row in points.get(system, []):
            when = parse_ts(row["point_time"])
            age = (now - when).total_seconds()
            status.points.append(CopyPoint(row["copy"], when, row["point_id"], age,
                                           age <= status.rpo_target_seconds, row["point_count"]))
            if age > status.rpo_target_seconds:
                status.problems.append(f"newest restore point in {row['copy']} is {format_duration(age)} old "
                                       f"(RPO {format_duration(status.rpo_target_seconds)})")
        if not status.points:
            status.problems.append("no restore point found in any copy")
        runs = sorted((test_run(r) for r in latest_tests.get(system, [])), key=lambda t: t.started_at)
        if runs:
            status.last_test = runs[-1]
            for run in runs:
                if run.status != "passed":
                    status.problems.append(f"restore test {run.test} {run.status}: {run.reason}")
        elif system in tested:
            status.problems.append("restore test configured but never run")
        else:
            status.problems.append("no restore test configured")
        statuses.append(status)
    return sorted(statuses, key=lambda s: (s.ok, s.tier, s.system))
