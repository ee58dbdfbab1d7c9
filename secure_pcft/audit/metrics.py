"""Attack metrics: ROC AUC, TPR at low FPR, ROC points, exposure, token precision/recall, CP bounds.

Conventions: a *higher* attack score means "more likely a member" (or "more likely the secret").
Ranks and ROC points are plain NumPy; the binomial and beta functions behind the Clopper–Pearson
intervals and the ε lower bounds are SciPy's (``scipy.special``, ``scipy.stats``), wrapped to raise
:class:`AuditError` on arguments out of range. Tests check them on known answers.

TPR at a fixed FPR is read from the empirical ROC **without interpolation**: it is the TPR of the
best *deterministic* threshold whose empirical FPR is at most the target (as in LiRA, Carlini et
al. 2022). Linear interpolation between ROC points would describe a randomised attacker and report
a TPR above every real threshold's at FPRs the data cannot resolve; with ``n`` non-members the
smallest non-zero FPR is ``1/n``, so below it the only admissible threshold lies above every
non-member (FPR = 0). ``fpr_resolution`` tells a reader when a "TPR@0.1%" is of that kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from secure_pcft.errors import AuditError

FloatArray = npt.NDArray[np.float64]


def _scores(values: Sequence[float] | npt.ArrayLike, what: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise AuditError(f"{what}: need at least one score")
    if not np.isfinite(arr).all():
        raise AuditError(f"{what}: scores must be finite")
    return arr


def roc_curve(
    member_scores: npt.ArrayLike, nonmember_scores: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Empirical ROC of the rule "member iff score >= t" over every distinct threshold t.

    Tied scores share one threshold, so a tie between a member and a non-member gives a diagonal
    segment (the AUC below counts it one half).

    Returns:
        ``(fpr, tpr, thresholds)``, each shape (K + 1,), from (0, 0) at threshold +inf to (1, 1)
        at the lowest score; FPR and TPR are non-decreasing.

    Raises:
        AuditError: an empty or non-finite score list.
    """
    pos = _scores(member_scores, "member scores")
    neg = _scores(nonmember_scores, "non-member scores")
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]  # descending
    # Count scores >= t for every threshold with one sorted search each.
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    tp = pos.size - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg_sorted, thresholds, side="left")
    tpr = np.concatenate([[0.0], tp / pos.size])
    fpr = np.concatenate([[0.0], fp / neg.size])
    return fpr, tpr, np.concatenate([[math.inf], thresholds])


def roc_auc(member_scores: npt.ArrayLike, nonmember_scores: npt.ArrayLike) -> float:
    """Area under the ROC: P(member score > non-member score) + ½ P(tie) (Mann–Whitney U).

    Computed from mid-ranks, so ties are handled exactly.

    Raises:
        AuditError: an empty or non-finite score list.
    """
    pos = _scores(member_scores, "member scores")
    neg = _scores(nonmember_scores, "non-member scores")
    both = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # Mid-rank of each distinct value: (ranks of its first and last occurrence) / 2, 1-based.
    ends = np.cumsum(counts)
    midranks = ends - (counts - 1) / 2.0
    rank_sum = float(midranks[inverse[: pos.size]].sum())
    u = rank_sum - pos.size * (pos.size + 1) / 2.0
    return u / (pos.size * neg.size)


def tpr_at_fpr(member_scores: npt.ArrayLike, nonmember_scores: npt.ArrayLike, fpr: float) -> float:
    """TPR of the best deterministic threshold whose empirical FPR is <= ``fpr`` (no interpolation).

    Raises:
        AuditError: ``fpr`` outside [0, 1], or bad scores.
    """
    if not 0.0 <= fpr <= 1.0:
        raise AuditError(f"target FPR must be in [0, 1], got {fpr}")
    fprs, tprs, _ = roc_curve(member_scores, nonmember_scores)
    return float(tprs[fprs <= fpr + 1e-12].max())


def roc_points(
    member_scores: npt.ArrayLike, nonmember_scores: npt.ArrayLike, max_points: int = 200
) -> list[tuple[float, float]]:
    """ROC points (fpr, tpr) for plots, thinned to at most ``max_points`` (ends always kept)."""
    fpr, tpr, _ = roc_curve(member_scores, nonmember_scores)
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return [(float(a), float(b)) for a, b in zip(fpr, tpr, strict=True)]


