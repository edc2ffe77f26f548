"""Builders of the DR plan tests: the repository's drcheck.toml and runbooks copied into a
temporary directory with the plan's document facts ([plan], site and copy facts, runbook
vendors and validation) filled in, or a district of N generated systems; and a real store
holding probe runs and restore tests recorded the way the engine records them."""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import tomli_w

from drcheck.config_loader import LoadedConfig, load
from drcheck.results import CheckResult, ProbeResult, RestorePoint, RestoreTestResult, Status
from drcheck.store import Store

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 3, 13, 15, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)

PLAN = {
    "title": "Disaster Recovery / IT Contingency Plan", "organization": "Example Unified School District",
    "scope": "Student, business and file services run from the district office server room.",
    "assumptions": ["The district office building may be unusable for weeks.", "Staff can reach the CNC site."],
    "approved_by": "Superintendent", "approved_on": "2025-08-01", "reviewed_on": "2026-01-15",
    "activation_criteria": ["A tier-1 system is down longer than its RTO.", "Ransomware is found on any server."],
    "contacts": [
        {"name": "IT Director", "role": "Declares the disaster", "phone": "555-0100", "email": "it@example.org",
         "alternate": "Network Administrator", "verified_on": "2026-02-01"},
        {"name": "Network Administrator", "role": "Leads recovery", "phone": "555-0101",
         "email": "net@example.org", "verified_on": "2026-02-01"},
    ],
    "exercises": [{"held_on": "2025-10-14", "kind": "tabletop", "scope": "ransomware on the SIS",
                   "after_action_report": "tickets/AAR-2025-10", "corrective_actions": ["add an offline copy"]}],
    "training": [{"who": "Network Administrator", "held_on": "2025-09-01", "topic": "restic restores"}],
    "changes": [{"on": "2026-01-15", "by": "Network Administrator", "description": "Annual review"}],
}


def write_config(tmp_path: Path, data: dict) -> LoadedConfig:
    data["agent"].update(state_dir=str(tmp_path / "state"), sandbox_root=str(tmp_path / "sandbox"),
                         runbooks_dir=str(tmp_path / "runbooks"))
    data["reports"]["output_dir"] = str(tmp_path / "reports")
    (tmp_path / "drcheck.toml").write_text(tomli_w.dumps(data))
    return load(tmp_path / "drcheck.toml")


def _facts(data: dict) -> dict:
    data["plan"] = PLAN
    data["sites"]["district-office"].update(address="100 Main St", fire_suppression="clean-agent",
                                            power_backup="UPS 30 min, generator", key_holders=["IT Director"])
    data["sites"]["nutrition-center"].update(address="15 Farm Rd", fire_suppression="wet-pipe",
                                             power_backup="UPS 15 min")
    for copy in data["copies"].values():
        copy.update(encrypted_at_rest=True, encrypted_in_transit=True)
    return data


def district(tmp_path: Path) -> LoadedConfig:
    """The repository's demo configuration with the plan's facts (3 copies sites, wet-pipe CNC)."""
    shutil.copytree(REPO / "runbooks", tmp_path / "runbooks")
    sis = tmp_path / "runbooks" / "sis.toml"
    book = tomllib.loads(sis.read_text())
    book.update(alternate="Computer Technician III",
                validation=["A teacher takes attendance", "The nightly state export runs"],
                vendors=[{"vendor": "PowerSchool", "product": "SIS", "phone": "555-0199", "contract": "PS-1234",
                          "sla": "4h response, 24x7"}])
    sis.write_text(tomli_w.dumps(book))
    return write_config(tmp_path, _facts(tomllib.loads((REPO / "drcheck.toml").read_text())))


def many_systems(tmp_path: Path, n: int) -> LoadedConfig:
    """A district of `n` generated systems watched by the lab restic probe, each with a
    files restore test; every tenth depends on the previous system, one in three is tier 1."""
    data = _facts(tomllib.loads((REPO / "drcheck.toml").read_text()))
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    names = [f"app{i:03d}" for i in range(1, n + 1)]
    for i, name in enumerate(names):
        book = {"name": f"Application {i + 1}", "tier": 1 + i % 3, "owner": f"Owner {i % 7}",
                "alternate": f"Alternate {i % 5}", "rto": "4h", "rpo": "24h", "mtd": "2d", "wrt": "2h",
                "description": f"Generated system {i + 1}.", "assets": [f"server:{name}01"],
                "depends_on": [names[i - 1]] if i % 10 == 9 else [],
                "recovery_steps": [{"action": f"Restore {name}01 from the newest verified point.",
                                    "owner": "Network Administrator", "expected_duration": "1h"},
                                   {"action": "Log in as a test user.", "owner": f"Owner {i % 7}"}],
                "validation": ["A user logs in and opens a record."]}
        (runbooks / f"{name}.toml").write_text(tomli_w.dumps(book))
    data["probes"] = {"lab-restic": data["probes"]["lab-restic"]}
    data["probes"]["lab-restic"]["systems"] = [
        {"system": s, "hosts": [f"{s}01"], "paths": [f"var/lab/sources/{s}"]} for s in names]
    data["restore_tests"] = {f"{s}-files": {"kind": "files", "probe": "lab-restic", "system": s,
                                             "schedule": {"cron": "0 2 * * *"}, "expected_paths": ["db"]}
                             for s in names}
    data["copies"] = {"lab-restic": data["copies"]["lab-restic"]}
    return write_config(tmp_path, data)


