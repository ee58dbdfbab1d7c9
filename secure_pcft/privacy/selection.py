"""The accounted per-round choice among a few candidate aggregates (docs/design.md, "Acceptance").

Each round a peer may adopt its own adapter (``self``) or one of a few aggregates of what it
received. What it adopts is what it trains on and releases next, so with DP on the choice is a
function of its private validation split and must be an accounted mechanism. It is **report-noisy-
min over loss gaps**: for each candidate j other than ``self`` the per-block loss gap to ``self`` on
the n validation blocks, g_jk = ℓ_jk − ℓ_self,k, is clipped to [−c, c] and averaged, and Gaussian
noise of std σ·2c/n is added (the mechanism of :func:`~secure_pcft.privacy.validation_scores.
noisy_validation_gaps`, sensitivity 2c/n per candidate); the peer adopts the argmin of
{self: 0} ∪ {j: noisy gap_j}. Only the argmin is used, which is post-processing of the m − 1 noisy
gaps, so its cost is that of m − 1 Gaussian queries at q = 1 (a known-answer composition, recorded
as one ``gaussian-validation`` event of m − 1 steps, ``released = "selection-scores"``). Releasing
the argmin alone can cost less (the exponential mechanism's bound does not grow with m); the
composition bound is used because every accountant of the toolkit composes it exactly.

**Few candidates, little noise — and how little is measured up front.** The plan
(:func:`plan_selection`) takes σ from a share of the run's target ε (``[privacy]
selection_epsilon_share``: the selection's own ε over all rounds, at the peer's δ, is that share of
the target; DP-SGD's σ is then calibrated for the rest, as for the ``validation`` strategy's
scores). The resulting noise std on a gap, s = σ·2c/n, is public (σ, c and the count n of
validation blocks). A gap can never exceed c, so when s > c/2 not even a candidate at the worst
possible gap (+c, e.g. a poisoned aggregate) is told apart from ``self`` with probability above
Φ(2) ≈ 97.7 %: such a test cannot inform the choice. The plan then reserves nothing, spends no ε,
and the peer adopts the trust aggregate (its strategy's, as without acceptance) — at the data sizes
of the toolkit's DP benchmarks (n ≈ 6 validation blocks per peer) that is what happens, and the
results say so; from about n ≥ 4σ blocks the choice is accounted and informative.

**Which of the near-best.** Averaging pays off over a run more than at the round it happens: a
partner's adapter halves the noise a peer's own few local steps fit, which later rounds inherit,
while right after the local steps the peer's own adapter still matches its validation split about as
well (measured on the demo corpus: a same-language partner's average within ±0.05 nats of ``self`` in
the first rounds, and the peers that averaged every round ended 3 % below those that kept their own).
So among the candidates whose validation loss is within one standard error of the best one's, the
peer adopts the *broadest* — the one averaging the most adapters (effective number 1/Σw²) — the
one-standard-error rule of model selection (Breiman et al., *Classification and Regression Trees*,
1984; Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*, §7.10), with averaging
as the regularisation. A candidate clearly worse (a poisoned aggregate, a partner of another
language) is never within one standard error. Without DP the standard error is that of the paired
per-block gaps to the best candidate; with DP it is the mechanism's noise std on a gap (the choice
is then post-processing of the noisy gaps, no further cost).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch

from secure_pcft.config import PrivacyConfig
from secure_pcft.errors import PrivacyError
from secure_pcft.privacy.accounting import MAX_SANE_SIGMA, epsilon_spent
from secure_pcft.privacy.events import DpEvent
from secure_pcft.privacy.randomness import RandomSource
from secure_pcft.privacy.validation_scores import noisy_clipped_means

K = TypeVar("K", bound=Hashable)

RELEASED = "selection-scores"
SELF = "self"


@dataclass(frozen=True)
class SelectionPlan:
    """How a peer's per-round choice is made and what it costs (public: from the config and
    the count of its validation blocks).

    Attributes:
        candidates: m, the candidates scored per round, ``self`` included.
        rounds: aggregation rounds of the run.
        val_blocks: n, the peer's validation blocks.
        noise_multiplier: σ of the accounted gaps (0 without DP).
        gap_clip: c, nats.
        accounted: the choice is the noisy mechanism, reserved in the privacy plan.
        reason: one line for results and reports (why accounted, exact or skipped).
    """

    candidates: int
    rounds: int
    val_blocks: int
    noise_multiplier: float
    gap_clip: float
    accounted: bool
    reason: str

    @property
    def queries_per_round(self) -> int:
        """Gaussian queries the choice costs per round (m − 1 when accounted, else 0)."""
        return self.candidates - 1 if self.accounted else 0

    @property
    def noise_std(self) -> float:
        """Std of the noise on one mean gap, nats (0 without DP)."""
        return self.noise_multiplier * 2 * self.gap_clip / max(self.val_blocks, 1)

    def reserved(self) -> list[DpEvent]:
        """The events the plan reserves before DP-SGD's σ is calibrated (one per round)."""
        if not self.accounted:
            return []
        return [
            DpEvent("gaussian-validation", self.noise_multiplier, 1.0, self.queries_per_round, r,
                    RELEASED)
            for r in range(1, self.rounds + 1)
        ]  # fmt: skip

    def to_json(self) -> dict[str, object]:
        return {
            "candidates": self.candidates,
            "val_blocks": self.val_blocks,
            "noise_multiplier": self.noise_multiplier,
            "gap_clip": self.gap_clip,
            "noise_std_nats": self.noise_std,
            "accounted": self.accounted,
            "reason": self.reason,
        }


