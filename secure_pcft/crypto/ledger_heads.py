"""Signed ledger heads: what a site says about its own ledger, in a form others can keep (TM-06).

A ledger's hash chain is keyless: a site that rewrites its whole ledger consistently (the genesis
budget raised, events removed) produces a chain that verifies. So every adapter a DP peer releases in
secure mode carries a *head statement* — the peer, its ledger's record count and head hash at that
release, the round and the running ε — signed with the peer's pinned Ed25519 key. Receivers keep
these statements as receipts; the compliance report checks each peer's ledger against the receipts
its partners hold. A rewritten ledger no longer contains the head its owner signed and sent: the
rewrite now contradicts signed statements that others kept.

Remains trusted: that the receipts reach the report (a results file assembled by the runtime, the
relay's in a Flower deployment, is not signed as a whole; a receipt can be withheld, not forged), and
that a peer released something at all (a peer that never releases signs nothing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError as _NaclBadSignature
from nacl.signing import VerifyKey

from secure_pcft.errors import BadSignatureError, MessageError

CONTEXT = b"secure-pcft ledger head v1\x00"


@dataclass(frozen=True)
class HeadStatement:
    """A peer's statement about its ledger at one release.

    Attributes:
        peer: the ledger's peer id.
        count: records in the ledger (genesis included) after the release was recorded.
        hash: the hash of the last record (hex SHA-256).
        round: the round of the release.
        epsilon: ε spent on the ledger's events at that point (at its δ and accountant).
    """

    peer: str
    count: int
    hash: str
    round: int
    epsilon: float

    def signed_bytes(self) -> bytes:
        body = {"peer": self.peer, "count": self.count, "hash": self.hash, "round": self.round,
                "epsilon": self.epsilon if math.isfinite(self.epsilon) else "inf"}  # fmt: skip
        return CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_head(statement: HeadStatement, sign: Callable[[bytes], bytes]) -> dict[str, Any]:
    """The statement as JSON with its detached Ed25519 signature (``sig``, hex)."""
    return {
        "peer": statement.peer,
        "count": statement.count,
        "hash": statement.hash,
        "round": statement.round,
        "epsilon": statement.epsilon if math.isfinite(statement.epsilon) else "inf",
        "sig": sign(statement.signed_bytes()).hex(),
    }


def parse_head(obj: Mapping[str, Any]) -> tuple[HeadStatement, bytes]:
    """A received head statement and its signature, checked for form only.

    Raises:
        MessageError: not a well-formed statement.
    """
    try:
        peer, count, digest, rnd = obj["peer"], obj["count"], obj["hash"], obj["round"]
        eps, sig = obj["epsilon"], bytes.fromhex(str(obj["sig"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"malformed ledger head statement ({type(exc).__name__})") from None
    if not (isinstance(peer, str) and isinstance(digest, str) and len(digest) == 64):
        raise MessageError("ledger head statement: peer and hash must be strings")
    if type(count) is not int or type(rnd) is not int or count < 1 or rnd < 0 or len(sig) != 64:
        raise MessageError("ledger head statement: count, round or signature out of range")
    epsilon = math.inf if eps == "inf" else float(eps)
    return HeadStatement(peer, count, digest, rnd, epsilon), sig


def verify_head(obj: Mapping[str, Any], sign_pk: bytes) -> HeadStatement:
    """The statement, if ``sign_pk`` (the peer's pinned key) signed it.

    Raises:
        MessageError: malformed. BadSignatureError: the signature does not verify.
    """
    statement, sig = parse_head(obj)
    try:
        VerifyKey(sign_pk).verify(statement.signed_bytes(), sig)
    except _NaclBadSignature:
        raise BadSignatureError(
            f"ledger head of {statement.peer}: signature does not verify"
        ) from None
    return statement
