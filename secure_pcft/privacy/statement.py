"""A verified ledger as a statement: each event with its time, its own ε and the running ε.

What ``secure-pcft ledger`` prints (as a table, or with ``--json`` as one object) and what a reviewer
reads to see *when* the budget was spent and by which release:

* ``epsilon_event``: ε at the ledger's δ of that event alone (0 for post-processing, ``steps = 0``);
* ``epsilon_running``: ε of the composition of every event up to and including it, by the ledger's
  own accountant — the last value is the peer's ε spent, the number the budget guard checks;
* ``budget_left``: budget ε minus the running ε (None for a record-only ledger).

Running ε is not the sum of the events' ε: the accountants compose tighter than adding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from secure_pcft.fileio import json_safe
from secure_pcft.privacy.accounting import epsilon_spent
from secure_pcft.privacy.events import LedgerEntry
from secure_pcft.privacy.ledger import LedgerContents

STATEMENT_FORMAT = "secure-pcft-ledger-statement/1"


@dataclass(frozen=True)
class StatementRow:
    """One ledger entry (as recorded) with the ε figures the statement adds."""

    entry: LedgerEntry
    epsilon_event: float
    epsilon_running: float
    budget_left: float | None


def ledger_statement(contents: LedgerContents) -> list[StatementRow]:
    """Rows of a verified ledger (see the module docstring).

    Raises:
        PrivacyError: the accountant failed on the history (fail closed, as the budget guard does).
    """
    g = contents.genesis
    rows: list[StatementRow] = []
    for i, entry in enumerate(contents.entries):
        running = epsilon_spent(contents.events[: i + 1], g.delta, g.accountant)
        rows.append(
            StatementRow(
                entry=entry,
                epsilon_event=epsilon_spent([entry.event], g.delta, g.accountant),
                epsilon_running=running,
                budget_left=None if g.budget_epsilon is None else g.budget_epsilon - running,
            )
        )
    return rows


def statement_json(contents: LedgerContents, source: str) -> dict[str, Any]:
    """The statement as one JSON-safe object (∞ written as the string ``"inf"``)."""
    g = contents.genesis
    rows = ledger_statement(contents)
    return json_safe(
        {
            "format": STATEMENT_FORMAT,
            "ledger": source,
            "chain_verified": True,
            "peer_id": g.peer_id,
            "created": g.timestamp,
            "delta": g.delta,
            "budget_epsilon": g.budget_epsilon,
            "accountant": g.accountant,
            "unit": g.unit,
            "head_hash": contents.head.hash,
            "torn_bytes_ignored": contents.torn_bytes,
            "epsilon_spent": rows[-1].epsilon_running if rows else 0.0,
            "events": [
                {
                    "seq": r.entry.seq,
                    "timestamp": r.entry.timestamp,
                    **r.entry.event.to_json(),
                    "epsilon_event": r.epsilon_event,
                    "epsilon_running": r.epsilon_running,
                    "budget_left": r.budget_left,
                }
                for r in rows
            ],
        }
    )
