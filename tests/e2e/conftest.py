"""A real restic lab per test: live source files, a repository, dated snapshots, and a
drcheck.toml pointing at them. Nothing is mocked: drcheck runs the real restic."""

from __future__ import annotations

import copy
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import tomli_w

from drcheck import canary
from drcheck.config_loader import load
from drcheck.engine import run_probe, run_restore_test
from drcheck.store import Store
from tests.e2e.vcsim_fixtures import *  # noqa: F401,F403  (vcsim fixtures: vcsim_binary, make_vcenter, ...)
from tests.e2e.veeam_fixtures import *  # noqa: F401,F403  (Veeam REST replay: make_veeam)
from tests.e2e.imap_fixtures import *  # noqa: F401,F403  (Dovecot fixtures: imap_ca, make_imap)

RESTIC = shutil.which("restic")
requires_restic = pytest.mark.skipif(RESTIC is None, reason="restic is not installed (make test installs it)")

RUNBOOK = {
    "name": "Application server", "tier": 1, "owner": "Network Administrator",
    "rto": "1h", "rpo": "24h", "mtd": "8h",
    "recovery_steps": [{"action": "Restore from the newest verified point.", "owner": "IT"}],
}


def utc(**delta: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(**delta)


def deep_merge(base: dict, extra: dict) -> dict:
    """Merge `extra` into a copy of `base`; a None value removes the key."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class DrcheckSide:
    """What every lab shares: the live source of system "app" (a database, documents and a
    blob) and the drcheck side: its config (`base_config()` deep-merged with overrides),
    store, probe and restore-test runs, and the CLI. A lab sets `root`, `source`,
    `config_path`, `sandbox_root` and `default_action` (its kind's listing action)."""

    root: Path
    source: Path
    config_path: Path
    sandbox_root: Path
    default_action = "snapshots"
    blob_bytes = 64 * 1024

    # -- the live source ----------------------------------------------------------------

    def populate(self) -> None:
        (self.source / "data").mkdir(parents=True)
        with sqlite3.connect(self.source / "data" / "important.db") as db:
            db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            db.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(500)])
        db.close()
        for i in range(30):
            self.write(f"docs/doc{i:02d}.txt", f"document {i}\n" * (50 + i))
        self.write("blob.bin", os.urandom(self.blob_bytes))

    def write(self, rel: str, content: str | bytes, mtime: float | None = None) -> Path:
        path = self.source / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path


    @property
    def database(self) -> Path:
        return self.root / "state" / "drcheck.db"

    def base_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def configure(self, **overrides: Any) -> Path:
        """(Re)write drcheck.toml: the base config deep-merged with `overrides`."""
        self.config_path.write_text(tomli_w.dumps(deep_merge(self.base_config(), overrides)))
        return self.config_path

    def loaded(self):
        return load(self.config_path)

    def probe(self, action: str | None = None):
        loaded = self.loaded()
        with Store(loaded.database_path) as store:
            return run_probe(loaded, store, "repo", action or self.default_action)

    def restore_test(self, name: str = "app-files"):
        loaded = self.loaded()
        with Store(loaded.database_path) as store:
            return run_restore_test(loaded, store, name)

    def rows(self, sql: str, params=()) -> list[dict]:
        with Store(self.database) as store:
            return store.query(sql, params)

    def sandbox_entries(self) -> list[Path]:
        return list(self.sandbox_root.iterdir()) if self.sandbox_root.exists() else []

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "drcheck", "--config", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=self.root)



