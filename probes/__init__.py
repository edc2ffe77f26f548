"""Probes: read-only, cheap, frequent looks at backup sources.

Each module exposes `probe(target, ctx) -> ProbeResult` (and optionally
`check(target, ctx) -> ProbeResult` for a slower integrity check). Modules are imported
lazily, so a client library loads only when a probe of its kind is configured.
"""

from __future__ import annotations

import importlib
from types import ModuleType

REGISTRY: dict[str, str] = {
    "restic": "drcheck.probes.restic",
}


def module_for(kind: str) -> ModuleType:
    """Return the probe module for `kind`; raise KeyError for an unknown kind."""
    return importlib.import_module(REGISTRY[kind])
