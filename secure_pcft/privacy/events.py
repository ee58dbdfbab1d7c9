"""Privacy events and their hash-chained ledger records (one canonical JSON object per line).

A :class:`DpEvent` says which accounted mechanism touched the peer's private data and what left
the peer because of it. The ledger turns each event into a :class:`LedgerEntry`: the event plus a
sequence number, a timestamp and a SHA-256 hash chain (``hash`` covers the canonical JSON of the
entry including ``prev_hash``). The chain starts from a :class:`Genesis` record that fixes the
peer id, δ, the ε budget and the accountant for the whole life of the ledger.

ε is never stored: it is always recomputed from the events (see ``accounting.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from secure_pcft import bounded_json
from secure_pcft.config import REGISTRY_NAME
from secure_pcft.errors import LedgerError, PrivacyError
from secure_pcft.validation import is_int

Mechanism = Literal["dp-sgd", "gaussian-validation"]
MECHANISMS: tuple[str, ...] = get_args(Mechanism)
LEDGER_FORMAT = "secure-pcft-ledger/1"
ZERO_HASH = "0" * 64
# One record per line; an event is a few hundred bytes, a line over 1 MiB is damage or an attack.
LINE_LIMITS = bounded_json.JsonLimits(max_bytes=1024 * 1024, max_depth=8)
_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_RELEASED = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _is_real(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(float(x))


def check_peer_id(peer_id: str) -> str:
    """Return ``peer_id`` if it is a safe file-name-like id (``[A-Za-z0-9._-]``, 1-128 chars).

    Raises:
        PrivacyError: the id is empty, too long or contains other characters.
    """
    if not isinstance(peer_id, str) or not _ID.match(peer_id) or peer_id in {".", ".."}:
        raise PrivacyError(f"peer id {peer_id!r}: use 1-128 characters from [A-Za-z0-9._-]")
    return peer_id


@dataclass(frozen=True)
class DpEvent:
    """One application of an accounted mechanism, and what it let out.

    Attributes:
        mechanism: ``dp-sgd`` (Poisson-subsampled Gaussian on clipped per-example gradients) or
            ``gaussian-validation`` (Gaussian noise on clipped per-example validation losses).
        noise_multiplier: σ = noise std / L2 sensitivity (>= 0; 0 means no privacy: ε = ∞).
        sample_rate: Poisson sampling rate q in (0, 1] (1.0 for the validation mechanism).
        steps: compositions of the mechanism (DP-SGD steps, or candidates scored); 0 records a
            release that is pure post-processing of already accounted steps.
        round: collaboration round of the release (0 = warm-up / first round).
        released: what left the peer because of it (``adapter``, ``signature``,
            ``validation-scores``, ...), lower case.
        recipients: peer ids that received it (empty: used only locally so far).
    """

    mechanism: Mechanism
    noise_multiplier: float
    sample_rate: float
    steps: int
    round: int
    released: str
    recipients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise PrivacyError(f"event mechanism: one of {MECHANISMS}, got {self.mechanism!r}")
        if not _is_real(self.noise_multiplier) or self.noise_multiplier < 0:
            raise PrivacyError("event noise_multiplier: σ must be a finite number >= 0")
        if not _is_real(self.sample_rate) or not 0 < self.sample_rate <= 1:
            raise PrivacyError("event sample_rate: probability q must be in (0, 1]")
        if not is_int(self.steps) or self.steps < 0:
            raise PrivacyError("event steps: compositions must be an integer >= 0")
        if not is_int(self.round) or self.round < 0:
            raise PrivacyError("event round: must be an integer >= 0")
        if not isinstance(self.released, str) or not _RELEASED.match(self.released):
            raise PrivacyError("event released: a short lower-case name such as 'adapter'")
        if not isinstance(self.recipients, tuple):
            raise PrivacyError("event recipients: a tuple of peer ids")
        for r in self.recipients:
            check_peer_id(r)
        # Normalise numbers so the canonical JSON of an event is one fixed string.
        object.__setattr__(self, "noise_multiplier", float(self.noise_multiplier))
        object.__setattr__(self, "sample_rate", float(self.sample_rate))

    def to_json(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "round": self.round,
            "released": self.released,
            "recipients": list(self.recipients),
        }


@dataclass(frozen=True)
class Genesis:
    """First record of a ledger: what every later entry is accounted against.

    Attributes:
        peer_id: the peer whose private data the ledger accounts for.
        delta: δ of the peer's (ε, δ) guarantee (fixed for the life of the ledger).
        budget_epsilon: the hard ε budget, or None for "record only, never stop".
        accountant: ``rdp``, ``prv`` or ``gdp``.
        timestamp: creation time, ISO 8601 UTC.
        hash: SHA-256 of the canonical record (its ``prev_hash`` is 64 zeros).
        unit: what the guarantee protects — ``block``, ``document`` or ``subject``
            (``[privacy] unit``); written into the record unless ``block``, so ledgers from before
            the unit existed verify unchanged.
    """

    peer_id: str
    delta: float
    budget_epsilon: float | None
    accountant: str
    timestamp: str
    hash: str = ""
    unit: str = "block"

    def body(self) -> dict[str, Any]:
        unit = {} if self.unit == "block" else {"unit": self.unit}
        return {
            **unit,
            "kind": "genesis",
            "format": LEDGER_FORMAT,
            "seq": 0,
            "peer_id": self.peer_id,
            "delta": self.delta,
            "budget_epsilon": self.budget_epsilon,
            "accountant": self.accountant,
            "timestamp": self.timestamp,
            "prev_hash": ZERO_HASH,
        }


@dataclass(frozen=True)
class LedgerEntry:
    """A recorded event: ``event`` + position (``seq`` >= 1), time and hash-chain links."""

    seq: int
    event: DpEvent
    timestamp: str
    prev_hash: str
    hash: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "kind": "event",
            "seq": self.seq,
            "timestamp": self.timestamp,
            "prev_hash": self.prev_hash,
            **self.event.to_json(),
        }


def canonical(obj: Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no spaces, ASCII only, no NaN/Infinity."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def record_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over a domain tag and the canonical JSON of a record without its hash."""
    return hashlib.sha256(LEDGER_FORMAT.encode() + b"\n" + canonical(body)).hexdigest()


