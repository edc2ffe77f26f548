"""The borg 1.x command-line client: archives, listing, check and extract.

The passphrase reaches borg through BORG_PASSCOMMAND (`cat` of the file, for file and
systemd-credential references: the value is never in drcheck's memory, an environment or
a command line) or BORG_PASSPHRASE in the child's environment (env references); never in
logs. borg runs with `--log-json`, so its messages are classified by level and message id,
not by scraping prose; a failure keeps borg's own words in its reason.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Iterator, Mapping, Sequence

from drcheck.clients import SourceError, process
from drcheck.secrets import SecretRef

log = logging.getLogger(__name__)


class BorgError(SourceError):
    """borg failed; `damaged` when borg found the repository's data corrupt."""


@dataclass(frozen=True)
class Archive:
    """One archive. `paths` are the absolute source paths its `borg create` command line
    named, or () when drcheck cannot tell them from it (patterns files, relative paths,
    paths from stdin or a command, options it does not know). borg archives have no tags.
    Its restore-point `id` is its name: borg 1.x addresses archives by name."""

    name: str
    archive_id: str
    time: datetime
    hostname: str
    username: str
    paths: tuple[str, ...]
    tags: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.name


@dataclass(frozen=True)
class Entry:
    """One item of an archive listing, its path as borg stores it (no leading '/')."""

    path: str
    type: str  # borg's mode letter: '-' file, 'd' directory, 'l' symlink, 'h' hard link, …
    size: int
    mtime: datetime | None
    healthy: bool = True


# -- borg create command lines: which source paths an archive holds ---------------------

# Every option of `borg create` in borg 1.2 (`borg create --help`) by whether it takes a
# value. Anything else (an abbreviation, a newer option) makes the paths unknown.
_CREATE_FLAGS = frozenset("""
    -n --dry-run -s --stats --list --json --no-cache-sync -h --help --critical --error --warning
    --info -v --verbose --debug -p --progress --iec --log-json --bypass-lock --show-version
    --show-rc --consider-part-files --exclude-caches --keep-exclude-tags --exclude-nodump
    -x --one-file-system --numeric-owner --numeric-ids --noatime --atime --noctime
    --nobirthtime --nobsdflags --noflags --noacls --noxattrs --sparse --read-special
""".split())
_CREATE_VALUES = frozenset("""
    --filter --stdin-name --stdin-user --stdin-group --stdin-mode --paths-delimiter
    --debug-topic --lock-wait --umask --remote-path --remote-ratelimit --upload-ratelimit
    --remote-buffer --upload-buffer --debug-profile --rsh -e --exclude --exclude-from
    --exclude-if-present --files-cache --comment --timestamp -c --checkpoint-interval
    --chunker-params -C --compression
""".split())
_SHORT_VALUES = frozenset("eCc")
_SHORT_FLAGS = frozenset("nshvpx")
# roots that do not appear as path arguments: the paths cannot be told from the command line
_HIDDEN_ROOTS = frozenset({"--patterns-from", "--paths-from-stdin", "--paths-from-command",
                           "--content-from-command"})


def create_paths(command_line: Sequence[str]) -> tuple[str, ...]:
    """Return the absolute source paths a `borg create` command line names (its path
    arguments and `--pattern R …` roots), or () when they cannot be told for certain."""
    args = list(command_line[1:])
    if "create" not in args:
        return ()
    args = args[args.index("create") + 1:]
    roots: list[str] = []
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            positional += args[i + 1:]
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in _HIDDEN_ROOTS:
                return ()
            if name == "--pattern":
                if not eq:
                    i += 1
                    value = args[i] if i < len(args) else ""
                if value[:1] == "R":
                    roots.append(value[1:].strip())
            elif name in _CREATE_VALUES:
                i += 0 if eq else 1
            elif name not in _CREATE_FLAGS or eq:
                return ()
        elif arg.startswith("-") and arg != "-":
            for n, letter in enumerate(arg[1:], start=1):
                if letter in _SHORT_VALUES:
                    i += 0 if arg[n + 1:] else 1
                    break
                if letter not in _SHORT_FLAGS:
                    return ()
        else:
            positional.append(arg)
        i += 1
    paths = roots + positional[1:]  # the first positional is REPO::ARCHIVE
    if not paths or any(not p.startswith("/") or ".." in PurePosixPath(p).parts for p in paths):
        return ()
    return tuple(str(PurePosixPath(p)) for p in paths)


