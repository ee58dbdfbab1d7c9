"""The accounted mechanism behind the ``validation`` strategy (docs/design.md, "Privacy closure").

Peer i scores each candidate adapter j by its loss on i's *private* validation split; the trust
weights, and so the adapter i later releases, depend on those scores. They therefore go through
a Gaussian mechanism whose cost is added to i's ledger:

    score_j = clamp( (1/n) Σ_k clip(ℓ_jk, 0, C)  +  N(0, (σ·C/n)²),  0, C )

with ℓ_jk the mean next-token loss of candidate j on validation block k, n the number of blocks
scored (a public count: the configuration fixes it) and C the loss clip in nats.

Sensitivity: each clipped loss lies in [0, C], and the denominator n is fixed and public. Replacing
one validation block changes each candidate's mean by at most C/n; so does removing or adding one
(a missing block counts as loss 0 against the fixed n). Noise of std σ·C/n per candidate is thus
the Gaussian mechanism with noise multiplier σ; scoring k candidates on the same split is k-fold
composition (= one Gaussian query of L2 sensitivity sqrt(k)·C/n), recorded as
``DpEvent("gaussian-validation", σ, q=1.0, steps=k)``. The final clamp is post-processing.

**Relative scores** (``[strategy] relative = true``, :func:`noisy_validation_gaps`). What the trust
rule needs is how much better or worse a candidate does than the peer's own adapter, not its absolute
loss. Per block k the gap g_jk = ℓ_jk − ℓ_own,k is clipped to [−c, c] (c = ``validation_gap_clip``,
0.5 nats by default):

    gap_j = clamp( (1/n) Σ_k clip(g_jk, −c, c)  +  N(0, (σ·2c/n)²),  −c, c )

Replacing one block changes each clipped gap by at most 2c, so the mean by at most 2c/n (adding or
removing one, against the fixed n, by at most c/n): the noise σ·2c/n is again the Gaussian mechanism with
multiplier σ, k candidates are k-fold composition, and the own adapter (gap 0 by definition) is not a
query. With c = 0.5 the noise is 10× smaller than with whole losses clipped to C = 10 at the same σ, and
per-block gaps vary much less than losses do.

Composition with DP-SGD is conservative: a record sits either in the training split or in the
validation split, yet every record is charged both the DP-SGD ε and the validation ε in one
accountant (the sum over both mechanisms, under the add/remove relation DP-SGD uses).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import nn

from secure_pcft.config import PrivacyConfig
from secure_pcft.errors import ConfigError, PrivacyError
from secure_pcft.model.merged_scoring import scoring_model
from secure_pcft.privacy.events import DpEvent
from secure_pcft.privacy.losses import per_example_lm_loss
from secure_pcft.privacy.randomness import OsUrandomSource, RandomSource, SeededSource

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class NoisyValidation(Generic[K]):
    """Noisy validation scores and the event that pays for them.

    Attributes:
        losses: per candidate, the noisy mean clipped loss (nats), clamped to [0, clip].
        event: record it with ``BudgetGuard.record_release([event])`` *before* the scores
            influence anything (trust weights, the aggregated adapter).
    """

    losses: dict[K, float]
    event: DpEvent

    @property
    def perplexities(self) -> dict[K, float]:
        """exp(noisy loss) per candidate: the paper's score scale."""
        return {k: math.exp(v) for k, v in self.losses.items()}


