"""Attack metrics against reference implementations (SciPy) and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from secure_pcft.audit.metrics import (
    beta_ppf,
    betainc,
    binomial_pmf,
    binomial_sf,
    clopper_pearson,
    exposure_from_rank,
    fitted_exposure,
    membership_metrics,
    roc_auc,
    roc_curve,
    roc_points,
    sampled_exposure,
    token_precision_recall,
    tpr_at_fpr,
)
from secure_pcft.errors import AuditError


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_the_mann_whitney_statistic_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 6, size=40).astype(float)  # many ties
    neg = rng.integers(0, 5, size=30).astype(float)

    expected = stats.mannwhitneyu(pos, neg).statistic / (pos.size * neg.size)

    assert roc_auc(pos, neg) == pytest.approx(expected, abs=1e-12)


def test_auc_known_answers() -> None:
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1, 1], [1, 1]) == 0.5


def test_auc_equals_the_trapezoid_area_under_the_roc_curve() -> None:
    rng = np.random.default_rng(7)
    pos, neg = rng.normal(1, 1, 50).round(1), rng.normal(0, 1, 60).round(1)

    fpr, tpr, _ = roc_curve(pos, neg)

    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert roc_auc(pos, neg) == pytest.approx(area, abs=1e-12)


def test_tpr_at_fpr_uses_deterministic_thresholds_without_interpolation() -> None:
    pos = [10, 9, 8, 1]
    neg = [7, 6, 5, 4, 3, 2, 1.5, 0.5, 0.4, 9.5]  # one non-member above most members

    assert tpr_at_fpr(pos, neg, 0.0) == 0.25  # only 10 is above every non-member
    assert tpr_at_fpr(pos, neg, 0.1) == 0.75  # one false positive allowed
    assert tpr_at_fpr(pos, neg, 0.05) == 0.25  # no interpolation towards the 0.1 point
    assert tpr_at_fpr(pos, neg, 1.0) == 1.0


def test_membership_metrics_report_resolution_and_counts() -> None:
    m = membership_metrics([1.0, 2.0, 3.0], [0.0, 0.5])

    assert m["roc_auc"] == 1.0 and m["tpr_at_0.1pct_fpr"] == 1.0
    assert m["n_members"] == 3 and m["n_nonmembers"] == 2 and m["fpr_resolution"] == 0.5
    assert m["balanced_accuracy"] == 1.0


def test_roc_points_are_thinned_but_keep_the_ends() -> None:
    rng = np.random.default_rng(0)
    points = roc_points(rng.normal(size=500), rng.normal(size=500), max_points=50)

    assert len(points) <= 50
    assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)


@pytest.mark.parametrize("bad", [[], [float("nan")], [float("inf")]])
def test_empty_or_non_finite_scores_are_refused(bad: list[float]) -> None:
    with pytest.raises(AuditError):
        roc_auc(bad, [0.0])


def test_exposure_known_answers() -> None:
    assert exposure_from_rank(1, 1e6) == pytest.approx(math.log2(1e6))
    assert exposure_from_rank(1e6, 1e6) == 0.0
    with pytest.raises(AuditError):
        exposure_from_rank(0.5, 10)


def test_sampled_exposure_is_conservative_and_capped_by_the_sample_size() -> None:
    candidates = np.arange(1, 1000, dtype=float)  # NLLs 1..999

    best = sampled_exposure(0.0, candidates, 1e6)  # better than every candidate
    median = sampled_exposure(500.0, candidates, 1e6)

    assert best == pytest.approx(math.log2(1000))  # log2(S + 1), not log2 |R|
    assert median == pytest.approx(1.0, abs=0.01)


def test_fitted_exposure_extrapolates_beyond_the_sample_and_is_capped() -> None:
    rng = np.random.default_rng(0)
    candidates = rng.normal(30.0, 2.0, size=2000)

    far = fitted_exposure(10.0, candidates, 1e6)
    typical = fitted_exposure(30.0, candidates, 1e6)

    assert far == pytest.approx(math.log2(1e6))  # 10 sd below the mean: capped at log2 |R|
    assert typical == pytest.approx(1.0, abs=0.1)
    assert fitted_exposure(26.0, candidates, 1e6) > sampled_exposure(26.0, candidates, 1e6) - 1


def test_token_precision_recall() -> None:
    m = token_precision_recall({1, 2, 3, 9}, {1, 2, 3, 4, 5, 6})

    assert m["token_precision"] == 0.75 and m["token_recall"] == 0.5
    assert token_precision_recall(set(), {1})["token_precision"] == 0.0


@pytest.mark.parametrize(("a", "b", "x"), [(0.5, 0.5, 0.3), (50, 3, 0.9), (1000, 20, 0.97),
                                           (2, 300, 0.001), (1, 1, 0.5), (7.5, 2.25, 0.6)])  # fmt: skip
def test_regularised_incomplete_beta_matches_scipy(a: float, b: float, x: float) -> None:
    assert betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize(
    ("p", "a", "b"), [(0.025, 5, 6), (0.975, 6, 5), (0.05, 1, 99), (0.5, 30, 2)]
)
def test_beta_quantile_matches_scipy(p: float, a: float, b: float) -> None:
    assert beta_ppf(p, a, b) == pytest.approx(stats.beta.ppf(p, a, b), abs=1e-10)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (10, 10), (97, 100), (1, 1000)])
def test_clopper_pearson_matches_the_beta_quantiles(k: int, n: int) -> None:
    lo, hi = clopper_pearson(k, n, 0.95)

    assert lo == pytest.approx(0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1), abs=1e-10)
    assert hi == pytest.approx(1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k), abs=1e-10)


def test_clopper_pearson_known_answer() -> None:
    # The classic 5/10 interval: (0.1871, 0.8129).
    lo, hi = clopper_pearson(5, 10)

    assert (round(lo, 4), round(hi, 4)) == (0.1871, 0.8129)
    with pytest.raises(AuditError):
        clopper_pearson(11, 10)


@pytest.mark.parametrize(("v", "n", "p"), [(60, 100, 0.55), (0, 5, 0.3), (5, 5, 0.3), (3, 10, 0.3)])
def test_binomial_tail_and_pmf_match_scipy(v: int, n: int, p: float) -> None:
    assert binomial_sf(v, n, p) == pytest.approx(stats.binom.sf(v - 1, n, p), rel=1e-10)
    assert binomial_pmf(v, n, p) == pytest.approx(stats.binom.pmf(v, n, p), rel=1e-10)
