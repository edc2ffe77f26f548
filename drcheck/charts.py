"""Inline SVG charts for reports: no script, no external resource, no stylesheet needed.

Mail clients and HTML-to-PDF converters render only plain SVG reliably, so a chart uses
basic elements (`svg`, `rect`, `line`, `polyline`, `circle`, `text`, `title`) with
explicit sizes and presentation attributes (colours as `fill`/`stroke`, not CSS classes),
and every label is XML-escaped text. The output is a well-formed XML document fragment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

from drcheck.durations import format_duration

OK, BAD, TARGET, AXIS, MUTED = "#1b7f3b", "#b42318", "#b54708", "#d9dde3", "#5d6470"


@dataclass(frozen=True)
class Frame:
    """The plotting area of a chart: time `start`..`end` left to right, 0..`top` seconds
    bottom to top, inside a `width` x `height` picture with room for labels."""

    start: datetime
    end: datetime
    top: float
    width: int = 260
    height: int = 120
    left: int = 46
    right: int = 10
    above: int = 20
    below: int = 18

    def x(self, when: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        share = min(max((when - self.start).total_seconds() / span, 0.0), 1.0)
        return round(self.left + share * (self.width - self.left - self.right), 2)

    def y(self, seconds: float) -> float:
        share = min(max(seconds / self.top, 0.0), 1.0) if self.top > 0 else 0.0
        return round(self.height - self.below - share * (self.height - self.above - self.below), 2)


def frame_for(points: list[tuple[datetime, float]], target: float, start: datetime, end: datetime,
              width: int = 260, height: int = 120) -> Frame:
    """The frame `rto_chart` draws in: its vertical scale reaches 15% above the larger of the
    target and the highest point, so both are always inside the picture."""
    highest = max([target, *(v for _, v in points)]) if points or target else 1.0
    return Frame(start, end, (highest or 1.0) * 1.15, width, height)


def _text(x: float, y: float, label: str, *, size: int = 10, anchor: str = "start", fill: str = MUTED,
          weight: str = "normal") -> str:
    return (f'<text x="{x}" y="{y}" font-family="sans-serif" font-size="{size}" font-weight="{weight}" '
            f'text-anchor="{anchor}" fill="{fill}">{escape(label)}</text>')


def rto_chart(title: str, points: list[tuple[datetime, float]], target: float, start: datetime, end: datetime,
              *, width: int = 260, height: int = 120) -> Markup:
    """An SVG chart of measured RTOs (`points`: (when, seconds)) between `start` and `end`
    against the RTO `target` (a dashed line, labelled): a green dot within the target, a
    red one over it, joined by a line. `title` (escaped) heads it; each dot's `<title>` and
    `data-seconds` give its value."""
    f = frame_for(points, target, start, end, width, height)
    bottom, right = f.height - f.below, f.width - f.right
    over = any(v > target for _, v in points)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{f.width}" height="{f.height}" '
        f'viewBox="0 0 {f.width} {f.height}" role="img" aria-label="{escape(title)}: measured RTO against target '
        f'{escape(format_duration(target))}" data-over="{"yes" if over else "no"}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{f.width}" height="{f.height}" fill="#ffffff"/>',
        _text(2, 12, title, size=11, fill="#1d2330", weight="bold"),
        f'<line x1="{f.left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{AXIS}" stroke-width="1"/>',
        f'<line x1="{f.left}" y1="{f.above}" x2="{f.left}" y2="{bottom}" stroke="{AXIS}" stroke-width="1"/>',
        _text(f.left - 4, bottom + 3, "0", anchor="end"),
        _text(f.left - 4, f.above + 8, format_duration(f.top), anchor="end"),
        _text(f.left, f.height - 4, start.strftime("%m-%d")),
        _text(right, f.height - 4, end.strftime("%m-%d"), anchor="end"),
    ]
    ty = f.y(target)
    parts += [f'<line class="target" x1="{f.left}" y1="{ty}" x2="{right}" y2="{ty}" stroke="{TARGET}" '
              f'stroke-width="1.5" stroke-dasharray="4 3" data-seconds="{target:g}"/>',
              _text(right, ty - 3, f"target {format_duration(target)}", size=9, anchor="end", fill=TARGET)]
    coords = [(f.x(when), f.y(v), when, v) for when, v in sorted(points)]
    if len(coords) > 1:
        parts.append(f'<polyline points="{" ".join(f"{x},{y}" for x, y, *_ in coords)}" fill="none" '
                     f'stroke="{MUTED}" stroke-width="1"/>')
    for x, y, when, v in coords:
        colour = BAD if v > target else OK
        parts.append(f'<circle cx="{x}" cy="{y}" r="3.5" fill="{colour}" data-seconds="{v:g}">'
                     f'<title>{escape(when.strftime("%Y-%m-%d"))}: {escape(format_duration(v))}</title></circle>')
    if not coords:
        parts.append(_text((f.left + right) / 2, (f.above + bottom) / 2, "no measured RTO", anchor="middle"))
    parts.append("</svg>")
    return Markup("".join(parts))
