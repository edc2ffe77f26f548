"""The root conftest hook: in CI a skipped end-to-end test fails; locally it skips."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

TESTS = '''
import pytest

@pytest.fixture
def peer():
    pytest.skip("restic is not installed")

@pytest.mark.e2e
def test_needs_peer(peer):
    pass

@pytest.mark.e2e
@pytest.mark.skipif(True, reason="chromium missing")
def test_marked_skip():
    pass

def test_unit_skip():
    pytest.skip("not an end-to-end test")

@pytest.mark.e2e
def test_runs():
    pass
'''


def run_suite(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    shutil.copy(ROOT_CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_peers.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    e2e: real peers\n")
    env = {"PATH": "/usr/bin:/bin"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_skipped_e2e_tests_fail(tmp_path, ci):
    done = run_suite(tmp_path, ci)
    assert done.returncode == 1, done.stdout
    assert "end-to-end test skipped in CI" in done.stdout
    assert "restic is not installed" in done.stdout and "chromium missing" in done.stdout
    assert "SKIPPED" in done.stdout and "not an end-to-end test" in done.stdout  # unit skips stay skips
    assert "PASSED test_peers.py::test_runs" in done.stdout


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_they_skip(tmp_path, ci):
    done = run_suite(tmp_path, ci)
    assert done.returncode == 0, done.stdout
    assert "3 skipped" in done.stdout and "1 passed" in done.stdout
