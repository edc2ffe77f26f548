"""Load and check drcheck.toml and runbooks/*.toml.

`load(path)` returns a `LoadedConfig` or raises `ConfigError` carrying every problem found,
each as "<file>: <key.path>: <message>". Pass one validates each file against the schema
in `drcheck.config`; pass two checks cross-references (a restore test naming an unknown
probe, a copy at an unknown site). Values of unknown keys, of secret references and of
ordinary string fields are never echoed, so a secret typed into the wrong key does not end
up in a terminal or a log; only numbers, durations and time zones are quoted back, where
seeing the value is what makes the error clear.
"""

from __future__ import annotations

import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ValidationError

from drcheck.config import Config, Runbook

DEFAULT_LOCATIONS = (Path("drcheck.toml"), Path("/etc/drcheck/drcheck.toml"))


class ConfigError(Exception):
    """Configuration is invalid; `errors` lists one message per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class LoadedConfig:
    """A validated configuration and the runbooks it refers to."""

    path: Path
    config: Config
    runbooks: dict[str, Runbook] = field(default_factory=dict)
    invalid_runbooks: frozenset[str] = frozenset()  # runbook files that exist but failed validation

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def database_path(self) -> Path:
        return self.config.agent.state_dir / "drcheck.db"

    def source_path(self, probe: str, system: str, path: Path) -> PurePosixPath:
        """Map a configured path (canary, expected path) to the live/snapshot absolute path:
        a relative one lies under the system's single source path (checked at load)."""
        if path.is_absolute():
            return PurePosixPath(path)
        (base,) = self.config.probes[probe].source_paths(system)
        return PurePosixPath(base) / path

    def unknown_system(self, name: str) -> str | None:
        """A message when `name` is no runbook's system, else None (also for a runbook
        that exists but is invalid: its own errors say what is wrong)."""
        if name in self.runbooks or name in self.invalid_runbooks:
            return None
        return f"unknown system {name!r} (known: {', '.join(sorted(self.runbooks)) or 'none defined'})"


