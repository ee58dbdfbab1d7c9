"""Each peer's ledger against the signed heads its partners kept (TM-06; crypto/ledger_heads.py).

A ledger's chain is keyless: a site can rewrite its whole ledger consistently. But every adapter it
released in secure mode with DP carried its ledger head, signed with its pinned key, and the receiver
kept it. For every such receipt the report checks, with the roster's key, that the owner signed it,
and that the owner's ledger (as the report verified it) holds exactly that record at that position.
A rewrite — a raised budget in the genesis, an event removed or changed — moves every later hash and
contradicts the heads already in others' hands.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from secure_pcft.crypto.ledger_heads import verify_head
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import LedgerError, PrivacyError, SecurePcftError
from secure_pcft.privacy.ledger import read_ledger
from secure_pcft.report.checks import Check
from secure_pcft.report.ledgers import find_ledger
from secure_pcft.report.sources import RunFiles


def held_receipts(run: RunFiles) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per peer, the signed heads its partners hold: (holder, head), from results.json."""
    raw = run.extra("receipts") if run.complete else {}
    about: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for holder, receipts in raw.items():
        for r in receipts if isinstance(receipts, list) else []:
            head = r.get("head") if isinstance(r, dict) else None
            if isinstance(head, dict) and isinstance(head.get("peer"), str):
                about[head["peer"]].append((str(holder), head))
    return dict(about)


def receipt_checks(run: RunFiles, roster: Roster | None) -> list[Check]:
    """One check per peer whose signed heads others hold (none without receipts)."""
    out = []
    for peer, held in sorted(held_receipts(run).items()):
        cid, title = f"receipts.{peer}", f"{peer}'s ledger holds every head it signed and sent"
        if roster is None or peer not in roster:
            out.append(Check(cid, title, "warn", f"{len(held)} signed heads held by its partners, "
                             "not verifiable here: no roster with its pinned key", peer))  # fmt: skip
            continue
        problems = _contradictions(run, peer, held, roster)
        out.append(Check(cid, title, "fail" if problems else "pass",
                         "; ".join(problems[:3]) + (" …" if len(problems) > 3 else "")
                         if problems else f"{len(held)} signed heads held by "
                         f"{', '.join(sorted({h for h, _ in held}))} match its ledger", peer))  # fmt: skip
    return out


def _contradictions(
    run: RunFiles, peer: str, held: list[tuple[str, dict[str, Any]]], roster: Roster
) -> list[str]:
    path = find_ledger(run, peer)
    if path is None:
        return [f"{len(held)} heads it signed are held by others, but its ledger is missing"]
    try:
        contents = read_ledger(path)
    except (LedgerError, PrivacyError) as exc:
        return [f"its ledger does not verify ({exc})"]
    hashes = [contents.genesis.hash, *(e.hash for e in contents.entries)]
    out = []
    key = roster.get(peer).sign_pk
    for holder, head in held:
        try:
            st = verify_head(head, key)
        except SecurePcftError as exc:
            out.append(f"a head held by {holder} is not {peer}'s signature ({exc})")
            continue
        if st.peer != peer:
            out.append(f"a head held by {holder} names {st.peer}")
        elif st.count > len(hashes) or hashes[st.count - 1] != st.hash:
            out.append(f"{holder} holds {peer}'s signed head of record {st.count} (round "
                       f"{st.round}), which its ledger no longer contains")  # fmt: skip
    return out
