"""The published schemas' own defaults are valid against the schemas: an editor that fills
in a default must never produce a file that drcheck (or the schema) then rejects."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from drcheck.schema import schema

REPO = Path(__file__).resolve().parents[2]


def defaults(node, defs, path="#"):
    """Yield (path, subschema, default) for every property schema that declares a default."""
    if isinstance(node, dict):
        if "default" in node:
            yield path, node, node["default"]
        for key, value in node.items():
            if key != "default":
                yield from defaults(value, defs, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from defaults(value, defs, f"{path}/{i}")


@pytest.mark.parametrize("runbook", [False, True], ids=["drcheck", "runbook"])
def test_every_default_is_valid_against_its_own_schema(runbook):
    published = schema(runbook)
    found = list(defaults(published, published.get("$defs", {})))
    assert found, "the schema declares no defaults at all?"
    problems = []
    for path, subschema, value in found:
        standalone = {**{k: v for k, v in subschema.items() if k != "default"}, "$defs": published.get("$defs", {})}
        try:
            jsonschema.validate(value, standalone, cls=jsonschema.Draft202012Validator)
        except jsonschema.ValidationError as exc:
            problems.append(f"{path}: default {value!r}: {exc.message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ["drcheck.schema.json", "runbook.schema.json"])
def test_committed_schema_is_a_valid_json_schema(name):
    jsonschema.Draft202012Validator.check_schema(json.loads((REPO / name).read_text()))


def test_a_config_of_only_defaults_validates_against_the_schema():
    published = schema(False)
    from drcheck.config import Config

    everything_default = json.loads(Config().model_dump_json())
    jsonschema.validate(everything_default, published, cls=jsonschema.Draft202012Validator)