def restore_test(loaded: LoadedConfig, system: str, status: Status, started: datetime, *, test: str | None = None,
                 rto: timedelta | None = None, rpo: timedelta | None = None, reason: str = "",
                 checks=(("expected paths", Status.PASSED, "all expected paths present"),)) -> RestoreTestResult:
    runbook = loaded.runbooks[system]
    spent = None if status is Status.ERROR else (rto or 0.5 * H).total_seconds()
    return RestoreTestResult(
        test=test or f"{system}-files", kind="files", system=system, status=status, started_at=started,
        finished_at=started + (rto or 0.5 * H), reason=reason, probe="lab-restic", copy="lab-restic",
        point_id=hashlib.sha256(f"{system}{started}".encode()).hexdigest() if rpo else None,
        point_time=started - rpo if rpo else None,
        restore_seconds=spent * 0.8 if spent else None, verify_seconds=spent * 0.2 if spent else None,
        rto_seconds=rto.total_seconds() if rto else None, rpo_seconds=rpo.total_seconds() if rpo else None,
        rpo_source="canary" if rpo else None,
        rto_target_seconds=runbook.rto.total_seconds(), rpo_target_seconds=runbook.rpo.total_seconds(),
        files_restored=None if status is Status.ERROR else 4180,
        bytes_restored=None if status is Status.ERROR else 2_400_000_000,
        checks=[CheckResult(n, s, e, 2.0) for n, s, e in checks],
    )


def points(loaded: LoadedConfig, ages: dict[str, timedelta], at: datetime = NOW) -> ProbeResult:
    return ProbeResult(
        probe="lab-restic", kind="restic", action="snapshots", status=Status.OK,
        started_at=at - timedelta(minutes=1), finished_at=at, copy="lab-restic",
        newest=[RestorePoint(s, "lab-restic", at - age, hashlib.sha256(s.encode()).hexdigest(), count=30)
                for s, age in ages.items()])


def fill_district(loaded: LoadedConfig, store: Store) -> None:
    """The demo's story: sis tested (one error, then passes), payroll's backups stopped and
    its test failed, fileserver passed; restore points in the local copy."""
    ok = (("expected paths", Status.PASSED, "all 2 expected paths present"),
          ("canary", Status.PASSED, "canary found, written 2h ago"))
    store.record_restore_test(restore_test(loaded, "sis", Status.ERROR, NOW - 72 * H,
                                           reason="restic: Fatal: wrong password or no key found"))
    store.record_restore_test(restore_test(
        loaded, "payroll", Status.FAILED, NOW - 20 * H, rpo=30 * H,
        reason="payroll.db integrity: output 'database disk image is malformed' does not match ^ok$",
        checks=(ok[0], ("payroll.db integrity", Status.FAILED, "database disk image is malformed"))))
    store.record_restore_test(restore_test(loaded, "sis", Status.PASSED, NOW - 24 * H, rto=2 * H, rpo=6 * H,
                                           checks=ok))
    store.record_restore_test(restore_test(loaded, "fileserver", Status.PASSED, NOW - 2 * H, rto=1.5 * H,
                                           rpo=14 * H, checks=ok))
    store.record_probe(points(loaded, {"sis": 3 * H, "fileserver": 16 * H, "payroll": 50 * H}))


def fill_many(loaded: LoadedConfig, store: Store, days: int = 7) -> None:
    """A test a day for `days` days per system (every 13th system misses its RTO), and points."""
    for d in range(days - 1, -1, -1):
        for i, system in enumerate(sorted(loaded.runbooks)):
            slow = i % 13 == 0
            store.record_restore_test(restore_test(
                loaded, system, Status.PASSED, NOW - d * 24 * H - 6 * H + i * timedelta(seconds=20),
                rto=(5 if slow else 1) * H, rpo=(10 + i % 5) * H))
    store.record_probe(points(loaded, {s: (2 + i % 20) * H for i, s in enumerate(sorted(loaded.runbooks))}))
