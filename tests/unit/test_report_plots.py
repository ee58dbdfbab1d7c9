"""The report's SVG building blocks and ROC thinning (no run needed)."""

from __future__ import annotations

import math

from secure_pcft.report.audits import thin_roc
from secure_pcft.report.plots import Series, heatmap, line_chart, nice_ticks


def test_thin_roc_keeps_both_ends_order_and_the_limit() -> None:
    points = [(i / 999, (i / 999) ** 0.5) for i in range(1000)]

    thinned = thin_roc(points, limit=50)

    assert len(thinned) == 50
    assert thinned[0] == [0.0, 0.0] and thinned[-1] == [1.0, 1.0]
    assert [p[0] for p in thinned] == sorted(p[0] for p in thinned)
    assert thin_roc(points[:10], limit=50) == [list(p) for p in points[:10]]


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = nice_ticks(0.0, 3.87)
    assert ticks[0] == 0.0 and ticks[-1] <= 3.87 < ticks[-1] + (ticks[1] - ticks[0])


def test_line_chart_skips_non_finite_points_and_escapes_labels() -> None:
    svg = line_chart(
        "plot-x",
        "a <b> title",
        [Series('<script>"', [(0.0, 0.0), (1.0, math.inf), (2.0, 1.0)], "#000")],
        x_label="x & y",
        y_label="y",
        x_range=(0.0, 2.0),
        y_range=(0.0, 1.0),
    )

    assert svg.startswith('<svg id="plot-x"') and 'data-series="1"' in svg
    assert "inf" not in svg.split('class="series" d="', 1)[1].split('"', 1)[0]
    assert "<script>" not in svg and "&lt;script&gt;&quot;" in svg
    assert "a &lt;b&gt; title" in svg and "x &amp; y" in svg


def test_heatmap_has_one_cell_per_entry_and_escapes_peer_ids() -> None:
    labels = ["peer-0", "<i>evil</i>"]

    svg = heatmap("plot-trust-final", "trust", labels, [[0.75, 0.25], [0.5, 0.5]])

    assert svg.count('class="cell"') == 4
    assert "<i>" not in svg and "&lt;i&gt;evil&lt;/i&gt;" in svg
    assert "0.75" in svg