def encode_line(record: Genesis | LedgerEntry) -> bytes:
    """The record's ledger line: canonical JSON with ``hash``, terminated by ``\\n``."""
    return canonical({**record.body(), "hash": record.hash}) + b"\n"


#: the privacy units a ledger can account for (``[privacy] unit``)
LEDGER_UNITS: tuple[str, ...] = ("block", "document", "subject")


def seal_genesis(g: Genesis) -> Genesis:
    """Check the genesis fields and return it with its hash filled in.

    Raises:
        PrivacyError: a field is out of range (δ not in (0, 1), budget <= 0, unknown accountant).
    """
    check_peer_id(g.peer_id)
    if not _is_real(g.delta) or not 0 < g.delta < 1:
        raise PrivacyError("ledger delta: δ must be in (0, 1)")
    if g.budget_epsilon is not None and (not _is_real(g.budget_epsilon) or g.budget_epsilon <= 0):
        raise PrivacyError("ledger budget_epsilon: ε per peer per run must be a finite number > 0")
    if not isinstance(g.accountant, str) or not REGISTRY_NAME.fullmatch(g.accountant):
        # A well-formed name; ε is computed only by a registered accountant of that name.
        raise PrivacyError(f"ledger accountant: a name matching {REGISTRY_NAME.pattern}")
    if not isinstance(g.timestamp, str):
        raise PrivacyError("ledger timestamp: an ISO 8601 string")
    if g.unit not in LEDGER_UNITS:
        raise PrivacyError(f"ledger unit: one of {LEDGER_UNITS}")
    budget = None if g.budget_epsilon is None else float(g.budget_epsilon)
    fixed = replace(g, delta=float(g.delta), budget_epsilon=budget, hash="")
    return replace(fixed, hash=record_hash(fixed.body()))