def plan_selection(
    privacy: PrivacyConfig, *, candidates: int, rounds: int, val_blocks: int, delta: float
) -> SelectionPlan:
    """The plan of one peer's per-round choice among ``candidates`` (self included).

    Without DP: exact scores, nothing accounted. With DP and a target ε: σ such that the
    choice's ε over ``rounds`` rounds alone is ``selection_epsilon_share`` of the target (σ
    given instead of a target: ``validation_noise_multiplier``). Skipped (nothing reserved) when
    there is nothing to choose (m ≤ 1), no share, or the noise makes the test uninformative
    (std > c/2, see the module docstring).

    Raises:
        PrivacyError: a share so small that σ would exceed the accountant's sane maximum.
    """
    c = privacy.validation_gap_clip

    def plan(sigma: float, accounted: bool, reason: str) -> SelectionPlan:
        return SelectionPlan(candidates, rounds, val_blocks, sigma, c, accounted, reason)

    if not privacy.enabled:
        return plan(0.0, False, "exact validation scores (no DP)")
    if candidates <= 1 or rounds < 1 or val_blocks < 1:
        return plan(0.0, False, "nothing to choose: the trust aggregate is adopted")
    queries = (candidates - 1) * rounds
    share = privacy.selection_epsilon_share
    if share == 0:
        return plan(0.0, False, "selection_epsilon_share = 0: the trust aggregate is adopted")
    if privacy.target_epsilon is None:
        sigma = privacy.validation_noise_multiplier
    else:
        sigma = _sigma_for(share * privacy.target_epsilon, queries, delta, privacy.accountant)
    std = plan(sigma, True, "").noise_std
    if std > c / 2:
        return plan(
            sigma, False,
            f"skipped: noise std {std:.3g} nats on a gap > c/2 = {c / 2:g} with {val_blocks} "
            f"validation blocks (σ = {sigma:.3g}); the trust aggregate is adopted, no ε spent",
        )  # fmt: skip
    return plan(
        sigma, True,
        f"report-noisy-min over {candidates - 1} gaps a round, σ = {sigma:.3g}, noise std "
        f"{std:.3g} nats on a gap (c = {c:g})",
    )  # fmt: skip


