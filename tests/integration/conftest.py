"""Fixtures of the integration tests: the example configuration copied into tmp_path, an
open Store on a real SQLite file, and a recorder writing results into it."""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import tomli_w

from drcheck.config_loader import LoadedConfig, load
from drcheck.results import CheckResult, ProbeResult, RestorePoint, RestoreTestResult, Status
from drcheck.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_config(tmp_path):
    """Return make(**reports) -> LoadedConfig: the repo's drcheck.toml and runbooks copied
    into tmp_path, every state path under tmp_path; keyword arguments go to [reports]."""

    def make(**reports) -> LoadedConfig:
        runbooks = tmp_path / "runbooks"
        if not runbooks.exists():
            shutil.copytree(REPO / "runbooks", runbooks)
            (runbooks / "schools.toml").unlink()  # the VM lab's system (e2e/test_demo covers it)
        data = tomllib.loads((REPO / "drcheck.toml").read_text())
        for probe in data["probes"].values():
            if "systems" in probe:
                probe["systems"] = [rule for rule in probe["systems"] if rule["system"] != "schools"]
        # the weeks these tests record are the restic lab's (one copy per system, as the
        # Recorder writes it); the demo's other copies are covered end to end (e2e/test_demo)
        others = {name for name, probe in data["probes"].items() if probe["kind"] != "restic"}
        for name in others:
            data["copies"].pop(data["probes"].pop(name).get("copy"), None)
        data["restore_tests"] = {k: t for k, t in data["restore_tests"].items() if t["probe"] not in others}
        data["agent"].update(state_dir=str(tmp_path / "state"), sandbox_root=str(tmp_path / "sandbox"),
                             runbooks_dir=str(runbooks))
        data["reports"]["output_dir"] = str(tmp_path / "reports")
        data["reports"].update({k: str(v) for k, v in reports.items()})
        path = tmp_path / "drcheck.toml"
        path.write_text(tomli_w.dumps(data))
        return load(path)

    return make


@pytest.fixture
def loaded(make_config) -> LoadedConfig:
    return make_config()


@pytest.fixture
def store(loaded):
    with Store(loaded.database_path, agent=loaded.config.agent.name) as opened:
        yield opened


def _seconds(value: timedelta | float | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


@dataclass
class Recorder:
    """Writes realistic results into the store; targets default to the system's runbook."""

    loaded: LoadedConfig
    store: Store
    copy: str = "lab-restic"
    probe_name: str = "lab-restic"

    def test(self, system: str, status: str | Status, started_at: datetime, *,
             test: str | None = None, reason: str = "", rto: timedelta | None = None,
             rpo: timedelta | None = None, checks: list[tuple[str, str, str]] | None = None,
             took: timedelta | None = None) -> int:
        """Record a restore test of `system`; return its id. `checks` are (name, status,
        evidence); by default one passed check per test."""
        runbook = self.loaded.runbooks[system]
        status = Status(status)
        rto_s, rpo_s = _seconds(rto), _seconds(rpo)
        took = took or (rto if rto is not None else timedelta(minutes=20))
        point_time = started_at - rpo if rpo is not None else None
        # an error means nothing was restored; otherwise the restore took 80% of the time
        spent = None if status is Status.ERROR else (rto_s if rto_s is not None else took.total_seconds())
        if checks is None:
            checks = [("expected paths", "passed", "all expected paths present")]
        return self.store.record_restore_test(RestoreTestResult(
            test=test or f"{system}-files", kind="files", system=system, status=status,
            started_at=started_at, finished_at=started_at + took, reason=reason,
            probe=self.probe_name, copy=self.copy,
            point_id=hashlib.sha256(f"{system}{point_time}".encode()).hexdigest() if point_time else None,
            point_time=point_time,
            restore_seconds=spent * 0.8 if spent is not None else None,
            verify_seconds=spent * 0.2 if spent is not None else None,
            rto_seconds=rto_s, rpo_seconds=rpo_s, rpo_source="restore_point" if rpo_s is not None else None,
            rto_target_seconds=runbook.rto.total_seconds(), rpo_target_seconds=runbook.rpo.total_seconds(),
            files_restored=1200 if status is not Status.ERROR else None,
            bytes_restored=734_000_000 if status is not Status.ERROR else None,
            checks=[CheckResult(name, Status(s), evidence, 1.5) for name, s, evidence in checks],
        ))

    def probe(self, points: dict[str, datetime], at: datetime, *, status: str | Status = "ok",
              action: str = "snapshots", reason: str = "") -> int:
        """Record a probe run at `at` that saw the newest restore point of each system at
        the given time; return the run id."""
        newest = [
            RestorePoint(system=system, copy=self.copy, point_time=when,
                         point_id=hashlib.sha256(f"{system}{when}".encode()).hexdigest(),
                         size_bytes=1_000_000, host=f"{system}01", count=30)
            for system, when in points.items()
        ]
        return self.store.record_probe(ProbeResult(
            probe=self.probe_name, kind="restic", action=action, status=Status(status),
            started_at=at - timedelta(seconds=4), finished_at=at, reason=reason, copy=self.copy,
            newest=newest,
        ))


@pytest.fixture
def record(loaded, store) -> Recorder:
    return Recorder(loaded, store)
