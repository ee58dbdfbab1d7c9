"""ε(δ) of a peer from its recorded events, through Opacus's accountants, and σ calibration.

Every mechanism the toolkit accounts is a (Poisson-subsampled) Gaussian mechanism described by
(σ, q, steps): DP-SGD steps, and the validation mechanism as q = 1. A peer's history is the list of
its events grouped by (σ, q) with their steps summed — exact for all three accountants, because
each composes identical mechanisms by self-composition — and ε is always recomputed from it.

Accountants (a registry; add one with :func:`register_accountant`):

- ``rdp``: Opacus ``RDPAccountant`` (Mironov 2017; Balle et al. 2020 conversion). Default.
- ``prv``: Opacus ``PRVAccountant`` (Gopi et al. 2021), its upper bound on ε.
- ``gdp``: μ-GDP. Opacus's ``GaussianAccountant`` keeps only the *last* (σ, q) of a history, which
  would undercount a mixed history, so the μ of each group is composed here
  (μ = sqrt(Σ μ_i²)) with Opacus's own formulas: the CLT approximation
  μ_i = q·sqrt(steps·(e^{1/σ²} − 1)) for q < 1 (Bu et al. 2020; it can *underestimate* ε for
  few steps or large q) and the exact μ_i = sqrt(steps)/σ for q = 1.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Sequence

from secure_pcft.errors import BudgetInfeasibleError, ConfigError, PrivacyError
from secure_pcft.privacy.events import DpEvent
from secure_pcft.registry import claim

log = logging.getLogger(__name__)

History = list[tuple[float, float, int]]
"""[(noise_multiplier σ, sample_rate q, steps)], Opacus's accountant history format."""

AccountantFn = Callable[[History, float], float]
"""ε for a non-empty history (all σ > 0) at a given δ."""

MAX_SANE_SIGMA = 1e3
"""A calibrated σ above this means the budget is unreachable in practice (noise swamps the signal)."""

_ACCOUNTANTS: dict[str, AccountantFn] = {}


def register_accountant(name: str, fn: AccountantFn, *, force: bool = False) -> None:
    """Register an accountant under ``name``; refuses to overwrite one unless ``force``.

    Raises:
        RegistryError: a name a config cannot spell, or ``name`` is taken and ``force`` is False.
    """
    claim(_ACCOUNTANTS, "accountant", name, fn, force)


def registered_accountants() -> tuple[str, ...]:
    """Names usable as ``[privacy] accountant`` (the built-ins and any registered since)."""
    return tuple(sorted(_ACCOUNTANTS))


def check_accountant(name: str) -> None:
    """Refuse an accountant name that is not registered (checked where a run first uses it).

    Raises:
        ConfigError: ``name`` is not a registered accountant.
    """
    if name not in _ACCOUNTANTS:
        raise ConfigError(
            f"[privacy] accountant: {name!r} is not registered (one of "
            f"{list(registered_accountants())}; add one with register_accountant)"
        )


def history_from_events(events: Iterable[DpEvent]) -> History:
    """Group events by (σ, q), in order of first appearance, summing steps; drop 0-step events."""
    steps: dict[tuple[float, float], int] = {}
    for e in events:
        if e.steps > 0:
            key = (e.noise_multiplier, e.sample_rate)
            steps[key] = steps.get(key, 0) + e.steps
    return [(sigma, q, n) for (sigma, q), n in steps.items()]


def epsilon_spent(events: Iterable[DpEvent], delta: float, accountant: str = "rdp") -> float:
    """ε at ``delta`` of the composition of ``events`` (0.0 if none; ∞ if any σ is 0).

    Raises:
        PrivacyError: unknown accountant, δ out of (0, 1), or the accountant failed (fail closed).
    """
    if accountant not in _ACCOUNTANTS:
        raise PrivacyError(f"accountant: one of {sorted(_ACCOUNTANTS)}, got {accountant!r}")
    if not 0 < delta < 1:
        raise PrivacyError("delta: δ must be in (0, 1)")
    history = history_from_events(events)
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf
    try:
        eps = _cached_epsilon(_ACCOUNTANTS[accountant], tuple(history), delta)
    except (ValueError, ArithmeticError, RuntimeError) as exc:
        raise PrivacyError(f"{accountant} accountant failed on this history: {exc}") from exc
    if math.isnan(eps):
        raise PrivacyError(f"{accountant} accountant returned ε={eps}")
    # Opacus's RDP → (ε, δ) conversion can return a slightly negative ε for a very private
    # history (large σ, few steps). An (ε < 0, δ) guarantee implies (0, δ), so 0 is sound.
    return max(eps, 0.0)