# -- failures ------------------------------------------------------------------------------

# borg's message ids (Error classes) of failures that are not the backup's fault
_KNOWN_FAILURES = {
    "PassphraseWrong": "wrong repository passphrase",
    "PasscommandFailure": "cannot read the repository passphrase",
    "NoPassphraseFailure": "no repository passphrase",
    "Repository.DoesNotExist": "no borg repository at the configured location",
    "Repository.InvalidRepository": "not a borg repository at the configured location",
    "Repository.InvalidRepositoryConfig": "not a borg repository at the configured location",
    "LockTimeout": "repository is locked by another borg process",
    "LockFailed": "cannot lock the repository",
    "LockError": "cannot lock the repository",
    "ConnectionClosed": "cannot reach the repository",
    "ConnectionClosedWithHint": "cannot reach the repository",
    "Cache.RepositoryReplay": "repository is older than borg last saw it (replaced or rolled back?)",
    "Cache.RepositoryAccessAborted": "repository access refused",
    "Cache.CacheInitAbortedError": "repository access refused",
    "Cache.EncryptionMethodMismatch": "repository encryption changed since borg last saw it",
    "KeyfileNotFoundError": "no key file for this keyfile-mode repository (set key_file)",
    "KeyfileInvalidError": "the key file does not belong to this repository",
    "Archive.DoesNotExist": "archive no longer exists",
    "UnsupportedPayloadError": "repository written by a newer borg",
}
_REFUSED_PROMPTS = {
    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "unencrypted repository refused (drcheck reads only encrypted ones)",
    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "relocated repository refused",
}
# message ids and words of borg reporting corrupt repository data
_DAMAGE_IDS = frozenset({"IntegrityError", "Repository.ObjectNotFound", "Repository.CheckNeeded"})
_DAMAGE_WORDS = re.compile(r"integrity error|checksum mismatch|is corrupted|is missing!|missing file chunk"
                           r"|orphaned objects|manifest not found|object count mismatch|damaged",
                           re.IGNORECASE)


@dataclass(frozen=True)
class Message:
    """One record of borg's --log-json stderr (plain lines become level 'TEXT')."""

    level: str
    text: str
    msgid: str = ""
    kind: str = "log_message"


def parse_messages(stderr: str) -> list[Message]:
    """Parse borg's --log-json stderr; lines that are not JSON are kept as text."""
    messages = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            messages.append(Message("TEXT", line.strip()))
            continue
        if not isinstance(record, dict):
            messages.append(Message("TEXT", line.strip()))
            continue
        lines = [part.strip() for part in str(record.get("message", "")).splitlines() if part.strip()]
        text = lines[0] if lines else ""
        messages.append(Message(str(record.get("levelname", "")), text, str(record.get("msgid") or ""),
                                str(record.get("type", ""))))
    return messages


def damage_lines(messages: Sequence[Message]) -> list[str]:
    """Return borg's messages reporting corrupt repository data."""
    return [m.text for m in messages if m.level in ("ERROR", "CRITICAL", "TEXT")
            and (m.msgid in _DAMAGE_IDS or _DAMAGE_WORDS.search(m.text))
            and not m.text.startswith("Traceback")]


