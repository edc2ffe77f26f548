"""Landlock write confinement of restore tools: real kernel, real processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from drcheck import confine

pytestmark = pytest.mark.skipif(not confine.available() and not os.environ.get("CI"),
                                reason="this kernel has no Landlock (CI requires it)")


def run_confined(writable, script):
    argv = confine.command(["sh", "-c", script], [str(p) for p in writable])
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_writes_outside_the_allowed_directories_are_refused(tmp_path):
    inside, outside = tmp_path / "sandbox", tmp_path / "live"
    inside.mkdir()
    outside.mkdir()
    (outside / "data").write_text("precious")
    (inside / "escape").symlink_to(outside)
    done = run_confined([inside], f"""
        echo restored > {inside}/file
        mkdir {inside}/dir && echo nested > {inside}/dir/x
        echo evil > {outside}/new
        echo evil > {outside}/data
        rm -f {outside}/data
        echo evil > {inside}/escape/via-symlink
        mv {inside}/file {outside}/moved
        true""")
    assert done.returncode == 0, done.stderr
    assert (inside / "file").read_text() == "restored\n" and (inside / "dir" / "x").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["data"]
    assert (outside / "data").read_text() == "precious"
    assert done.stderr.count("Permission denied") + done.stderr.count("Operation not permitted") >= 5


def test_reads_and_execution_stay_allowed_and_children_inherit_the_confinement(tmp_path):
    inside = tmp_path / "sandbox"
    inside.mkdir()
    run_confined([inside], f"cat /etc/hostname > {inside}/copy; sh -c 'echo x > {tmp_path}/by-child' ; true")
    assert (inside / "copy").exists() and not (tmp_path / "by-child").exists()


def test_a_single_file_can_be_allowed(tmp_path):
    inside = tmp_path / "sandbox"
    inside.mkdir()
    done = run_confined([inside, "/dev/null"], "echo x > /dev/null && echo fine")
    assert done.stdout.strip() == "fine"


def test_usage_errors_and_missing_programs_are_one_line():
    bad = subprocess.run([sys.executable, "-m", "drcheck.confine", "sh"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("usage:")
    missing = subprocess.run(confine.command(["/nonexistent/tool"], ["/tmp"]), capture_output=True, text=True)
    assert missing.returncode == 127 and missing.stderr.strip().count("\n") == 0
