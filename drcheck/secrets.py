"""Secret references: values come from env vars, files or systemd credentials, never inline.

A `SecretRef` knows *where* a secret is; `reveal()` reads it at the moment of use. Its
repr and str never contain the value, so it is safe in logs, errors and the database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from drcheck.clients import SourceError


class SecretUnavailable(SourceError):
    """The referenced secret could not be read (missing variable, file or credential)."""


@dataclass(frozen=True)
class SecretRef:
    env: str | None = None
    file: Path | None = None
    credential: str | None = None

    def describe(self) -> str:
        """Return where the secret lives, e.g. "env:RESTIC_PASSWORD" (never the value)."""
        if self.env:
            return f"env:{self.env}"
        if self.file:
            return f"file:{self.file}"
        return f"credential:{self.credential}"

    def __repr__(self) -> str:
        return f"SecretRef({self.describe()})"

    __str__ = __repr__

    def file_path(self) -> Path | None:
        """Return a file holding the secret (file or systemd credential), else None.

        Tools that accept a password file (restic --password-file) get the path, so the
        value never passes through drcheck's memory or a process environment.
        """
        if self.file:
            return self.file
        if self.credential:
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise SecretUnavailable(
                    f"{self.describe()}: $CREDENTIALS_DIRECTORY is not set "
                    "(is LoadCredential= configured in the systemd unit?)"
                )
            return Path(directory) / self.credential
        return None

    def reveal(self) -> str:
        """Return the secret value; raise SecretUnavailable saying what is missing."""
        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretUnavailable(f"{self.describe()}: environment variable is not set")
            return value
        path = self.file_path()
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise SecretUnavailable(f"{self.describe()}: cannot read ({exc.strerror})") from None


def write_secret_file(path: Path) -> None:
    """Create (or replace) `path` holding a fresh random secret, readable by its owner only
    (demo labs and tests: real secrets are the operator's)."""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(24) + "\n")
