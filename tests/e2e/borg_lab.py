"""A real borg lab per test: live source files, an encrypted borg 1.x repository, dated
archives, and a drcheck.toml pointing at them. Nothing is mocked: drcheck runs real borg.
Modelled on the restic lab of conftest.py (whose helpers it reuses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomli_w

from drcheck import canary
from drcheck.store import Store

from .conftest import INTEGRITY, RUNBOOK, DrcheckSide, utc

BORG = shutil.which("borg")
PASSPHRASE = "correct horse battery staple borg"

# borg extracts, then sleeps: a restore that is still "running" with data in its sandbox
SLOW_EXTRACT = """for a in "$@"; do
  if [ "$a" = extract ]; then "$BORG" "$@"; rc=$?; sleep 600; exit $rc; fi
done
exec "$BORG" "$@"
"""


class BorgLab(DrcheckSide):
    """Source tree for system "app" at `source`, a repository and a config in `root`."""

    default_action = "archives"
    blob_bytes = 256 * 1024

    def __init__(self, root: Path):
        self.root = root
        self.source = root / "live" / "app"
        self.repo = root / "repo"
        self.base_dir = root / "borg-base"  # borg's cache and security records, per test
        self.passphrase_file = root / "borg-passphrase"
        self.passphrase_file.write_text(PASSPHRASE + "\n")
        self.passphrase_file.chmod(0o600)
        self.sandbox_root = root / "sandbox"
        self.config_path = root / "drcheck.toml"
        (root / "runbooks").mkdir()
        (root / "runbooks" / "app.toml").write_text(tomli_w.dumps(RUNBOOK))
        self.populate()
        self.borg("init", "--encryption", "repokey-blake2")
        self.configure()

    # -- borg -----------------------------------------------------------------------------

    def borg(self, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "BORG_REPO": str(self.repo), "BORG_PASSCOMMAND": f"cat {self.passphrase_file}",
               "BORG_BASE_DIR": str(self.root / "lab-borg-base"), "TZ": "UTC",
               "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
        env.pop("BORG_PASSPHRASE", None)
        return subprocess.run([BORG or "borg", *args], env=env, capture_output=True, text=True, check=check,
                              timeout=300, cwd=cwd)

    def backup(self, at: datetime | None = None, name: str | None = None, paths: list[str] | None = None,
               extra: tuple[str, ...] = ()) -> str:
        """Archive the source (dated `at`, UTC); return the archive's name."""
        at = at or utc()
        name = name or f"app01-{at.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S.%f}"
        self.borg("create", *extra, "--timestamp", at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                  f"::{name}", *(paths if paths is not None else [str(self.source)]))
        return name

    def archive_names(self) -> list[str]:
        return [a["name"] for a in json.loads(self.borg("list", "--json").stdout)["archives"]]

    def plant_canary(self, at: datetime | None = None, test: str = "app-files") -> None:
        with Store(self.database) as store:
            canary.plant(store, test, "app", self.source / ".drcheck-canary", at or utc())

    def segments(self) -> list[Path]:
        return sorted((p for p in (self.repo / "data").rglob("*") if p.is_file() and p.name.isdigit()),
                      key=lambda p: p.stat().st_size)

    def corrupt_largest_segment(self) -> Path:
        segment = self.segments()[-1]
        segment.chmod(0o644)
        data = bytearray(segment.read_bytes())
        for offset in range(len(data) // 2, min(len(data), len(data) // 2 + 4000), 7):
            data[offset] ^= 0xFF
        segment.write_bytes(bytes(data))
        return segment

    # -- drcheck ------------------------------------------------------------------------

    def base_config(self) -> dict[str, Any]:
        return {
            "agent": {"name": "e2e", "state_dir": "state", "sandbox_root": "sandbox", "runbooks_dir": "runbooks",
                      "timezone": "UTC", "job_timeout": "5m"},
            "metrics": {"enabled": False},
            "reports": {"output_dir": "reports"},
            "sites": {"office": {"description": "server room"}},
            "copies": {"borg": {"site": "office"}},
            "probes": {"repo": {
                "kind": "borg", "copy": "borg", "repository": str(self.repo),
                "passphrase": {"file": str(self.passphrase_file)}, "borg_command": BORG or "borg",
                "base_dir": str(self.base_dir), "lock_wait": "5s",
                "archives": {"timeout": "2m"},
                "systems": [{"system": "app", "name_glob": "app01-*", "paths": [str(self.source)]}],
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
        """Write an executable shell wrapper around borg (slow restores, fake versions)."""
        path = self.root / name
        path.write_text(f"#!/bin/sh\nBORG={BORG}\n{body}\n")
        path.chmod(0o755)
        return path
