"""Restore tests: restore into a sandbox, verify, measure RTO/RPO, always clean up.

Each module exposes `run(target, ctx) -> RestoreTestResult`; cleanup happens in `finally`
and is leased in the store before anything is created (see drcheck.sandbox).
"""

from __future__ import annotations

import importlib
from types import ModuleType

REGISTRY: dict[str, str] = {
    "files": "drcheck.restore_tests.files",
}


def module_for(kind: str) -> ModuleType:
    """Return the restore test module for `kind`; raise KeyError for an unknown kind."""
    return importlib.import_module(REGISTRY[kind])