def _sigma_for(epsilon: float, queries: int, delta: float, accountant: str) -> float:
    """Smallest σ (1 % tolerance) with ε(``queries`` Gaussian queries at q = 1) ≤ ``epsilon``."""

    def eps(sigma: float) -> float:
        return epsilon_spent(
            [DpEvent("gaussian-validation", sigma, 1.0, queries, 1, RELEASED)], delta, accountant
        )

    low, high = 0.0, 1.0
    while eps(high) > epsilon:
        low, high = high, high * 2
        if high > MAX_SANE_SIGMA:
            raise PrivacyError(
                f"[privacy] selection_epsilon_share: ε = {epsilon:.3g} for {queries} selection "
                f"queries needs σ > {MAX_SANE_SIGMA:g}; raise the share or set it to 0"
            )
    while high - low > 0.01 * high:
        mid = (low + high) / 2
        low, high = (low, mid) if eps(mid) <= epsilon else (mid, high)
    return high


@dataclass(frozen=True)
class Choice:
    """The outcome of one round's choice.

    Attributes:
        chosen: the adopted candidate.
        gaps: per candidate, the gap to ``self`` the choice used (noisy when accounted), nats.
        event: the ledger event that paid for it (None when exact or skipped).
    """

    chosen: str
    gaps: dict[str, float]
    event: DpEvent | None


def exact_choice(
    losses: Mapping[str, torch.Tensor], breadth: Mapping[str, float] | None = None
) -> Choice:
    """Adopt, among the candidates within one standard error of the best mean per-block validation
    loss, the broadest (module docstring); without ``breadth``, the best.

    Args:
        losses: per candidate (``self`` among them), its per-block losses (n,), nats.
        breadth: per candidate, the effective number of adapters it averages (1 for ``self``).
    """
    if SELF not in losses:
        raise PrivacyError("selection: the own adapter ('self') must be among the candidates")
    own = losses[SELF].double()
    gaps = {k: float((v.double() - own).mean()) for k, v in losses.items()}
    best = min(gaps, key=lambda k: (gaps[k], list(gaps).index(k)))
    ref = losses[best].double()

    def within(k: str) -> bool:
        d = losses[k].double() - ref
        se = float(d.std(unbiased=True)) / math.sqrt(d.numel()) if d.numel() > 1 else 0.0
        return float(d.mean()) <= se

    return Choice(_broadest(gaps, within, breadth, best), gaps, None)


def _broadest(
    gaps: Mapping[str, float],
    within: Callable[[str], bool],
    breadth: Mapping[str, float] | None,
    best: str,
) -> str:
    if breadth is None:
        return best
    near = [k for k in gaps if within(k)]
    return max(near, key=lambda k: (breadth.get(k, 1.0), -gaps[k], -list(gaps).index(k)))


def noisy_choice(
    losses: Mapping[str, torch.Tensor],
    plan: SelectionPlan,
    source: RandomSource,
    *,
    round: int,
    breadth: Mapping[str, float] | None = None,
) -> Choice:
    """Report-noisy-min over the clipped gaps to ``self``, then the broadest candidate within one
    noise std of the noisy minimum (module docstring; post-processing). Record ``event`` in the
    ledger *before* the choice is used.

    Raises:
        PrivacyError: the plan is not accounted, ``self`` is missing, or blocks differ.
    """
    if not plan.accounted:
        raise PrivacyError("selection: this plan makes no accounted choice")
    if SELF not in losses:
        raise PrivacyError("selection: the own adapter ('self') must be among the candidates")
    own = losses[SELF].detach().double().cpu().flatten()
    others = {k: v.detach().double().cpu().flatten() for k, v in losses.items() if k != SELF}
    if not others:
        return Choice(SELF, {SELF: 0.0}, None)
    if any(v.numel() != own.numel() for v in others.values()):
        raise PrivacyError("selection: every candidate must be scored on the own n blocks")
    c = plan.gap_clip
    noisy = noisy_clipped_means(
        {k: v - own for k, v in others.items()}, -c, c, plan.noise_multiplier, source,
        round=round, released=RELEASED,
    )  # fmt: skip
    gaps = {SELF: 0.0, **noisy.losses}
    best = min(gaps, key=lambda k: (gaps[k], list(gaps).index(k)))
    chosen = _broadest(gaps, lambda k: gaps[k] - gaps[best] <= plan.noise_std, breadth, best)
    return Choice(chosen, gaps, noisy.event)
