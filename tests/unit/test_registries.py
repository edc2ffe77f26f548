"""The probe and restore-test registries, the config schema's kinds and the modules on disk
must agree, and every registered module must meet its kind's protocol: a new kind is one
file, one registry line and its tests."""

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from drcheck import kinds
from drcheck.config import Config
from drcheck.probes import REGISTRY as PROBES
from drcheck.restore_tests import REGISTRY as RESTORE_TESTS

ROOT = Path(__file__).resolve().parents[2]


def schema_kinds(field: str) -> set[str]:
    annotation = typing.get_args(Config.model_fields[field].annotation)[1]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    models = typing.get_args(annotation) or (annotation,)
    return set(kinds.kinds_of(models))


def modules_on_disk(folder: str, helpers: set[str]) -> set[str]:
    """Kind modules in `folder`: every module but `__init__`, the shared `helpers`, and a
    kind's own helpers (`<kind>_*.py`, e.g. vm_sources.py beside vm.py)."""
    stems = {p.stem for p in (ROOT / folder).glob("*.py")} - {"__init__"} - helpers
    return {s for s in stems if not any(s.startswith(f"{kind}_") for kind in stems - {s})}


def test_probe_kinds_agree():
    assert set(PROBES) == schema_kinds("probes") == modules_on_disk("probes", set())


def test_restore_test_kinds_agree():
    assert set(RESTORE_TESTS) == schema_kinds("restore_tests") == modules_on_disk("restore_tests", {"checks", "completeness"})


@pytest.mark.parametrize("kind", sorted(PROBES))
def test_probe_module_meets_its_protocol(kind):
    module = kinds.probe_module(kind)
    assert kinds.conformance_problems(module, kinds.ProbeModule) == []
    assert kinds.action_problems(module) == []
    assert issubclass(module.Target, kinds.ProbeTarget)
    assert kinds.kinds_of([module.Target]) == [kind]
    if hasattr(module, "file_source"):  # a file-backup kind: the files restore test works on it
        assert kinds.conformance_problems(module, kinds.FileBackupModule) == []
        assert issubclass(module.Target, kinds.FileBackupTarget)
        source_class = typing.get_type_hints(module.file_source)["return"]
        assert kinds.conformance_problems(source_class, kinds.FileSource) == []
        if hasattr(source_class, "confines_writes"):  # may restore before the listing was checked
            assert kinds.conformance_problems(source_class, kinds.ConfiningFileSource) == []
    if hasattr(module, "lab_repository"):
        lab_class = typing.get_type_hints(module.lab_repository)["return"]
        assert kinds.conformance_problems(lab_class, kinds.LabRepository) == []
    if hasattr(module, "lab_peer"):  # a service the demo runs (a simulated vCenter)
        peer_class = typing.get_type_hints(module.lab_peer)["return"]
        assert kinds.conformance_problems(peer_class, kinds.LabPeer) == []
    assert hasattr(module, "lab_repository") or hasattr(module, "lab_peer"), "the demo could not build its lab"


@pytest.mark.parametrize("kind", sorted(RESTORE_TESTS))
def test_restore_test_module_meets_its_protocol(kind):
    module = kinds.restore_test_module(kind)
    assert kinds.conformance_problems(module, kinds.RestoreTestModule) == []
    assert issubclass(module.Target, kinds.RestoreTestTarget)
    assert kinds.kinds_of([module.Target]) == [kind]


def test_the_checker_catches_a_module_that_does_not_conform():
    import types

    broken = types.ModuleType("drcheck.probes.broken")
    broken.Target = kinds.ProbeTarget
    broken.ACTIONS = {"list": lambda target: None}
    problems = kinds.conformance_problems(broken, kinds.ProbeModule)
    assert "drcheck.probes.broken has no LISTS_POINTS" in problems
    broken.LISTS_POINTS = frozenset({"nope"})
    assert any("LISTS_POINTS" in p for p in kinds.action_problems(broken))
    assert any("does not take (target, ctx)" in p for p in kinds.action_problems(broken))
    assert any("ActionConfig fields" in p for p in kinds.action_problems(broken))


def test_heavy_client_libraries_load_only_when_used():
    """Building the whole configuration schema imports every kind module; none of them may
    import a client library at import time."""
    code = ("import sys, drcheck.config_loader; "
            "print(sorted(m for m in ('pyVmomi', 'boto3', 'paramiko', 'psycopg', 'httpx', 'imaplib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
