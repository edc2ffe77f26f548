"""HTML to PDF through WeasyPrint: the one place drcheck turns a rendered report into a
printable document. Page size, margins, running footers ("page X of Y", generation time,
evidence digest) and table breaking come from the document's own CSS (@page rules in
reports/plan.css); this module adds nothing to the layout.

CONTRACT:
- `layout(html, base_url=None)` -> the WeasyPrint `Document` (pages of laid-out boxes), for
  callers that inspect the layout (the tests check no table row spans two pages).
- `html_to_pdf(html, base_url=None) -> bytes`: the PDF.
- `PdfError`: WeasyPrint (or the system libraries it needs: pango) is missing.
"""

from __future__ import annotations

import logging


class PdfError(RuntimeError):
    """The PDF cannot be made on this machine."""


def _weasyprint():
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: pango is not installed
        raise PdfError(f"cannot make PDFs: WeasyPrint is unusable here ({exc}); install the Debian packages "
                       "libpango-1.0-0 libpangoft2-1.0-0, or use --no-pdf") from None
    # WeasyPrint and fontTools log every unsupported CSS property and font subset at INFO/WARNING
    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return weasyprint


def layout(html: str, base_url: str | None = None):
    """Lay the HTML out in pages (no file is written)."""
    return _weasyprint().HTML(string=html, base_url=base_url).render()


def html_to_pdf(html: str, base_url: str | None = None) -> bytes:
    """Return the PDF of `html`."""
    return layout(html, base_url).write_pdf()
