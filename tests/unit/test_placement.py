"""Restore targets may not overlap what drcheck protects: sources, repositories, the state
and reports directories, runbooks, system directories. Refused by every load (so by
`config validate` too, one line per problem) and again right before a restore, symlinks
resolved as they are then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from drcheck.config_loader import ConfigError, load
from drcheck.engine import run_restore_test
from drcheck.placement import is_system_directory
from drcheck.results import Status
from drcheck.store import Store


def write(builders, root: Path, agent=None, test=None, probe=None) -> Path:
    config = builders.valid_config()
    config["agent"].update(agent or {})
    for section, changes in ((config["restore_tests"]["sis-files"], test), (config["probes"]["local-repo"], probe)):
        for key, value in (changes or {}).items():
            if value is None:
                section.pop(key, None)
            else:
                section[key] = value
    return builders.write_config(root, config)


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return caught.value.errors


@pytest.mark.parametrize("sandbox_root, relation, what", [
    ("src/sis", "is", "a source path of sis"),
    ("src", "contains", "a source path of sis"),
    ("src/files/scratch", "lies inside", "a source path of fileserver"),
    ("repo", "is", "the repository of probe local-repo"),
    ("repo/data/tmp", "lies inside", "the repository of probe local-repo"),
    (".", "contains", "the state directory"),
    ("state", "is", "the state directory"),
    ("reports", "is", "the reports directory"),
    ("reports/sandbox", "lies inside", "the reports directory"),
    ("runbooks", "is", "the runbooks directory"),
], ids=lambda v: str(v))
def test_sandbox_root_overlapping_protected_paths_is_refused(builders, config_dir, sandbox_root, relation, what):
    path = write(builders, config_dir, agent={"sandbox_root": sandbox_root}, test={"target_dir": None})
    problems = [e for e in errors_of(path) if "agent.sandbox_root" in e]
    assert len(problems) == 1, problems
    assert problems[0].startswith("drcheck.toml: agent.sandbox_root: ")
    assert f" {relation} {what} " in problems[0]


@pytest.mark.parametrize("directory", ["/", "/etc", "/var", "/usr", "/tmp", "/home", "/root", "/lib64", "/var/lib",
                                       "/proc", "/dev", "/boot", "/opt", "/srv", "/run", "/sys", "/bin", "/sbin"])
def test_system_directories_are_refused(builders, config_dir, directory):
    path = write(builders, config_dir, agent={"sandbox_root": directory}, test={"target_dir": None})
    (problem,) = [e for e in errors_of(path) if "agent.sandbox_root" in e]
    assert f"is the system directory {directory}" in problem


def test_below_a_system_directory_is_fine():
    assert not is_system_directory(Path("/var/lib/drcheck/sandbox"))
    assert not is_system_directory(Path("/tmp/drcheck-sandbox"))
    assert is_system_directory(Path("/lib32")) and is_system_directory(Path("/usr/lib64"))


def test_sandbox_inside_the_state_directory_is_the_default_layout(builders, config_dir):
    loaded = load(write(builders, config_dir))  # state/sandbox under state: fine
    assert loaded.config.agent.sandbox_root == config_dir / "state" / "sandbox"


def test_a_symlink_into_a_source_is_refused(builders, config_dir):
    (config_dir / "src" / "sis").mkdir(parents=True)
    os.symlink(config_dir / "src" / "sis", config_dir / "sandbox-link")
    path = write(builders, config_dir, agent={"sandbox_root": "sandbox-link"}, test={"target_dir": None})
    (problem,) = [e for e in errors_of(path) if "agent.sandbox_root" in e]
    assert f"resolves through a symlink to {config_dir / 'src' / 'sis'}" in problem


def test_a_fixed_target_dir_is_checked_too(builders, config_dir):
    path = write(builders, config_dir, agent={"sandbox_root": "state/sandbox"},
                 probe={"systems": [{"system": "sis", "paths": ["state/sandbox/sis"]}, {"system": "fileserver",
                                                                                       "tags": ["files"]}]})
    problems = errors_of(path)
    assert any(e.startswith("drcheck.toml: restore_tests.sis-files.target_dir: ") and
               "is a source path of sis" in e for e in problems), problems


def test_remote_repositories_are_not_paths(builders, config_dir):
    path = write(builders, config_dir, agent={"sandbox_root": "sandbox"}, test={"target_dir": None},
                 probe={"repository": "sftp:backup@host:/srv/restic"})
    load(path)


def test_config_validate_prints_one_line_per_problem(builders, config_dir):
    path = write(builders, config_dir, agent={"sandbox_root": "src"}, test={"target_dir": None},
                 probe={"repository": "src/repo"})
    done = subprocess.run([sys.executable, "-m", "drcheck", "--config", path.name, "config", "validate"],
                          cwd=config_dir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("drcheck.toml: agent.sandbox_root: ") and "contains" in lines[0]
    assert "Traceback" not in done.stderr
    assert lines[-1] == "1 configuration problem(s); nothing was run."


def test_a_symlink_created_after_validation_is_refused_before_anything_is_written(builders, config_dir):
    source = config_dir / "src" / "sis"
    source.mkdir(parents=True)
    (source / "precious.db").write_text("live data")
    path = write(builders, config_dir, agent={"sandbox_root": "sandbox"}, test={"target_dir": None})
    loaded = load(path)  # valid now
    os.symlink(source, config_dir / "sandbox")  # an operator (or attacker) links it afterwards

    with Store(loaded.database_path) as store:
        result = run_restore_test(loaded, store, "sis-files")

    assert result.status is Status.ERROR
    assert result.reason.startswith("restore refused: agent.sandbox_root: ")
    assert "resolves through a symlink" in result.reason and "a source path of sis" in result.reason
    assert sorted(p.name for p in source.iterdir()) == ["precious.db"]
    with Store(loaded.database_path) as store:
        assert store.query("SELECT COUNT(*) AS n FROM leases")[0]["n"] == 0
        assert store.query("SELECT status FROM restore_tests")[0]["status"] == "error"
