"""The restic command-line client: snapshots, listing, check and restore.

Passwords reach restic through --password-file (file and systemd-credential references)
or RESTIC_PASSWORD in the child's environment (env references); never on the command line
and never in logs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from drcheck.clients import SourceError, process
from drcheck.secrets import SecretRef

log = logging.getLogger(__name__)


class ResticError(SourceError):
    """restic failed; `damaged` when restic found the repository's data corrupt."""


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: datetime
    hostname: str
    paths: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def name(self) -> str:
        """restic snapshots have no name; their id stands in (for `name_glob` rules)."""
        return self.id


@dataclass(frozen=True)
class Entry:
    """One node of a snapshot listing."""

    path: str
    type: str
    size: int
    mtime: datetime | None


_FRACTION = re.compile(r"\.(\d+)")


def _parse_time(value: str) -> datetime:
    """Parse restic's RFC 3339 time (nanoseconds, Z or an offset) into an aware datetime."""
    # Python takes at most microseconds: cut the fraction to six digits.
    value = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value, count=1)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


_KNOWN_FAILURES = (
    ("wrong password", "wrong repository password (no key found)"),
    ("no key found", "wrong repository password (no key found)"),
    ("Is there a repository at the following location", "no restic repository at the configured location"),
    ("repository does not exist", "no restic repository at the configured location"),
    ("unable to open config file", "no restic repository at the configured location"),
    ("unable to create lock", "repository is locked by another restic process"),
)


_DAMAGE = ("ciphertext verification failed", "Pack ID does not match", "repository contains errors",
           "invalid data returned", "is damaged", "hash mismatch", "checksum mismatch")


def damage_lines(stderr: str) -> list[str]:
    """Return restic's lines reporting corrupt repository data."""
    return [line.strip() for line in stderr.splitlines() if any(n in line for n in _DAMAGE)]


def explain_failure(stderr: str, returncode: int) -> str:
    """Turn restic's stderr into a short reason, keeping restic's own words."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    damage = damage_lines(stderr)
    if damage:
        more = f" (+{len(damage) - 1} more)" if len(damage) > 1 else ""
        return f"backup data is damaged: {damage[0][:200]}{more}"
    for needle, reason in _KNOWN_FAILURES:
        if needle in stderr:
            return reason
    last = lines[-1] if lines else "no output"
    return f"restic exited {returncode}: {last[:300]}"


class ResticRepository:
    """One restic repository, reached with `command` (a restic binary)."""

    def __init__(
        self,
        repository: str,
        password: SecretRef,
        *,
        command: str = "restic",
        environment: Mapping[str, str | SecretRef] | None = None,
        timeout: float = 600,
    ):
        self.repository = repository
        self.password = password
        self.command = command
        self.environment = dict(environment or {})
        self.timeout = timeout

    def _env(self) -> dict[str, str]:
        env = {"RESTIC_REPOSITORY": self.repository, "RESTIC_CACHE_DIR": _cache_dir(), "TZ": "UTC"}
        for name, value in self.environment.items():
            env[name] = value.reveal() if isinstance(value, SecretRef) else value
        path = self.password.file_path()
        if path is not None:
            env["RESTIC_PASSWORD_FILE"] = str(path)
        else:
            env["RESTIC_PASSWORD"] = self.password.reveal()
        return env

    def _run(self, args: Sequence[str], *, timeout: float | None = None, stdout_path: Path | None = None):
        argv = [self.command, "--no-lock" if args[0] in ("snapshots", "ls") else "", *args]
        argv = [a for a in argv if a]
        log.debug("running %s", " ".join(argv))
        try:
            done = process.run(argv, timeout=timeout or self.timeout, env=self._env(), stdout_path=stdout_path)
        except process.CommandNotFound as exc:
            raise ResticError(f"restic command not found: {exc}") from None
        except process.CommandTimeout as exc:
            raise ResticError(str(exc)) from None
        if done.returncode != 0:
            raise ResticError(explain_failure(done.stderr, done.returncode),
                              damaged=bool(damage_lines(done.stderr + done.stdout)))
        return done

    def snapshots(self) -> list[Snapshot]:
        """Return every snapshot, oldest first. Raise ResticError with a reason."""
        done = self._run(["snapshots", "--json"])
        try:
            raw = json.loads(done.stdout or "[]") or []
        except json.JSONDecodeError as exc:
            raise ResticError(f"unreadable `restic snapshots --json` output: {exc}") from None
        snaps = [
            Snapshot(
                id=s["id"], time=_parse_time(s["time"]), hostname=s.get("hostname", ""),
                paths=tuple(s.get("paths") or ()), tags=tuple(s.get("tags") or ()),
            )
            for s in raw
        ]
        return sorted(snaps, key=lambda s: s.time)

    def check(self, read_data_subset: str, timeout: float | None = None) -> str:
        """Run `restic check --read-data-subset`; return its summary, raise ResticError."""
        done = self._run(["check", f"--read-data-subset={read_data_subset}"], timeout=timeout)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        return lines[-1] if lines else "no errors were found"

    def ls(self, snapshot_id: str, include: Sequence[str] = ()) -> Iterator[Entry]:
        """Yield every node of a snapshot (under `include` paths, when given)."""
        with tempfile.NamedTemporaryFile(prefix="drcheck-ls-", suffix=".jsonl") as listing:
            # Without --recursive, restic lists only the top level of filtered directories.
            recursive = ["--recursive"] if include else []
            self._run(["ls", "--json", *recursive, snapshot_id, *include], stdout_path=Path(listing.name))
            with open(listing.name, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    node = json.loads(line)
                    if node.get("struct_type") != "node":
                        continue
                    mtime = node.get("mtime")
                    yield Entry(
                        path=node["path"], type=node.get("type", ""),
                        size=int(node.get("size") or 0),
                        mtime=_parse_time(mtime) if mtime else None,
                    )

    def init(self) -> None:
        """Create the repository (demo and tests)."""
        self._run(["init"])

    def backup(self, paths: Sequence[Path], *, host: str, tags: Sequence[str] = (), when: datetime | None = None) -> None:
        """Back `paths` up as one snapshot of `host`, dated `when` (demo and tests)."""
        args = ["backup", "--quiet", "--host", host, *[a for t in tags for a in ("--tag", t)]]
        if when is not None:  # restic reads --time as local wall-clock time; _env runs it in UTC
            args += ["--time", when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")]
        self._run([*args, *map(str, paths)])

    def restore(self, snapshot_id: str, target: Path, include: Sequence[str] = (), timeout: float | None = None) -> None:
        """Restore a snapshot (or the `include` paths of it) into `target`."""
        args = ["restore", snapshot_id, "--target", str(target)]
        for path in include:
            args += ["--include", path]
        self._run(args, timeout=timeout)


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "drcheck", "restic")
