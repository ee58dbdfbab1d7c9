"""What a strategy compares under encrypted similarity, and how it turns the scores into trust.

With security on, peers never see each other's adapters or signatures before choosing whom to trust:
each peer turns its own state into a public-length unit vector, and the pairwise inner products are
computed under CKKS (:mod:`secure_pcft.collab.encrypted_discovery`). An :class:`HeScorer`, one per
strategy that needs discovery, says which vector and which rule:

* ``weights``: the vector is the JL sketch of the adapter with every matrix row scaled to norm
  1/√R (R = rows over all tensors). The inner product of two such (unsketched) vectors is exactly
  the strategy's score, the mean row-wise cosine, whenever no row is all-zero; the sketch adds the
  JL error (~1/√dim). Trust = the strategy's own ``softmax(s / T)`` with its top-k / threshold.
* ``predictions`` with ``signature = "logprob-shift"``: the vector is the peer's plain-mode
  signature itself (the unit sketch of its log-probability shift against the base on the public
  reference batch), so d = √(2 − 2·cos) and the strategy's rule are exactly the plain rule (± the
  flooding noise, ~1e-4 on the cosine).
* ``predictions`` with ``signature = "top-logits"`` (the paper's): the vector is the JL sketch of the
  dense top-100 last-position logits, L2-normalised. Under HE the pairwise quantity is a cosine, so
  the paper's L1 distance is replaced by the L2 distance of the unit signatures, d = √(2 − 2·cos),
  and the strategy's own rule is applied to it (paper: softmax(−10·d/Σd / T); calibrated: z-scored).
  This is *not* the plain rule, and it measures worse under DP (README, "Privacy–utility").
* ``validation``: discovery and selection use the ``weights`` vector; the trust row itself is the
  strategy's (validation perplexity of the received adapters), computed after the exchange.

A new strategy with discovery registers one scorer here; a strategy that needs discovery but has no
scorer is refused (fail closed: nothing is ever broadcast in clear with security on).

Threats mitigated (threat_models/): adapters and signatures reaching a curious peer (TM-01), the
network (TM-03) or the relay (TM-04) in clear during discovery.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import torch

from secure_pcft.collab.peer import Peer
from secure_pcft.collab.protocol import prediction_signature_of
from secure_pcft.collab.strategies.predictions import SHIFT, distance_scores, prediction_signature
from secure_pcft.collab.strategy import (
    AdapterState,
    Discovery,
    ScoreSoftmaxStrategy,
    TrustStrategy,
    select_and_softmax,
)
from secure_pcft.crypto.projection import ProjectionSpec, project
from secure_pcft.errors import ConfigError, StrategyError

UnitVector = npt.NDArray[np.float64]


class HeScorer(ABC):
    """How one strategy scores peers from encrypted cosines.

    Attributes:
        name: the strategy name this scorer serves.
        rescore_after_exchange: the final trust row comes from the strategy itself, computed on the
            adapters received (the row from the cosines only selects whom to ask).
    """

    name: ClassVar[str]
    rescore_after_exchange: ClassVar[bool] = False

    @abstractmethod
    def vector(
        self, strategy: TrustStrategy, peer: Peer, reference: torch.Tensor, spec: ProjectionSpec
    ) -> UnitVector:
        """This peer's unit vector, shape (spec.dim,), from its own state only."""

    @abstractmethod
    def row(self, strategy: TrustStrategy, cosines: torch.Tensor, self_index: int) -> torch.Tensor:
        """Trust row (N,) from cosines (N,): NaN = no score (that peer gets weight 0)."""


def _softmax_rule(strategy: TrustStrategy) -> ScoreSoftmaxStrategy:
    if not isinstance(strategy, ScoreSoftmaxStrategy):
        raise StrategyError(f"strategy {strategy.name!r} is not a score-softmax strategy")
    return strategy


def _known(cosines: torch.Tensor, self_index: int) -> torch.Tensor:
    known = ~torch.isnan(cosines)
    known[self_index] = True
    return known


def _position(known: torch.Tensor, self_index: int) -> int:
    """Index of self among the known peers (``known`` is a boolean mask over all peers)."""
    return int(known[:self_index].sum())


def row_normalised(adapter: AdapterState) -> AdapterState:
    """Every matrix row (first dim = rows, as ``rowwise_cosine``) scaled to norm 1/√R."""
    flat = {n: t.detach().to(torch.float64).reshape(t.shape[0], -1) for n, t in adapter.items()}
    rows = sum(x.shape[0] for x in flat.values())
    scale = 1.0 / math.sqrt(max(rows, 1))
    return {n: x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) * scale for n, x in flat.items()}


