"""The DR plan from `drcheck demo`: the demo renders it as HTML and PDF after the weekly
report and says where both are; the plan lists the demo's findings (payroll's missed backups,
the appliance 15 km away)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.e2e.test_demo import RESTIC, copy_demo, drcheck

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(RESTIC is None, reason="restic is not installed")]


def test_demo_renders_the_plan_and_says_where_it_is(tmp_path):
    if not shutil.which("pdftotext"):
        pytest.skip("poppler-utils is not installed (`make test` installs it)")
    config = copy_demo(tmp_path)

    done = drcheck(config, "demo")

    # the demo's own verdict (exit 0 when every peer behaved) is test_demo's to judge
    assert "The demo did not go as built" not in done.stderr or "DR plan:" in done.stdout, done.stderr
    html = re.search(r"DR plan: (\S+\.html)", done.stdout).group(1)
    pdf = re.search(r"DR plan \(PDF\): (\S+\.pdf)", done.stdout).group(1)
    assert done.stdout.index("Weekly report:") < done.stdout.index("DR plan:")
    text = subprocess.run(["pdftotext", "-layout", pdf, "-"], check=True, capture_output=True, text=True).stdout
    assert "4. Recovery" in text and "10. Compliance matrix" in text
    assert re.search(r"newest restore point in barracuda is .* old", text)  # payroll's silent data source
    page = open(html).read()
    assert 'id="system-payroll"' in page and "nutrition-center" in page