def explain_failure(stderr: str, returncode: int, problems_found: bool = False) -> tuple[str, bool]:
    """Turn borg's --log-json stderr into (short reason, damaged), keeping borg's words.
    `problems_found`: the exit status itself means borg found damage (`borg check` rc 1),
    so every error message it logged reports damage."""
    messages = parse_messages(stderr)
    damage = damage_lines(messages)
    if problems_found:
        damage = [m.text for m in messages if m.level in ("ERROR", "CRITICAL") and not m.text.startswith("Traceback")
                  ] or damage or [f"borg check exited {returncode}"]
    if damage:
        more = f" (+{len(damage) - 1} more)" if len(damage) > 1 else ""
        return f"backup data is damaged: {damage[0][:200]}{more}", True
    for m in messages:
        if m.kind == "question_accepted_false" and m.msgid in _REFUSED_PROMPTS:
            return _REFUSED_PROMPTS[m.msgid], False
    errors = [m for m in messages if m.level in ("ERROR", "CRITICAL") and not m.text.startswith("Traceback")]
    for m in errors:
        if m.msgid in _KNOWN_FAILURES:
            remote = [r.text for r in messages if r.text.startswith("Remote:")]
            detail = remote[-1] if remote else m.text
            return f"{_KNOWN_FAILURES[m.msgid]} ({detail[:200]})", False
    last = errors[-1].text if errors else messages[-1].text if messages else "no output"
    return f"borg exited {returncode}: {last[:300]}", False


# -- the repository --------------------------------------------------------------------------

_versions: dict[str, str] = {}
_versions_lock = threading.Lock()


