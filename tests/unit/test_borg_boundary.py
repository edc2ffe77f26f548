"""The borg kind with its client replaced at the clients/ boundary (create_autospec):
archives mapped to systems, listings that would escape the sandbox, borg's failure
messages (real borg 1.2.4 --log-json stderr), command lines read for source paths."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from unittest.mock import create_autospec

import pytest
import tomli_w

from drcheck.clients.borg import Archive, BorgError, BorgRepository, Entry, create_paths, explain_failure
from drcheck.config_loader import ConfigError, load
from drcheck.engine import run_probe, run_restore_test
from drcheck.results import Status
from drcheck.store import Store

WHEN = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def archive(name: str, hours: float = 0, host: str = "app01", paths=("/srv/app",)) -> Archive:
    return Archive(name, "f" * 64, WHEN.replace(hour=10 - int(hours)), host, "root", tuple(paths))


@pytest.fixture
def repo(monkeypatch):
    """The borg client every probe builds, replaced by an autospec of BorgRepository."""
    mock = create_autospec(BorgRepository, instance=True)
    mock.archives.return_value = [archive("app01-1", hours=2), archive("app01-2", hours=1)]
    mock.list.return_value = iter([Entry("srv/app/ok.txt", "-", 3, WHEN)])
    monkeypatch.setattr("drcheck.probes.borg.BorgRepository", lambda *a, **k: mock)
    return mock


def write_config(tmp_path: Path, **probe) -> Path:
    (tmp_path / "runbooks").mkdir(exist_ok=True)
    (tmp_path / "runbooks" / "app.toml").write_text(tomli_w.dumps(
        {"name": "App", "tier": 1, "owner": "IT", "rto": "1h", "rpo": "1000d", "mtd": "1d"}))
    (tmp_path / "runbooks" / "web.toml").write_text(tomli_w.dumps(
        {"name": "Web", "tier": 2, "owner": "IT", "rto": "1h", "rpo": "1000d", "mtd": "1d"}))
    (tmp_path / "pw").write_text("x")
    path = tmp_path / "drcheck.toml"
    path.write_text(tomli_w.dumps({
        "agent": {"state_dir": "state", "sandbox_root": "sandbox"},
        "sites": {"s": {}}, "copies": {"c": {"site": "s"}},
        "probes": {"repo": {"kind": "borg", "copy": "c", "repository": "/nowhere", "passphrase": {"file": "pw"},
                            "systems": [{"system": "app", "name_glob": "app01-*", "paths": ["/srv/app"]}], **probe}},
        "restore_tests": {"t": {"kind": "files", "probe": "repo", "system": "app", "spot_check": {"files": 0},
                                "completeness": {"enabled": False}}},
    }))
    return path


def probe(config: Path, action: str = "archives"):
    loaded = load(config)
    with Store(loaded.database_path) as store:
        return run_probe(loaded, store, "repo", action)


def test_archives_map_to_systems_by_name_host_and_path(tmp_path, repo):
    repo.archives.return_value = [
        archive("app01-1", hours=3), archive("app01-2", hours=2),
        archive("web-1", hours=1, host="web01", paths=("/srv/www",)),
        archive("app01-elsewhere", hours=1, paths=("/home",)),          # name fits, paths do not
        archive("stranger", hours=1, host="laptop", paths=()),            # nothing fits, no paths known
    ]
    config = write_config(tmp_path, systems=[
        {"system": "app", "name_glob": "app01-*", "paths": ["/srv/app/db"]},
        {"system": "web", "hosts": ["web01"]},
    ])

    result = probe(config)

    assert result.status is Status.OK, result.reason
    assert {(p.system, p.point_id) for p in result.newest} == {("app", "app01-2"), ("web", "web-1")}
    assert result.point_counts == {"app": 2, "web": 1}
    assert {f.code for f in result.findings} == {"unmapped_archives", "archive_paths_unknown"}
    assert "stranger" in next(f.message for f in result.findings if f.code == "archive_paths_unknown")


def test_no_archive_for_a_system_is_a_fact_for_the_rules_not_a_finding(tmp_path, repo):
    repo.archives.return_value = [archive("web-1", host="web01")]
    result = probe(write_config(tmp_path))
    assert result.status is Status.OK and result.newest == []  # R2.backup_age judges the missing point
    assert [f.code for f in result.findings] == ["unmapped_archives"]


@pytest.mark.parametrize("error, status", [
    (BorgError("backup data is damaged: Data integrity error: Segment entry checksum mismatch", damaged=True),
     Status.FAILED),
    (BorgError("repository is locked by another borg process"), Status.ERROR),
])
def test_check_result_follows_the_damaged_flag(tmp_path, repo, error, status):
    repo.check.side_effect = error
    result = probe(write_config(tmp_path, check={"only": "archives", "last": 3}), "check")
    assert result.status is status and str(error) in result.reason
    repo.check.assert_called_once()
    assert repo.check.call_args.kwargs | {"timeout": None} == \
        {"verify_data": True, "only": "archives", "last": 3, "timeout": None}


@pytest.mark.parametrize("evil", ["srv/app/../../etc/cron.d/x", "../escape", "/etc/passwd", "srv/app/a\x00b", ""])
def test_entry_that_would_escape_refuses_before_any_sandbox(tmp_path, repo, evil):
    repo.list.return_value = iter([Entry("srv/app/ok.txt", "-", 3, WHEN), Entry(evil, "-", 3, WHEN)])
    loaded = load(write_config(tmp_path))

    with Store(loaded.database_path) as store:
        result = run_restore_test(loaded, store, "t")
        leases = store.query("SELECT * FROM leases")

    assert result.status is Status.ERROR
    assert "would escape the sandbox" in result.reason
    repo.extract.assert_not_called()  # refused before borg was asked to write anything
    assert leases == []               # and before a sandbox existed
    assert not loaded.config.agent.sandbox_root.exists() or not any(loaded.config.agent.sandbox_root.iterdir())


def test_file_with_lost_chunks_fails_the_restore_as_damaged(tmp_path, repo):
    repo.list.return_value = iter([Entry("srv/app/ok.txt", "-", 3, WHEN, healthy=False)])
    loaded = load(write_config(tmp_path))
    with Store(loaded.database_path) as store:
        result = run_restore_test(loaded, store, "t")
    assert result.status is Status.FAILED and "/srv/app/ok.txt lost chunks" in result.reason
    repo.extract.assert_not_called()


def test_clean_listing_is_extracted_into_a_leased_sandbox_with_relative_paths(tmp_path, repo):
    loaded = load(write_config(tmp_path))
    with Store(loaded.database_path) as store:
        result = run_restore_test(loaded, store, "t")
        (lease,) = store.query("SELECT * FROM leases")
    repo.list.assert_called_once_with("app01-2", [])  # the whole listing: the layout is read from it
    (call,) = repo.extract.call_args_list
    name, target, include = call.args[:3]
    assert (name, include) == ("app01-2", ["srv/app"])  # borg stores paths without the leading '/'
    assert Path(lease["resource"]) == target and lease["released_at"] and not target.exists()
    assert result.status is Status.PASSED and result.point_id == "app01-2"


# real stderr of borg 1.2.4 run with --log-json (ids and paths shortened)
WRONG_PASSPHRASE = ('{"type": "log_message", "time": 1795449489.7, "message": "passphrase supplied in BORG_PASSPHRASE, '
                    'by BORG_PASSCOMMAND or via BORG_PASSPHRASE_FD is incorrect.", "levelname": "ERROR", '
                    '"name": "borg.archiver", "msgid": "PassphraseWrong"}\n')
NO_REPO = ('{"type": "log_message", "time": 1795449490.1, "message": "Repository /tmp/nope does not exist.", '
           '"levelname": "ERROR", "name": "borg.archiver", "msgid": "Repository.DoesNotExist"}\n')
LOCKED = ('{"type": "log_message", "time": 1795449548.3, "message": "Failed to create/acquire the lock '
          '/srv/repo/lock.exclusive (timeout).", "levelname": "ERROR", "name": "borg.archiver", "msgid": "LockTimeout"}\n')
SSH_DOWN = ('{"type": "log_message", "time": 1795449545.1, "message": "Remote: ssh: connect to host 127.0.0.1 port 1: '
            'Connection refused", "levelname": "WARNING", "name": "root"}\n'
            '{"type": "log_message", "time": 1795449545.1, "message": "Connection closed by remote host. Is borg working '
            'on the server?", "levelname": "ERROR", "name": "borg.archiver", "msgid": "ConnectionClosedWithHint"}\n')
UNENCRYPTED = (
    '{"type": "question_prompt", "msgid": "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "message": "Warning: Attempting '
    'to access a previously unknown unencrypted repository!\\nDo you want to continue? [yN] "}\n'
    '{"env_var": "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "type": "question_env_answer", "msgid": '
    '"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "message": "no (from BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK)"}\n'
    '{"type": "question_accepted_false", "msgid": "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "message": "Aborting."}\n'
    '{"type": "log_message", "time": 1795449545.4, "message": "Cache initialization aborted", "levelname": "ERROR", '
    '"name": "borg.archiver", "msgid": "Cache.CacheInitAbortedError"}\n')
REPLAY = ('{"type": "log_message", "time": 1795449549.3, "message": "Cache, or information obtained from the security '
          'directory is newer than repository - this is either an attack or unsafe (multiple repos with same ID)", '
          '"levelname": "ERROR", "name": "borg.archiver", "msgid": "Cache.RepositoryReplay"}\n')
CHECK_DAMAGED = (
    '{"type": "log_message", "time": 1795449550.0, "message": "Starting repository check", "levelname": "INFO", '
    '"name": "borg.repository"}\n'
    '{"type": "log_message", "time": 1795449550.0, "message": "Data integrity error: Segment entry checksum mismatch '
    '[segment 14, offset 355390]", "levelname": "ERROR", "name": "borg.repository"}\n'
    '{"type": "log_message", "time": 1795449550.0, "message": "Index object count mismatch.", "levelname": "ERROR", '
    '"name": "borg.repository"}\n'
    '{"type": "log_message", "time": 1795449550.0, "message": "Finished full repository check, errors found.", '
    '"levelname": "ERROR", "name": "borg.repository"}\n')
EXTRACT_DAMAGED = (
    '{"type": "log_message", "time": 1795449489.2, "message": "Data integrity error: Segment entry checksum mismatch '
    '[segment 14, offset 355390]", "levelname": "ERROR", "name": "borg.archiver", "msgid": "IntegrityError"}\n'
    '{"type": "log_message", "time": 1795449489.2, "message": "Traceback (most recent call last):\\n  File ...", '
    '"levelname": "ERROR", "name": "borg.archiver"}\n')
CHECK_ARCHIVE_PROBLEM = (
    '{"type": "log_message", "time": 1.0, "message": "Archive consistency check complete, problems found.", '
    '"levelname": "ERROR", "name": "borg.archive"}\n')


@pytest.mark.parametrize("stderr, rc, problems, reason, damaged", [
    (WRONG_PASSPHRASE, 2, False, "wrong repository passphrase", False),
    (NO_REPO, 2, False, "no borg repository at the configured location", False),
    (LOCKED, 2, False, "repository is locked by another borg process (Failed to create/acquire the lock", False),
    (SSH_DOWN, 2, False, "cannot reach the repository (Remote: ssh: connect to host 127.0.0.1 port 1", False),
    (UNENCRYPTED, 2, False, "unencrypted repository refused", False),
    (REPLAY, 2, False, "repository is older than borg last saw it", False),
    (CHECK_DAMAGED, 1, True, "backup data is damaged: Data integrity error: Segment entry checksum mismatch "
                             "[segment 14, offset 355390] (+2 more)", True),
    (EXTRACT_DAMAGED, 2, False, "backup data is damaged: Data integrity error: Segment entry", True),
    (CHECK_ARCHIVE_PROBLEM, 1, True, "backup data is damaged: Archive consistency check complete, problems found.",
     True),
    ("Killed\n", 137, False, "borg exited 137: Killed", False),
])
def test_borg_failures_become_short_reasons(stderr, rc, problems, reason, damaged):
    explained, is_damaged = explain_failure(stderr, rc, problems)
    assert explained.startswith(reason) and is_damaged is damaged


@pytest.mark.parametrize("argv, paths", [
    (["borg", "create", "::a", "/srv/app", "/etc/"], ("/srv/app", "/etc")),
    (["/usr/bin/borg", "--lock-wait", "5", "create", "-sv", "--compression", "lz4", "-e", "*.tmp",
      "--exclude-from=/x", "repo::a", "/srv/app"], ("/srv/app",)),
    (["borg", "create", "-Clz4", "--pattern", "R /srv/app", "--pattern=- /srv/app/tmp", "::a"], ("/srv/app",)),
    (["borg", "create", "::a", "--", "/srv/-odd"], ("/srv/-odd",)),
    (["borg", "create", "::a", "relative/dir"], ()),                  # relative to an unknown cwd
    (["borg", "create", "--patterns-from", "/p", "::a"], ()),          # roots hidden in a file
    (["borg", "create", "--paths-from-stdin", "::a"], ()),
    (["borg", "create", "--comp", "lz4", "::a", "/srv"], ()),          # abbreviation: arity unknown
    (["borg", "create", "--some-new-option", "::a", "/srv"], ()),
    (["borg", "create", "::a", "/srv/../etc"], ()),
    (["borg", "create", "::a", "-"], ()),                              # stdin
    ([], ()),
])
def test_source_paths_are_read_from_create_command_lines_only_when_certain(argv, paths):
    assert create_paths(argv) == paths


@pytest.mark.parametrize("probe_keys, message", [
    ({"systems": [{"system": "app", "tags": ["daily"]}]}, "borg archives carry no tags"),
    ({"check": {"only": "repository"}}, "verify_data and last check archives"),
    ({"environment": {"BORG_PASSPHRASE": "hunter2"}}, "inline secrets are not allowed"),
    ({"passphrase": "hunter2"}, "inline secrets are not allowed"),
    ({"repository": "ssh://backup:hunter2@nas/./repo"}, "credentials inside the repository URL"),
])
def test_config_mistakes_are_reported_without_the_secret(tmp_path, probe_keys, message):
    with pytest.raises(ConfigError) as exc:
        load(write_config(tmp_path, **probe_keys))
    text = "\n".join(exc.value.errors)
    assert message in text and "hunter2" not in text


def test_remote_and_relative_repositories(tmp_path):
    assert load(write_config(tmp_path, repository="ssh://backup@nas:2222/./repo")).config.probes["repo"].repository \
        == "ssh://backup@nas:2222/./repo"
    assert load(write_config(tmp_path, repository="repo")).config.probes["repo"].repository == str(tmp_path / "repo")
