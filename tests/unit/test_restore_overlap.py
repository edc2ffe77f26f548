"""The files restore test restoring the probe-recorded point while `snapshots` confirms it
and `ls` lists (and checks) it: the decisions, with the restic client replaced by an
autospec of ResticRepository (the clients/ boundary only)."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import pytest
import tomli_w

from drcheck.clients import process
from drcheck.clients.restic import Entry, ResticRepository, Snapshot
from drcheck.config_loader import load
from drcheck.engine import run_probe, run_restore_test
from drcheck.results import Status
from drcheck.store import Store

WHEN = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
A = Snapshot("a" * 64, WHEN, "app01", ("/srv/app",), ())
B = Snapshot("b" * 64, WHEN.replace(hour=11), "app01", ("/srv/app",), ())
CLEAN = [Entry("/srv/app", "dir", 0, WHEN), Entry("/srv/app/ok.txt", "file", 3, WHEN)]


class Lab:
    """An autospec'd restic client recording what the restore test asked of it and when."""

    def __init__(self, tmp_path: Path, monkeypatch):
        (tmp_path / "runbooks").mkdir()
        (tmp_path / "runbooks" / "app.toml").write_text(tomli_w.dumps(
            {"name": "App", "tier": 1, "owner": "IT", "rto": "1h", "rpo": "1000d", "mtd": "1d"}))
        (tmp_path / "pw").write_text("x")
        (tmp_path / "drcheck.toml").write_text(tomli_w.dumps({
            "agent": {"state_dir": "state", "sandbox_root": "sandbox"},
            "sites": {"s": {}}, "copies": {"c": {"site": "s"}},
            "probes": {"repo": {"kind": "restic", "copy": "c", "repository": "/nowhere",
                                "password": {"file": "pw"}, "systems": [{"system": "app", "paths": ["/srv/app"]}]}},
            "restore_tests": {"t": {"kind": "files", "probe": "repo", "system": "app", "spot_check": {"files": 0},
                                  "completeness": {"enabled": False}}},  # no live /srv/app here
        }))
        self.loaded = load(tmp_path / "drcheck.toml")
        self.sandbox_root = self.loaded.config.agent.sandbox_root
        self.repo = mock.create_autospec(ResticRepository, instance=True)
        self.repo.confines_restores.return_value = True
        self.repo.snapshots.return_value = [A]
        self.repo.stats.return_value = (3, 1)
        self.listings = {A.id: CLEAN, B.id: CLEAN}
        self.events: list[str] = []
        self.restores: list[dict] = []
        self.hold = {A.id}  # restores of these run until cancelled
        self.restore_started = threading.Event()
        self.ls_waits_for_restore = False
        self.repo.ls.side_effect = self._ls
        self.repo.restore.side_effect = self._restore
        monkeypatch.setattr("drcheck.probes.restic.ResticRepository", lambda *a, **k: self.repo)

    def _ls(self, snapshot_id, include=()):
        self.events.append(f"ls {snapshot_id[0]} start")
        if self.ls_waits_for_restore:
            assert self.restore_started.wait(30), "the restore did not start while listing"
        yield from self.listings[snapshot_id]
        self.events.append(f"ls {snapshot_id[0]} end")

    def _restore(self, snapshot_id, target, include=(), timeout=None, *, confine_writes=None, cancel=None):
        self.restores.append({"id": snapshot_id, "target": Path(target), "empty": not any(Path(target).iterdir()),
                              "confine_writes": confine_writes, "cancel": cancel})
        self.events.append(f"restore {snapshot_id[0]} start")
        (Path(target) / "srv" / "app").mkdir(parents=True)
        (Path(target) / "srv" / "app" / "ok.txt").write_text("ok\n")
        self.restore_started.set()
        if snapshot_id in self.hold and cancel is not None and cancel.wait(30):
            self.events.append(f"restore {snapshot_id[0]} killed")
            raise process.CommandCancelled("restic cancelled")
        self.events.append(f"restore {snapshot_id[0]} end")

    def probe(self):
        with Store(self.loaded.database_path) as store:
            return run_probe(self.loaded, store, "repo")

    def restore_test(self):
        with Store(self.loaded.database_path) as store:
            result = run_restore_test(self.loaded, store, "t")
            leases = store.query("SELECT * FROM leases")
        return result, leases


@pytest.fixture
def lab(tmp_path, monkeypatch) -> Lab:
    return Lab(tmp_path, monkeypatch)


def test_the_recorded_point_is_restored_while_it_is_confirmed_and_listed(lab):
    lab.probe()
    lab.hold = set()
    lab.ls_waits_for_restore = True  # the listing can only finish once the restore has started

    result, leases = lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    assert result.point_id == A.id and result.details["overlap"] == "used"
    (restore,) = lab.restores
    assert restore["confine_writes"] is True and isinstance(restore["cancel"], process.Cancel)
    assert lab.events.index("restore a start") < lab.events.index("ls a end")
    timeline = result.details["timeline"]
    assert timeline["restore"][0] < timeline["listing"][1]
    assert all(lease["released_at"] for lease in leases) and list(lab.sandbox_root.iterdir()) == []


