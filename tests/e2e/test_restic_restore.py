"""Restore tests and probes against real restic repositories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from drcheck.config_loader import ConfigError
from drcheck.results import Status

from .conftest import SLOW_RESTORE, utc, wait_for

pytestmark = pytest.mark.e2e


def healthy(lab, snapshot_age_hours: float = 1.0) -> str:
    lab.plant_canary(at=utc(hours=snapshot_age_hours, minutes=1))
    return lab.backup(at=utc(hours=snapshot_age_hours))


def test_healthy_restore_passes_with_rto_and_rpo_stored(lab):
    snapshot = healthy(lab, snapshot_age_hours=2)
    assert lab.probe().status is Status.OK

    result = lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    assert result.point_id[:8] == snapshot[:8]
    assert [c.name for c in result.checks] == ["expected_paths", "completeness", "canary", "spot_check", "db integrity"]
    assert all(c.status is Status.PASSED for c in result.checks)
    row = lab.rows("SELECT * FROM restore_tests")[-1]
    assert row["status"] == "passed"
    assert row["restore_seconds"] > 0 and row["verify_seconds"] > 0
    assert row["rto_seconds"] == pytest.approx(row["restore_seconds"] + row["verify_seconds"])
    # achieved RPO comes from the canary planted a minute before the 2 h old snapshot
    assert row["rpo_source"] == "canary"
    assert 2 * 3600 + 50 < row["rpo_seconds"] < 2 * 3600 + 600
    assert row["rto_target_seconds"] == 3600 and row["rpo_target_seconds"] == 86400
    assert len(lab.rows("SELECT * FROM check_results WHERE restore_test_id = ?", [row["id"]])) == 5
    assert lab.sandbox_entries() == []
    assert lab.rows("SELECT COUNT(*) AS n FROM leases WHERE released_at IS NULL")[0]["n"] == 0


def test_probe_records_newest_point_per_system(lab):
    lab.backup(at=utc(hours=30))
    from_app01 = lab.backup(at=utc(hours=3))
    from_elsewhere = lab.backup(at=utc(hours=1), host="laptop")

    result = lab.probe()  # the rule names only a path: every host's snapshot of it counts
    (point,) = result.newest
    assert result.status is Status.OK
    assert point.system == "app" and point.point_id[:8] == from_elsewhere[:8]
    assert lab.rows("SELECT point_count FROM restore_points ORDER BY id")[-1]["point_count"] == 3

    lab.configure(probes={"repo": {"systems": [{"system": "app", "hosts": ["app01"], "paths": [str(lab.source)]}]}})
    result = lab.probe()
    (point,) = result.newest
    assert point.point_id[:8] == from_app01[:8]
    assert [f.code for f in result.findings] == ["unmapped_snapshots"]
    assert result.status is Status.OK  # a warning, not a failure


def test_corrupted_pack_fails_repository_check(lab):
    healthy(lab)
    assert lab.probe("check").status is Status.OK
    pack = max(lab.data_packs(), key=lambda p: p.stat().st_size)
    pack.chmod(0o644)
    data = bytearray(pack.read_bytes())
    for offset in range(100, min(len(data), 4000), 7):
        data[offset] ^= 0xFF
    pack.write_bytes(bytes(data))

    result = lab.probe("check")

    assert result.status is Status.FAILED
    assert result.reason.startswith("repository check failed: backup data is damaged")
    assert lab.rows("SELECT status FROM probe_runs WHERE action = 'check' ORDER BY id")[-1]["status"] == "failed"


def test_tampered_pack_fails_the_restore_and_cleans_up(lab):
    healthy(lab)
    for pack in lab.data_packs():
        pack.chmod(0o644)
        data = bytearray(pack.read_bytes())
        data[len(data) // 3] ^= 0xFF
        pack.write_bytes(bytes(data))

    result = lab.restore_test()

    assert result.status is Status.FAILED
    assert result.reason.startswith("backup data is damaged:")
    assert "ciphertext verification failed" in result.reason or "Pack ID" in result.reason
    assert result.rto_seconds is None
    assert lab.sandbox_entries() == []


def test_stale_newest_snapshot_breaches_rpo(lab):
    lab.plant_canary(at=utc(days=3, minutes=1))
    lab.backup(at=utc(days=3))

    probe = lab.probe()
    test = lab.restore_test()

    assert probe.status is Status.OK and probe.findings == []  # facts; how old is too old is a rule's call
    shown = lab.cli("probe", "repo")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "newest restore point in local is 3d" in shown.stdout and "R2.backup_age" in shown.stdout
    assert test.status is Status.FAILED
    assert "achieved RPO 3d" in test.reason and "exceeds target 1d" in test.reason


def test_file_altered_since_backup_fails_spot_check(lab):
    original = lab.source / "docs" / "doc05.txt"
    stat = original.stat()
    healthy(lab)
    # Same size and mtime, different bytes: what silent corruption on either side looks like.
    content = original.read_bytes()
    lab.write("docs/doc05.txt", content[:-2] + b"X\n", mtime=stat.st_mtime)
    lab.configure(restore_tests={"app-files": {"spot_check": {"files": 0, "percent": 100}}})

    result = lab.restore_test()

    assert result.status is Status.FAILED
    spot = next(c for c in result.checks if c.name == "spot_check")
    assert spot.status is Status.FAILED
    assert "doc05.txt: sha256 differs" in spot.evidence
    assert result.rto_seconds is None  # no RTO for a restore that did not verify


def test_changed_live_files_are_not_compared(lab):
    healthy(lab)
    for i in range(30):  # every doc changes after the snapshot, with a new mtime
        lab.write(f"docs/doc{i:02d}.txt", f"edited {i}\n")
    lab.configure(restore_tests={"app-files": {"spot_check": {"files": 0, "percent": 100}}})

    result = lab.restore_test()

    spot = next(c for c in result.checks if c.name == "spot_check")
    assert spot.status is Status.PASSED, spot.evidence
    assert spot.details["eligible"] == spot.details["sampled"]
    assert not any("doc" in path for path in spot.details["mismatches"])


def test_file_missing_from_snapshot_fails_expected_paths(lab):
    lab.plant_canary(at=utc(minutes=5))
    lab.backup(at=utc(minutes=4), excludes=("important.db",))

    result = lab.restore_test()

    assert result.status is Status.FAILED
    expected = next(c for c in result.checks if c.name == "expected_paths")
    assert expected.status is Status.FAILED
    assert "data/important.db: missing" in expected.evidence


def test_missing_canary_fails_freshness(lab):
    lab.backup(at=utc(minutes=10))  # no canary was ever planted

    result = lab.restore_test()

    canary = next(c for c in result.checks if c.name == "canary")
    assert canary.status is Status.FAILED
    assert "no canary" in canary.evidence
    assert result.rpo_source == "restore_point"


def test_old_canary_fails_freshness_and_sets_true_rpo(lab):
    lab.plant_canary(at=utc(days=2))  # planting stopped two days ago, backups did not
    lab.backup(at=utc(minutes=10))

    result = lab.restore_test()

    canary = next(c for c in result.checks if c.name == "canary")
    assert canary.status is Status.FAILED and canary.evidence.startswith("stale canary")
    assert result.rpo_source == "canary" and result.rpo_seconds > 2 * 86400 - 60
    assert "achieved RPO 2d" in result.reason


def test_forged_canary_is_rejected(lab):
    lab.write(".drcheck-canary", json.dumps({"magic": "drcheck-canary/1", "system": "app", "token": "f" * 32,
                                             "written_at": utc(minutes=1).isoformat()}))
    lab.backup()

    result = lab.restore_test()

    canary = next(c for c in result.checks if c.name == "canary")
    assert canary.status is Status.FAILED
    assert "not planted by this agent" in canary.evidence


def test_wrong_password_is_a_recorded_error_with_reason(lab):
    healthy(lab)
    wrong = lab.root / "wrong-password"
    wrong.write_text("hunter2-wrong\n")
    lab.configure(probes={"repo": {"password": {"file": str(wrong)}}})

    probe = lab.probe()
    test = lab.restore_test()

    for result in (probe, test):
        assert result.status is Status.ERROR
        assert "wrong repository password" in result.reason
    reasons = lab.rows("SELECT reason FROM probe_runs UNION ALL SELECT reason FROM restore_tests")
    assert reasons and not any("hunter2" in (r["reason"] or "") for r in reasons)
    assert lab.sandbox_entries() == []


def test_password_from_environment_reaches_restic(lab, monkeypatch):
    healthy(lab)
    monkeypatch.setenv("E2E_RESTIC_PASSWORD", "correct horse battery staple")
    lab.configure(probes={"repo": {"password": {"env": "E2E_RESTIC_PASSWORD", "file": None}}})
    assert lab.probe().status is Status.OK
    monkeypatch.delenv("E2E_RESTIC_PASSWORD")
    result = lab.probe()
    assert result.status is Status.ERROR and "E2E_RESTIC_PASSWORD" in result.reason


def test_unreachable_repository_is_a_recorded_error(lab):
    lab.configure(probes={"repo": {"repository": str(lab.root / "no-such-repo")}})
    result = lab.probe()
    assert result.status is Status.ERROR
    assert "no restic repository" in result.reason


def test_target_outside_sandbox_root_is_refused_by_config(lab):
    outside = lab.root / "elsewhere"
    lab.configure(restore_tests={"app-files": {"target_dir": str(outside)}})
    with pytest.raises(ConfigError) as exc:
        lab.loaded()
    assert any("target_dir" in e and "outside agent.sandbox_root" in e for e in exc.value.errors)


def test_target_symlinked_out_of_sandbox_is_refused_at_restore(lab):
    healthy(lab)
    outside = lab.root / "outside"
    outside.mkdir()
    lab.sandbox_root.mkdir()
    (lab.sandbox_root / "restore-here").symlink_to(outside)
    lab.configure(restore_tests={"app-files": {"target_dir": str(lab.sandbox_root / "restore-here")}})

    result = lab.restore_test()

    assert result.status is Status.ERROR
    assert "outside the sandbox root" in result.reason
    assert list(outside.iterdir()) == []
    assert (lab.sandbox_root / "restore-here").is_symlink()  # refused before touching anything


def test_symlink_leading_out_of_the_restore_is_not_followed(lab, tmp_path_factory):
    secret_dir = tmp_path_factory.mktemp("outside")
    (secret_dir / "payroll.csv").write_text("not yours\n")
    (lab.source / "docs" / "escape").symlink_to(secret_dir)
    healthy(lab)
    lab.configure(restore_tests={"app-files": {"expected_paths": ["docs/escape/payroll.csv"]}})

    result = lab.restore_test()

    expected = next(c for c in result.checks if c.name == "expected_paths")
    assert expected.status is Status.FAILED
    assert "refused" in expected.evidence and "outside the sandbox" in expected.evidence
    assert (secret_dir / "payroll.csv").read_text() == "not yours\n"
    assert lab.sandbox_entries() == []


def test_sandbox_is_removed_when_restic_fails_midway(lab):
    healthy(lab)
    wrapper = lab.wrapper("restic-crash", """for a in "$@"; do
  if [ "$a" = restore ]; then "$RESTIC" "$@"; echo "Fatal: simulated crash" >&2; exit 3; fi
