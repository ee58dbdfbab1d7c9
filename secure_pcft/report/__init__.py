"""Compliance report of a run: ``report.json`` (documented schema) and a self-contained HTML page.

    report = build_report("runs/latest", audits=["audits/results/mia-dp.json"])
    write_report(report, "runs/latest/report")   # report.json + report.html
    report.verdict                               # "pass" or "fail"

See :mod:`secure_pcft.report.build` for what is gathered and checked, :mod:`.schema` for the JSON
Schema, and :mod:`.page` for the HTML page and its plot ids.
"""

from __future__ import annotations

from secure_pcft.report.build import REPORT_FORMAT, Report, build_report, write_report
from secure_pcft.report.checks import Check
from secure_pcft.report.page import render_html
from secure_pcft.report.schema import REPORT_SCHEMA

__all__ = [
    "REPORT_FORMAT",
    "REPORT_SCHEMA",
    "Check",
    "Report",
    "build_report",
    "render_html",
    "write_report",
]