def weights_vector(adapter: AdapterState, spec: ProjectionSpec) -> UnitVector:
    """Sketch whose inner products estimate the mean row-wise cosine of two adapters."""
    return project(row_normalised(adapter), spec)


def signature_vector(last_logits: torch.Tensor, spec: ProjectionSpec) -> UnitVector:
    """Sketch of the dense top-100 logits (R, V) → unit vector (spec.dim,)."""
    sig = prediction_signature(last_logits)
    dense = torch.zeros(last_logits.shape, dtype=torch.float64)
    dense.scatter_(1, sig["indices"], sig["values"].to(torch.float64))  # (R, V)
    return project({"signature": dense}, spec)


class WeightsHe(HeScorer):
    name = "weights"

    def vector(
        self, strategy: TrustStrategy, peer: Peer, reference: torch.Tensor, spec: ProjectionSpec
    ) -> UnitVector:
        return weights_vector(peer.adapter(), spec)

    def row(self, strategy: TrustStrategy, cosines: torch.Tensor, self_index: int) -> torch.Tensor:
        rule = _softmax_rule(strategy)
        s = cosines.to(torch.float64).clone()
        s[self_index] = 1.0  # own vector is a unit vector: exact
        s[~_known(cosines, self_index)] = float("-inf")
        return select_and_softmax(
            s / rule.cfg.temperature, self_index, rule.cfg.top_k, rule.cfg.threshold
        )


class PredictionsHe(HeScorer):
    name = "predictions"

    def vector(
        self, strategy: TrustStrategy, peer: Peer, reference: torch.Tensor, spec: ProjectionSpec
    ) -> UnitVector:
        if strategy.cfg.signature == "logprob-shift":
            # the plain-mode signature itself (it is built with the run's discovery spec)
            sig = prediction_signature_of(peer, strategy.cfg, reference)[SHIFT]
            if sig.shape != (spec.dim,):
                raise StrategyError("logprob-shift signature length differs from the sketch")
            return sig.numpy()
        return signature_vector(peer.reference_logits(reference), spec)

    def row(self, strategy: TrustStrategy, cosines: torch.Tensor, self_index: int) -> torch.Tensor:
        rule = _softmax_rule(strategy)
        known = _known(cosines, self_index)
        cos = cosines.to(torch.float64).clone()
        cos[self_index] = 1.0
        d = torch.sqrt(torch.clamp(2.0 - 2.0 * cos[known], min=0.0))
        s = torch.full_like(cos, float("-inf"))
        s[known] = distance_scores(d, _position(known, self_index), rule.cfg.calibrated)
        return select_and_softmax(
            s / rule.cfg.temperature, self_index, rule.cfg.top_k, rule.cfg.threshold
        )


class ValidationHe(WeightsHe):
    """Selection by encrypted weight cosines; the row is the strategy's, after the exchange."""

    name = "validation"
    rescore_after_exchange = True

    def row(self, strategy: TrustStrategy, cosines: torch.Tensor, self_index: int) -> torch.Tensor:
        # Uniform over the peers that answered: only the support matters (who may be asked);
        # the validation strategy's threshold/top-k are in perplexity units and apply later.
        known = _known(cosines, self_index).to(torch.float64)
        return known / known.sum()


_REGISTRY: dict[str, HeScorer] = {}


def register_he_scorer(scorer: HeScorer, *, force: bool = False) -> HeScorer:
    """Register ``scorer`` for the strategy ``scorer.name``.

    Raises:
        ConfigError: a scorer is registered for that strategy already and ``force`` is False.
    """
    if scorer.name in _REGISTRY and not force and _REGISTRY[scorer.name] is not scorer:
        raise ConfigError(f"an encrypted-similarity scorer for {scorer.name!r} is registered")
    _REGISTRY[scorer.name] = scorer
    return scorer


for _scorer in (WeightsHe(), PredictionsHe(), ValidationHe()):
    register_he_scorer(_scorer)


def he_scorer_for(strategy: TrustStrategy) -> HeScorer | None:
    """The scorer for ``strategy``; None when the strategy needs no discovery.

    Raises:
        ConfigError: the strategy needs discovery but no scorer is registered for it.
    """
    if strategy.discovery is Discovery.NONE:
        return None
    scorer = _REGISTRY.get(strategy.name)
    if scorer is None:
        raise ConfigError(
            f"[strategy] name: {strategy.name!r} needs peer discovery but has no encrypted-"
            "similarity scorer; register one (collab/he_scoring.py) or set [security] mode='off'"
        )
    return scorer
