"""`drcheck config validate` catches settings that validate alone but would surely fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from drcheck.config_loader import ConfigError, load
from drcheck.validation import dependency_cycles, surely_failing, warnings


def validate(directory: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "DRCHECK_CONFIG",
                                                              "CREDENTIALS_DIRECTORY")}
    return subprocess.run([sys.executable, "-m", "drcheck", "--config", "drcheck.toml", "config", "validate"],
                          cwd=directory, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60)


def test_the_valid_config_has_no_problem(builders, config_dir):
    builders.write_config(config_dir)
    done = validate(config_dir)
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout


def test_missing_secret_file_is_named(builders, config_dir):
    builders.write_config(config_dir)
    (config_dir / "secrets" / "restic-password").unlink()
    done = validate(config_dir)
    assert done.returncode == 1
    assert (f"drcheck.toml: probes.local-repo.password: secret file {config_dir}/secrets/restic-password "
            "does not exist") in done.stderr
    assert "Traceback" not in done.stderr


def test_unreadable_secret_file_is_named(builders, config_dir):
    builders.write_config(config_dir)
    secret = config_dir / "secrets" / "restic-password"
    secret.unlink()
    secret.mkdir()  # unreadable as a file even for root
    done = validate(config_dir)
    assert done.returncode == 1
    assert "probes.local-repo.password: secret file" in done.stderr and "is not a regular file" in done.stderr


def test_credentials_are_checked_only_under_systemd(builders, config_dir, tmp_path_factory):
    builders.write_config(config_dir)
    assert validate(config_dir).returncode == 0  # no $CREDENTIALS_DIRECTORY: cannot know
    credentials = tmp_path_factory.mktemp("credentials")
    done = validate(config_dir, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert done.returncode == 1
    assert "probes.offsite-repo.environment.AWS_SECRET_ACCESS_KEY: secret file" in done.stderr
    assert f"{credentials}/aws-secret does not exist" in done.stderr
    (credentials / "aws-secret").write_text("x")
    assert validate(config_dir, {"CREDENTIALS_DIRECTORY": str(credentials)}).returncode == 0


@pytest.mark.parametrize("expected, message", [
    ("../../etc/passwd", "contains '..'"),
    ("db/../../x", "contains '..'"),
    ("/elsewhere/file", "is outside every source path of sis"),
])
def test_expected_paths_that_escape(builders, config_dir, expected, message):
    config = builders.valid_config()
    config["probes"]["local-repo"]["systems"][0]["paths"] = ["src/sis"]
    config["restore_tests"]["sis-files"]["expected_paths"] = ["db/sis.db", expected]
    builders.write_config(config_dir, config)
    (problem,) = surely_failing(load(config_dir / "drcheck.toml"))
    assert problem.startswith("drcheck.toml: restore_tests.sis-files.expected_paths[1]: ")
    assert message in problem


@pytest.mark.parametrize("listen, message", [
    ("127.0.0.1:70000", "port 70000 is out of range (1-65535)"),
    ("127.0.0.1:0", "port 0 is out of range"),
    ("999.1.1.1:9847", "'999.1.1.1' is not a valid IPv4 address"),
    ("bad_host!:9847", "is not a valid host name"),
])
def test_bad_metrics_listen(builders, config_dir, listen, message):
    config = builders.valid_config()
    config["metrics"]["listen"] = listen
    builders.write_config(config_dir, config)
    with pytest.raises(ConfigError) as caught:
        load(config_dir / "drcheck.toml")
    assert any(e.startswith("drcheck.toml: metrics.listen: ") and message in e for e in caught.value.errors), \
        caught.value.errors


@pytest.mark.parametrize("listen", ["127.0.0.1:9847", ":9847", "localhost:1", "metrics.example.org:65535"])
def test_good_metrics_listen(builders, config_dir, listen):
    config = builders.valid_config()
    config["metrics"]["listen"] = listen
    builders.write_config(config_dir, config)
    load(config_dir / "drcheck.toml")


def test_dependency_cycles_are_reported_once_each(builders, config_dir):
    runbooks = builders.valid_runbooks()
    runbooks["fileserver"]["depends_on"] = ["sis"]  # sis -> fileserver -> sis
    builders.write_config(config_dir, runbooks=runbooks)
    problems = surely_failing(load(config_dir / "drcheck.toml"))
    assert problems == ["runbooks/fileserver.toml: depends_on: dependency cycle fileserver -> sis -> fileserver; "
                        "no recovery order exists"]


def test_cycle_finder():
    assert dependency_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c", "a"]]
    assert dependency_cycles({"a": ["a"]}) == [["a", "a"]]
    assert dependency_cycles({"a": ["b"], "b": [], "c": ["a", "b"]}) == []
    assert dependency_cycles({"a": ["x"]}) == []  # unknown systems are another error


@pytest.mark.parametrize("targets, key, message", [
    ({"rto": "2d", "mtd": "1d", "wrt": None}, "rto", "RTO 2d is longer than the maximum tolerable downtime (mtd 1d)"),
    ({"rto": "20h", "mtd": "1d", "wrt": "6h"}, "wrt", "RTO + WRT = 1d 2h is longer than the maximum tolerable"),
])
def test_contradicting_recovery_targets(builders, config_dir, targets, key, message):
    runbooks = builders.valid_runbooks()
    runbooks["sis"].update({k: v for k, v in targets.items() if v is not None})
    if targets["wrt"] is None:
        runbooks["sis"].pop("wrt")
    builders.write_config(config_dir, runbooks=runbooks)
    (problem,) = surely_failing(load(config_dir / "drcheck.toml"))
    assert problem.startswith(f"runbooks/sis.toml: {key}: ") and message in problem, problem


def test_a_timeout_longer_than_the_interval_is_only_a_warning(builders, config_dir):
    config = builders.valid_config()
    config["restore_tests"]["sis-files"]["schedule"] = {"interval": "30m"}  # timeout 1h
    builders.write_config(config_dir, config)
    loaded = load(config_dir / "drcheck.toml")
    assert surely_failing(loaded) == []
    (warning,) = [w for w in warnings(loaded) if "sis-files" in w]
    assert warning.startswith("drcheck.toml: restore_tests.sis-files.schedule: the job may run for up to 1h")
    done = validate(config_dir)
    assert done.returncode == 0
    assert "warning: drcheck.toml: restore_tests.sis-files.schedule" in done.stderr
