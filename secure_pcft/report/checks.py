"""A compliance check: one claim about a run, its status and the evidence, in plain words.

Statuses: ``pass`` (the claim holds), ``warn`` (it holds, but a reviewer should know something:
seeded DP noise, plain-text channels, an audit run at another ε), ``fail`` (the claim does not hold
or could not be verified: a tampered ledger, a budget exceeded, an audit threshold violated).
The report's verdict is ``fail`` if any check fails, else ``pass``.
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
    """

    id: str
    title: str
    status: Status
    detail: str
    peer: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "peer": self.peer,
        }


def verdict(checks: Iterable[Check]) -> Status:
    """``fail`` if any check failed, else ``pass`` (warnings do not fail a report)."""
    return "fail" if any(c.status == "fail" for c in checks) else "pass"
