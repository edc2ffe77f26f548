"""Checks: verifications of a restored file tree. Each returns a CheckResult with its
evidence and duration, and can fail for real reasons. None follows a path out of the
sandbox: a restored symlink pointing outside is refused, not read."""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Sequence

from pydantic import Field, field_validator

from drcheck import canary as canaries
from drcheck.clients import process
from drcheck.config_types import ConfigPath, Duration, Schedule, Strict
from drcheck.durations import format_duration
from drcheck.results import CheckResult, SnapshotFile, Status
from drcheck.sandbox import SandboxRefused, contained
from drcheck.store import Store


# -- configuration of the checks ------------------------------------------------------


class CanaryConfig(Strict):
    """A canary file drcheck plants in the live source and expects in the restore."""

    path: Path = Field(
        Path(".drcheck-canary"),
        description="canary location; relative paths are under the system's source path",
    )
    plant_schedule: Schedule | None = Field(None, description="when to (re)write the canary")
    max_age: Duration | None = Field(
        None, description="oldest acceptable canary in a restore (default: the runbook's RPO)"
    )


class SpotCheck(Strict):
    """Hash a random sample of restored files that are unchanged at the live source
    (same size and mtime as in the snapshot) and compare with the live file."""

    files: int = Field(20, strict=True, ge=0, description="at least this many files")
    percent: float = Field(0.0, strict=True, ge=0, le=100, description="at least this share of eligible files")
    source_root: ConfigPath = Field(
        Path("/"), description="where the snapshot's absolute paths live now"
    )


class CommandCheck(Strict):
    """A command run against the restored tree. `{restore}` is the sandbox, `{data}` the
    restored copy of the system's source path."""

    name: str | None = Field(None, description="label in results (default: the command)")
    run: list[str] = Field(..., min_length=1, description="argv; no shell")
    expect_exit: int = Field(0, strict=True, description="expected exit status")
    expect_output: str | None = Field(None, description="regular expression stdout must match")
    timeout: Duration = Field(timedelta(minutes=5), description="kill the command after this")

    @field_validator("expect_output")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except (re.error, OverflowError, RecursionError) as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value



# -- the checks -----------------------------------------------------------------------


def timed(name: str, body: Callable[[], tuple[Status, str, dict]]) -> CheckResult:
    """Run a check body and wrap its (status, evidence, details) with the time it took."""
    start = time.perf_counter()
    try:
        status, evidence, details = body()
    except SandboxRefused as exc:
        status, evidence, details = Status.FAILED, f"refused: {exc}", {}
    return CheckResult(name, status, evidence, time.perf_counter() - start, details)


def expected_paths(sandbox: Path, paths: Sequence[str]) -> CheckResult:
    """Every path must exist in the restore (inside the sandbox) and be non-empty."""

    def body():
        problems = []
        for wanted in paths:
            restored = contained(sandbox, wanted)
            if not restored.exists() and not restored.is_symlink():
                problems.append(f"{wanted}: missing")
            elif restored.is_file() and restored.stat().st_size == 0:
                problems.append(f"{wanted}: empty file")
            elif restored.is_dir() and not any(restored.iterdir()):
                problems.append(f"{wanted}: empty directory")
        if problems:
            return Status.FAILED, "; ".join(problems), {"problems": problems}
        return Status.PASSED, f"{len(paths)} path(s) present and non-empty", {}

    return timed("expected_paths", body)


def canary(sandbox: Path, snapshot_path: str, store: Store, system: str, started_at: datetime,
           max_age: timedelta) -> tuple[CheckResult, datetime | None]:
    """The canary must be in the restore, planted by drcheck for `system`, unaltered, and
    at most `max_age` old at test start. Its time comes from the store, never from the
    restored file. Return the result and that time (None when the canary is not usable)."""
    found: list[datetime] = []

    def body():
        restored = contained(sandbox, snapshot_path)
        if not restored.is_file() or restored.is_symlink():
            return Status.FAILED, f"no canary at {snapshot_path} in the restore", {}
        try:
            planted = canaries.read(restored)
        except ValueError as exc:
            return Status.FAILED, f"{snapshot_path}: {exc}", {}
        record = store.planted_canary(planted.token)
        if record is None:
            return Status.FAILED, "canary token was not planted by this agent", {}
        if record["system"] != system:
            return Status.FAILED, f"canary was planted for {record['system']!r}, not {system!r}", {}
        if planted.written_at != record["written_at"] or planted.system != system:
            return Status.FAILED, "canary was altered after drcheck planted it", {}
        found.append(record["written_at"])
        age = (started_at - record["written_at"]).total_seconds()
        details = {"written_at": record["written_at"].isoformat(), "age_seconds": age}
        verdict = f"canary written {format_duration(age)} before the test (limit {format_duration(max_age.total_seconds())})"
        if age > max_age.total_seconds():
            return Status.FAILED, f"stale {verdict}", details
        return Status.PASSED, verdict, details

    result = timed("canary", body)
    return result, (found[0] if found else None)


