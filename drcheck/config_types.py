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
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    WrapValidator,
    field_validator,
    model_validator,
)

from drcheck.durations import DURATION_PATTERN, parse_duration
from drcheck.secrets import SecretRef

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]

def duration_text(value: timedelta) -> str:
    """Render a duration the way the configuration writes it ('2h', '1d12h', '90s', '0.5s'),
    so schema defaults and dumped configurations are valid input again (pydantic's own
    ISO 8601 'PT2H' is not)."""
    seconds = value.total_seconds()
    if seconds != int(seconds):
        return f"{seconds:g}s"
    seconds, parts = int(seconds), []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(duration_text, return_type=str, when_used="json"),
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


def _no_inline_secrets(value: Any, handler) -> dict[str, Any]:
    # one error per inline secret, at <key>.<NAME>, reported together with the other errors
    # of the table; the value itself is never included
    inline = [
        name for name, item in (value.items() if isinstance(value, dict) else ())
        if isinstance(item, (str, int, float)) and not isinstance(item, bool)
        and isinstance(name, str) and SECRETISH_NAME.search(name)
    ]
    try:
        result, other = handler(value), []
    except ValidationError as exc:
        if not inline:
            raise
        other = [{k: e[k] for k in ("type", "loc", "input", "ctx") if k in e} for e in exc.errors()]
    if inline:
        problem = ValueError(f"inline secrets are not allowed; {SECRET_HINT}")
        raise ValidationError.from_exception_data(
            "environment",
            other + [{"type": "value_error", "loc": (name,), "input": "<hidden>", "ctx": {"error": problem}}
                     for name in inline],
        )
    return result


Environment = Annotated[dict[str, EnvValue], WrapValidator(_no_inline_secrets)]
"""Extra environment for a backup tool: plain values, or secret references; a plain value
under a name that looks secret (…PASSWORD, …KEY, …TOKEN) is refused as an inline secret."""


def environment_for_client(environment: dict[str, Any]) -> dict[str, Any]:
    """The environment a client takes: plain strings, and `SecretRef`s it reveals only in
    the child process's environment."""
    return {k: (v.ref() if isinstance(v, SecretSpec) else v) for k, v in environment.items()}


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
            CronTrigger(**cron_fields(value))
        except ValueError as exc:
            raise ValueError(f"not a valid 5-field crontab expression: {exc}") from None
        return value

    def trigger(self, timezone: str):
        """Return the APScheduler trigger for this schedule in `timezone`."""
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        jitter = int(self.jitter.total_seconds()) if self.jitter else None
        if self.cron:
            return CronTrigger(**cron_fields(self.cron), timezone=timezone, jitter=jitter)
        return IntervalTrigger(seconds=self.interval.total_seconds(), timezone=timezone, jitter=jitter)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Schedule":
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of cron or interval")
        if self.interval is not None and self.interval < timedelta(seconds=1):
            raise ValueError("interval must be at least 1s")
        return self




_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab order: 0 (and 7) = Sunday


def cron_fields(expr: str) -> dict[str, str]:
    """Translate a 5-field crontab expression into APScheduler CronTrigger fields.

    APScheduler numbers weekdays from Monday = 0 while crontab uses Sunday = 0 (and 7), so
    the day-of-week field is expanded into day names. crontab runs a job when *either*
    day field matches if both are restricted, APScheduler only when both do; rather than
    guess, such an expression is refused. Raise ValueError naming the problem.
    """
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month day-of-week), got {len(parts)}")
    minute, hour, day, month, day_of_week = parts
    if day != "*" and day_of_week != "*":
        raise ValueError("restrict day of month or day of week, not both (crontab would run when either matches)")
    return {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": _weekdays(day_of_week)}


def _weekdays(field: str) -> str:
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"bad step in day of week: {part!r}")
        if span == "*":
            low, high = 0, 6
        elif "-" in span:
            low, high = (_weekday(x) for x in span.split("-", 1))
        else:
            low = _weekday(span)
            high = 7 if step else low
        if high < low:
            raise ValueError(f"day-of-week range runs backwards: {part!r}")
        days.update(d % 7 for d in range(low, high + 1, step or 1))
    return "*" if len(days) == 7 else ",".join(_DAY_NAMES[d] for d in sorted(days))


def _weekday(text: str) -> int:
    text = text.strip().lower()
    if text in _DAY_NAMES:
        return _DAY_NAMES.index(text)
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    raise ValueError(f"day of week must be 0-7 or sun-sat, got {text!r}")
