"""The DR / IT contingency plan (NIST SP 800-34 structure), generated from what drcheck
measured: HTML, and PDF through WeasyPrint.

CONTRACT (implemented by the plan work of issue 8):
- `render_plan(loaded, store, output_dir, now, pdf=True) -> PlanFiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PlanFiles:
    html: Path
    pdf: Path | None


def render_plan(loaded, store, output_dir: Path, now, pdf: bool = True) -> PlanFiles:
    raise NotImplementedError("the DR plan lands with issue 8")