done
exec "$RESTIC" "$@"
""")
    lab.configure(probes={"repo": {"restic_command": str(wrapper)}})

    result = lab.restore_test()

    assert result.status is Status.ERROR
    assert "simulated crash" in result.reason
    assert lab.sandbox_entries() == []


def test_sigterm_during_restore_records_and_cleans_up(lab):
    healthy(lab)
    wrapper = lab.wrapper("restic-slow", SLOW_RESTORE)
    lab.configure(probes={"repo": {"restic_command": str(wrapper)}})
    proc = subprocess.Popen([sys.executable, "-m", "drcheck", "--config", str(lab.config_path),
                             "restore-test", "app-files"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: any((p / str(lab.source).lstrip("/")).exists() for p in lab.sandbox_entries()),
             what="the restore to write into its sandbox")

    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr.decode()
    assert lab.sandbox_entries() == []
    row = lab.rows("SELECT * FROM restore_tests")[-1]
    assert row["status"] == "error" and "SIGTERM" in row["reason"]


def test_command_check_failure_fails_the_test(lab):
    healthy(lab)
    lab.configure(restore_tests={"app-files": {"commands": [
        {"name": "row count", "run": [sys.executable, "-c", "print(41)"], "expect_output": "^500$"}]}})

    result = lab.restore_test()

    check = next(c for c in result.checks if c.name == "row count")
    assert check.status is Status.FAILED
    assert "does not match" in check.evidence
    assert result.status is Status.FAILED


def test_cli_json_and_exit_codes(lab):
    healthy(lab)
    ok = lab.cli("restore-test", "app-files", "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["status"] == "passed" and data["system"] == "app"
    assert {c["name"] for c in data["checks"]} == {"expected_paths", "completeness", "canary", "spot_check",
                                                     "db integrity"}

    probe = lab.cli("probe", "repo", "--json")
    assert probe.returncode == 0 and json.loads(probe.stdout)["restore_points"][0]["system"] == "app"

    status = lab.cli("status", "--json")
    assert status.returncode == 0, status.stdout
    (system,) = json.loads(status.stdout)["systems"]
    assert system["ok"] is True and system["last_test"]["status"] == "passed"

    os.remove(lab.source / "data" / "important.db")
    lab.backup()
    failed = lab.cli("restore-test", "app-files")
    assert failed.returncode == 1
    assert "failed" in failed.stdout
    assert lab.cli("restore-test", "nope").returncode == 1


def test_restored_source_path_that_is_a_symlink_out_is_refused(lab):
    real = lab.source.with_name("app-real")
    lab.source.rename(real)
    lab.source.symlink_to(real)  # restic stores the link itself; restored, it points at live data
    lab.backup()

    result = lab.restore_test()

    command = next(c for c in result.checks if c.name == "db integrity")
    assert command.status is Status.FAILED and command.evidence.startswith("refused:")
    assert result.status is Status.FAILED
    assert lab.sandbox_entries() == []


def test_canary_edited_to_look_fresh_is_rejected(lab):
    lab.plant_canary(at=utc(days=3))
    path = lab.source / ".drcheck-canary"
    data = json.loads(path.read_text())
    data["written_at"] = utc(minutes=2).isoformat()  # same token, fresher time
    path.write_text(json.dumps(data))
    lab.backup()

    result = lab.restore_test()

    canary = next(c for c in result.checks if c.name == "canary")
    assert canary.status is Status.FAILED and "altered" in canary.evidence
    assert result.rpo_source == "restore_point"


def test_canary_of_another_system_is_rejected(lab):
    from drcheck import canary as canaries
    from drcheck.store import Store

    with Store(lab.database) as store:
        canaries.plant(store, "other-files", "payroll", lab.source / ".drcheck-canary", utc(minutes=3))
    lab.backup()

    canary = next(c for c in lab.restore_test().checks if c.name == "canary")
    assert canary.status is Status.FAILED and "planted for 'payroll'" in canary.evidence


def test_checks_that_cannot_run_make_an_error_not_a_failure(lab):
    healthy(lab)
    empty = lab.root / "not-mounted"
    empty.mkdir()
    lab.configure(restore_tests={"app-files": {
        "spot_check": {"files": 5, "source_root": str(empty)},
        "commands": [{"name": "tool", "run": [str(lab.root / "no-such-tool")]}]}})

    result = lab.restore_test()

    by_name = {c.name: c for c in result.checks}
    assert by_name["spot_check"].status is Status.ERROR and "nothing to compare" in by_name["spot_check"].evidence
    assert by_name["tool"].status is Status.ERROR and "cannot run the check" in by_name["tool"].evidence
    assert result.status is Status.ERROR
    assert result.rto_seconds is None


def test_cli_prints_names_with_brackets_literally(lab):
    healthy(lab)
    lab.configure(restore_tests={"app-files": {"expected_paths": ["Budget [draft].xlsx", "x[/y]"]}})

    done = lab.cli("restore-test", "app-files")

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Budget [draft].xlsx: missing" in done.stdout
    assert "x[/y]: missing" in done.stdout
