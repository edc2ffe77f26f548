"""Property: any generated mistake in a valid configuration (wrong type, unknown key, inline
secret, reference to a missing name) makes `load` raise ConfigError, never another exception,
and every message reads "<file>: <key.path>: <message>" with the mutated key path in one of
them. Plus the real CLI on a bad configuration: exit 1, one message per error, no traceback."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drcheck.config_loader import ConfigError, load

CONFIG = "drcheck.toml"
KINDS = ("wrong_type", "unknown_key", "inline_secret", "missing_reference")
NAME_TABLES = {("sites",), ("copies",), ("probes",), ("restore_tests",)}  # keys are user-chosen names
MESSAGE = re.compile(r"(drcheck\.toml|runbooks/[a-z]+\.toml): [A-Za-z_][\w-]*(\.[\w-]+|\[\d+\])*: \S.*")
WRONG_TYPE = {  # values no key of that current type accepts
    bool: ["not-a-bool", 7, [1], {"x_wrong": 1}],
    int: ["not-a-number", True, [1], {"x_wrong": 1}],
    float: ["not-a-number", True, [1], {"x_wrong": 1}],
    str: [True, [1], {"x_wrong": 1}],
    dict: ["not-a-table", 7, [1]],
    list: ["not-a-list", 7, {"x_wrong": 1}],
}
REFERENCES = [  # (file, key path of a reference to another section or runbook)
    (CONFIG, ("agent", "site")),
    (CONFIG, ("copies", "offsite", "site")),
    (CONFIG, ("probes", "local-repo", "copy")),
    (CONFIG, ("probes", "local-repo", "systems", 1, "system")),
    (CONFIG, ("probes", "offsite-repo", "systems", 0, "system")),
    (CONFIG, ("restore_tests", "sis-files", "probe")),
    (CONFIG, ("restore_tests", "sis-files", "system")),
    ("runbooks/sis.toml", ("depends_on", 0)),
]


def key_path(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def documents(builders) -> dict[str, dict]:
    docs = {CONFIG: builders.valid_config()}
    docs.update({f"runbooks/{name}.toml": data for name, data in builders.valid_runbooks().items()})
    return docs


def nodes(value, path: tuple = ()):
    """Yield (path, value) for every table, list and value below (and including) value."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from nodes(child, path + (key,))


def get(doc, path: tuple):
    for part in path:
        doc = doc[part]
    return doc


def put(doc, path: tuple, value) -> None:
    get(doc, path[:-1])[path[-1]] = value


def sites(builders):
    """Where each kind of mutation can go: {kind: [(file, path)]}."""
    found = {"wrong_type": [], "unknown_key": [], "inline_secret": []}
    for file, doc in documents(builders).items():
        for path, value in nodes(doc):
            if path:
                found["wrong_type"].append((file, path))
            if isinstance(value, dict):
                is_name_table = file == CONFIG and (path in NAME_TABLES or path[-1:] == ("environment",))
                if not is_name_table:
                    found["unknown_key"].append((file, path))
                if file == CONFIG and len(value) == 1 and set(value) <= {"env", "file", "credential"}:
                    found["inline_secret"].append((file, path))
    found["missing_reference"] = REFERENCES
    return found


@st.composite
def mutation(draw, valid, kind, file, path):
    """Draw the value of a `kind` mistake at file/path of the valid documents; return
    (kind, file, path, value) where `path` is the key path that must show up in a message."""
    if kind == "wrong_type":
        value = draw(st.sampled_from(WRONG_TYPE[type(get(valid[file], path))]))
    elif kind == "unknown_key":
        path = path + (draw(st.from_regex(r"x_[a-z0-9_]{1,10}", fullmatch=True)),)
        value = draw(st.sampled_from([1, "value", [1, 2], {"a": 1}, True]))
    elif kind == "inline_secret":
        value = draw(st.one_of(st.from_regex(r"hunter2-[A-Za-z0-9]{4,16}", fullmatch=True),
                               st.integers(10**7, 10**12)))
    else:
        value = draw(st.from_regex(r"missing-[a-z0-9]{1,8}", fullmatch=True))
    return kind, file, path, value


def where(candidates, kinds) -> list[tuple]:
    return [(kind, file, path) for kind in kinds for file, path in candidates[kind]]


