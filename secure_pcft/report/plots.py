"""Inline SVG plots for the HTML report: line charts (ε over rounds, ROC curves) and heatmaps.

Hand-written SVG keeps the page self-contained (no plotting library, no script, no external
resource). Every piece of text that reaches the SVG is escaped here; peer ids and campaign labels
come from outside. Each plot is an ``<svg>`` element with the ``id`` the caller gives, a
``<title>`` for screen readers, and ``data-series`` / ``data-cells`` counts for tests.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
_FONT = 'font-family="system-ui, sans-serif"'


def esc(text: object) -> str:
    """HTML/XML-escape ``text`` (quotes included: safe in text and in attribute values)."""
    return html.escape(str(text), quote=True)


def short(text: str, limit: int = 16) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (escape the result afterwards)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@dataclass(frozen=True)
class Series:
    """One line of a chart: ``points`` (x, y) in data units, drawn in ``colour``."""

    label: str
    points: Sequence[tuple[float, float]]
    colour: str
    dashed: bool = False
    step: bool = False
    markers: bool = False


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    return ticks


@dataclass(frozen=True)
class _Frame:
    x0: float
    x1: float
    y0: float
    y1: float
    left: int = 64
    top: int = 36
    width: int = 420
    height: int = 240

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0 or 1.0) * self.width

    def py(self, y: float) -> float:
        return self.top + self.height - (y - self.y0) / (self.y1 - self.y0 or 1.0) * self.height


def _path(points: Sequence[tuple[float, float]], f: _Frame, step: bool) -> str:
    out: list[str] = []
    for i, (x, y) in enumerate(points):
        if step and i:
            out.append(f"L{f.px(x):.1f},{f.py(points[i - 1][1]):.1f}")
        out.append(f"{'L' if i else 'M'}{f.px(x):.1f},{f.py(y):.1f}")
    return " ".join(out)


def _axes(f: _Frame, x_label: str, y_label: str) -> list[str]:
    parts = [f'<rect x="{f.left}" y="{f.top}" width="{f.width}" height="{f.height}" '
             'fill="#fff" stroke="#888"/>']  # fmt: skip
    for t in nice_ticks(f.x0, f.x1):
        x = f.px(t)
        parts.append(f'<line x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" y2="{f.top + f.height}" '
                     f'stroke="#eee"/><text x="{x:.1f}" y="{f.top + f.height + 16}" '
                     f'text-anchor="middle" font-size="11">{t:g}</text>')  # fmt: skip
    for t in nice_ticks(f.y0, f.y1):
        y = f.py(t)
        parts.append(f'<line x1="{f.left}" y1="{y:.1f}" x2="{f.left + f.width}" y2="{y:.1f}" '
                     f'stroke="#eee"/><text x="{f.left - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end" font-size="11">{t:g}</text>')  # fmt: skip
    cx, cy = f.left + f.width / 2, f.top + f.height / 2
    parts.append(f'<text x="{cx:.0f}" y="{f.top + f.height + 34}" text-anchor="middle" '
                 f'font-size="12">{esc(x_label)}</text>')  # fmt: skip
    parts.append(f'<text x="16" y="{cy:.0f}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 16 {cy:.0f})">{esc(y_label)}</text>')  # fmt: skip
    return parts


def line_chart(
    svg_id: str,
    title: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    diagonal: bool = False,
) -> str:
    """An SVG line chart with a legend on the right; non-finite points are skipped."""
    f = _Frame(*x_range, *y_range)
    legend_x = f.left + f.width + 16
    w, h = legend_x + 190, max(f.top + f.height + 46, f.top + 18 * len(series) + 10)
    parts = [f'<svg id="{esc(svg_id)}" class="plot" role="img" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" data-series="{len(series)}" {_FONT}>',
             f"<title>{esc(title)}</title>",
             f'<text x="{f.left}" y="20" font-size="14" font-weight="600">{esc(title)}</text>',
             *_axes(f, x_label, y_label)]  # fmt: skip
    if diagonal:
        parts.append(f'<line x1="{f.px(f.x0):.1f}" y1="{f.py(f.y0):.1f}" x2="{f.px(f.x1):.1f}" '
                     f'y2="{f.py(f.y1):.1f}" stroke="#999" stroke-dasharray="3 3"/>')  # fmt: skip
    for i, s in enumerate(series):
        pts = [(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)]
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        if pts:
            parts.append(f'<path class="series" d="{_path(pts, f, s.step)}" fill="none" '
                         f'stroke="{s.colour}" stroke-width="2"{dash}/>')  # fmt: skip
        if s.markers:
            parts.extend(f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="3" fill="{s.colour}">'
                         f"<title>{esc(s.label)}: ({x:g}, {y:.4g})</title></circle>"
                         for x, y in pts)  # fmt: skip
        y = f.top + 8 + 18 * i
        parts.append(f'<line x1="{legend_x}" y1="{y}" x2="{legend_x + 22}" y2="{y}" '
                     f'stroke="{s.colour}" stroke-width="2"{dash}/><text x="{legend_x + 28}" '
                     f'y="{y + 4}" font-size="11">{esc(short(s.label, 26))}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _cell_colour(v: float) -> str:
    # white (0) → dark blue (1)
    t = min(max(v, 0.0), 1.0) if math.isfinite(v) else 0.0
    r, g, b = (round(255 + (c - 255) * t) for c in (8, 48, 107))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(svg_id: str, title: str, labels: Sequence[str], matrix: Sequence[Sequence[float]],
            cell: int = 44) -> str:  # fmt: skip
    """A trust-matrix heatmap: rows = receiving peer, columns = peer whose adapter it weighs."""
    n = len(labels)
    left, top = 120, 40 + 90
    w, h = left + n * cell + 20, top + n * cell + 20
    parts = [f'<svg id="{esc(svg_id)}" class="plot heatmap" role="img" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" data-cells="{n * n}" {_FONT}>',
             f"<title>{esc(title)}</title>",
             f'<text x="8" y="20" font-size="14" font-weight="600">{esc(title)}</text>',
             f'<text x="8" y="{top - 8}" font-size="11" fill="#555">row weighs column</text>']  # fmt: skip
    for j, label in enumerate(labels):
        x = left + j * cell + cell / 2
        parts.append(f'<text x="{x:.0f}" y="{top - 6}" font-size="11" '
                     f'transform="rotate(-60 {x:.0f} {top - 6})">{esc(short(label))}</text>')  # fmt: skip
    for i, row in enumerate(matrix):
        y = top + i * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4:.0f}" text-anchor="end" '
                     f'font-size="11">{esc(short(labels[i]))}</text>')  # fmt: skip
        for j, v in enumerate(row):
            x = left + j * cell
            ink = "#fff" if math.isfinite(v) and v > 0.55 else "#000"
            parts.append(f'<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" '
                         f'fill="{_cell_colour(v)}" stroke="#ccc"><title>{esc(labels[i])} → '
                         f'{esc(labels[j])}: {v:.3f}</title></rect>')  # fmt: skip
            if n <= 12:
                parts.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" font-size="10" '
                             f'text-anchor="middle" fill="{ink}">{v:.2f}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)
