"""bench/bench_vmware.py at a tiny size against the real simulator: it must run, pass its
own honesty checks (both sides read the same VMs, the attribute reads agree with the sweep,
every VM restore test passes) and write its rows, so a change to the probe, the client or the simulator that breaks the
benchmark fails the tests rather than `make bench`."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from drcheck import lab_vcsim

pytest.importorskip("pyVmomi")
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    try:
        lab_vcsim.binary()
    except lab_vcsim.VcsimError as err:
        if shutil.which("go") is None:
            pytest.skip(f"vcsim cannot be built: {err} (make test installs Go)")
        raise
    spec = importlib.util.spec_from_file_location("bench_vmware", ROOT / "bench" / "bench_vmware.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_the_vmware_bench_runs_at_a_tiny_size_and_writes_its_rows(bench, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    assert bench.main(["--vms", "20", "--repeat", "1", "--sample", "4", "--delay-ms", "5", "--rotation-vms", "4",
                       "--wan-sample", "2", "--tmpdir", str(tmp_path), "--rows", str(rows)]) == 0
    out = capsys.readouterr().out
    assert "VMware inventory, 20 VMs" in out and "VM restore tests, 5 ms per vCenter call" in out
    figures = {row["name"]: row for row in map(json.loads, rows.read_text().splitlines())}
    raw = figures["vmware inventory vs raw RetrievePropertiesEx (20 VMs)"]
    assert raw["drcheck_seconds"] > 0 and raw["baseline_seconds"] > 0 and raw["goal"] == "<= 1.5x"
    memory = figures["vmware inventory peak RSS vs raw sweep script (20 VMs)"]
    assert memory["unit"] == "MB" and memory["value"] > 10
    days = figures["vmware days for a 4-VM rotation, one 8-hour window a day (5 ms per call)"]
    assert days["unit"] == "days" and days["value"] == 1
