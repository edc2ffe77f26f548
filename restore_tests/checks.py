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
    require: list[str] = Field(
        default_factory=list,
        description="paths (relative to the source directory) that must exist before planting, e.g. a marker "
                    "file only the mounted volume holds",
    )
    min_entries: int = Field(
        1, strict=True, ge=0,
        description="refuse to plant into a source directory with fewer entries (an unmounted mount point is empty)",
    )
    mount_point: bool = Field(False, description="refuse to plant unless the source directory is a mount point")


class SpotCheck(Strict):
    """Hash a random sample of restored files that are unchanged at the live source
    (same size and mtime as in the snapshot) and compare with the live file. A file whose
    mtime is unchanged but whose size differs is always a failure, sampled or not.
    `percent = 100` hashes every unchanged file (see the README for what a sample finds)."""

    files: int = Field(20, strict=True, ge=0, description="at least this many files")
    percent: float = Field(0.0, strict=True, ge=0, le=100,
                           description="at least this share of eligible files (100: all of them)")
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


def expected_paths(sandbox: Path, paths: Sequence[str], stored: Callable[[str], str] = lambda p: p) -> CheckResult:
    """Every path (live, named in the evidence) must exist in the restore where the point
    stored it (`stored(path)`, inside the sandbox) and be non-empty."""

    def body():
        problems = []
        for wanted in paths:
            restored = contained(sandbox, stored(wanted))
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
           max_age: timedelta, stored: Callable[[str], str] = lambda p: p) -> tuple[CheckResult, datetime | None]:
    """The canary (live path `snapshot_path`, found in the restore at `stored(path)`) must be
    in the restore, planted by drcheck for `system`, unaltered, and at most `max_age` old
    at test start. Its time comes from the store, never from the restored file. Return the
    result and that time (None when the canary is not usable)."""
    found: list[datetime] = []

    def body():
        restored = contained(sandbox, stored(snapshot_path))
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


def _live_state(live: Path, entry: SnapshotFile) -> tuple[str, int]:
    """Compare the live file with the point's entry in one lstat (this runs for every file
    of the point): "unchanged" (regular file, same mtime and size), "size_differs" (same
    mtime, another size: never a change at the source, the point stored it wrong) or
    "changed" (anything else: edited, replaced, gone); with the live size."""
    try:
        st = live.lstat()
    except OSError:
        return "changed", -1
    if not stat.S_ISREG(st.st_mode) or entry.mtime is None or abs(st.st_mtime - entry.mtime.timestamp()) >= 0.001:
        return "changed", st.st_size
    return ("unchanged" if st.st_size == entry.size else "size_differs"), st.st_size


class SpotCheckRun:
    """A spot check prepared from the point's listing, before the restore exists.

    `files` are the point's regular files keyed by their live path (see
    drcheck.mapping.Layout); `stored(path)` gives where the point (and so the restore)
    holds each. Eligible: files whose live copy (under `config.source_root`) still has the
    point's mtime and size. A file with the point's mtime but another size is a failure,
    never a change. Sample size: max(`files`, `percent` of eligible), capped at eligible.
    Hashing the live side starts at once, so it overlaps the restore; `result()` then
    hashes the restored side and compares. Use as a context manager.
    """

    def __init__(self, files: Sequence[SnapshotFile], config: SpotCheck,
                 rng: random.Random | None = None, workers: int = 4,
                 stored: Callable[[str], str] = lambda path: path):
        start = time.perf_counter()
        self.total = len(files)
        self.source_root = Path(config.source_root)
        self.stored = stored
        states = [(f, _live_state(self._live(f), f)) for f in files]
        self.eligible = [f for f, (state, _) in states if state == "unchanged"]
        self.size_differs = [(f, size) for f, (state, size) in states if state == "size_differs"]
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
            differs = [f"{f.path}: stored {f.size} bytes, live {size} at the same mtime"
                       for f, size in self.size_differs]
            if not self.eligible and not differs:  # cannot compare: an environment problem, not a bad backup
                return (Status.ERROR,
                        f"none of {self.total} snapshot file(s) is unchanged at the live source under "
                        f"{self.source_root}; nothing to compare", {"eligible": 0})
            restored = regular_files(sandbox)
            mismatches = differs + [m for m in self.pool.map(lambda e: self._compare(sandbox, restored, e), self.sample) if m]
            details = {"eligible": len(self.eligible), "sampled": len(self.sample),
                       "size_differs": len(differs), "mismatches": mismatches[:50]}
            if mismatches:
                return (Status.FAILED, f"{len(mismatches)} file(s) differ ({len(self.sample)} sampled of "
                        f"{len(self.eligible)} unchanged, {len(differs)} stored with another size at an "
                        "unchanged mtime): " + "; ".join(mismatches[:5]), details)
            return (Status.PASSED, f"{len(self.sample)} of {len(self.eligible)} unchanged file(s) hashed, "
                    "all match the live source", details)

        check = timed("spot_check", body)
        check.duration_seconds += self.prepare_seconds
        return check

    def _compare(self, sandbox: Path, restored: dict[str, int], entry: SnapshotFile) -> str | None:
        stored = self.stored(entry.path)
        relative = stored.lstrip("/")
        if relative not in restored:
            contained(sandbox, stored)  # raises SandboxRefused when a symlink leads out
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
