"""The published JSON schemas of drcheck.toml and runbooks/*.toml."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from drcheck.config import Config, Runbook
from drcheck.config_types import duration_text


class _Generator(GenerateJsonSchema):
    """Defaults written the way the configuration takes them: a duration default is '2h',
    not pydantic's ISO 8601 'PT2H', which the schema's own duration pattern rejects."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return duration_text(dft)
        return super().encode_default(dft)


def schema(runbook: bool = False) -> dict:
    model = Runbook if runbook else Config
    data = model.model_json_schema(schema_generator=_Generator)
    data["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    data["title"] = "drcheck runbook (runbooks/<system>.toml)" if runbook else "drcheck.toml"
    return data


def schema_json(runbook: bool = False) -> str:
    return json.dumps(schema(runbook), indent=2, sort_keys=True) + "\n"
