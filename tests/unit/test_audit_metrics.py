"""Attack metrics against reference implementations (SciPy) and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

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


@pytest.mark.parametrize(("a", "x"), [(1.0, 0.3), (2.0, 0.5), (7.5, 0.9), (0.5, 0.01)])
def test_incomplete_beta_and_its_inverse_known_answers(a: float, x: float) -> None:
    # I_x(a, 1) = x^a and I_x(1, b) = 1 - (1 - x)^b, so Beta(a, 1)'s quantile is p^(1/a).
    assert betainc(a, 1.0, x) == pytest.approx(x**a, rel=1e-12)
    assert betainc(1.0, a, x) == pytest.approx(1.0 - (1.0 - x) ** a, rel=1e-12)
    assert beta_ppf(x, a, 1.0) == pytest.approx(x ** (1.0 / a), rel=1e-10)
    assert betainc(3.0, 4.0, beta_ppf(x, 3.0, 4.0)) == pytest.approx(x, rel=1e-10)


def test_beta_functions_refuse_arguments_out_of_range() -> None:
    for call in (lambda: betainc(0.0, 1.0, 0.5), lambda: betainc(1.0, 1.0, 1.5)):
        with pytest.raises(AuditError):
            call()
    with pytest.raises(AuditError):
        beta_ppf(1.5, 2.0, 2.0)


@pytest.mark.parametrize("n", [1, 10, 1000])
def test_clopper_pearson_with_no_successes_is_the_closed_form(n: int) -> None:
    # For k = 0 the upper limit solves (1 - p)^n = alpha / 2.
    lo, hi = clopper_pearson(0, n, 0.95)

    assert lo == 0.0
    assert hi == pytest.approx(1.0 - 0.025 ** (1.0 / n), rel=1e-10)
    lo, hi = clopper_pearson(n, n, 0.95)
    assert (lo, hi) == (pytest.approx(0.025 ** (1.0 / n), rel=1e-10), 1.0)


def test_clopper_pearson_known_answer() -> None:
    # The classic 5/10 interval: (0.1871, 0.8129).
    lo, hi = clopper_pearson(5, 10)

    assert (round(lo, 4), round(hi, 4)) == (0.1871, 0.8129)
    with pytest.raises(AuditError):
        clopper_pearson(11, 10)


def _binom_pmf_by_hand(k: int, n: int, p: float) -> float:
    return math.comb(n, k) * p**k * (1.0 - p) ** (n - k)


@pytest.mark.parametrize(("v", "n", "p"), [(60, 100, 0.55), (0, 5, 0.3), (5, 5, 0.3), (3, 10, 0.3)])
def test_binomial_tail_and_pmf_known_answers(v: int, n: int, p: float) -> None:
    tail = sum(_binom_pmf_by_hand(k, n, p) for k in range(v, n + 1))

    assert binomial_sf(v, n, p) == pytest.approx(tail, rel=1e-10)
    assert binomial_pmf(v, n, p) == pytest.approx(_binom_pmf_by_hand(v, n, p), rel=1e-10)
    assert binomial_sf(n + 1, n, p) == 0.0 and binomial_sf(0, n, p) == pytest.approx(1.0)


def test_bootstrap_intervals_cover_the_estimate_and_shrink_with_more_examples() -> None:
    from secure_pcft.audit.metrics import bootstrap_intervals

    rng = np.random.default_rng(3)
    small = (rng.normal(0.8, 1.0, 40), rng.normal(0.0, 1.0, 40))
    large = (rng.normal(0.8, 1.0, 400), rng.normal(0.0, 1.0, 400))

    ci_small, ci_large = bootstrap_intervals(*small), bootstrap_intervals(*large)

    lo, hi = ci_small["roc_auc"]
    assert lo < roc_auc(*small) < hi
    assert ci_large["roc_auc"][1] - ci_large["roc_auc"][0] < hi - lo
    assert bootstrap_intervals(*small) == ci_small  # fixed seed: reproducible
    assert bootstrap_intervals([5.0, 6.0], [0.0, 1.0])["roc_auc"] == (1.0, 1.0)
    with pytest.raises(AuditError):
        bootstrap_intervals([1.0], [0.0], reps=10)


def test_membership_metrics_carry_their_intervals() -> None:
    m = membership_metrics(np.linspace(0, 1, 50) + 0.3, np.linspace(0, 1, 50))

    for key in ("roc_auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"):
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"]


def test_interval_across_trials_is_the_student_t_interval() -> None:
    from secure_pcft.audit.metrics import across_trials

    lo, hi = across_trials([0.5, 0.7])  # mean 0.6, s/sqrt(n) = 0.1, t(0.975, 1) = 12.7062

    assert (lo, hi) == (pytest.approx(0.6 - 1.270620), pytest.approx(0.6 + 1.270620))
    assert all(math.isnan(v) for v in across_trials([0.5]))
    assert all(math.isnan(v) for v in across_trials([0.5, math.nan]))


def test_interval_across_trials_stays_in_the_figures_range() -> None:
    from secure_pcft.audit.metrics import across_trials

    lo, hi = across_trials([0.0, 0.0, 0.03], bounds=(0.0, 1.0))  # unclipped low end is negative
    assert lo == 0.0 and 0.03 < hi < 1.0
    assert across_trials([0.5, 0.7], bounds=(0.0, 1.0)) == (0.0, 1.0)  # ±1.27 around 0.6
    assert across_trials([0.0, 0.0, 0.03])[0] < 0  # without bounds: the plain t interval