# The figures that get a confidence interval (bootstrap within a trial, t-interval across trials).
HEADLINE_METRICS = ("roc_auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")
BOOTSTRAP_REPS = 1000
BOOTSTRAP_SEED = 0  # fixed: the same scores always give the same interval


def _headline(pos: FloatArray, neg: FloatArray) -> tuple[float, float, float]:
    return roc_auc(pos, neg), tpr_at_fpr(pos, neg, 0.01), tpr_at_fpr(pos, neg, 0.001)


def bootstrap_intervals(
    member_scores: npt.ArrayLike,
    nonmember_scores: npt.ArrayLike,
    *,
    reps: int = BOOTSTRAP_REPS,
    confidence: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the :data:`HEADLINE_METRICS` for one set of scores.

    Members and non-members are resampled separately (their counts are fixed by the audit
    design). The interval covers the sampling of *these* examples only: the variation between
    target models or reference models is what :func:`across_trials` adds.

    Raises:
        AuditError: bad scores, ``reps`` < 100 or ``confidence`` not in (0, 1).
    """
    pos = _scores(member_scores, "member scores")
    neg = _scores(nonmember_scores, "non-member scores")
    if reps < 100 or not 0.0 < confidence < 1.0:
        raise AuditError("bootstrap needs reps >= 100 and confidence in (0, 1)")
    rng = np.random.default_rng(seed)
    draws = np.empty((reps, len(HEADLINE_METRICS)))
    for b in range(reps):
        draws[b] = _headline(
            pos[rng.integers(0, pos.size, pos.size)], neg[rng.integers(0, neg.size, neg.size)]
        )
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(draws, [tail, 100.0 - tail], axis=0)
    return {m: (float(lo[k]), float(hi[k])) for k, m in enumerate(HEADLINE_METRICS)}


def across_trials(
    values: Sequence[float],
    confidence: float = 0.95,
    *,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[float, float]:
    """Student-t interval of the mean of one figure over independent trials (target/reference seeds),
    clipped to the figure's range ``bounds`` (an AUC or a TPR lies in [0, 1]).

    Returns (nan, nan) for fewer than two finite values.
    """
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2.0, finite.size - 1)) * float(
        finite.std(ddof=1) / math.sqrt(finite.size)
    )
    mean = float(finite.mean())
    return max(bounds[0], mean - half), min(bounds[1], mean + half)


def membership_metrics(
    member_scores: npt.ArrayLike, nonmember_scores: npt.ArrayLike
) -> dict[str, float]:
    """The standard MIA figures: AUC, TPR@1% and @0.1% FPR (each with a 95 % bootstrap interval,
    ``<figure>_ci_low`` / ``<figure>_ci_high``), balanced accuracy, counts, resolution."""
    pos = _scores(member_scores, "member scores")
    neg = _scores(nonmember_scores, "non-member scores")
    fpr, tpr, _ = roc_curve(pos, neg)
    auc, tpr1, tpr01 = _headline(pos, neg)
    out = {
        "roc_auc": auc,
        "tpr_at_1pct_fpr": tpr1,
        "tpr_at_0.1pct_fpr": tpr01,
        "balanced_accuracy": float(np.max((tpr + 1.0 - fpr) / 2.0)),
        "n_members": float(pos.size),
        "n_nonmembers": float(neg.size),
        "fpr_resolution": 1.0 / neg.size,
    }
    for metric, (lo, hi) in bootstrap_intervals(pos, neg).items():
        out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = lo, hi
    return out


# ---------------------------------------------------------------------------- exposure


def exposure_from_rank(rank: float, space_size: float) -> float:
    """Secret Sharer exposure in bits: log2 |R| − log2 rank (rank 1 = the most likely candidate).

    Raises:
        AuditError: rank outside [1, |R|].
    """
    if not 1.0 <= rank <= space_size:
        raise AuditError(f"rank must be in [1, {space_size:g}], got {rank:g}")
    return math.log2(space_size) - math.log2(rank)


def sampled_exposure(secret_nll: float, candidate_nlls: npt.ArrayLike, space_size: float) -> float:
    """Exposure estimated from S candidates drawn uniformly from the space (Carlini et al. 2019).

    The secret's rank is estimated as |R|·P̂ with P̂ = (c + 1) / (S + 1), c the number of sampled
    candidates at least as likely (NLL <=) as the secret. The +1 keeps the estimate conservative
    and finite: it never exceeds log2(S + 1) bits, however well the secret is memorised.
    """
    cand = _scores(candidate_nlls, "candidate NLLs")
    c = int(np.sum(cand <= secret_nll))
    p_hat = (c + 1) / (cand.size + 1)
    return exposure_from_rank(max(1.0, space_size * p_hat), space_size)


def fitted_exposure(secret_nll: float, candidate_nlls: npt.ArrayLike, space_size: float) -> float:
    """Exposure from a normal fit of the candidates' NLLs (Secret Sharer's extrapolation, §4.3).

    Extrapolates beyond log2(S) bits; it is an estimate, not a bound (the paper fits a skew-normal;
    a normal is used here). Capped at log2 |R|.
    """
    cand = _scores(candidate_nlls, "candidate NLLs")
    mu, sd = float(cand.mean()), float(cand.std(ddof=1)) if cand.size > 1 else 0.0
    if sd <= 0:
        return sampled_exposure(secret_nll, cand, space_size)
    tail = 0.5 * math.erfc(-((secret_nll - mu) / sd) / math.sqrt(2.0))  # P(N(mu, sd) <= nll)
    return exposure_from_rank(min(space_size, max(1.0, space_size * tail)), space_size)


# ---------------------------------------------------------------------------- tokens


def token_precision_recall(predicted: Iterable[int], truth: Iterable[int]) -> dict[str, float]:
    """Precision and recall of a set of recovered token ids against the ids actually used."""
    pred, true = set(predicted), set(truth)
    hits = len(pred & true)
    return {
        "token_precision": hits / len(pred) if pred else 0.0,
        "token_recall": hits / len(true) if true else 0.0,
        "tokens_predicted": float(len(pred)),
        "tokens_true": float(len(true)),
    }


# ---------------------------------------------------------------------------- binomial / beta


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) for a, b > 0 and x in [0, 1] (``scipy.special``)."""
    if a <= 0 or b <= 0 or not 0.0 <= x <= 1.0:
        raise AuditError(f"betainc needs a, b > 0 and x in [0, 1], got {a}, {b}, {x}")
    return float(special.betainc(a, b, x))


