"""The DR plan as an auditor receives it: the PDF read back with poppler (pdftotext,
pdftoppm), its page layout inspected in WeasyPrint (no table row on two pages), the HTML
screenshotted in headless Chromium, and a 113-system district that stays readable."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from drcheck import pdf
from drcheck.plan import plan_context, render_html, render_plan
from drcheck.store import Store
from tests.integration.test_plan_render import SECTIONS, h2s
from tests.plan_fixtures import NOW, district, fill_district, fill_many, many_systems

pytestmark = pytest.mark.e2e
WIDTH, HEIGHT = 1280, 1800
BAD_RED = (0xB4, 0x23, 0x18)  # --bad in reports/plan.css: FAILED and CRITICAL badges


def chromium() -> str | None:
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")


def poppler() -> None:
    if not (shutil.which("pdftotext") and shutil.which("pdftoppm")):
        pytest.skip("poppler-utils is not installed (`make test` installs it)")


def pdf_pages(path: Path) -> list[str]:
    """The text of each page (pdftotext -layout separates pages with form feeds)."""
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout
    return text.split("\f")[:-1]


def split_rows(document) -> dict[str, list[int]]:
    """Every body row laid out on more than one page: row text -> page numbers. A row is
    keyed by its element's identity, so two rows with the same text never merge. Header
    rows are left out: <thead> repeats on every page a table spans, by design."""
    pages_of: dict[int, set[int]] = {}
    labels: dict[int, str] = {}

    def walk(box, page, header=False):
        if getattr(box, "element_tag", None) == "tr" and not header:
            pages_of.setdefault(id(box.element), set()).add(page)
            labels[id(box.element)] = " ".join(" ".join(box.element.itertext()).split())[:60]
        for child in getattr(box, "children", None) or ():
            walk(child, page, header or getattr(box, "is_header", False))

    for number, page in enumerate(document.pages, 1):
        walk(page._page_box, number)
    return {labels[key]: sorted(pages) for key, pages in pages_of.items() if len(pages) > 1}


def rows_per_page(document) -> int:
    """How many <tr> boxes the layout holds (a sanity check that the walk sees rows)."""
    found = 0

    def walk(box):
        nonlocal found
        found += getattr(box, "element_tag", None) == "tr"
        for child in getattr(box, "children", None) or ():
            walk(child)

    for page in document.pages:
        walk(page._page_box)
    return found


@pytest.fixture
def district_plan(tmp_path):
    loaded = district(tmp_path)
    with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
        fill_district(loaded, store)
        files = render_plan(loaded, store, tmp_path / "out", NOW)
        yield loaded, store, files


def test_pdf_has_every_section_page_numbers_and_footer(district_plan, tmp_path):
    poppler()
    loaded, store, files = district_plan
    assert files.pdf.name == "plan-2026-03-13-0800.pdf" and files.pdf.read_bytes().startswith(b"%PDF-")
    pages = pdf_pages(files.pdf)
    text = "\n".join(pages)
    for heading in SECTIONS:
        assert re.search(rf"^{re.escape(heading)}\s*$", text, re.M), f"no heading {heading!r} in the PDF's text"
    # the summary comes before the details, and the sections in the template's order
    positions = [re.search(rf"^{re.escape(h)}\s*$", text, re.M).start() for h in SECTIONS]
    assert positions == sorted(positions)
    digest = plan_context(loaded, store, NOW)["chain"].digest
    for number, page in enumerate(pages, 1):
        assert f"page {number} of {len(pages)}" in page
        assert "Generated 2026-03-13 08:00 PDT" in page and f"evidence head {digest}" in page
    # poppler renders every page to a PNG
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(files.pdf), str(tmp_path / "page")], check=True)
    images = sorted(tmp_path.glob("page-*.png"))
    assert len(images) == len(pages)
    from PIL import Image

    with Image.open(images[1]) as summary:  # the executive summary page: cards, badges
        colours = summary.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 30


def test_no_table_row_is_cut_across_pages(district_plan):
    loaded, store, files = district_plan
    document = pdf.layout(files.html.read_text())
    assert rows_per_page(document) > 100
    assert split_rows(document) == {}


TALL = "".join(f'<tr data-tall="{i}"><td>tall row {i}</td><td colspan="7">'
               + "<br>".join(f"evidence line {j} of tall row {i}" for j in range(40)) + "</td></tr>"
               for i in range(8))


def with_tall_rows(html: str, css: str = "") -> str:
    """The plan with eight rows of 40 lines each in the compliance matrix (each taller than
    half a page, so some must start near a page's end), and extra CSS."""
    marker = '<table class="matrix">'
    head, tail = html.split(marker)
    tail = tail.replace("<tbody>", "<tbody>" + TALL, 1)
    return head.replace("</style>", css + "</style>", 1) + marker + tail


def test_the_check_catches_a_cut_row_when_rows_may_break(district_plan):
    """The row check is not vacuous: the same tall rows are cut once `break-inside: avoid`
    is overridden, and kept whole by the plan's own CSS."""
    loaded, store, files = district_plan
    html = files.html.read_text()
    breakable = split_rows(pdf.layout(with_tall_rows(html, "@media print { tr { break-inside: auto !important } }")))
    assert any(label.startswith("tall row") for label in breakable), breakable
    assert split_rows(pdf.layout(with_tall_rows(html))) == {}


def test_plan_html_screenshot_is_not_blank(district_plan, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (`make test` installs Debian's chromium package)")
    from PIL import Image

    loaded, store, files = district_plan
    png = tmp_path / "plan.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars",
         f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={png}", files.html.as_uri()],
        capture_output=True, text=True, timeout=120,  # a hang guard, not a performance check
    )
    assert proc.returncode == 0 and png.exists(), f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    shutil.copyfile(png, "/tmp/dr-plan.png")
    with Image.open(png) as image:
        image = image.convert("RGB")
        assert image.width == WIDTH and image.height >= 600
        colours = image.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, "the screenshot has almost no colours: blank?"
        white = sum(n for n, rgb in colours if min(rgb) >= 250)
        assert 0.03 < 1 - white / (image.width * image.height) < 0.9
        red = sum(n for n, rgb in colours if all(abs(a - b) <= 6 for a, b in zip(rgb, BAD_RED, strict=True)))
        assert red >= 200, f"no red of a failing card or badge ({red} pixels near #b42318)"


def test_a_113_system_plan_renders_summary_first(tmp_path, capsys):
    poppler()
    loaded = many_systems(tmp_path, 113)
    with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
        fill_many(loaded, store)
        started = time.perf_counter()
        html = render_html(loaded, plan_context(loaded, store, NOW))
        html_seconds = time.perf_counter() - started
        started = time.perf_counter()
        files = render_plan(loaded, store, tmp_path / "out", NOW)
        pdf_seconds = time.perf_counter() - started
    with capsys.disabled():  # figures for the report, not a limit
        print(f"\n113-system plan: HTML {html_seconds:.2f} s, HTML + PDF {pdf_seconds:.1f} s")
    assert h2s(html) == SECTIONS
    assert len(re.findall(r'<section class="system" id="system-app\d{3}"', html)) == 113
    pages = pdf_pages(files.pdf)
    # the approval page, then the executive summary: counts, worst problems, systems out of target
    assert "Executive summary" in pages[1] and "systems within target" in pages[1]
    summary_end = next(i for i, p in enumerate(pages) if re.search(r"^1\. Introduction\s*$", p, re.M))
    summary = "\n".join(pages[1:summary_end])
    assert "Worst problems" in summary and "Systems out of target" in summary
    slow = [f"app{i + 1:03d}" for i in range(113) if i % 13 == 0]
    assert all(s in summary for s in slow)  # every system that missed its RTO is named up front
    text = "\n".join(pages)
    assert all(re.search(rf"^4\.\d+ Application {i} \(app{i:03d}\)", text, re.M) for i in range(1, 114))
    # long tables repeat their header on every page they span
    matrix_pages = [p for p in pages if "Compliance matrix" in p.splitlines()[0]]
    assert len(matrix_pages) > 3
    # the results table runs until the compact list of proven passes (10.3) starts
    end = next(i for i, p in enumerate(matrix_pages) if "10.3 Proven passes" in p)
    table_pages = [p for p in matrix_pages[1:end + 1] if re.search(r"^\s*R\d+\.\w+\s+app\d{3}", p, re.M)]
    assert len(table_pages) > 1
    assert all(re.search(r"Rule\s+System\s+Subject\s+Status\s+Measured\s+Threshold", p) for p in table_pages)
