"""What travels between the relay (ServerApp) and a peer (ClientApp), as Flower records.

A step request carries the step to run and the envelopes the relay forwards to that peer; a reply
carries the envelopes the peer sends and a small public report. Envelopes are opaque ``bytes``
values (sealed and signed in ``[security] mode = "full"``): the relay reads only the recipient
peer id that the peer put next to each one. Reports are JSON; nothing is pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, RecordDict

from secure_pcft import bounded_json
from secure_pcft.runtime.flower.errors import RelayRecordError

MESSAGE_TYPE = "query.step"  # the one Flower message type of this runtime
_RECORD = "spcft"
MAX_INFO_BYTES = 4 * 1024 * 1024
_INFO_LIMITS = bounded_json.JsonLimits(max_bytes=MAX_INFO_BYTES, max_depth=32)


@dataclass(frozen=True)
class StepRequest:
    """Relay → peer: run ``step`` of round ``round``, with these envelopes delivered.

    Attributes:
        step: a step name of :mod:`.steps` (or ``hello``).
        round: the round (0 = warm-up).
        senders: claimed sender peer id of each envelope (authenticated only by the envelope).
        wires: the envelopes, opaque bytes.
        info: public JSON for the step (hello challenge, peers that restarted, ...).
    """

    step: str
    round: int
    senders: tuple[str, ...] = ()
    wires: tuple[bytes, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> RecordDict:
        return _pack(self.step, self.round, self.senders, self.wires, self.info)

    @classmethod
    def from_record(cls, content: RecordDict) -> StepRequest:
        step, rnd, peers, wires, info = _unpack(content)
        return cls(step, rnd, peers, wires, info)


@dataclass(frozen=True)
class StepReply:
    """Peer → relay: the envelopes this peer sends (``recipients[i]`` gets ``wires[i]``) and its
    public report of the step (metrics, counts; never keys, adapters or others' scores)."""

    step: str
    round: int
    recipients: tuple[str, ...] = ()
    wires: tuple[bytes, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> RecordDict:
        return _pack(self.step, self.round, self.recipients, self.wires, self.info)

    @classmethod
    def from_record(cls, content: RecordDict) -> StepReply:
        step, rnd, peers, wires, info = _unpack(content)
        return cls(step, rnd, peers, wires, info)


def _pack(
    step: str, rnd: int, peers: tuple[str, ...], wires: tuple[bytes, ...], info: dict[str, Any]
) -> RecordDict:
    if len(peers) != len(wires):
        raise RelayRecordError("one peer id per envelope")
    body: dict[str, Any] = {
        "step": step,
        "round": rnd,
        "n": len(wires),
        "info": json.dumps(info, sort_keys=True, allow_nan=False),
    }
    if wires:  # Flower refuses empty lists (their element type is unknown)
        body["peers"] = list(peers)
        body["wires"] = list(wires)
    return RecordDict({_RECORD: ConfigRecord(body)})


def _unpack(
    content: RecordDict,
) -> tuple[str, int, tuple[str, ...], tuple[bytes, ...], dict[str, Any]]:
    rec = content.config_records.get(_RECORD) if content is not None else None
    if rec is None:
        raise RelayRecordError("no secure-pcft record in the message")
    step, rnd, n, info_raw = rec.get("step"), rec.get("round"), rec.get("n"), rec.get("info")
    if not isinstance(step, str) or type(rnd) is not int or type(n) is not int or n < 0:
        raise RelayRecordError("step, round and count must be a string and integers")
    if not isinstance(info_raw, str) or len(info_raw) > MAX_INFO_BYTES:
        raise RelayRecordError("info must be JSON text within the size limit")
    peers: Any = rec.get("peers", []) if n else []
    wires: Any = rec.get("wires", []) if n else []
    if not (isinstance(peers, list) and isinstance(wires, list)):
        raise RelayRecordError("peers and wires must be lists")
    if len(peers) != n or len(wires) != n:
        raise RelayRecordError("peer and envelope counts differ from the header")
    if not all(isinstance(p, str) for p in peers) or not all(isinstance(w, bytes) for w in wires):
        raise RelayRecordError("peer ids must be strings and envelopes bytes")
    info = bounded_json.loads(info_raw, _INFO_LIMITS, RelayRecordError, "relay record info")
    if not isinstance(info, dict):
        raise RelayRecordError("info must be a JSON object")
    return step, rnd, tuple(peers), tuple(wires), info
