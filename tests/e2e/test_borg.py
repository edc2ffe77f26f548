"""The borg kind against real borg 1.x repositories: archives listed and mapped, RPO,
`borg check --verify-data`, passphrase handling, and the unchanged `files` restore test."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from drcheck.clients.process import kill_session
from drcheck.results import Status

from .borg_lab import BORG, PASSPHRASE, SLOW_EXTRACT, BorgLab
from .conftest import utc, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(BORG is None, reason="borg is not installed (make test installs it)")]


@pytest.fixture
def borg_lab(tmp_path: Path) -> BorgLab:
    return BorgLab(tmp_path)


def healthy(lab: BorgLab, age_hours: float = 1.0) -> str:
    lab.plant_canary(at=utc(hours=age_hours, minutes=1))
    return lab.backup(at=utc(hours=age_hours))


def test_archives_are_listed_and_mapped_to_systems(borg_lab):
    lab = borg_lab
    lab.backup(at=utc(hours=30))
    taken = utc(hours=2)
    newest = lab.backup(at=taken)
    lab.backup(at=utc(hours=1), name="laptop-docs", paths=[str(lab.source / "docs")])  # app01-* it is not
    lab.write("patterns", f"R {lab.source}\n")
    lab.backup(at=utc(minutes=30), name="mystery", paths=[], extra=("--patterns-from", str(lab.source / "patterns")))

    result = lab.probe()

    assert result.status is Status.OK, result.reason
    (point,) = result.newest
    assert (point.system, point.point_id, point.paths) == ("app", newest, (str(lab.source),))
    assert point.host == socket.gethostname()  # borg records the machine that ran it
    assert point.point_time == taken.replace(microsecond=0)  # --timestamp is UTC, whole seconds
    assert result.point_counts == {"app": 2}
    codes = {f.code: f.message for f in result.findings}
    assert codes.keys() == {"unmapped_archives", "archive_paths_unknown"}
    assert "2 archive(s)" in codes["unmapped_archives"] and "mystery" in codes["archive_paths_unknown"]
    assert lab.rows("SELECT point_id, point_count FROM restore_points")[-1] == {"point_id": newest, "point_count": 2}
    status = json.loads(lab.cli("status", "--json").stdout)  # `archives` is this kind's listing action
    (system,) = status["systems"]
    assert [(p["copy"], p["point_id"]) for p in system["points"]] == [("borg", newest)]

    # a rule on the host alone takes every archive with a readable path of the source
    lab.configure(probes={"repo": {"systems": [
        {"system": "app", "hosts": [socket.gethostname()], "paths": [str(lab.source / "docs")]}]}})
    (point,) = lab.probe().newest
    assert point.point_id == "laptop-docs"


def test_stale_archive_breaches_rpo(borg_lab):
    borg_lab.plant_canary(at=utc(days=3, minutes=1))
    borg_lab.backup(at=utc(days=3))

    probe = borg_lab.probe()
    test = borg_lab.restore_test()

    assert probe.status is Status.OK and probe.findings == []  # facts; how old is too old is a rule's call
    shown = borg_lab.cli("probe", "repo")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "newest restore point in borg is 3d" in shown.stdout and "R2.backup_age" in shown.stdout
    assert test.status is Status.FAILED and "achieved RPO 3d" in test.reason


def test_check_passes_on_a_healthy_repository_and_fails_on_a_corrupt_segment(borg_lab):
    healthy(borg_lab)
    ok = borg_lab.probe("check")
    assert ok.status is Status.OK, ok.reason
    assert "verified" in ok.reason and "0 integrity errors" in ok.reason

    borg_lab.corrupt_largest_segment()
    result = borg_lab.probe("check")

    assert result.status is Status.FAILED
    assert result.reason.startswith("repository check failed: backup data is damaged: ")
    assert "Segment entry checksum mismatch" in result.reason  # borg's own words
    run = borg_lab.rows("SELECT status, reason FROM probe_runs WHERE action = 'check' ORDER BY id")[-1]
    assert run == {"status": "failed", "reason": result.reason}

    borg_lab.configure(probes={"repo": {"check": {"only": "repository", "verify_data": False}}})
    assert borg_lab.probe("check").status is Status.FAILED


def test_corrupt_segment_fails_the_restore_and_cleans_up(borg_lab):
    healthy(borg_lab)
    borg_lab.corrupt_largest_segment()

    result = borg_lab.restore_test()

    assert result.status is Status.FAILED, result.reason
    assert result.reason.startswith("backup data is damaged:") and "integrity error" in result.reason.lower()
    assert borg_lab.sandbox_entries() == []


def test_wrong_passphrase_is_an_error_and_the_passphrase_is_nowhere(borg_lab, caplog):
    caplog.set_level(logging.DEBUG)
    healthy(borg_lab)
    wrong = borg_lab.root / "wrong-passphrase"
    wrong.write_text("hunter2-wrong-passphrase\n")
    borg_lab.configure(probes={"repo": {"passphrase": {"file": str(wrong)}}})

    results = [borg_lab.probe(), borg_lab.probe("check"), borg_lab.restore_test()]
    cli = borg_lab.cli("probe", "repo", "--json")

    for result in results:
        assert result.status is Status.ERROR
        assert "wrong repository passphrase" in result.reason
    assert cli.returncode != 0 and "wrong repository passphrase" in cli.stdout + cli.stderr
    assert borg_lab.sandbox_entries() == []
    stored = borg_lab.database.read_bytes()
    seen = [stored.decode("latin-1"), caplog.text, cli.stdout, cli.stderr, *(r.reason for r in results)]
    for secret in ("hunter2-wrong-passphrase", PASSPHRASE):
        assert not any(secret in text for text in seen)


def test_passphrase_from_the_environment_reaches_borg(borg_lab, monkeypatch):
    healthy(borg_lab)
    monkeypatch.setenv("E2E_BORG_PASSPHRASE", PASSPHRASE)
    borg_lab.configure(probes={"repo": {"passphrase": {"env": "E2E_BORG_PASSPHRASE", "file": None}}})
    assert borg_lab.probe().status is Status.OK
    monkeypatch.delenv("E2E_BORG_PASSPHRASE")
    result = borg_lab.probe()
    assert result.status is Status.ERROR and "E2E_BORG_PASSPHRASE" in result.reason


def test_missing_repository_and_a_borg_that_is_not_1x_are_errors(borg_lab):
    borg_lab.configure(probes={"repo": {"repository": str(borg_lab.root / "no-such-repo")}})
    missing = borg_lab.probe()
    assert missing.status is Status.ERROR and "no borg repository" in missing.reason

    fake = borg_lab.wrapper("borg2", 'echo "borg 2.0.0b14"')
    borg_lab.configure(probes={"repo": {"borg_command": str(fake)}})
    result = borg_lab.probe()
    assert result.status is Status.ERROR and "speaks borg 1.x" in result.reason


def test_files_restore_test_passes_on_a_borg_archive(borg_lab):
    archive = healthy(borg_lab, age_hours=2)
    assert borg_lab.probe().status is Status.OK

    result = borg_lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    assert result.point_id == archive
    assert [c.name for c in result.checks] == ["expected_paths", "completeness", "canary", "spot_check", "db integrity"]
    assert all(c.status is Status.PASSED for c in result.checks), [c.evidence for c in result.checks]
    spot = next(c for c in result.checks if c.name == "spot_check")
    assert spot.details["sampled"] >= 10 and spot.details["mismatches"] == []
    assert result.files_restored == 33  # the database, 30 documents, the blob, the canary
    row = borg_lab.rows("SELECT * FROM restore_tests")[-1]
    assert row["status"] == "passed" and row["rpo_source"] == "canary"
    assert 2 * 3600 + 50 < row["rpo_seconds"] < 2 * 3600 + 600
    assert row["rto_seconds"] == pytest.approx(row["restore_seconds"] + row["verify_seconds"])
    assert borg_lab.sandbox_entries() == []
    assert borg_lab.rows("SELECT COUNT(*) AS n FROM leases WHERE released_at IS NULL")[0]["n"] == 0

    done = borg_lab.cli("restore-test", "app-files", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "passed"


def test_file_altered_at_the_same_size_and_mtime_fails_the_spot_check(borg_lab):
    original = borg_lab.source / "docs" / "doc05.txt"
    healthy(borg_lab)
    stat = original.stat()
    content = original.read_bytes()
    borg_lab.write("docs/doc05.txt", content[:-2] + b"X\n", mtime=stat.st_mtime)
    assert original.stat().st_size == stat.st_size
    borg_lab.configure(restore_tests={"app-files": {"spot_check": {"files": 0, "percent": 100}}})

    result = borg_lab.restore_test()

    assert result.status is Status.FAILED
    spot = next(c for c in result.checks if c.name == "spot_check")
    assert spot.status is Status.FAILED and "doc05.txt: sha256 differs" in spot.evidence
    assert result.rto_seconds is None


def test_sigterm_during_extract_records_and_leaves_no_sandbox(borg_lab):
    healthy(borg_lab)
    borg_lab.configure(probes={"repo": {"borg_command": str(borg_lab.wrapper("borg-slow", SLOW_EXTRACT))}})
    proc = subprocess.Popen([sys.executable, "-m", "drcheck", "--config", str(borg_lab.config_path),
                             "restore-test", "app-files"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: any((p / str(borg_lab.source).lstrip("/") / "data").exists() for p in borg_lab.sandbox_entries()),
             what="the extract to write into its sandbox")

    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr.decode()
    assert borg_lab.sandbox_entries() == []
    row = borg_lab.rows("SELECT * FROM restore_tests")[-1]
    assert row["status"] == "error" and "SIGTERM" in row["reason"]


def test_sigkill_during_extract_leaves_a_sandbox_the_next_run_reaps(borg_lab):
    healthy(borg_lab)
    borg_lab.configure(probes={"repo": {"borg_command": str(borg_lab.wrapper("borg-slow", SLOW_EXTRACT))}})
    proc = subprocess.Popen([sys.executable, "-m", "drcheck", "--config", str(borg_lab.config_path),
                             "restore-test", "app-files"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    wait_for(lambda: any((p / str(borg_lab.source).lstrip("/") / "data").exists() for p in borg_lab.sandbox_entries()),
             what="the extract to write into its sandbox")

    kill_session(proc.pid)  # drcheck, the wrapper and borg: nothing gets to clean up
    proc.communicate(timeout=60)
    assert borg_lab.sandbox_entries() != []

    borg_lab.configure()  # plain borg again
    assert borg_lab.restore_test().status is Status.PASSED
    assert borg_lab.sandbox_entries() == []
    reaped = borg_lab.rows("SELECT * FROM restore_tests WHERE status = 'error'")
    assert reaped and "interrupted" in reaped[-1]["reason"]
