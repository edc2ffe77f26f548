"""The weekly report as a browser shows it: rendered from a real store, screenshotted by
Debian's headless Chromium, and checked with Pillow to be a readable, non-blank page; and
its measured-RTO chart (inline SVG) drawn by Chromium with each dot where its coordinates
say, in its colour."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import tomli_w

from drcheck.config_loader import load
from drcheck.reporting import render_weekly, weekly_context
from drcheck.results import CheckResult, ProbeResult, RestorePoint, RestoreTestResult, Status
from drcheck.store import Store

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2024, 3, 13, 15, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
WIDTH, HEIGHT = 1280, 2400  # tall enough for the summary, the systems and the RTO chart
FAILED_RED = (0xB4, 0x23, 0x18)  # --bad in reports/style.css: the FAILED badge
KEEP_COPY = Path("/tmp/weekly-report.png")

pytestmark = pytest.mark.e2e


def chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def _config(tmp_path: Path):
    shutil.copytree(REPO / "runbooks", tmp_path / "runbooks")
    data = tomllib.loads((REPO / "drcheck.toml").read_text())
    data["agent"].update(state_dir=str(tmp_path / "state"), sandbox_root=str(tmp_path / "sandbox"),
                         runbooks_dir=str(tmp_path / "runbooks"))
    data["reports"]["output_dir"] = str(tmp_path / "reports")
    (tmp_path / "drcheck.toml").write_text(tomli_w.dumps(data))
    return load(tmp_path / "drcheck.toml")


def _test(loaded, system, status, started, rto=None, rpo=None, reason="", checks=(), details=None):
    runbook = loaded.runbooks[system]
    spent = None if status is Status.ERROR else (rto or 0.5 * H).total_seconds()
    return RestoreTestResult(
        test=f"{system}-files", kind="files", system=system, status=status, started_at=started,
        finished_at=started + (rto or 0.5 * H), reason=reason, probe="lab-restic", copy="lab-restic",
        point_id="5f0c1e2d9a8b7c6d" if rpo else None, point_time=started - rpo if rpo else None,
        restore_seconds=spent * 0.8 if spent else None, verify_seconds=spent * 0.2 if spent else None,
        rto_seconds=rto.total_seconds() if rto else None, rpo_seconds=rpo.total_seconds() if rpo else None,
        rpo_source="canary" if rpo else None,
        rto_target_seconds=runbook.rto.total_seconds(), rpo_target_seconds=runbook.rpo.total_seconds(),
        files_restored=None if status is Status.ERROR else 4180,
        bytes_restored=None if status is Status.ERROR else 2_400_000_000,
        checks=[CheckResult(n, s, e, 2.0) for n, s, e in checks], details=details or {},
    )


def _record_week(tmp_path: Path):
    loaded = _config(tmp_path)
    with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
        ok = [("expected paths", Status.PASSED, "all 2 expected paths present"),
              ("canary", Status.PASSED, "canary found, written 2h ago")]
        store.record_restore_test(_test(loaded, "sis", Status.ERROR, NOW - 72 * H,
                                        reason="restic: Fatal: wrong password or no key found"))
        store.record_restore_test(_test(
            loaded, "payroll", Status.FAILED, NOW - 20 * H, rpo=30 * H,
            reason="payroll.db integrity: output 'database disk image is malformed' does not match ^ok$",
            checks=[ok[0], ("payroll.db integrity", Status.FAILED, "database disk image is malformed")],
            details={"timeline": {"snapshots": [0.0, 2.1], "listing": [2.1, 9.8], "restore": [9.8, 1490.0],
                                  "verify": [1490.0, 1502.5]}}))
        for weeks_ago, hours in ((7, 2.5), (6, 3), (5, 2), (4, 4.5), (3, 3.5), (2, 3)):  # sis's RTO history
            store.record_restore_test(_test(loaded, "sis", Status.PASSED, NOW - weeks_ago * 168 * H,
                                            rto=hours * H, rpo=6 * H, checks=ok))
            store.record_restore_test(_test(loaded, "fileserver", Status.PASSED, NOW - weeks_ago * 168 * H + H,
                                            rto=hours * 1.2 * H, rpo=8 * H, checks=ok))
        store.record_restore_test(_test(loaded, "sis", Status.PASSED, NOW - 24 * H, rto=2 * H, rpo=6 * H,
                                        checks=ok))
        store.record_restore_test(_test(loaded, "fileserver", Status.PASSED, NOW - 2 * H, rto=1.5 * H,
                                        rpo=14 * H, checks=ok))
        points = {"sis": NOW - 3 * H, "fileserver": NOW - 16 * H, "payroll": NOW - 50 * H}
        store.record_probe(ProbeResult(
            probe="lab-restic", kind="restic", action="snapshots", status=Status.OK,
            started_at=NOW - 10 * timedelta(minutes=1), finished_at=NOW - 9 * timedelta(minutes=1),
            copy="lab-restic",
            newest=[RestorePoint(s, "lab-restic", t, f"{s}0a1b2c3d4e5f", count=30) for s, t in points.items()],
        ))
        store.record_probe(ProbeResult(
            probe="lab-restic", kind="restic", action="check", status=Status.ERROR,
            started_at=NOW - 30 * H, finished_at=NOW - 30 * H, copy="lab-restic",
            reason="Fatal: unable to create lock in backend: repository is already locked"))
    return loaded


@pytest.fixture
def report(tmp_path) -> Path:
    loaded = _record_week(tmp_path)
    with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
        return render_weekly(loaded, store, tmp_path / "out", NOW)


def _screenshot(browser: str, page: Path, png: Path, tmp_path: Path, width: int, height: int) -> None:
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars", "--force-device-scale-factor=1",
         f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri()],
        capture_output=True, text=True, timeout=120,  # a hang guard, not a performance check
    )
    assert proc.returncode == 0 and png.exists(), f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"


def test_weekly_report_screenshot_is_not_blank(report, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (`make test` installs Debian's chromium package)")
    from PIL import Image

    png = tmp_path / "weekly.png"
    _screenshot(browser, report, png, tmp_path, WIDTH, HEIGHT)
    shutil.copyfile(png, KEEP_COPY)

    with Image.open(png) as image:
        image = image.convert("RGB")
        assert image.width == WIDTH
        assert image.height >= 600
        colours = image.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, "the screenshot has almost no colours: blank?"
        pixels = image.width * image.height
        white = sum(n for n, rgb in colours if min(rgb) >= 250)
        assert 0.03 < 1 - white / pixels < 0.9, f"{1 - white / pixels:.1%} of the page is not white"
        red = sum(n for n, rgb in colours if all(abs(a - b) <= 6 for a, b in zip(rgb, FAILED_RED, strict=True)))
        assert red >= 200, f"no FAILED badge red ({red} pixels near #b42318)"


def test_the_rto_chart_is_drawn_with_each_dot_where_it_belongs(tmp_path):
    """The chart the report embeds, alone on a page at the top-left corner: Chromium paints
    each dot's centre at its (cx, cy) in its colour (red over the target, green within) and
    the dashed target line in orange at its height."""
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (`make test` installs Debian's chromium package)")
    from PIL import Image

    loaded = _record_week(tmp_path)
    with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
        charts = weekly_context(loaded, store, NOW)["charts"]
    sis = next(c for c in charts if c["system"] == "sis")
    page = tmp_path / "chart.html"
    page.write_text(f'<!doctype html><html><body style="margin:0">{sis["svg"]}</body></html>', encoding="utf-8")
    png = tmp_path / "chart.png"
    _screenshot(browser, page, png, tmp_path, 400, 200)
    svg = ET.fromstring(str(sis["svg"]))
    dots = svg.findall("{http://www.w3.org/2000/svg}circle")
    assert len(dots) == 7  # one per week with a measured RTO: six earlier weeks and this one
    with Image.open(png) as image:
        image = image.convert("RGB")
        for dot in dots:
            want = _rgb(dot.get("fill"))
            got = image.getpixel((round(float(dot.get("cx"))), round(float(dot.get("cy")))))
            assert all(abs(a - b) <= 40 for a, b in zip(got, want, strict=True)), (dot.attrib, got)
        assert {dot.get("fill") for dot in dots} == {"#b42318", "#1b7f3b"}  # 4h30m is over sis's 4h target
        line = svg.find("{http://www.w3.org/2000/svg}line[@class='target']")
        y = float(line.get("y1"))  # a 1.5px line: anti-aliased over the pixel rows around y
        near = [[image.getpixel((x, round(y) + dy)) for dy in (-1, 0, 1)]
                for x in range(round(float(line.get("x1"))), round(float(line.get("x2"))))]
        row = [min(column, key=lambda p: sum(abs(a - b) for a, b in zip(p, _rgb("#b54708"), strict=True)))
               for column in near]
        orange = [p for p in row if all(abs(a - b) <= 60 for a, b in zip(p, _rgb("#b54708"), strict=True))]
        assert len(orange) > len(row) // 3, "no dashed target line at its height"


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
