"""The published JSON schemas of drcheck.toml and runbooks/*.toml."""

from __future__ import annotations

import json

from drcheck.config import Config, Runbook


def schema(runbook: bool = False) -> dict:
    model = Runbook if runbook else Config
    data = model.model_json_schema()
    data["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    data["title"] = "drcheck runbook (runbooks/<system>.toml)" if runbook else "drcheck.toml"
    return data


def schema_json(runbook: bool = False) -> str:
    return json.dumps(schema(runbook), indent=2, sort_keys=True) + "\n"
