"""bench/bench_veeam.py at a tiny size against the real Veeam replay: it must run, pass its
own honesty checks (both sides send the same requests and read every restore point) and
write its row, so a change to the probe, the HTTP client or the replay that breaks the
benchmark fails the tests rather than `make bench`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_veeam", ROOT / "bench" / "bench_veeam.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_the_veeam_bench_runs_at_a_tiny_size_and_writes_its_row(bench, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    # 3 points per VM and copy, pages of 7: 120 points over 18 pages, page boundaries mid-VM
    assert bench.main(["--vms", "20", "--points", "3", "--page-size", "7", "--repeat", "1",
                       "--tmpdir", str(tmp_path), "--rows", str(rows)]) == 0
    out = capsys.readouterr().out
    assert "Veeam restore points, 20 VMs x 3 points x 2 copies = 120 points, 21 requests of 7" in out
    [row] = map(json.loads, rows.read_text().splitlines())
    assert row["name"] == "veeam points probe vs raw paginated GETs (20 VMs x 3 points)"
    assert row["drcheck_seconds"] > 0 and row["baseline_seconds"] > 0 and row["goal"] == "<= 1.3x"
    assert row["ratio"] == pytest.approx(row["drcheck_seconds"] / row["baseline_seconds"])


def test_the_two_sides_must_send_the_same_requests(bench):
    probe = bench.request_pattern([{"method": "GET", "path": "/api/v1/jobs", "query": "skip=0&limit=200"}])
    raw = bench.request_pattern([{"method": "GET", "path": "/api/v1/jobs", "query": "limit=200&skip=0"}])
    assert probe == raw
    rounds = bench.Rounds(logs={"probe": [{"method": "GET", "path": "/api/v1/jobs", "query": "skip=0"}],
                                "raw": [{"method": "GET", "path": "/api/v1/backups", "query": "skip=0"}]})
    with pytest.raises(RuntimeError, match="did not send the same requests"):
        bench.check_same_work(rounds, 0)
