"""Shared builders for the config tests: a valid drcheck.toml (as a dict), its runbooks, and
a writer that puts both into a directory. Every section and secret form is used once, so
mutating one key of it exercises one part of the schema."""

from __future__ import annotations

import copy
import types
from pathlib import Path

import pytest
import tomli_w

_CONFIG = {
    "agent": {
        "name": "test-agent",
        "site": "hq",
        "state_dir": "state",
        "sandbox_root": "state/sandbox",
        "runbooks_dir": "runbooks",
        "timezone": "UTC",
        "max_parallel_jobs": 2,
        "job_timeout": "1h",
        "misfire_grace": 600,
    },
    "metrics": {"enabled": True, "listen": "127.0.0.1:9847"},
    "reports": {"output_dir": "reports", "weekly_schedule": {"cron": "0 7 * * 1", "jitter": "5m"}},
    "sites": {"hq": {"description": "head office"}, "dr": {"description": "DR site", "distance_km": 15.5}},
    "copies": {"local": {"site": "hq", "media": "disk"}, "offsite": {"site": "dr", "media": "object"}},
    "probes": {
        "local-repo": {
            "kind": "restic",
            "copy": "local",
            "repository": "repo",
            "password": {"file": "secrets/restic-password"},
            "environment": {"RESTIC_COMPRESSION": "auto"},
            "snapshots": {"schedule": {"interval": "15m"}, "timeout": "10m"},
            "check": {"schedule": {"cron": "0 3 * * *"}, "read_data_subset": "5%"},
            "systems": [
                {"system": "sis", "hosts": ["sis01"], "paths": ["src/sis"]},
                {"system": "fileserver", "tags": ["files"], "paths": ["src/files"]},
            ],
        },
        "offsite-repo": {
            "kind": "restic",
            "copy": "offsite",
            "repository": "s3:https://s3.example.com/backups",
            "password": {"env": "OFFSITE_PASSWORD"},
            "environment": {
                "AWS_ACCESS_KEY_ID": {"env": "AWS_KEY_ID"},
                "AWS_SECRET_ACCESS_KEY": {"credential": "aws-secret"},
            },
            "systems": [{"system": "sis", "hosts": ["sis01"]}],
        },
    },
    "restore_tests": {
        "sis-files": {
            "kind": "files",
            "probe": "local-repo",
            "system": "sis",
            "schedule": {"cron": "30 1 * * *"},
            "timeout": "1h",
            "target_dir": "state/sandbox/sis",
            "expected_paths": ["db/sis.db"],
            "canary": {"plant_schedule": {"interval": "1h"}, "max_age": "1d"},
            "spot_check": {"files": 5, "percent": 10.0},
            "commands": [
                {"name": "db ok", "run": ["sqlite3", "{data}/db/sis.db", "pragma integrity_check"],
                 "expect_exit": 0, "expect_output": "^ok$", "timeout": "5m"}
            ],
        },
    },
}

_RUNBOOKS = {
    "sis": {
        "name": "Student Information System", "tier": 1, "owner": "Network Administrator",
        "rto": "4h", "rpo": "24h", "mtd": "1d", "wrt": "2h",
        "depends_on": ["fileserver"], "assets": ["vm:sis01"],
    },
    "fileserver": {
        "name": "File server", "tier": 2, "owner": "Technician", "rto": "8h", "rpo": "1d", "mtd": "3d",
        "recovery_steps": [{"action": "Restore the shares.", "owner": "Technician", "expected_duration": "4h"}],
    },
}


def valid_config() -> dict:
    """Return a fresh, valid drcheck.toml as a dict."""
    return copy.deepcopy(_CONFIG)


def valid_runbooks() -> dict[str, dict]:
    """Return fresh, valid runbooks as {system: dict} (written to runbooks/<system>.toml)."""
    return copy.deepcopy(_RUNBOOKS)


def write_config(directory: Path, config: dict | None = None, runbooks: dict | None = None) -> Path:
    """Write drcheck.toml and runbooks/*.toml (default: the valid ones) into directory;
    return the path of drcheck.toml."""
    directory = Path(directory)
    runbooks_dir = directory / "runbooks"
    runbooks_dir.mkdir(parents=True, exist_ok=True)
    for stale in runbooks_dir.glob("*.toml"):
        stale.unlink()
    for system, data in (valid_runbooks() if runbooks is None else runbooks).items():
        (runbooks_dir / f"{system}.toml").write_text(tomli_w.dumps(data))
    path = directory / "drcheck.toml"
    path.write_text(tomli_w.dumps(valid_config() if config is None else config))
    secret = directory / "secrets" / "restic-password"  # the file secret of the valid config exists
    secret.parent.mkdir(exist_ok=True)
    secret.write_text("not a real password\n")
    return path


@pytest.fixture(scope="session")
def builders() -> types.SimpleNamespace:
    """The builders above, for test modules (conftest is not importable by name)."""
    return types.SimpleNamespace(valid_config=valid_config, valid_runbooks=valid_runbooks, write_config=write_config)


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory that is also the working directory, so messages name files
    as "drcheck.toml" and "runbooks/<system>.toml"."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
