"""The committed JSON schemas are what `drcheck config schema [--runbook]` prints, and the
embedded drcheck.toml with runbooks/ at the repository root is valid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from drcheck.cli import cli
from drcheck.config_loader import load
from drcheck.schema import schema, schema_json

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = [(False, "drcheck.schema.json", []), (True, "runbook.schema.json", ["--runbook"])]


@pytest.mark.parametrize("runbook, name, flags", PUBLISHED, ids=["drcheck", "runbook"])
def test_committed_schema_is_what_the_cli_publishes(runbook, name, flags):
    committed = (REPO / name).read_text()
    result = CliRunner().invoke(cli, ["config", "schema", *flags])
    assert result.exit_code == 0, result.output
    regenerate = f"out of date: run `drcheck config schema {' '.join(flags)} > {name}`"
    assert committed == result.output, regenerate
    assert committed == schema_json(runbook=runbook), regenerate
    assert json.loads(committed) == schema(runbook=runbook)


@pytest.mark.parametrize("runbook, name, flags", PUBLISHED, ids=["drcheck", "runbook"])
def test_published_schema_forbids_unknown_keys_everywhere(runbook, name, flags):
    data = json.loads((REPO / name).read_text())
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert data["additionalProperties"] is False
    for definition_name, definition in data.get("$defs", {}).items():
        if definition.get("type") == "object":
            assert definition.get("additionalProperties") is False, definition_name


def test_embedded_config_and_runbooks_are_valid():
    loaded = load(REPO / "drcheck.toml")
    assert set(loaded.runbooks) == {path.stem for path in (REPO / "runbooks").glob("*.toml")}
    assert loaded.config.agent.runbooks_dir == REPO / "runbooks"
    mapped = {system for probe in loaded.config.probes.values() for system in probe.systems_covered()}
    assert mapped == set(loaded.runbooks)


@pytest.mark.parametrize(
    "toml", ["drcheck.toml", *(f"runbooks/{p.name}" for p in sorted((REPO / "runbooks").glob("*.toml")))]
)
def test_schema_directives_point_at_the_committed_schemas(toml):
    first_line = (REPO / toml).read_text().splitlines()[0]
    match = re.fullmatch(r"#:schema (\S+)", first_line)
    assert match, f"{toml} should start with a #:schema directive"
    target = (REPO / toml).parent / match.group(1)
    expected = "drcheck.schema.json" if toml == "drcheck.toml" else "runbook.schema.json"
    assert target.resolve() == REPO / expected
