"""One privacy budget per site and dataset, across runs (TM-07).

A ledger belongs to one run; a budget belongs to the data. Without a store, a new output folder, a
restart or a new config starts a fresh ledger and spends the whole budget again on the same records
(ε ≈ 4 + 4 against 4). The store, on the site's machine, keeps per (peer, training data) the list of
ledgers that spent from that data's budget::

    <store>/<peer>-<data fingerprint>.jsonl     one JSON record per line, fsync'd:
        {"kind": "run", "ledger": "/abs/path/peer.ledger.jsonl", "run": "...", "at": "..."}
        {"kind": "new-budget", "reason": "...", "at": "..."}

The data fingerprint is the SHA-256 of the peer's training documents (their manifest hashes, in
order), so a new config on the same data draws from the same budget and different data does not.
Before a run's first release, :meth:`BudgetStore.prior_events` reads every ledger registered since
the last ``new-budget`` record — verified, like every ledger — and the run's guard counts those
events against its budget (and σ is calibrated with them reserved). A registered ledger that is
missing or fails verification stops the run: the store fails closed.

A fresh budget on spent data is only an explicit, recorded act (``secure-pcft run --new-budget
"reason"``): it appends a ``new-budget`` record with its reason, which results and the compliance
report show.

Trusted: the store is as trustworthy as the site's file system; a site that deletes its store or
its ledgers can spend again (as it could train on its data outside the toolkit). What it prevents is
the accident — and the quiet new folder — not a site that lies to itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from secure_pcft import bounded_json
from secure_pcft.errors import LedgerError
from secure_pcft.privacy.events import DpEvent, check_peer_id
from secure_pcft.privacy.ledger import read_ledger

ENV = "SECURE_PCFT_BUDGET_STORE"
DEFAULT_STORE = "~/.local/state/secure-pcft/budgets"
_LINE_LIMITS = bounded_json.JsonLimits(max_bytes=64 * 1024, max_depth=2)


def default_store_dir(configured: str = "") -> Path:
    """``[privacy] budget_store``, else ``$SECURE_PCFT_BUDGET_STORE``, else :data:`DEFAULT_STORE`."""
    return Path(configured or os.environ.get(ENV) or DEFAULT_STORE).expanduser()


def data_fingerprint(train_documents: Iterable[str]) -> str:
    """SHA-256 over the SHA-256 of each training document (the manifest's hashes, in order)."""
    h = hashlib.sha256()
    for doc in train_documents:
        h.update(hashlib.sha256(doc.encode("utf-8")).digest())
    return h.hexdigest()


class BudgetStore:
    """The site's register of ledgers per (peer, training data). See the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(peer_id: str, fingerprint: str) -> str:
        return f"{check_peer_id(peer_id)}-{fingerprint[:24]}"

    def _file(self, key: str) -> Path:
        return self.root / f"{key}.jsonl"

    def _append(self, key: str, record: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = json.dumps({**record, "at": datetime.now(UTC).isoformat(timespec="seconds")},
                          sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"  # fmt: skip
        fd = os.open(self._file(key), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self, key: str) -> list[dict[str, Any]]:
        """Every record of ``key``, oldest first.

        Raises:
            LedgerError: a record is not one of the store's JSON lines (damage: fail closed).
        """
        path = self._file(key)
        if not path.exists():
            return []
        out = []
        for n, raw in enumerate(path.read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            rec = bounded_json.loads(raw, _LINE_LIMITS, LedgerError, f"{path.name}:{n}")
            if not isinstance(rec, dict) or rec.get("kind") not in ("run", "new-budget"):
                raise LedgerError(f"{path.name}:{n}: not a budget-store record")
            out.append(rec)
        return out

    def register(self, key: str, ledger: Path, run: str) -> None:
        """Record that ``ledger`` spends from ``key``'s budget (idempotent per ledger)."""
        ledger = Path(ledger).resolve()
        current = self.records(key)
        since = _since_renewal(current)
        if any(r.get("ledger") == str(ledger) for r in since):
            return
        self._append(key, {"kind": "run", "ledger": str(ledger), "run": run})

    def new_budget(self, key: str, reason: str) -> None:
        """Start a fresh budget for ``key``: recorded with its reason, never silent."""
        if not reason.strip():
            raise LedgerError("a new budget needs a reason (it is recorded and reported)")
        self._append(key, {"kind": "new-budget", "reason": reason.strip()})

    def prior_events(
        self, key: str, own_ledger: Path, unit: str = "block"
    ) -> tuple[list[DpEvent], list[str]]:
        """The events of every other ledger registered since the last renewal, and their paths.

        ``unit``: this run's privacy unit. An earlier run on the same data that accounted another
        unit cannot be composed with it (a block's ε says nothing about a document without group
        privacy), so it is refused, not silently added.

        Raises:
            LedgerError: a registered ledger is missing, fails verification, or accounted another
                privacy unit (fail closed).
        """
        own = Path(own_ledger).resolve()
        events: list[DpEvent] = []
        used: list[str] = []
        for rec in _since_renewal(self.records(key)):
            path = Path(str(rec.get("ledger", "")))
            if path == own:
                continue
            if not path.exists():
                raise LedgerError(
                    f"budget store {self._file(key).name}: the ledger of an earlier run on this "
                    f"data, {path}, is missing; its spend cannot be counted"
                )
            contents = read_ledger(path)  # verified: chain and high-water mark
            if contents.genesis.unit != unit:
                raise LedgerError(
                    f"budget store {self._file(key).name}: an earlier run on this data, {path}, "
                    f"accounted ε per {contents.genesis.unit}, this run per {unit}: the two do not "
                    "compose; run in the earlier unit, or start a fresh budget with --new-budget "
                    "(recorded and reported) if that is a reviewer's decision"
                )
            events.extend(contents.events)
            used.append(str(path))
        return events, used

    def renewals(self, key: str) -> Sequence[str]:
        """Reasons of every fresh budget started for ``key`` (oldest first)."""
        return [str(r.get("reason", "")) for r in self.records(key) if r["kind"] == "new-budget"]


def _since_renewal(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last = max((i for i, r in enumerate(records) if r["kind"] == "new-budget"), default=-1)
    return [r for r in records[last + 1 :] if r["kind"] == "run"]