def _parse_time(value: str) -> datetime:
    """borg prints naive local times; the child runs with TZ=UTC, so they are UTC."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def default_base_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "drcheck" / "borg"


class BorgRepository:
    """One borg 1.x repository (local path or ssh:// URL), reached with `command`."""

    def __init__(
        self,
        repository: str,
        passphrase: SecretRef,
        *,
        command: str = "borg",
        environment: Mapping[str, str | SecretRef] | None = None,
        base_dir: Path | None = None,
        key_file: Path | None = None,
        lock_wait: float = 60,
        timeout: float = 600,
    ):
        self.repository = repository
        self.passphrase = passphrase
        self.command = command
        self.environment = dict(environment or {})
        self.base_dir = base_dir or default_base_dir()
        self.key_file = key_file
        self.lock_wait = lock_wait
        self.timeout = timeout

    def _env(self) -> dict[str, str]:
        env = {
            "BORG_REPO": self.repository, "BORG_BASE_DIR": str(self.base_dir),
            "BORG_CACHE_DIR": str(self.base_dir / "cache"), "TZ": "UTC",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes", "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
            "BORG_DISPLAY_PASSPHRASE": "no", "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
            "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
        }
        if self.key_file is not None:
            env["BORG_KEY_FILE"] = str(self.key_file)
        for name, value in self.environment.items():
            env[name] = value.reveal() if isinstance(value, SecretRef) else value
        path = self.passphrase.file_path()
        if path is not None:
            if not os.access(path, os.R_OK):
                raise BorgError(f"{self.passphrase.describe()}: cannot read the passphrase file")
            env["BORG_PASSCOMMAND"] = shlex.join(["cat", "--", str(path)])
        else:
            env["BORG_PASSPHRASE"] = self.passphrase.reveal()
        return env

    def version(self) -> str:
        """Return borg's version; raise BorgError unless `command` is borg 1.x."""
        with _versions_lock:
            known = _versions.get(self.command)
        if known:
            return known
        try:
            done = process.run([self.command, "--version"], timeout=60, env={"TZ": "UTC"})
        except process.CommandNotFound as exc:
            raise BorgError(f"borg command not found: {exc}") from None
        except process.CommandTimeout as exc:
            raise BorgError(str(exc)) from None
        match = re.match(r"^borg(?:\.exe)? (\d+)\.(\d+)\S*", done.stdout.strip())
        if done.returncode != 0 or not match:
            shown = (done.stdout or done.stderr).strip().splitlines()[:1]
            raise BorgError(f"{self.command} is not borg (`--version` said {shown[0][:100] if shown else 'nothing'!r})")
        if match.group(1) != "1":
            raise BorgError(f"{self.command} is {match.group(0)}; drcheck's borg kind speaks borg 1.x")
        with _versions_lock:
            _versions[self.command] = match.group(0)
        return match.group(0)

    def _run(self, args: Sequence[str], *, timeout: float | None = None, stdout_path: Path | None = None,
             cwd: Path | None = None, problems_rc: int | None = None):
        """Run borg; rc 1 (warnings) passes unless it is `problems_rc` (the exit status by
        which the command reports damage found). Raise BorgError."""
        self.version()
        argv = [self.command, "--log-json", "--lock-wait", str(int(self.lock_wait)), *args]
        log.debug("running %s", " ".join(argv))
        try:
            done = process.run(argv, timeout=timeout or self.timeout, env=self._env(),
                               stdout_path=stdout_path, cwd=cwd)
        except process.CommandNotFound as exc:
            raise BorgError(f"borg command not found: {exc}") from None
        except process.CommandTimeout as exc:
            raise BorgError(str(exc)) from None
        if done.returncode == 0 or (done.returncode == 1 and problems_rc != 1):
            for message in parse_messages(done.stderr):
                if message.level in ("WARNING", "ERROR") and message.text:
                    log.log(logging.INFO if args[0] == "init" else logging.WARNING, "borg %s: %s", args[0], message.text)
            return done
        reason, damaged = explain_failure(done.stderr, done.returncode, done.returncode == problems_rc)
        raise BorgError(reason, damaged=damaged)

    def archives(self) -> list[Archive]:
        """Return every archive, oldest first. Raise BorgError with a reason."""
        done = self._run(["list", "--json", "--format", "{hostname}{username}{command_line}"])
        try:
            raw = json.loads(done.stdout or "{}").get("archives") or []
            archives = [
                Archive(name=a["name"], archive_id=a["id"], time=_parse_time(a["start"]),
                        hostname=a.get("hostname", ""), username=a.get("username", ""),
                        paths=create_paths(a.get("command_line") or []))
                for a in raw
            ]
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BorgError(f"unreadable `borg list --json` output: {exc}") from None
        return sorted(archives, key=lambda a: a.time)

    def check(self, *, verify_data: bool = True, only: str | None = None, last: int | None = None,
              timeout: float | None = None) -> str:
        """Run `borg check`; return its summary; raise BorgError (damaged when borg found
        problems: rc 1 from check means exactly that)."""
        args = ["--info", "check"]
        args += ["--verify-data"] if verify_data else []
        args += [f"--{only}-only"] if only else []
        args += ["--last", str(last)] if last else []
        done = self._run(args, timeout=timeout, problems_rc=1)
        summaries = [m.text for m in parse_messages(done.stderr)
                     if m.text.startswith(("Finished", "Archive consistency check complete"))]
        return "; ".join(summaries) or "no problems found"

    def list(self, archive: str, include: Sequence[str] = ()) -> Iterator[Entry]:
        """Yield every item of an archive (under `include` paths as borg stores them, no
        leading '/', when given)."""
        with tempfile.NamedTemporaryFile(prefix="drcheck-borg-ls-", suffix=".jsonl") as listing:
            self._run(["list", "--json-lines", f"::{archive}", *[f"pp:{p}" for p in include]],
                      stdout_path=Path(listing.name))
            with open(listing.name, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        item = json.loads(line)
                        mtime = item.get("mtime")
                        yield Entry(path=item["path"], type=item.get("type", ""), size=int(item.get("size") or 0),
                                    mtime=_parse_time(mtime) if mtime else None,
                                    healthy=bool(item.get("healthy", True)))
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                        raise BorgError(f"unreadable `borg list --json-lines` output: {exc}") from None

    def extract(self, archive: str, target: Path, include: Sequence[str] = (), timeout: float | None = None) -> None:
        """Extract an archive (or its `include` paths, as borg stores them) into `target`:
        borg writes relative to its working directory, which is `target`."""
        self._run(["extract", f"::{archive}", *[f"pp:{p}" for p in include]], timeout=timeout, cwd=target)

    def init(self, encryption: str = "repokey-blake2") -> None:
        """Create the repository (demo and tests)."""
        self._run(["init", "--encryption", encryption])

    def create(self, name: str, paths: Sequence[Path], when: datetime | None = None) -> None:
        """Archive `paths` as `name`, dated `when` (demo and tests)."""
        args = ["create"]
        if when is not None:  # borg takes --timestamp as UTC
            args += ["--timestamp", when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")]
        self._run([*args, f"::{name}", *map(str, paths)])
