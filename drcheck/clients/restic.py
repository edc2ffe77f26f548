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
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from drcheck import confine
from drcheck.clients import SourceError, process
from drcheck.secrets import SecretRef

log = logging.getLogger(__name__)


class ResticError(SourceError):
    """restic failed; `damaged` when restic found the repository's data corrupt."""


class RestoreLostData(ResticError):
    """A restore could not write some files because the repository lacks or damaged their
    data (missing or corrupt pack): the backup is bad. `files` as the snapshot names them."""

    def __init__(self, files: list[str], packs: list[str], message: str = ""):
        shown = ", ".join(files[:10]) + (f" (+{len(files) - 10} more)" if len(files) > 10 else "")
        where = f" (pack {', '.join(packs[:3])})" if packs else ""
        said = f"; restic: {message[:160]}" if message else ""
        super().__init__(f"backup data is missing or damaged{where}: {len(files)} file(s) could not be "
                         f"restored: {shown}{said}", damaged=True)
        self.files = files
        self.packs = packs


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


# `restic restore` reports each file it could not write as "ignoring error for PATH: MSG";
# a message naming a pack (missing, unreadable or corrupt) means the repository lacks data.
_FILE_ERROR = re.compile(r"^ignoring error for (?P<path>/.*?): (?P<message>.*)$")
_PACK_PROBLEM = re.compile(r"StreamPack|data/[0-9a-f]{6,}|ciphertext verification failed|"
                           r"Pack ID does not match|not found in index|hash mismatch")
_PACK_NAME = re.compile(r"data/(?:[0-9a-f]{2}/)?([0-9a-f]{8,})")


def lost_files(stderr: str) -> tuple[list[str], list[str], str]:
    """From `restic restore` output, return (files that lost data because the repository
    lacks or damaged it, the packs named, restic's first such message), files and packs in
    first-seen order without repeats."""
    files: dict[str, None] = {}
    packs: dict[str, None] = {}
    first = ""
    for line in stderr.splitlines():
        match = _FILE_ERROR.match(line.strip())
        if match and _PACK_PROBLEM.search(match["message"]):
            files[match["path"]] = None
            first = first or match["message"]
            for pack in _PACK_NAME.findall(match["message"]):
                packs[pack[:12]] = None
    return list(files), list(packs), first


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


MIN_VERSION = (0, 12, 0)
_VERSIONS: dict[str, tuple[int, ...] | str] = {}  # command -> version, or why it is not restic
_VERSIONS_LOCK = threading.Lock()
_VERSION_LINE = re.compile(r"^restic (\d+)\.(\d+)\.(\d+)\b")


def parse_version(output: str) -> tuple[int, int, int] | None:
    """The version `restic version` printed (first line), or None when it is not restic's."""
    match = _VERSION_LINE.match(output.strip())
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def _version_problem(output: str, command: str) -> str | None:
    found = parse_version(output)
    if found is None:
        shown = output.strip().splitlines()[0][:80] if output.strip() else "nothing"
        return f"{command} is not restic: `{command} version` printed {shown!r}"
    if found < MIN_VERSION:
        return (f"{command} is restic {'.'.join(map(str, found))}; drcheck needs restic "
                f"{'.'.join(map(str, MIN_VERSION))} or newer")
    return None


