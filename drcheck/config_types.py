"""Value types shared by the configuration schema: names, durations, paths resolved
against the file that names them, secret references (never inline values) and schedules.
Every model forbids unknown keys and validates its defaults."""

from __future__ import annotations

import os
import re
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from drcheck.durations import DURATION_PATTERN, parse_duration
from drcheck.secrets import SecretRef

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "a duration: '90s', '15m', '4h', '1d12h', '2w' or seconds",
        }
    ),
]


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    try:
        value = value.expanduser()
    except RuntimeError:  # "~user/…" for an unknown user, or no home directory
        raise ValueError("cannot expand '~': unknown user or no home directory") from None
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return Path(os.path.normpath(value))


ConfigPath = Annotated[Path, AfterValidator(resolve_path)]

SECRET_HINT = "use { env = \"VAR\" }, { file = \"/path\" } or { credential = \"name\" }"
SECRETISH_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|AUTH", re.IGNORECASE)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# `copy` is the natural key name for "which copy"; it shadows the deprecated BaseModel.copy().
warnings.filterwarnings("ignore", message='Field name "copy"', category=UserWarning)


class SecretSpec(Strict):
    """Where a secret lives. Exactly one of `env`, `file`, `credential`."""

    env: str | None = Field(None, description="name of an environment variable holding the secret")
    file: ConfigPath | None = Field(None, description="path of a file holding the secret")
    credential: str | None = Field(
        None, description="name of a systemd credential (LoadCredential=) in $CREDENTIALS_DIRECTORY"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline(cls, data: Any) -> Any:
        if isinstance(data, (str, int, float)) and not isinstance(data, bool):
            raise ValueError(f"inline secrets are not allowed; {SECRET_HINT}")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> "SecretSpec":
        given = [k for k in ("env", "file", "credential") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of env, file, credential (got {len(given)})")
        return self

    def ref(self) -> SecretRef:
        return SecretRef(env=self.env, file=self.file, credential=self.credential)


def _env_value(value: Any, info: ValidationInfo) -> str | SecretSpec:
    if isinstance(value, dict):
        return SecretSpec.model_validate(value, context=info.context)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError("expected a string or a secret reference { env | file | credential }")


EnvValue = Annotated[
    str | SecretSpec,
    BeforeValidator(_env_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "properties": {k: {"type": "string"} for k in ("env", "file", "credential")},
                    "additionalProperties": False,
                    "minProperties": 1,
                    "maxProperties": 1,
                },
            ]
        }
    ),
]


class Schedule(Strict):
    """When a job runs: exactly one of `cron` (5-field crontab, agent timezone) or
    `interval`. `jitter` spreads start times so many agents do not hit one repository."""

    cron: str | None = Field(None, description="crontab expression, e.g. '30 2 * * *'")
    interval: Duration | None = Field(None, description="run every this long, e.g. '1h'")
    jitter: Duration | None = Field(None, description="random delay added to each run")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"not a valid 5-field crontab expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> "Schedule":
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of cron or interval")
        if self.interval is not None and self.interval < timedelta(seconds=1):
            raise ValueError("interval must be at least 1s")
        return self