class ResticLab(DrcheckSide):
    """Source tree for system "app" at `source`, a repository and a config in `root`."""

    def __init__(self, root: Path, repository: str | None = None, env: dict[str, str] | None = None):
        self.root = root
        self.source = root / "live" / "app"
        self.repo = root / "repo"
        self.repository = repository or str(self.repo)  # a path, or a URL such as s3:http://…
        self.env = env or {}
        self.password_file = root / "restic-password"
        self.password_file.write_text("correct horse battery staple\n")
        self.password_file.chmod(0o600)
        self.sandbox_root = root / "sandbox"
        self.config_path = root / "drcheck.toml"
        (root / "runbooks").mkdir()
        (root / "runbooks" / "app.toml").write_text(tomli_w.dumps(RUNBOOK))
        self.populate()
        self.restic("init")
        self.configure()

    # -- restic -------------------------------------------------------------------------

    def restic(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, "RESTIC_REPOSITORY": self.repository,
               "RESTIC_PASSWORD_FILE": str(self.password_file),
               "RESTIC_CACHE_DIR": str(self.root / "cache"), "TZ": "UTC"}
        return subprocess.run([RESTIC, *args], env=env, capture_output=True, text=True, check=check, timeout=300)

    def backup(self, at: datetime | None = None, host: str = "app01", excludes: tuple[str, ...] = ()) -> str:
        """Take a snapshot of the source (dated `at`, UTC); return its id."""
        args = ["backup", "--json", "--host", host, str(self.source)]
        if at is not None:
            args += ["--time", at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")]
        for pattern in excludes:
            args += ["--exclude", pattern]
        out = self.restic(*args).stdout
        summary = [line for line in out.splitlines() if '"summary"' in line][-1]
        import json

        return json.loads(summary)["snapshot_id"]

    def plant_canary(self, at: datetime | None = None, test: str = "app-files") -> None:
        with Store(self.database) as store:
            canary.plant(store, test, "app", self.source / ".drcheck-canary", at or utc())

    def data_packs(self) -> list[Path]:
        return sorted(p for p in (self.repo / "data").rglob("*") if p.is_file())

    # -- drcheck ------------------------------------------------------------------------

    def base_config(self) -> dict[str, Any]:
        return {
            "agent": {"name": "e2e", "state_dir": "state", "sandbox_root": "sandbox", "runbooks_dir": "runbooks",
                      "timezone": "UTC", "job_timeout": "5m"},
            "metrics": {"enabled": False},
            "reports": {"output_dir": "reports"},
            "sites": {"office": {"description": "server room"}},
            "copies": {"local": {"site": "office"}},
            "probes": {"repo": {
                "kind": "restic", "copy": "local", "repository": self.repository,
                "password": {"file": str(self.password_file)}, "restic_command": RESTIC or "restic",
                "snapshots": {"timeout": "2m"}, "check": {"read_data_subset": "100%"},
                "systems": [{"system": "app", "paths": [str(self.source)]}],
            }},
            "restore_tests": {"app-files": {
                "kind": "files", "probe": "repo", "system": "app",
                "expected_paths": ["data/important.db", "docs"],
                "canary": {}, "spot_check": {"files": 10},
                "commands": [{"name": "db integrity", "run": [sys.executable, "-c", INTEGRITY, "{data}/data/important.db"],
                              "expect_output": "^ok"}],
            }},
        }

    def wrapper(self, name: str, body: str) -> Path:
        """Write an executable shell wrapper around restic (for slow or failing restores)."""
        path = self.root / name
        path.write_text(f"#!/bin/sh\nRESTIC={RESTIC}\n{body}\n")
        path.chmod(0o755)
        return path


INTEGRITY = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
    "print(c.execute('pragma integrity_check').fetchone()[0]); "
    "print(c.execute('select count(*) from t').fetchone()[0], 'rows')"
)

SLOW_RESTORE = """for a in "$@"; do
  if [ "$a" = restore ]; then "$RESTIC" "$@"; rc=$?; sleep 600; exit $rc; fi
done
exec "$RESTIC" "$@"
"""


@pytest.fixture
def lab(tmp_path: Path) -> ResticLab:
    if RESTIC is None:
        pytest.skip("restic is not installed (make test installs it)")
    return ResticLab(tmp_path)


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.1, what: str = "condition"):
    """Poll until predicate() is truthy; fail the test (not a timing assertion) if never."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"gave up waiting for {what}")
