"""The model a site keeps: the best it has seen on its own validation split, never worse than where
it started unless its data says otherwise (docs/design.md, "Acceptance").

A peer's last-round adapter is whatever the last aggregation made of it; on data, a base and
partners nobody tuned on, that can be worse than the untouched base or than the peer after its
warm-up (a plant ended at 275 after 229 after the warm-up, and nothing said so). So every peer
keeps, beside the adapter it trains and releases, the best model it has *seen*:

* the **starting point**: the base with no adapter (a LoRA adapter with B = 0 leaves the base
  unchanged) or, if its validation data supports it, the adapter after the warm-up;
* every round: its own local continuation (the adapter after the round's local steps) and every
  aggregate it scored.

A candidate replaces the starting point only with *paired evidence* on the n validation blocks: its
mean per-block loss gap to the starting point d̄ must satisfy d̄ + z·sd(d)/√n < 0 (z = 1, one
standard error), so a candidate that is better on validation by chance alone rarely displaces a
start that was as good; among the candidates with that evidence, the lowest mean validation loss
is kept. Per-block gaps of two models on the same blocks are strongly correlated, so the paired
test resolves differences far smaller than the blocks' own spread.

**Privacy.** The kept model is chosen with exact (noise-free) scores on the private validation
split, and it never leaves the site: nothing a peer sends depends on it — the adapter it trains on
and releases is its round's adopted model (collab/acceptance.py), and the kept copy is only read
at the end. So the choice costs no ε (SECURITY.md, "The kept model"). The kept adapter is DP with
respect to the training split (each candidate is post-processing of DP releases and of data
disjoint from the training split) but not with respect to the validation split: it stays with the
site, and the adapter folder says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from secure_pcft.model.lora import AdapterState

Z = 1.0  # standard errors of paired evidence a candidate needs to displace the starting point


def base_adapter(state: AdapterState) -> AdapterState:
    """The adapter that leaves the base unchanged: every LoRA ``B`` zeroed (ΔW = B·A = 0)."""
    return {k: (torch.zeros_like(v) if "lora_B" in k else v.clone()) for k, v in state.items()}


def paired_gain(candidate: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the per-block loss gaps ``candidate − reference`` (n,), nats."""
    d = candidate.double() - reference.double()
    n = d.numel()
    se = float(d.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
    return float(d.mean()), se


def supported(candidate: torch.Tensor, reference: torch.Tensor, z: float = Z) -> bool:
    """Whether the validation blocks support ``candidate`` over ``reference``: d̄ + z·SE < 0."""
    mean, se = paired_gain(candidate, reference)
    return mean + z * se < 0


@dataclass
class Seen:
    """One model a peer has seen: its adapter, its per-block validation losses (n,), where it
    came from (``base``, ``warm-up``, ``round 3: uniform`` …) and the round."""

    state: AdapterState
    losses: torch.Tensor
    origin: str
    round: int

    @property
    def val_loss(self) -> float:
        return float(self.losses.double().mean())

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "round": self.round,
            "val_loss": self.val_loss,
            "val_ppl": math.exp(self.val_loss),
        }


class KeptModel:
    """The starting point and the best model seen since, on the peer's validation split."""

    def __init__(self) -> None:
        self.start: Seen | None = None
        self.best: Seen | None = None
        self.base: Seen | None = None

    def begin(self, base: Seen, warm: Seen) -> Seen:
        """Fix the starting point: the base, or the warm-up adapter if validation supports it."""
        self.base = base
        self.start = warm if supported(warm.losses, base.losses) else base
        self.best = self.start
        return self.start

    def offer(self, seen: Seen) -> bool:
        """Keep ``seen`` if validation supports it over the start and it beats the best so far.

        Raises:
            RuntimeError: :meth:`begin` was not called (no starting point).
        """
        if self.start is None or self.best is None:
            raise RuntimeError("KeptModel.offer before begin: no starting point")
        if seen.losses.numel() != self.start.losses.numel():
            return False
        if not supported(seen.losses, self.start.losses):
            return False
        if seen.val_loss < self.best.val_loss:
            self.best = Seen({k: v.clone() for k, v in seen.state.items()}, seen.losses.clone(),
                             seen.origin, seen.round)  # fmt: skip
            return True
        return False

    @property
    def kept(self) -> Seen:
        if self.best is None:
            raise RuntimeError("KeptModel has no starting point yet")
        return self.best