@torch.no_grad()
def validation_losses(
    model: nn.Module, blocks: torch.Tensor, batch_size: int = 16, max_blocks: int | None = None
) -> torch.Tensor:
    """Mean next-token loss of ``model`` on each validation block, shape (n,), nats.

    Args:
        model: the peer's model with the candidate adapter loaded.
        blocks: the private validation blocks, shape (N, T).
        batch_size: blocks per forward pass.
        max_blocks: score only the first ``max_blocks`` blocks (the same ones every time).
    """
    was_training = model.training
    model.train(False)
    try:
        use = blocks if max_blocks is None else blocks[:max_blocks]
        scorer = scoring_model(model, use.numel())  # merged LoRA view for a large pass
        parts = [
            per_example_lm_loss(scorer, use[s : s + batch_size]).float().cpu()
            for s in range(0, use.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0)


def noisy_validation_scores(
    candidate_losses: Mapping[K, torch.Tensor],
    cfg: PrivacyConfig,
    *,
    round: int,
    generator: torch.Generator | None = None,
) -> NoisyValidation[K]:
    """Clip, average, and noise the per-example validation losses of each candidate.

    Args:
        candidate_losses: per candidate, its per-block losses on this peer's validation split,
            shape (n,), the same n and blocks for every candidate (see :func:`validation_losses`).
        cfg: ``validation_noise_multiplier`` σ, ``validation_loss_clip`` C (nats), ``secure_rng``.
        round: the collaboration round (for the ledger).
        generator: the noise source when ``secure_rng`` is off (reproducible experiments only).

    Returns:
        Noisy losses and the ``gaussian-validation`` event (steps = number of candidates).

    Raises:
        PrivacyError: no candidates, or candidates scored on different numbers of blocks.
        ConfigError: ``secure_rng`` is off and no generator was given.
    """
    if not candidate_losses:
        raise PrivacyError("validation scores: no candidates to score")
    sizes = {int(t.numel()) for t in candidate_losses.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise PrivacyError(
            "validation scores: every candidate must be scored on the same n > 0 blocks"
        )
    clip = cfg.validation_loss_clip
    values = {k: v.detach().double().cpu().flatten() for k, v in candidate_losses.items()}
    return noisy_clipped_means(
        values, 0.0, clip, cfg.validation_noise_multiplier, _source(cfg, generator), round=round
    )


def noisy_validation_gaps(
    candidate_losses: Mapping[K, torch.Tensor],
    own_losses: torch.Tensor,
    cfg: PrivacyConfig,
    *,
    round: int,
    generator: torch.Generator | None = None,
) -> NoisyValidation[K]:
    """Clipped, averaged and noised per-block loss gaps of each candidate to the own adapter.

    Args:
        candidate_losses: per candidate, its per-block losses on this peer's validation split,
            shape (n,), the same blocks as ``own_losses``.
        own_losses: the peer's own adapter's per-block losses on the same blocks, shape (n,).
        cfg: ``validation_noise_multiplier`` σ, ``validation_gap_clip`` c (nats), ``secure_rng``.
        round: the collaboration round (for the ledger).
        generator: the noise source when ``secure_rng`` is off (reproducible experiments only).

    Returns:
        Noisy gaps (nats, in [-c, c]; ``losses`` holds them) and the ``gaussian-validation``
        event (steps = number of candidates).

    Raises:
        PrivacyError: no candidates, or a candidate scored on other blocks than the own adapter.
        ConfigError: ``secure_rng`` is off and no generator was given.
    """
    if not candidate_losses:
        raise PrivacyError("validation gaps: no candidates to score")
    own = own_losses.detach().double().cpu().flatten()
    n = int(own.numel())
    if n == 0 or any(int(t.numel()) != n for t in candidate_losses.values()):
        raise PrivacyError(
            "validation gaps: every candidate must be scored on the own n > 0 blocks"
        )
    clip = cfg.validation_gap_clip
    gaps = {k: v.detach().double().cpu().flatten() - own for k, v in candidate_losses.items()}
    return noisy_clipped_means(
        gaps, -clip, clip, cfg.validation_noise_multiplier, _source(cfg, generator), round=round
    )


def noisy_clipped_means(
    values: Mapping[K, torch.Tensor],
    low: float,
    high: float,
    sigma: float,
    source: RandomSource,
    *,
    round: int,
    released: str = "validation-scores",
) -> NoisyValidation[K]:
    """The Gaussian mechanism every accounted validation score shares: per candidate, each of its
    n per-block values (n,) clipped to [low, high] (NaN/+∞ count as ``high``, −∞ as ``low``),
    averaged, plus noise of std σ·(high − low)/n from ``source``, then clamped to [low, high]
    (post-processing); one ``gaussian-validation`` event of k steps (k candidates)."""
    n = int(next(iter(values.values())).numel())
    noise = source.gaussian(
        (len(values),), sigma * (high - low) / n, torch.float64, torch.device("cpu")
    )
    means: dict[K, float] = {}
    for (key, x), z in zip(values.items(), noise, strict=True):
        x = torch.nan_to_num(x, nan=high, posinf=high, neginf=low).clamp(low, high)
        means[key] = min(max(float(x.mean() + z), low), high)
    event = DpEvent("gaussian-validation", sigma, 1.0, len(values), round, released)
    return NoisyValidation(means, event)


def noise_source(cfg: PrivacyConfig, generator: torch.Generator | None) -> RandomSource:
    """The OS CSPRNG with ``secure_rng``, else a source seeded from ``generator``.

    Raises:
        ConfigError: ``secure_rng`` is off and no generator was given.
    """
    return _source(cfg, generator)


def _source(cfg: PrivacyConfig, generator: torch.Generator | None) -> RandomSource:
    if cfg.secure_rng:
        return OsUrandomSource()
    if generator is None:
        raise ConfigError("[privacy] secure_rng: off, so pass a generator for the validation noise")
    return SeededSource(generator)