def test_a_newer_point_kills_the_guess_empties_the_sandbox_and_restores_the_newer(lab):
    lab.probe()
    lab.repo.snapshots.return_value = [A, B]  # taken after the probe ran

    result, leases = lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    assert result.point_id == B.id
    assert result.details["overlap"] == "discarded: a newer restore point exists"
    guess, newer = lab.restores
    assert guess["id"] == A.id and guess["cancel"].cancelled and "restore a killed" in lab.events
    assert newer["id"] == B.id and newer["empty"] and newer["target"] != guess["target"]
    assert not guess["target"].exists()  # the guess's sandbox was removed before the newer restore
    assert lab.events.index("ls b end") < lab.events.index("restore b start")  # sequential: listed first
    assert len(leases) == 2 and all(lease["released_at"] for lease in leases)
    assert list(lab.sandbox_root.iterdir()) == []


@pytest.mark.parametrize("evil", ["/srv/app/../../etc/cron.d/x", "../escape", "/srv/app/a\x00b"])
def test_an_escaping_entry_kills_the_restore_and_refuses_leaving_nothing(lab, evil):
    lab.probe()
    lab.listings[A.id] = [*CLEAN, Entry(evil, "file", 3, WHEN)]

    result, leases = lab.restore_test()

    assert result.status is Status.ERROR
    assert "would escape the sandbox; restore refused" in result.reason
    (restore,) = lab.restores  # nothing else was restored
    assert restore["confine_writes"] is True and restore["cancel"].cancelled
    assert "restore a killed" in lab.events
    assert list(lab.sandbox_root.iterdir()) == []
    assert leases and all(lease["released_at"] for lease in leases)


def test_without_landlock_the_listing_is_checked_before_any_restore(lab, caplog):
    lab.repo.confines_restores.return_value = False
    lab.probe()

    with caplog.at_level("INFO", logger="drcheck.restore_tests.files"):
        result, _ = lab.restore_test()
        lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    assert result.details["overlap"] == "not used: Linux Landlock is not available"
    first = lab.restores[0]
    assert first["confine_writes"] is None and first["cancel"] is None  # today's call, unchanged
    assert lab.events.index("ls a end") < lab.events.index("restore a start")
    # said once per process, not at every test (another test module may have said it already)
    assert sum("Landlock is not available" in r.getMessage() for r in caplog.records) <= 1


def test_without_landlock_an_escaping_entry_is_refused_before_any_restore(lab):
    lab.repo.confines_restores.return_value = False
    lab.probe()
    lab.listings[A.id] = [*CLEAN, Entry("/srv/app/../../etc/passwd", "file", 3, WHEN)]

    result, leases = lab.restore_test()

    assert result.status is Status.ERROR and "would escape" in result.reason
    assert lab.restores == [] and leases == []


def test_an_unknown_point_size_takes_the_sequential_path(lab):
    lab.repo.stats.side_effect = process.CommandTimeout("restic killed after 600s")
    lab.probe()

    result, _ = lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    assert result.details["overlap"].startswith("not used: the size of aaaaaaaa is unknown")
    assert lab.events.index("ls a end") < lab.events.index("restore a start")


# -- the process helpers the overlap uses (real processes) ---------------------------------


def test_cancel_kills_a_running_program_and_one_started_after():
    cancel = process.Cancel()
    outcome: list[BaseException] = []

    def sleeper():
        try:
            process.run(["sleep", "60"], timeout=120, cancel=cancel)
        except process.CommandCancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=sleeper)
    thread.start()
    while not cancel._groups:  # started
        threading.Event().wait(0.01)
    cancel.cancel()
    thread.join(60)
    assert not thread.is_alive() and len(outcome) == 1
    with pytest.raises(process.CommandCancelled):
        process.run(["sleep", "60"], timeout=120, cancel=cancel)


def test_programs_started_with_lowered_priority_run_niced():
    base = int(process.run(["nice"], timeout=30).stdout)
    with process.lowered_priority(5):
        niced = int(process.run(["nice"], timeout=30).stdout)
    assert niced == min(base + 5, 19)
    assert int(process.run(["nice"], timeout=30).stdout) == base


def test_confinement_can_be_turned_off_per_probe_and_then_nothing_overlaps(lab, tmp_path):
    import tomllib

    config = tomllib.loads((tmp_path / "drcheck.toml").read_text())
    config["probes"]["repo"]["confine_restores"] = False  # e.g. an sftp: repository's ssh must write ~/.ssh
    (tmp_path / "drcheck.toml").write_text(tomli_w.dumps(config))
    lab.loaded = load(tmp_path / "drcheck.toml")
    lab.probe()
    lab.hold = set()

    result, _ = lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    (restore,) = lab.restores
    assert restore["confine_writes"] is False and lab.events.index("ls a end") < lab.events.index("restore a start")
