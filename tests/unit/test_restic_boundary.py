"""Restore-test behaviour with the restic client replaced (the clients/ boundary only):
listings that would escape the sandbox, restic failure messages, snapshot mapping."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import tomli_w

from drcheck.clients import restic as restic_client
from drcheck.clients.restic import Entry, Snapshot, explain_failure
from drcheck.mapping import SystemMapping
from drcheck.config_loader import load
from drcheck.engine import run_restore_test
from drcheck.mapping import matches
from drcheck.results import Status
from drcheck.store import Store

WHEN = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


class FakeRepository:
    """Stands in for ResticRepository: one snapshot of /srv/app with the given listing."""

    restored: list[Path] = []
    listing: list[Entry] = []

    def __init__(self, *args, **kwargs):
        pass

    def snapshots(self):
        return [Snapshot("a" * 64, WHEN, "app01", ("/srv/app",), ())]

    def ls(self, snapshot_id, include=()):
        yield from self.listing

    def restore(self, snapshot_id, target, include=(), timeout=None):
        FakeRepository.restored.append(target)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "app.toml").write_text(tomli_w.dumps(
        {"name": "App", "tier": 1, "owner": "IT", "rto": "1h", "rpo": "1000d", "mtd": "1d"}))
    (tmp_path / "pw").write_text("x")
    path = tmp_path / "drcheck.toml"
    path.write_text(tomli_w.dumps({
        "agent": {"state_dir": "state", "sandbox_root": "sandbox"},
        "sites": {"s": {}}, "copies": {"c": {"site": "s"}},
        "probes": {"repo": {"kind": "restic", "copy": "c", "repository": "/nowhere",
                            "password": {"file": "pw"}, "systems": [{"system": "app", "paths": ["/srv/app"]}]}},
        "restore_tests": {"t": {"kind": "files", "probe": "repo", "system": "app", "spot_check": {"files": 0},
                              "completeness": {"enabled": False}}},  # no live /srv/app here
    }))
    return path


@pytest.mark.parametrize("evil", ["/srv/app/../../etc/cron.d/x", "../escape", "/srv/app/a\x00b"])
def test_entry_that_would_escape_refuses_the_whole_restore(config, monkeypatch, evil):
    monkeypatch.setattr(restic_client, "ResticRepository", FakeRepository)
    monkeypatch.setattr("drcheck.probes.restic.ResticRepository", FakeRepository)
    FakeRepository.restored = []
    FakeRepository.listing = [Entry("/srv/app/ok.txt", "file", 3, WHEN), Entry(evil, "file", 3, WHEN)]
    loaded = load(config)

    with Store(loaded.database_path) as store:
        result = run_restore_test(loaded, store, "t")
        leases = store.query("SELECT * FROM leases")

    assert result.status is Status.ERROR
    assert "would escape the sandbox" in result.reason
    assert FakeRepository.restored == []  # refused before restic was asked to write anything
    assert leases == []                   # and before a sandbox existed


def test_clean_listing_is_restored_into_a_leased_sandbox(config, monkeypatch):
    monkeypatch.setattr("drcheck.probes.restic.ResticRepository", FakeRepository)
    FakeRepository.restored = []
    FakeRepository.listing = [Entry("/srv/app/ok.txt", "file", 3, WHEN)]
    loaded = load(config)
    with Store(loaded.database_path) as store:
        result = run_restore_test(loaded, store, "t")
        (lease,) = store.query("SELECT * FROM leases")
    (target,) = FakeRepository.restored
    assert Path(lease["resource"]) == target and lease["released_at"]
    assert target.parent == loaded.config.agent.sandbox_root and not target.exists()
    assert result.status is Status.PASSED


@pytest.mark.parametrize("stderr, reason", [
    ("Fatal: wrong password or no key found\n", "wrong repository password"),
    ("Fatal: unable to open config file: stat /x/config: no such file or directory\n"
     "Is there a repository at the following location?\n/x\n", "no restic repository"),
    ("unable to create lock in backend: repository is already locked by PID 7\n", "locked"),
    ("Fatal: something new\n", "restic exited 1: Fatal: something new"),
])
def test_restic_failures_become_short_reasons(stderr, reason):
    assert reason in explain_failure(stderr, 1)


def test_snapshot_time_with_nanoseconds_and_offsets_parses():
    assert restic_client._parse_time("2026-11-23T10:22:05.720895313Z") == \
        datetime(2026, 11, 23, 10, 22, 5, 720895, tzinfo=timezone.utc)
    assert restic_client._parse_time("2026-11-23T11:22:05.5+01:00") == \
        datetime(2026, 11, 23, 10, 22, 5, 500000, tzinfo=timezone.utc)


@pytest.mark.parametrize("paths, hosts, tags, expected", [
    (["/srv/app"], [], [], True),
    (["/srv/app/db"], [], [], True),        # the snapshot of /srv/app covers /srv/app/db
    (["/srv"], [], [], False),              # but not all of /srv
    (["/srv/application"], [], [], False),  # no prefix confusion
    ([], ["app01"], [], True),
    ([], ["other"], [], False),
    ([], [], ["daily"], True),
    ([], [], ["daily", "weekly"], False),   # all tags must be present
])
def test_mapping_rules(paths, hosts, tags, expected):
    snap = Snapshot("id", WHEN, "app01", ("/srv/app",), ("daily",))
    rule = SystemMapping(system="app", paths=paths, hosts=hosts, tags=tags)
    assert matches(snap, rule) is expected