class ResticRepository:
    """One restic repository, reached with `command` (a restic binary).

    The first call of a process to a given command asks it `restic version`, so a program
    that is not restic (or too old) is an error saying so, never an empty answer; the
    verdict is cached per command for the life of the process.
    """

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

    def _verify_command(self) -> None:
        """Raise ResticError when `command` is not a usable restic (checked once per process)."""
        with _VERSIONS_LOCK:
            known = _VERSIONS.get(self.command)
        if known is None:
            try:
                done = process.run([self.command, "version"], timeout=60, env={"TZ": "UTC"})
            except process.CommandNotFound as exc:
                raise ResticError(f"restic command not found: {exc}") from None
            except process.CommandTimeout as exc:
                raise ResticError(f"{self.command} version: {exc}") from None
            problem = _version_problem(done.stdout if done.returncode == 0 else "", self.command)
            if done.returncode != 0 and problem:
                problem += f" (exit {done.returncode})"
            known = problem or parse_version(done.stdout)
            with _VERSIONS_LOCK:
                _VERSIONS[self.command] = known
        if isinstance(known, str):
            raise ResticError(known)

    def _run(self, args: Sequence[str], *, timeout: float | None = None, stdout_path: Path | None = None,
             writable: Sequence[Path] | None = None, cancel: process.Cancel | None = None):
        """Run restic with `args`. With `writable`, restic runs confined (drcheck.confine) to
        writing below those paths plus what it needs itself (its cache, a private temporary
        directory, a local repository's locks/, /dev/null)."""
        self._verify_command()
        argv = [self.command, "--no-lock" if args[0] in ("snapshots", "ls", "stats") else "", *args]
        argv = [a for a in argv if a]
        log.debug("running %s", " ".join(argv))
        env = self._env()
        private_tmp = None
        try:
            if writable is not None:
                private_tmp = tempfile.mkdtemp(prefix="drcheck-restic-")
                os.makedirs(env["RESTIC_CACHE_DIR"], exist_ok=True)
                env["TMPDIR"] = private_tmp
                allowed = [*map(str, writable), env["RESTIC_CACHE_DIR"], private_tmp, "/dev/null"]
                locks = _local_locks(self.repository)
                if locks is not None:
                    allowed.append(str(locks))
                argv = confine.command(argv, allowed)
            done = process.run(argv, timeout=timeout or self.timeout, env=env, stdout_path=stdout_path,
                               cancel=cancel)
        except process.CommandNotFound as exc:
            raise ResticError(f"restic command not found: {exc}") from None
        except process.CommandTimeout as exc:
            raise ResticError(str(exc)) from None
        finally:
            if private_tmp is not None:
                shutil.rmtree(private_tmp, ignore_errors=True)
        if done.returncode != 0:
            if args[0] == "restore":
                lost, packs, message = lost_files(done.stderr)
                if lost:
                    raise RestoreLostData(lost, packs, message)
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

    def stats(self, snapshot_id: str, timeout: float | None = None) -> tuple[int, int]:
        """Return (bytes, files) a restore of the snapshot would write
        (`restic stats --mode restore-size`). Raise ResticError."""
        done = self._run(["stats", "--json", "--mode", "restore-size", snapshot_id], timeout=timeout)
        try:
            data = json.loads(done.stdout)
            return int(data["total_size"]), int(data["total_file_count"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ResticError(f"unreadable `restic stats --json` output: {exc}") from None

    def init(self) -> None:
        """Create the repository (demo and tests)."""
        self._run(["init"])

    def backup(self, paths: Sequence[Path], *, host: str, tags: Sequence[str] = (), when: datetime | None = None) -> None:
        """Back `paths` up as one snapshot of `host`, dated `when` (demo and tests)."""
        args = ["backup", "--quiet", "--host", host, *[a for t in tags for a in ("--tag", t)]]
        if when is not None:  # restic reads --time as local wall-clock time; _env runs it in UTC
            args += ["--time", when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")]
        self._run([*args, *map(str, paths)])

    @staticmethod
    def confines_restores() -> bool:
        """True when restores run confined to writing into their target (Linux Landlock)."""
        return confine.available()

    def restore(self, snapshot_id: str, target: Path, include: Sequence[str] = (), timeout: float | None = None,
                *, confine_writes: bool | None = None, cancel: process.Cancel | None = None) -> None:
        """Restore a snapshot (or the `include` paths of it) into `target`.

        restic runs confined to writing below `target` (and its own cache, a private
        temporary directory and a local repository's locks) whenever the kernel can enforce
        it: `confine_writes=None` (default) confines when `confines_restores()`, True
        requires it (raise ResticError when unavailable), False never confines. `cancel`
        (process.Cancel) lets another thread kill the restore; it then raises
        process.CommandCancelled."""
        confined = self.confines_restores() if confine_writes is None else confine_writes
        if confined and not self.confines_restores():
            raise ResticError("cannot confine restic's writes to the restore target: Landlock is not available")
        args = ["restore", snapshot_id, "--target", str(target)]
        for path in include:
            args += ["--include", path]
        self._run(args, timeout=timeout, writable=[target] if confined else None, cancel=cancel)


def _local_locks(repository: str) -> Path | None:
    """The locks/ directory of a repository on a local path (None for remote ones)."""
    if repository.startswith("local:"):
        repository = repository[len("local:"):]
    elif re.match(r"^[A-Za-z][A-Za-z0-9+]*:", repository):
        return None  # sftp:, s3:, rest:, rclone:, …: restic writes its locks over the network
    locks = Path(repository) / "locks"
    return locks if locks.is_dir() else None


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "drcheck", "restic")
