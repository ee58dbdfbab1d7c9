"""Poisoning partners: an authenticated peer that releases a corrupted adapter (TM-02.3).

For robustness runs (``benchmarks/generalisation.py``, tests): the attacker trains and discovers
honestly — its encrypted similarity vector and prediction signature are those of its real adapter,
so honest peers select it as they would — but every adapter it *sends* is transformed:

* ``signflip`` — every LoRA tensor negated (in ``shared-init`` mode averaging A with −A cancels
  the shared direction, so the aggregate loses what its peers learned);
* ``x10`` — every tensor scaled by 9.5: ×10 would sit exactly on the default norm bound
  (``[security] max_adapter_norm_ratio = 10`` against a receiver whose norm equals the attacker's),
  9.5 stays inside it, so receivers' norm checks let it through;
* ``nan`` — every tensor NaN (refused by every receiver's adapter check).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from secure_pcft.collab.peer import Peer
from secure_pcft.errors import ConfigError
from secure_pcft.model.lora import AdapterState

POISONINGS = ("signflip", "x10", "nan")
INSIDE_NORM_BOUND = 9.5


def poisoning(kind: str) -> Callable[[AdapterState], AdapterState]:
    """The transform of a ``kind`` attacker.

    Raises:
        ConfigError: unknown kind.
    """
    if kind == "signflip":
        return lambda s: {k: -v for k, v in s.items()}
    if kind == "x10":
        return lambda s: {k: INSIDE_NORM_BOUND * v for k, v in s.items()}
    if kind == "nan":
        return lambda s: {k: torch.full_like(v, float("nan")) for k, v in s.items()}
    raise ConfigError(f"poisoning: one of {POISONINGS}, got {kind!r}")


def make_poisoner(peer: Peer, kind: str) -> None:
    """Turn ``peer`` into a ``kind`` poisoning partner (its sent adapters only)."""
    peer.release_transform = poisoning(kind)