def find_config(explicit: str | os.PathLike | None) -> Path:
    """Return the config path: explicit, else $DRCHECK_CONFIG, else ./drcheck.toml, else
    /etc/drcheck/drcheck.toml. Raise ConfigError when none exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get("DRCHECK_CONFIG"):
        return Path(os.environ["DRCHECK_CONFIG"])
    for candidate in DEFAULT_LOCATIONS:
        if candidate.exists():
            return candidate
    raise ConfigError(
        ["no configuration found: pass --config, set $DRCHECK_CONFIG, or create ./drcheck.toml "
         "or /etc/drcheck/drcheck.toml"]
    )


def load(path: str | os.PathLike) -> LoadedConfig:
    """Given the path of drcheck.toml, return the validated configuration and runbooks.

    Raise ConfigError listing every problem (syntax, schema, cross-references) at once.
    """
    path = Path(path).absolute()
    errors: list[str] = []
    data = _read_toml(path, errors)
    config = _validate(Config, data, path, errors) if data is not None else None
    if config is None:
        runbooks_dir = _raw_runbooks_dir(data, path) if data is not None else None
        if runbooks_dir is not None and runbooks_dir.is_dir():
            _load_runbooks(runbooks_dir, path, errors)  # report their schema errors too
        raise ConfigError(errors)
    runbooks = _load_runbooks(config.agent.runbooks_dir, path, errors)
    # a runbook that exists but is invalid has its own errors; references to it are not unknown
    invalid = frozenset(_runbook_stems(config.agent.runbooks_dir) - runbooks.keys())
    loaded = LoadedConfig(path=path, config=config, runbooks=runbooks, invalid_runbooks=invalid)
    errors.extend(cross_reference_errors(loaded))
    if errors:
        raise ConfigError(errors)
    return loaded


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _read_toml(path: Path, errors: list[str]) -> dict | None:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        errors.append(f"{_display(path)}: file not found")
    except OSError as exc:
        errors.append(f"{_display(path)}: cannot read ({exc.strerror})")
    except tomllib.TOMLDecodeError as exc:
        errors.append(f"{_display(path)}: not valid TOML: {exc}")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        errors.append(f"{_display(path)}: not valid TOML: not UTF-8 (at line {line})")
    except RecursionError:
        errors.append(f"{_display(path)}: not valid TOML: arrays or tables nested too deeply")
    return None


def _raw_runbooks_dir(data: dict, path: Path) -> Path | None:
    """Return agent.runbooks_dir from an unvalidated drcheck.toml, or None if unusable."""
    agent = data.get("agent", {})
    raw = agent.get("runbooks_dir", "runbooks") if isinstance(agent, dict) else None
    if not isinstance(raw, str) or "\0" in raw:
        return None
    try:
        return Path(os.path.normpath(path.parent / Path(raw).expanduser()))
    except RuntimeError:
        return None


def _validate(model: type[BaseModel], data: dict, path: Path, errors: list[str]):
    try:
        return model.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            errors.append(format_error(model, path, error))
            if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                errors += [format_error(model, path, e) for e in _shared_key_errors(model, data, error["loc"], path)]
        return None


def _shared_key_errors(model: type[BaseModel], data: dict, loc: tuple, path: Path) -> list[dict]:
    """A table whose `kind` is wrong or missing validates as no kind, which would hide its
    other mistakes: validate it as every kind and return the errors (located in the table)
    that every kind reports, i.e. mistakes whatever kind was meant."""
    field = model.model_fields.get(loc[0]) if len(loc) == 2 else None
    table = data.get(loc[0], {}).get(loc[1]) if field and isinstance(data.get(loc[0]), dict) else None
    if not isinstance(table, dict):
        return []
    members = typing.get_args(_unwrap(typing.get_args(_unwrap(field.annotation))[-1]))
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    found: list[dict[tuple, dict]] = []
    for member in models:
        try:
            member.model_validate({**table, "kind": _kind_of(member)}, context={"base_dir": path.parent})
            return []  # valid as some kind: nothing else is certainly wrong
        except ValidationError as exc:
            found.append({tuple(e["loc"]): e for e in exc.errors(include_url=False)})
    common = [key for key in found[0] if all(key in other for other in found[1:])] if found else []
    return [dict(found[0][key], loc=(*loc, _kind_of(models[0]), *key)) for key in common]


def _load_runbooks(directory: Path, config_path: Path, errors: list[str]) -> dict[str, Runbook]:
    if not directory.is_dir():
        errors.append(f"{_display(config_path)}: agent.runbooks_dir: {directory} is not a directory")
        return {}
    runbooks: dict[str, Runbook] = {}
    for file in sorted(directory.glob("*.toml")):
        data = _read_toml(file, errors)
        if data is None:
            continue
        runbook = _validate(Runbook, data, file, errors)
        if runbook is not None:
            runbooks[file.stem] = runbook
    return runbooks


def _runbook_stems(directory: Path) -> set[str]:
    return {file.stem for file in directory.glob("*.toml")} if directory.is_dir() else set()


def format_error(model: type[BaseModel], path: Path, error: dict[str, Any]) -> str:
    """Render one pydantic error as "<file>: <key.path>: <message>"."""
    parts, parent = _walk(model, error["loc"])
    kind = error["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        # with two kinds or more, a bad `kind` fails the whole table's union: name the key
        parts = [*parts, error.get("ctx", {}).get("discriminator", "'kind'").strip("'")]
    key_path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    if kind == "extra_forbidden":
        allowed = ", ".join(sorted(_fields(parent))) if parent else ""
        message = "unknown key" + (f" (expected one of: {allowed})" if allowed else "")
    elif kind in ("missing", "union_tag_not_found"):
        message = "required key is missing"
    elif kind == "union_tag_invalid":
        message = f"Input should be one of {error['ctx']['expected_tags']} (got {error['ctx']['tag']!r})"
    else:
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        if kind not in ("value_error", "assertion_error") and isinstance(value, (int, float, bool)):
            message += f" (got {value!r})"
        elif kind not in ("value_error", "assertion_error") and isinstance(value, (list, dict)):
            message += f" (got a {'table' if isinstance(value, dict) else 'list'})"
    return f"{_display(path)}: {key_path or '(top level)'}: {message}"


def _fields(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _walk(model: type[BaseModel], loc: tuple) -> tuple[list, type[BaseModel] | None]:
    """Follow an error location through the schema. Return the parts to display (without
    pydantic's union tags) and the model that holds the last key."""
    shown: list = []
    current: Any = model
    holder: type[BaseModel] | None = None
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            holder = current
            info = current.model_fields.get(part) if isinstance(part, str) else None
            shown.append(part)
            current = info.annotation if info else None
            continue
        origin = typing.get_origin(current)
        if origin in (dict, list):
            shown.append(part)
            current = typing.get_args(current)[-1]
            continue
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            members = [_unwrap(a) for a in typing.get_args(current)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            tagged = [m for m in models if _kind_of(m) == part or m.__name__ == part]
            if tagged:
                current = tagged[0]
                continue
            current = models[0] if models else None
            if current is not None:
                holder = current
            shown.append(part)
            continue
        if isinstance(part, str) and not part.startswith(("function-", "json-")):
            shown.append(part)
        current = None
    return shown, holder


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _kind_of(model: type[BaseModel]) -> str | None:
    info = model.model_fields.get("kind")
    if info is None:
        return None
    args = typing.get_args(info.annotation)
    return args[0] if args else None


def cross_reference_errors(loaded: LoadedConfig) -> list[str]:
    """Return one message per broken reference between sections and runbooks: the generic
    ones here, each kind's own from its target's `references(loaded)`."""
    cfg = loaded.config
    where = _display(loaded.path)
    errors: list[str] = []

    def report(key: str, message: str | None) -> None:
        if message:
            errors.append(f"{where}: {key}: {message}")

    def known(kind: str, value: str, choices) -> str | None:
        if value in choices:
            return None
        return f"unknown {kind} {value!r} (known: {', '.join(sorted(choices)) or 'none defined'})"

    if cfg.agent.site:
        report("agent.site", known("site", cfg.agent.site, cfg.sites))
    for name, copy in cfg.copies.items():
        report(f"copies.{name}.site", known("site", copy.site, cfg.sites))
    for name, probe in cfg.probes.items():
        if probe.copy is not None:
            report(f"probes.{name}.copy", known("copy", probe.copy, cfg.copies))
        for key, message in probe.references(loaded):
            report(f"probes.{name}" + (f".{key}" if key else ""), message)
    for name, test in cfg.restore_tests.items():
        report(f"restore_tests.{name}.system", loaded.unknown_system(test.system))
        probe_problem = known("probe", test.probe, cfg.probes)
        report(f"restore_tests.{name}.probe", probe_problem)
        if probe_problem is None:
            for key, message in test.references(loaded):
                report(f"restore_tests.{name}" + (f".{key}" if key else ""), message)
    for system, runbook in loaded.runbooks.items():
        file = _display(cfg.agent.runbooks_dir / f"{system}.toml")
        for i, dep in enumerate(runbook.depends_on):
            if (problem := loaded.unknown_system(dep)):
                errors.append(f"{file}: depends_on[{i}]: {problem}")
    from drcheck import placement

    for key, message in placement.problems(loaded):
        report(key, message)
    return errors
