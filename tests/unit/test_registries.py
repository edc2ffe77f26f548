"""The probe and restore-test registries, the config schema's kinds and the modules on disk
must agree: a new kind is one file, one registry line and one schema model."""

import importlib
import typing
from pathlib import Path

from drcheck.config import Config
from drcheck.probes import REGISTRY as PROBES
from drcheck.restore_tests import REGISTRY as RESTORE_TESTS

ROOT = Path(__file__).resolve().parents[2]


def schema_kinds(field: str) -> set[str]:
    annotation = typing.get_args(Config.model_fields[field].annotation)[1]
    models = typing.get_args(typing.get_args(annotation)[0]) if typing.get_origin(annotation) is typing.Annotated \
        else (typing.get_args(annotation) or (annotation,))
    return {typing.get_args(m.model_fields["kind"].annotation)[0] for m in models}


def modules_on_disk(folder: str, helpers: set[str]) -> set[str]:
    return {p.stem for p in (ROOT / folder).glob("*.py")} - {"__init__"} - helpers


def test_probe_kinds_agree():
    assert set(PROBES) == schema_kinds("probes") == modules_on_disk("probes", set())
    for module in PROBES.values():
        loaded = importlib.import_module(module)
        assert callable(loaded.probe), f"{module} has no probe(target, ctx)"


def test_restore_test_kinds_agree():
    assert set(RESTORE_TESTS) == schema_kinds("restore_tests") == modules_on_disk("restore_tests", {"checks"})
    for module in RESTORE_TESTS.values():
        assert callable(importlib.import_module(module).run), f"{module} has no run(target, ctx)"


def test_probe_modules_load_lazily():
    import subprocess
    import sys

    code = "import drcheck.probes, sys; print('drcheck.probes.restic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