def seal_entry(seq: int, event: DpEvent, timestamp: str, prev_hash: str) -> LedgerEntry:
    """A new entry chained to ``prev_hash``, with its hash filled in."""
    draft = LedgerEntry(seq, event, timestamp, prev_hash)
    return LedgerEntry(seq, event, timestamp, prev_hash, record_hash(draft.body()))


# ----------------------------------------------------------------------------- parsing


def _decode(line: bytes, lineno: int) -> dict[str, Any]:
    if not line.isascii():
        raise LedgerError(f"ledger line {lineno}: not a JSON record (not ASCII)")
    obj = bounded_json.loads(line, LINE_LIMITS, LedgerError, f"ledger line {lineno}")
    if not isinstance(obj, dict):
        raise LedgerError(f"ledger line {lineno}: not a JSON object")
    return obj


def _verify(obj: dict[str, Any], record: Genesis | LedgerEntry, line: bytes, lineno: int) -> None:
    # ``record`` was rebuilt from the parsed fields and sealed, so its hash is the true one.
    if obj.get("hash") != record.hash:
        raise LedgerError(f"ledger line {lineno}: hash does not match its content (edited?)")
    if encode_line(record) != line + b"\n":
        raise LedgerError(f"ledger line {lineno}: not in canonical form or has unknown fields")


def parse_genesis(line: bytes) -> Genesis:
    """Parse and verify line 1 of a ledger.

    Raises:
        LedgerError: not a genesis record, bad fields, wrong format version or bad hash.
    """
    obj = _decode(line, 1)
    if obj.get("kind") != "genesis" or obj.get("format") != LEDGER_FORMAT or obj.get("seq") != 0:
        raise LedgerError(f"ledger line 1: not a {LEDGER_FORMAT} genesis record")
    if obj.get("prev_hash") != ZERO_HASH:
        raise LedgerError("ledger line 1: genesis must chain from the zero hash")
    try:
        draft = Genesis(
            obj["peer_id"], obj["delta"], obj["budget_epsilon"], obj["accountant"], obj["timestamp"],
            unit=obj.get("unit", "block"),
        )  # fmt: skip
        g = seal_genesis(draft)
    except (KeyError, TypeError, PrivacyError) as exc:
        raise LedgerError(f"ledger line 1: invalid genesis ({exc})") from exc
    _verify(obj, g, line, 1)
    return g


def parse_entry(line: bytes, lineno: int, seq: int, prev_hash: str) -> LedgerEntry:
    """Parse and verify an event line that must sit at ``seq`` right after ``prev_hash``.

    Raises:
        LedgerError: malformed line, wrong position (reordered/deleted), broken chain, bad hash.
    """
    obj = _decode(line, lineno)
    if obj.get("kind") != "event":
        raise LedgerError(f"ledger line {lineno}: not an event record")
    if obj.get("seq") != seq:
        raise LedgerError(
            f"ledger line {lineno}: sequence {obj.get('seq')!r}, expected {seq} (reordered or deleted lines)"
        )
    if obj.get("prev_hash") != prev_hash:
        raise LedgerError(
            f"ledger line {lineno}: hash chain broken (reordered, deleted or forged lines)"
        )
    try:
        event = DpEvent(
            mechanism=obj["mechanism"],
            noise_multiplier=obj["noise_multiplier"],
            sample_rate=obj["sample_rate"],
            steps=obj["steps"],
            round=obj["round"],
            released=obj["released"],
            recipients=tuple(obj["recipients"]),
        )
        timestamp = obj["timestamp"]
        if not isinstance(timestamp, str):
            raise TypeError("timestamp must be a string")
    except (KeyError, TypeError, PrivacyError) as exc:
        raise LedgerError(f"ledger line {lineno}: invalid event ({exc})") from exc
    entry = seal_entry(seq, event, timestamp, prev_hash)
    _verify(obj, entry, line, lineno)
    return entry