def beta_ppf(p: float, a: float, b: float) -> float:
    """Quantile of Beta(a, b): the x with I_x(a, b) = p (``scipy.special.betaincinv``)."""
    if not 0.0 <= p <= 1.0:
        raise AuditError(f"probability must be in [0, 1], got {p}")
    if a <= 0 or b <= 0:
        raise AuditError(f"beta_ppf needs a, b > 0, got {a}, {b}")
    return float(special.betaincinv(a, b, p))


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper–Pearson interval for a binomial proportion.

    Raises:
        AuditError: counts out of range or confidence not in (0, 1).
    """
    if not 0 <= successes <= trials or trials < 1 or not 0.0 < confidence < 1.0:
        raise AuditError(
            f"need 0 <= k <= n, n >= 1, confidence in (0, 1); got {successes}/{trials}"
        )
    alpha = 1.0 - confidence
    lo = 0.0 if successes == 0 else beta_ppf(alpha / 2, successes, trials - successes + 1)
    hi = 1.0 if successes == trials else beta_ppf(1 - alpha / 2, successes + 1, trials - successes)
    return lo, hi


def binomial_sf(v: int, n: int, p: float) -> float:
    """P[Binomial(n, p) >= v]."""
    if not 0.0 <= p <= 1.0:
        raise AuditError(f"probability must be in [0, 1], got {p}")
    return float(stats.binom.sf(v - 1, n, p))


def binomial_pmf(k: int, n: int, p: float) -> float:
    """P[Binomial(n, p) = k]."""
    if not 0.0 <= p <= 1.0:
        raise AuditError(f"probability must be in [0, 1], got {p}")
    return float(stats.binom.pmf(k, n, p))


def binomial_pmf_range(v: int, n: int, p: float) -> npt.NDArray[np.float64]:
    """``[P[Binomial(n, p) = k] for k in 0..v-1]`` in one call."""
    if not 0.0 <= p <= 1.0:
        raise AuditError(f"probability must be in [0, 1], got {p}")
    return np.asarray(stats.binom.pmf(np.arange(v), n, p), dtype=np.float64)
