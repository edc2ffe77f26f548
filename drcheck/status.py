"""Per-system status: what `drcheck status` prints and the weekly report shows, arranged
from the store's facts and the rule evaluation (`drcheck.rules`), which is the only judge.
Pure reads; no system is contacted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from drcheck.config_loader import LoadedConfig
from drcheck.rules import Facts, RuleResult, evaluate
from drcheck.store import Store, parse_ts
from drcheck.verdicts import operational


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
    problems: list[str] = field(default_factory=list)  # the failing rules' messages
    failing: list[RuleResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["failing"] = [r.to_json() for r in self.failing]
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


def system_statuses(loaded: LoadedConfig, store: Store, now: datetime,
                    results: list[RuleResult] | None = None, facts: Facts | None = None) -> list[SystemStatus]:
    """Return each runbook system's status, worst (problems, then tier) first.

    The verdicts are the failing results of the one rule evaluation (`drcheck.rules`),
    passed in when the caller already has it; this module only arranges them. Only what
    the current configuration defines is judged: a renamed or removed test or probe keeps
    its history in the store but no longer decides a verdict.
    """
    facts = facts or Facts.read(loaded, store)
    results = evaluate(loaded, store, now, facts) if results is None else results
    statuses = []
    by_system: dict[str | None, list[RuleResult]] = {}
    for r in operational(results):  # compliance rules are `drcheck compliance`'s and the plan's
        by_system.setdefault(r.system, []).append(r)
    for system, rb in sorted(loaded.runbooks.items()):
        status = SystemStatus(
            system=system, name=rb.name, tier=rb.tier, owner=rb.owner,
            rto_target_seconds=rb.rto.total_seconds(), rpo_target_seconds=rb.rpo.total_seconds(),
            mtd_seconds=rb.mtd.total_seconds(),
        )
        mine = by_system.get(system, [])
        status.failing = [r for r in mine if not r.passed]
        status.problems = [r.message for r in status.failing]
        ages = {r.subject: r for r in mine if r.rule == "R2.backup_age"}
        for row in facts.points.get(system, []):
            when = parse_ts(row["point_time"])
            verdict = ages.get(row["copy"])
            status.points.append(CopyPoint(row["copy"], when, row["point_id"], (now - when).total_seconds(),
                                           verdict is None or verdict.passed, row["point_count"]))
        tests = facts.tests_of.get(system, [])
        runs = [test_run(facts.tests[(system, n)]) for n in tests if (system, n) in facts.tests]
        status.last_test = max(runs, key=lambda r: r.started_at, default=None)
        known = [facts.passed[(system, n)] for n in tests if (system, n) in facts.passed]
        status.last_success_at = max(known) if known else None
        statuses.append(status)
    return sorted(statuses, key=lambda s: (s.ok, s.tier, s.system))


@dataclass
class VmStatus:
    """One inventory VM as `drcheck assets` and the weekly report show it: the R3 verdict
    (`state`, `message`), what covers it, and when a `vm` restore test last proved it."""

    name: str
    path: str
    uuid: str
    probe: str
    power_state: str | None
    systems: list[str]
    state: str  # protected, excluded, stale, unprotected
    message: str
    rpo_seconds: float
    copies: list[dict[str, Any]] = field(default_factory=list)  # copy, newest, age_seconds, point_id
    last_proven_at: datetime | None = None
    last_proven_test: str | None = None

    @property
    def protected(self) -> bool:
        return self.state in ("protected", "excluded")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["protected"] = self.protected
        return _jsonable(data)


def vm_statuses(loaded: LoadedConfig, store: Store, now: datetime, facts: Facts | None = None) -> list[VmStatus]:
    """Every inventory VM (templates aside), unprotected ones first, then by path."""
    from drcheck.protection import reconcile
    from drcheck.rules import vm_verdict

    facts = facts or Facts.read(loaded, store)
    proven = store.last_proven_vms()
    statuses = []
    for vm in reconcile(loaded, facts.assets):
        verdict, test = vm_verdict(vm, now), proven.get(vm.uuid) or {}
        statuses.append(VmStatus(
            name=vm.name, path=vm.path, uuid=vm.uuid, probe=vm.probe,
            power_state=vm.row["attributes"].get("power_state"), systems=vm.systems, state=vm.state(now),
            message=verdict.message, rpo_seconds=vm.rpo_seconds,
            copies=[{"copy": c.copy, "newest": c.newest, "age_seconds": (now - c.newest).total_seconds(),
                     "point_id": c.point_id} for c in vm.coverage],
            last_proven_at=parse_ts(test["started_at"]) if test else None, last_proven_test=test.get("test")))
    return sorted(statuses, key=lambda v: (v.protected, v.path.lower()))
