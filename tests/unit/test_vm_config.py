"""Configuration of the `vm` restore test: the source union, rotation rules and the
cross-references (its probe must be a vmware probe)."""

from __future__ import annotations

import copy

import pytest

from drcheck.config_loader import ConfigError, load
from drcheck.restore_tests.vm import VmRestoreTest
from drcheck.restore_tests.vm_sources import SOURCES
from tests.unit.test_vm_fakes import VM_TEST, vm_config


def load_test(builders, tmp_path, **changes):
    test = copy.deepcopy(VM_TEST)
    test.update(changes)
    return load(vm_config(builders, tmp_path, test)).config.restore_tests["vm-sis"]


def errors(builders, tmp_path, **changes) -> str:
    with pytest.raises(ConfigError) as caught:
        load_test(builders, tmp_path, **changes)
    return str(caught.value)


def test_a_clone_test_loads_with_its_defaults(builders, tmp_path):
    test = load_test(builders, tmp_path)
    assert isinstance(test, VmRestoreTest)
    assert test.source.type == "clone" and test.source.snapshot is None
    assert test.boot_timeout.total_seconds() == 2 and test.capacity.host_memory_margin_mb == 1024
    assert test.canary is None  # the CLI and the scheduler ask every test for its canary


@pytest.mark.parametrize("source", [
    {"type": "register", "vmx": "[LocalDS_0] exports/sis01/sis01.vmx"},
    {"type": "adopt", "name": "sis01-restored*"},
    {"type": "clone", "vm": "DC0/vm/Replicas/sis01_replica", "snapshot": "nightly"},
])
def test_every_source_loads(builders, tmp_path, source):
    assert load_test(builders, tmp_path, source=source).source.type == source["type"]


def test_the_sources_are_a_registry():
    assert set(SOURCES) == {"clone", "register", "adopt", "veeam-instant"}


@pytest.mark.parametrize("changes, words", [
    ({"source": {"type": "clone"}}, "source.vm is required for a clone"),
    ({"source": {"type": "register", "vmx": "/exports/sis01.vmx"}}, "vmx"),
    ({"source": {"type": "veeam", "id": "x"}}, "source"),
    ({"rotation": {"vms": [{"folder": "/DC0/vm/Schools"}], "per_run": 2}}, "give source.vm or rotation, not both"),
    ({"source": {"type": "adopt", "name": "x"}, "rotation": {"vms": [{"name": "*"}]}}, "rotation needs source.type"),
    ({"sandbox": {"folder": "DC0/vm/sandbox"}}, "network"),
    ({"rotation": {"vms": [], "per_run": 1}, "source": {"type": "clone"}}, "vms"),
])
def test_invalid_settings_are_refused(builders, tmp_path, changes, words):
    assert words in errors(builders, tmp_path, **changes)


def test_a_rotation_loads(builders, tmp_path):
    test = load_test(builders, tmp_path, source={"type": "clone"},
                     rotation={"vms": [{"folder": "/DC0/vm/Schools"}, {"name": "sis*"}], "per_run": 3,
                               "window": "4h"})
    assert test.rotation.per_run == 3 and test.rotation.window.total_seconds() == 4 * 3600


def test_the_probe_must_be_a_vmware_probe(builders, tmp_path):
    message = errors(builders, tmp_path, probe="local-repo")
    assert "restore_tests.vm-sis.probe: probe 'local-repo' is a restic probe; a vm restore test needs a vmware " \
           "probe" in message


def test_an_unknown_copy_is_refused(builders, tmp_path):
    assert "restore_tests.vm-sis.copy: unknown copy 'tape'" in errors(builders, tmp_path, copy="tape")
    assert load_test(builders, tmp_path, copy="offsite").copy == "offsite"
