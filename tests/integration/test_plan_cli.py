"""`drcheck report plan` as a program: where it writes, --json, --no-pdf, exit status, and
one line on stderr (no traceback) when the output directory cannot be written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from drcheck.store import Store
from tests.plan_fixtures import district, fill_district


@pytest.fixture
def configured(tmp_path):
    loaded = district(tmp_path)
    with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
        fill_district(loaded, store)
    return loaded


def drcheck(loaded, *args):
    return subprocess.run([sys.executable, "-m", "drcheck", "--config", str(loaded.path), "report", "plan", *args],
                          capture_output=True, text=True, timeout=600)  # a hang guard, not a performance check


def test_json_names_both_files_in_the_output_directory(configured, tmp_path):
    done = drcheck(configured, "--output", str(tmp_path / "plans"), "--json")
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)
    assert set(files) == {"html", "pdf"}
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == sorted(
        [files["html"].rsplit("/", 1)[1], files["pdf"].rsplit("/", 1)[1]])
    assert files["html"][:-5] == files["pdf"][:-4]  # one stem: plan-<local time>
    assert open(files["pdf"], "rb").read(5) == b"%PDF-" and "4. Recovery" in open(files["html"]).read()


def test_default_directory_and_no_pdf(configured):
    done = drcheck(configured, "--no-pdf")
    assert done.returncode == 0, done.stderr
    written = sorted(configured.config.reports.output_dir.iterdir())
    assert [p.suffix for p in written] == [".html"]
    assert f"DR plan: {written[0]}" in done.stdout and "PDF" not in done.stdout
    again = drcheck(configured, "--no-pdf", "--json")
    assert json.loads(again.stdout)["pdf"] is None
    assert len(list(configured.config.reports.output_dir.iterdir())) == 2  # the first plan is kept


@pytest.mark.parametrize("where", ["a-file", "a-file/below"])
def test_an_unwritable_output_is_one_line_and_exit_1(configured, tmp_path, where):
    (tmp_path / "a-file").write_text("not a directory\n")
    done = drcheck(configured, "--output", str(tmp_path / where), "--no-pdf")
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("drcheck report plan: cannot write the plan into ") and str(tmp_path / where) in lines[0]


def test_without_weasyprint_the_plan_says_so_in_one_line(configured, tmp_path):
    """A machine where WeasyPrint cannot load (here: its import blocked) gets one line naming
    the packages and --no-pdf, exit status 1, and no half a plan."""
    program = ("import sys; sys.modules['weasyprint'] = None; from drcheck.cli import main; "
               f"sys.argv = ['drcheck', '--config', {str(configured.path)!r}, 'report', 'plan', "
               f"'-o', {str(tmp_path / 'plans')!r}]; main()")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("drcheck report plan: cannot make PDFs") and "--no-pdf" in line
    assert not (tmp_path / "plans").exists() or list((tmp_path / "plans").iterdir()) == []