def load_mutated(builders, changes) -> list[str]:
    """Apply [(kind, file, path, value)], write everything to a fresh working directory,
    load, and return the ConfigError messages (any other exception fails the test)."""
    docs = documents(builders)
    for _, file, path, value in changes:
        put(docs[file], path, value)
    config = docs.pop(CONFIG)
    runbooks = {Path(file).stem: data for file, data in docs.items()}
    with tempfile.TemporaryDirectory() as directory, contextlib.chdir(directory):
        path = builders.write_config(directory, config, runbooks)
        with pytest.raises(ConfigError) as info:
            load(path)
    errors = info.value.errors
    assert errors, "ConfigError without messages"
    for message in errors:
        assert MESSAGE.fullmatch(message), f"not '<file>: <key.path>: <message>': {message!r}"
    return errors


def names_path(errors: list[str], file: str, path: tuple) -> list[str]:
    """Return the messages about `path` (or a key below it) in `file`."""
    prefix = f"{file}: {key_path(path)}"
    return [m for m in errors if m.startswith(prefix) and m[len(prefix)] in ":.["]


@pytest.fixture(scope="module")
def candidates(builders):
    return sites(builders)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_single_mistake_is_reported_with_file_and_key_path(builders, candidates, data):
    kind, file, path = data.draw(st.sampled_from(where(candidates, KINDS)), label="where")
    kind, file, path, value = data.draw(mutation(documents(builders), kind, file, path), label="mutation")
    errors = load_mutated(builders, [(kind, file, path, value)])
    about = names_path(errors, file, path)
    assert about, f"no message names {file}: {key_path(path)} in {errors}"
    if kind == "unknown_key":
        assert any(": unknown key (expected one of: " in m for m in about), about
    elif kind == "inline_secret":
        assert any(": inline secrets are not allowed; " in m for m in about), about
        assert all(str(value) not in m for m in errors), "the inline secret was echoed"
    elif kind == "missing_reference":
        assert any(": unknown " in m and f"'{value}' (known: " in m for m in about), about


def _table_of_kind(path: tuple) -> tuple | None:
    """(section, name) when `path` is the `kind` key of a probe or restore test."""
    if len(path) == 3 and path[0] in ("probes", "restore_tests") and path[2] == "kind":
        return path[:2]
    return None


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_several_schema_mistakes_in_several_files_are_all_reported(builders, candidates, data):
    # where the runbooks are must stay readable, or their mistakes cannot be reported
    places = [w for w in where(candidates, KINDS[:3]) if w[1:] not in {(CONFIG, ("agent",)),
                                                                   (CONFIG, ("agent", "runbooks_dir"))}]
    changes = []
    for kind, file, path in data.draw(st.lists(st.sampled_from(places), min_size=2, max_size=5), label="where"):
        if any(f == file and (path[: len(p)] == p or p[: len(path)] == path) for _, f, p, _ in changes):
            continue  # the same place, or one mistake inside another, which would hide it
        if any(f == file and _table_of_kind(p) is not None and _table_of_kind(p) == path[:2]
               or f == file and _table_of_kind(path) is not None and _table_of_kind(path) == p[:2]
               for _, f, p, _ in changes):
            continue  # a broken `kind` leaves no model to judge the rest of its table by
        changes.append(data.draw(mutation(documents(builders), kind, file, path)))
    errors = load_mutated(builders, changes)
    for _, file, path, _ in changes:
        assert names_path(errors, file, path), f"no message names {file}: {key_path(path)} in {errors}"
    assert len(errors) >= len(changes)


# --- the real command line -----------------------------------------------------------------


def _bad_config(builders, directory: Path) -> tuple[Path, list[str]]:
    cfg = builders.valid_config()
    cfg["agent"]["max_parallel_jobs"] = "two"
    cfg["probes"]["local-repo"]["repo"] = "typo"
    cfg["probes"]["local-repo"]["password"] = "hunter2"
    runbooks = builders.valid_runbooks()
    runbooks["sis"]["rto"] = "soon"
    path = builders.write_config(directory, cfg, runbooks)
    with contextlib.chdir(directory), pytest.raises(ConfigError) as info:
        load(path)
    assert len(info.value.errors) == 4
    return path, info.value.errors


def _validate(directory: Path, path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "DRCHECK_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "drcheck", "--config", str(path.name), "config", "validate"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=60,
    )


def test_cli_validate_bad_config_exits_1_with_one_line_per_error_and_no_traceback(builders, tmp_path):
    path, errors = _bad_config(builders, tmp_path)
    result = _validate(tmp_path, path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert lines == [*errors, "4 configuration problem(s); nothing was run."]


def test_cli_validate_good_config_exits_0(builders, tmp_path):
    path = builders.write_config(tmp_path)
    result = _validate(tmp_path, path)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "2 system(s), 2 probe(s), 1 restore test(s)" in result.stdout
