"""A compliance check: one claim about a run, its status and the evidence, in plain words.

Statuses: ``pass`` (the claim holds), ``warn`` (it holds, but a reviewer should know something:
seeded DP noise, plain-text channels, an audit run at another ε), ``fail`` (the claim does not hold
or could not be verified: a tampered ledger, a budget exceeded, an audit threshold violated).
The report's verdict is ``fail`` if any check that *counts* fails, else ``pass``. Checks that do not
count are evidence shown beside the verdict: audits the review policy does not require (they measured
their own targets, not this run's adapters) and positive controls (attacks that should succeed on a
target without DP: they show an audit has power, not that a run is private).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["pass", "warn", "fail"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail")


@dataclass(frozen=True)
class Check:
    """One check of the report.

    Attributes:
        id: stable dotted id (``ledger.peer-0``, ``audit.mia-dp.loss.roc_auc``, ``config.hash``).
        title: what is claimed, one line.
        status: ``pass``, ``warn`` or ``fail``.
        detail: the evidence (figures, file names, the error), one or two sentences.
        peer: the peer it is about, if any.
        counts: whether the check takes part in the verdict (evidence and controls do not).
    """

    id: str
    title: str
    status: Status
    detail: str
    peer: str | None = None
    counts: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "peer": self.peer,
            "counts": self.counts,
        }


def verdict(checks: Iterable[Check]) -> Status:
    """``fail`` if any counting check failed, else ``pass`` (warnings and evidence do not fail a
    report)."""
    return "fail" if any(c.status == "fail" and c.counts for c in checks) else "pass"