def _digest(path: Path) -> str:
    with open(path, "rb", buffering=0) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def regular_files(root: Path) -> dict[str, int]:
    """Map every regular file under root (relative path) to its size, without following
    symlinks: a file listed here is inside root, whatever the restored tree contains."""
    found: dict[str, int] = {}
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    found[os.path.relpath(entry.path, root)] = entry.stat(follow_symlinks=False).st_size
    return found


def _unchanged(live: Path, entry: SnapshotFile) -> bool:
    """True when the live file is a regular file with the snapshot's size and mtime (one
    lstat: this runs for every file of the snapshot)."""
    try:
        st = live.lstat()
    except OSError:
        return False
    return (stat.S_ISREG(st.st_mode) and st.st_size == entry.size and entry.mtime is not None
            and abs(st.st_mtime - entry.mtime.timestamp()) < 0.001)


class SpotCheckRun:
    """A spot check prepared from the snapshot listing, before the restore exists.

    Eligible: regular files whose live copy (under `config.source_root`) still has the
    snapshot's size and mtime. Sample size: max(`files`, `percent` of eligible), capped at
    eligible. Hashing the live side starts at once, so it overlaps the restore; `result()`
    then hashes the restored side and compares. Use as a context manager.
    """

    def __init__(self, files: Sequence[SnapshotFile], config: SpotCheck,
                 rng: random.Random | None = None, workers: int = 4):
        start = time.perf_counter()
        self.total = len(files)
        self.source_root = Path(config.source_root)
        self.eligible = [f for f in files if _unchanged(self._live(f), f)]
        wanted = max(config.files, math.ceil(len(self.eligible) * config.percent / 100))
        self.sample = (rng or random.SystemRandom()).sample(self.eligible, min(wanted, len(self.eligible)))
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.live_digests = {f.path: self.pool.submit(_digest, self._live(f)) for f in self.sample}
        self.prepare_seconds = time.perf_counter() - start

    def _live(self, entry: SnapshotFile) -> Path:
        return self.source_root.joinpath(entry.path.lstrip("/"))

    def __enter__(self) -> "SpotCheckRun":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def result(self, sandbox: Path) -> CheckResult:
        """Compare the sample's restored copies with the live source."""

        def body():
            if not self.eligible:  # cannot compare: an environment problem, not a bad backup
                return (Status.ERROR,
                        f"none of {self.total} snapshot file(s) is unchanged at the live source under "
                        f"{self.source_root}; nothing to compare", {"eligible": 0})
            restored = regular_files(sandbox)
            mismatches = [m for m in self.pool.map(lambda e: self._compare(sandbox, restored, e), self.sample) if m]
            details = {"eligible": len(self.eligible), "sampled": len(self.sample), "mismatches": mismatches[:50]}
            if mismatches:
                return (Status.FAILED, f"{len(mismatches)} of {len(self.sample)} sampled file(s) differ: "
                        + "; ".join(mismatches[:5]), details)
            return (Status.PASSED, f"{len(self.sample)} of {len(self.eligible)} unchanged file(s) hashed, "
                    "all match the live source", details)

        check = timed("spot_check", body)
        check.duration_seconds += self.prepare_seconds
        return check

    def _compare(self, sandbox: Path, restored: dict[str, int], entry: SnapshotFile) -> str | None:
        relative = entry.path.lstrip("/")
        if relative not in restored:
            contained(sandbox, entry.path)  # raises SandboxRefused when a symlink leads out
            return f"{entry.path}: missing from the restore"
        if restored[relative] != entry.size:
            return f"{entry.path}: restored size {restored[relative]} != {entry.size}"
        try:
            live = self.live_digests[entry.path].result()
        except OSError as exc:
            return f"{entry.path}: live source unreadable ({exc.strerror})"
        if _digest(sandbox / relative) != live:
            return f"{entry.path}: sha256 differs from the live source"
        return None


def command_name(check: CommandCheck) -> str:
    return check.name or f"command: {' '.join(check.run)[:80]}"


def command(sandbox: Path, data_root: Path, check: CommandCheck) -> CheckResult:
    """Run a configured command against the restore; compare exit status and output.
    `data_root` must already be known to lie inside the sandbox (see `contained`)."""
    argv = [arg.replace("{restore}", str(sandbox)).replace("{data}", str(data_root)) for arg in check.run]

    def body():
        try:
            done = process.run(argv, timeout=check.timeout.total_seconds(), cwd=data_root if data_root.is_dir() else sandbox)
        except process.CommandNotFound as exc:
            return Status.ERROR, f"cannot run the check: {exc}", {}
        except process.CommandTimeout as exc:
            return Status.FAILED, str(exc), {}
        output = (done.stdout.strip() or done.stderr.strip())[-300:]
        details = {"exit": done.returncode, "output": output}
        if done.returncode != check.expect_exit:
            return Status.FAILED, f"exit {done.returncode} (expected {check.expect_exit}): {output}", details
        if check.expect_output is not None and not re.search(check.expect_output, done.stdout):
            return Status.FAILED, f"output does not match /{check.expect_output}/: {output}", details
        return Status.PASSED, f"exit {done.returncode}: {output[:120]}", details

    return timed(command_name(check), body)
