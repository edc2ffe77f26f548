"""Where restores may not go: a sandbox root (or a restore test's fixed `target_dir`) must
not be, contain, lie inside, or resolve through a symlink into anything drcheck protects:
a live source path, a local repository, the state directory, the reports directory, the
runbooks, or a system directory (`/`, `/etc`, `/var`, `/tmp` itself…; lying *below* one,
as the default /var/lib/drcheck/sandbox does, is fine).

`config validate` (every `load`) reports each problem as "<file>: <key>: <message>"; the
engine checks again right before a restore, with symlinks resolved, because a symlink can
appear after validation. Containment is `drcheck.mapping.within` (lexical) and
`resolved_within` (symlinks resolved): one helper for all of drcheck.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from drcheck.kinds import FileBackupTarget
from drcheck.mapping import within

if TYPE_CHECKING:
    from drcheck.config_loader import LoadedConfig

SYSTEM_DIRECTORIES = frozenset(PurePosixPath(p) for p in (
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lost+found", "/media", "/mnt", "/nix", "/opt", "/proc",
    "/root", "/run", "/sbin", "/snap", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/include", "/usr/lib",
    "/usr/libexec", "/usr/local", "/usr/local/bin", "/usr/local/lib", "/usr/sbin", "/usr/share", "/usr/src",
    "/var", "/var/backups", "/var/cache", "/var/lib", "/var/local", "/var/lock", "/var/log", "/var/mail",
    "/var/opt", "/var/run", "/var/spool", "/var/tmp", "/var/www",
))
_LIB = re.compile(r"^/(usr/)?lib[^/]*$")  # /lib, /lib32, /lib64, /libx32, /usr/lib64…
# Attributes of a probe target that may hold a local path drcheck must never restore into.
REPOSITORY_ATTRIBUTES = ("repository", "repository_path", "path")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class PlacementRefused(RuntimeError):
    """A restore target overlaps something drcheck protects; nothing was written."""


@dataclass(frozen=True)
class Protected:
    key: str  # where the configuration names it
    what: str
    path: Path
    may_hold_sandbox: bool = False  # the sandbox may lie below it (the state directory)


def is_system_directory(path: PurePosixPath) -> bool:
    return PurePosixPath(path) in SYSTEM_DIRECTORIES or bool(_LIB.match(str(path)))


def local_repository(value: object) -> Path | None:
    """A repository setting that names a local path (absolute after loading), else None."""
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        return None
    if value.startswith("local:"):
        value = value[len("local:"):]
    elif _URL.match(value):
        return None  # s3:, sftp:, rest:, ssh://…: not on this machine's file system
    return Path(value) if value.startswith("/") else None


def protected(loaded: "LoadedConfig") -> list[Protected]:
    """Everything a restore must stay away from."""
    cfg = loaded.config
    items = [Protected("agent.state_dir", "the state directory", cfg.agent.state_dir, may_hold_sandbox=True),
             Protected("reports.output_dir", "the reports directory", cfg.reports.output_dir),
             Protected("agent.runbooks_dir", "the runbooks directory", cfg.agent.runbooks_dir)]
    for name, probe in cfg.probes.items():
        if isinstance(probe, FileBackupTarget):
            for i, rule in enumerate(probe.systems):
                for j, path in enumerate(rule.paths):
                    items.append(Protected(f"probes.{name}.systems[{i}].paths[{j}]",
                                           f"a source path of {rule.system}", path))
        for attribute in REPOSITORY_ATTRIBUTES:
            path = local_repository(getattr(probe, attribute, None))
            if path is not None:
                items.append(Protected(f"probes.{name}.{attribute}", f"the repository of probe {name}", path))
    return items


def restore_targets(loaded: "LoadedConfig", test: str | None = None) -> list[tuple[str, Path]]:
    """(key, path) of the sandbox root and of fixed target directories (of `test` only, if given)."""
    targets = [("agent.sandbox_root", loaded.config.agent.sandbox_root)]
    for name, target in loaded.config.restore_tests.items():
        fixed = getattr(target, "target_dir", None)
        if fixed is not None and test in (None, name):
            targets.append((f"restore_tests.{name}.target_dir", Path(fixed)))
    return targets


def problems(loaded: "LoadedConfig", test: str | None = None) -> list[tuple[str, str]]:
    """(key, message) for every restore target that overlaps something protected, judged
    both as written and with symlinks resolved as the file system is now."""
    found: list[tuple[str, str]] = []
    guarded = protected(loaded)
    for key, target in restore_targets(loaded, test):
        message = _problem(target, guarded)
        if message:
            found.append((key, message))
    return found


def _forms(path: Path) -> list[tuple[PurePosixPath, bool]]:
    lexical = PurePosixPath(path)
    resolved = PurePosixPath(Path(path).resolve())
    return [(lexical, False)] + ([(resolved, True)] if resolved != lexical else [])


def _problem(target: Path, guarded: list[Protected]) -> str | None:
    for form, via_link in _forms(target):
        how = f" (it resolves through a symlink to {form})" if via_link else ""
        if is_system_directory(form):
            return (f"{target} is the system directory {form}{how}; use a directory of its own "
                    "below one, e.g. /var/lib/drcheck/sandbox")
        for item in guarded:
            for other, other_link in _forms(item.path):
                shown = f"{item.path}" + (f" (resolves to {other})" if other_link else "")
                if within(other, form):
                    relation = "is" if other == form else "contains"
                elif within(form, other) and not item.may_hold_sandbox:
                    relation = "lies inside"
                else:
                    continue
                return (f"{target}{how} {relation} {item.what} {shown} ({item.key}); a restore there "
                        "could overwrite or delete it")
    return None


def check_at_run_time(loaded: "LoadedConfig", test: str) -> None:
    """Right before restore test `test` writes anything: raise PlacementRefused when its
    sandbox root or fixed target directory overlaps something protected, symlinks
    resolved as they are now."""
    found = problems(loaded, test)
    if found:
        key, message = found[0]
        raise PlacementRefused(f"restore refused: {key}: {message}")
