"""Rotation (coverage planner) of a `vm` restore test: a set of VMs named by selectors is
tested a few per run, least recently proven restorable first, and `coverage` projects
when every VM of the set will have been tested.

The set comes from the vmware probe's latest inventory (stored assets of kind "vm";
templates and drcheck's own sandbox VMs excluded). "Last proven restorable" is the
newest PASSED result of this test for the VM's instance UUID (`details["vm_uuid"]`), so a
renamed VM keeps its history.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from pydantic import Field

from drcheck.config_types import Duration, Strict
from drcheck.mapping import within
from drcheck.results import RestoreTestResult, Status
from drcheck.restore_tests.vm_sources import SANDBOX_PREFIX, CloneSource
from drcheck.sqltime import parse_ts, ts
from drcheck.vm_select import VmFacts, VmSelector

if TYPE_CHECKING:
    from drcheck.config_loader import LoadedConfig
    from drcheck.context import RunContext
    from drcheck.store import Store

log = logging.getLogger(__name__)

MEASURED_DAYS = 14  # how far back the measured rate looks when the test has no schedule


class Rotation(Strict):
    """Test a set of VMs in turn: each run clones the newest snapshot of the `per_run`
    VMs least recently proven restorable (never tested first)."""

    vms: list[VmSelector] = Field(..., min_length=1, description="the set: VMs matching any of these selectors "
                                                                 "in the probe's inventory")
    per_run: int = Field(1, ge=1, description="VMs tested per run")
    window: Duration | None = Field(None, description="start no VM test that would not end this long after the run "
                                                      "began (estimated from the tests' measured durations)")


@dataclass(frozen=True)
class Member:
    """A VM of the rotation set and when a test last proved it restorable (None: never)."""

    name: str
    path: str
    uuid: str
    last_proven: datetime | None


@dataclass(frozen=True)
class Coverage:
    """Where a rotation stands: every VM of its set (least recently proven first), the
    rate it tests them at (VMs per day; `rate_source` "schedule", "measured" or None when
    unknown) and the projection: runs and days until every VM has been tested once
    (`days_to_cover`, 0 when all have been) and the days one full round takes."""

    test: str
    vms: list[Member]
    per_run: int
    vms_per_day: float | None
    rate_source: str | None
    runs_to_cover: int
    days_to_cover: float | None
    cycle_days: float | None

    @property
    def untested(self) -> list[Member]:
        return [m for m in self.vms if m.last_proven is None]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for vm in data["vms"]:
            vm["last_proven"] = vm["last_proven"].isoformat() if vm["last_proven"] else None
        return data


def last_proven(store: "Store", test: str) -> dict[str, datetime]:
    """Instance UUID -> when the newest passed result of `test` for that VM finished."""
    rows = store.query(
        "SELECT json_extract(details, '$.vm_uuid') AS uuid, MAX(finished_at) AS proven FROM restore_tests "
        "WHERE test = ? AND status = ? AND details IS NOT NULL GROUP BY uuid", [test, Status.PASSED.value])
    return {r["uuid"].lower(): parse_ts(r["proven"]) for r in rows if r["uuid"]}


def members(loaded: "LoadedConfig", store: "Store", test: str) -> list[Member]:
    """The rotation set of `test` from its probe's current inventory, least recently
    proven first (never-tested first, then by path)."""
    target = loaded.config.restore_tests[test]
    sandbox = "/" + target.sandbox.folder.strip("/")
    proven = last_proven(store, test)
    found = []
    for asset in store.current_assets():
        attributes = asset["attributes"]
        if asset["probe"] != target.probe or asset["kind"] != "vm" or attributes.get("template") \
                or asset["name"].startswith(SANDBOX_PREFIX) or within(attributes.get("folder") or "/", sandbox):
            continue
        facts = VmFacts.of(asset)
        if any(selector.matches(facts) for selector in target.rotation.vms):
            found.append(Member(asset["name"], attributes.get("path") or f"{facts.folder}/{asset['name']}",
                                asset["asset_id"], proven.get(asset["asset_id"].lower())))
    return sorted(found, key=lambda m: (m.last_proven is not None, m.last_proven or datetime.min, m.path))


def run(target, ctx: "RunContext", test_one: Callable[..., RestoreTestResult]) -> list[RestoreTestResult]:
    """Test the `per_run` least recently proven VMs of the set with `test_one(target, ctx,
    source, label, suffix)`, one after the other; stop before the window would be
    overrun, and after an ERROR (vCenter or sandbox trouble would hit the next ones too)."""
    rotation: Rotation = target.rotation
    chosen = members(ctx.loaded, ctx.store, ctx.name)[: rotation.per_run]
    if not chosen:
        return [_empty(target, ctx)]
    begun, results = time.monotonic(), []
    for i, member in enumerate(chosen, 1):
        if rotation.window is not None and results:  # the first VM always runs: a window must test something
            left = rotation.window.total_seconds() - (time.monotonic() - begun)
            expected = sum(r.duration for r in results) / len(results)
            if left < expected:
                log.info("%s: rotation stops after %d of %d VMs: %.0fs left in the window, a test takes ~%.0fs",
                         ctx.name, len(results), len(chosen), left, expected)
                break
        source = CloneSource(type="clone", vm=member.uuid, snapshot=target.source.snapshot)
        t0 = time.monotonic()
        result = test_one(target, ctx, source, label=f"[{i}/{len(chosen)} {member.name}] ", suffix=f"-{i}")
        result.details.update(vm=member.name, vm_uuid=member.uuid, vm_path=member.path,
                              rotation={"position": i, "of": len(chosen),
                                        "last_proven": ts(member.last_proven) if member.last_proven else None})
        results.append(_Timed(result, time.monotonic() - t0))
        if result.status is Status.ERROR:
            break
    return [r.result for r in results]


@dataclass
class _Timed:
    result: RestoreTestResult
    duration: float


def coverage(loaded: "LoadedConfig", store: "Store", test_name: str, now: datetime) -> Coverage:
    """Per VM of the rotation set of `test_name`: name, path, UUID and when it was last
    proven restorable; and the projected days until every VM has been tested, at the rate
    the schedule gives (per_run VMs per run), else the rate measured over the last
    MEASURED_DAYS days. Raise KeyError for a test that is not a vm rotation."""
    target = loaded.config.restore_tests[test_name]
    if getattr(target, "rotation", None) is None:
        raise KeyError(f"restore test {test_name} has no rotation")
    vms = members(loaded, store, test_name)
    per_run = target.rotation.per_run
    runs_per_day = _runs_per_day(target.schedule, loaded.config.agent.timezone, now)
    if runs_per_day:
        rate, source = per_run * runs_per_day, "schedule"
    else:
        since = now - timedelta(days=MEASURED_DAYS)
        passed = store.query("SELECT COUNT(*) AS n FROM restore_tests WHERE test = ? AND status = ? AND started_at >= ?",
                             [test_name, Status.PASSED.value, ts(since)])[0]["n"]
        rate, source = (passed / MEASURED_DAYS, "measured") if passed else (None, None)
    untested = sum(1 for m in vms if m.last_proven is None)
    runs = math.ceil(untested / per_run)
    if not untested:
        days = 0.0
    elif source == "schedule":
        days = runs / runs_per_day  # runs are whole: the last one may test fewer than per_run
    else:
        days = untested / rate if rate else None
    return Coverage(test_name, vms, per_run, rate, source, runs, days, len(vms) / rate if rate and vms else None)


def _runs_per_day(schedule, timezone: str, now: datetime) -> float | None:
    """Scheduled runs per day, counted over the week from `now` (None: not scheduled)."""
    if schedule is None:
        return None
    if schedule.interval is not None:
        return 86400 / schedule.interval.total_seconds()
    trigger, fires, at = schedule.model_copy(update={"jitter": None}).trigger(timezone), 0, now
    end = now + timedelta(days=7)
    while fires < 7 * 24 * 60:
        at = trigger.get_next_fire_time(None, at + timedelta(seconds=1))
        if at is None or at > end:
            break
        fires += 1
    return fires / 7 or None


def _empty(target, ctx: "RunContext") -> RestoreTestResult:
    now = ctx.now()
    return RestoreTestResult(
        test=ctx.name, kind="vm", system=target.system, status=Status.ERROR, started_at=now, finished_at=now,
        probe=target.probe, reason=f"the rotation set matches no VM in probe {target.probe}'s inventory "
                                   f"(selectors: {'; '.join(s.describe() for s in target.rotation.vms)}); "
                                   f"has `drcheck probe {target.probe}` run?")