@functools.lru_cache(maxsize=4096)
def _cached_epsilon(
    fn: AccountantFn, history: tuple[tuple[float, float, int], ...], delta: float
) -> float:
    # ε is a pure function of (accountant, history, δ), and Opacus's RDP/PRV take 0.1-0.5 s per
    # call. Every release re-checks the whole history, and repeated releases of one model (an
    # adapter to each of N-1 peers, steps = 0 after the first) repeat the same history.
    return float(fn(list(history), delta))


def _rdp(history: History, delta: float) -> float:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


def _prv(history: History, delta: float) -> float:
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


def _gdp(history: History, delta: float) -> float:
    from opacus.accountants.analysis import gdp

    mu_sq = 0.0
    for sigma, q, steps in history:
        if q >= 1.0:
            mu_sq += steps / sigma**2
        else:
            mu_sq += gdp.compute_mu_poisson(steps=steps, noise_multiplier=sigma, sample_rate=q) ** 2
    mu = math.sqrt(mu_sq)
    # Opacus's root search brackets ε in [0, 500]; answer the two ends without it.
    if gdp.delta_eps_mu(eps=0.0, mu=mu) <= delta:
        return 0.0
    if gdp.delta_eps_mu(eps=500.0, mu=mu) > delta:
        return math.inf
    return float(gdp.eps_from_mu(mu=mu, delta=delta))


register_accountant("rdp", _rdp)
register_accountant("prv", _prv)
register_accountant("gdp", _gdp)


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    reserved: Sequence[DpEvent] = (),
    tolerance: float = 0.01,
) -> float:
    """Smallest σ (to ``tolerance`` in ε) such that ``steps`` DP-SGD steps at rate ``sample_rate``,
    plus the ``reserved`` events (e.g. planned validation releases), stay within ``target_epsilon``.

    For ``rdp``/``prv`` without reserved events this is Opacus's ``get_noise_multiplier``;
    otherwise the same doubling-then-bisection search over the composed history.

    Raises:
        BudgetInfeasibleError: the σ needed exceeds :data:`MAX_SANE_SIGMA` (this includes
            targets below what the accountant can certify at this δ, and reserved events that
            alone exceed the target).
        PrivacyError: bad arguments or an accountant failure.
    """
    if target_epsilon <= 0 or steps < 1 or not 0 < sample_rate <= 1:
        raise PrivacyError("calibration needs target ε > 0, steps >= 1 and q in (0, 1]")
    at_cap = DpEvent("dp-sgd", MAX_SANE_SIGMA, sample_rate, steps, 0, "planned")
    if epsilon_spent([at_cap, *reserved], delta, accountant) > target_epsilon:
        # Checked first: Opacus would search up to σ = 1e6, slowly, to say the same.
        raise BudgetInfeasibleError(
            f"target ε={target_epsilon} per peer per run is unreachable: even σ={MAX_SANE_SIGMA:g} "
            f"gives more for {steps} steps at q={sample_rate:.4g}, δ={delta:.3g} ({accountant}); "
            "raise the budget or train fewer steps"
        )
    if reserved or accountant not in ("rdp", "prv"):
        # Opacus's search only knows a single mechanism, and its gdp root search fails for
        # small σ; the same search over our composed history covers both.
        sigma = _bisect(target_epsilon, delta, sample_rate, steps, accountant, reserved, tolerance)
    else:
        from opacus.accountants.utils import get_noise_multiplier

        try:
            sigma = float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                    epsilon_tolerance=tolerance,
                )
            )
        except ValueError as exc:
            raise BudgetInfeasibleError(
                f"target ε={target_epsilon} per peer per run is unreachable in {steps} steps "
                f"at q={sample_rate:.4g}: {exc}"
            ) from exc
    if sigma > MAX_SANE_SIGMA:
        raise BudgetInfeasibleError(
            f"target ε={target_epsilon} per peer per run needs σ={sigma:.3g} > {MAX_SANE_SIGMA:g} "
            f"for {steps} steps at q={sample_rate:.4g}: raise the budget or train fewer steps"
        )
    return sigma


def _bisect(
    target: float,
    delta: float,
    q: float,
    steps: int,
    accountant: str,
    reserved: Sequence[DpEvent],
    tolerance: float,
) -> float:
    def eps(sigma: float) -> float:
        planned = DpEvent("dp-sgd", sigma, q, steps, 0, "planned")
        return epsilon_spent([planned, *reserved], delta, accountant)

    low, high, eps_high = 0.0, 10.0, math.inf
    while eps_high > target:
        high *= 2
        eps_high = eps(high)
    for _ in range(200):  # a cap in case a numerical accountant is not exactly monotone
        if target - eps_high <= tolerance:
            break
        mid = (low + high) / 2
        e = eps(mid)
        if e < target:
            high, eps_high = mid, e
        else:
            low = mid
    return high
