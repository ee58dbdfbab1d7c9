"""A reviewer's policy: what a run must satisfy for the compliance report to say PASS.

PASS means "inside this policy", never "something was recorded". The policy is a TOML file
(``secure-pcft report RUN --policy policy.toml``); without one the report applies
:data:`DEFAULT_POLICY`, whose values are written out in ``examples/review_policy.toml``. The page
and ``report.json`` name the policy and the SHA-256 of its canonical JSON, so a verdict can always
be traced to the rules it was judged by.

Every field is a bound in the unit a reviewer signs for:

========================  ========================================================================
``max_epsilon``           ε per peer per run (the ledger's privacy unit), verified from the ledger
``max_delta``             δ per peer
``max_delta_times_n``     δ · n_train per peer: δ must stay well below 1/n (0.1 = ten times below)
``require_dp``            every release differentially private
``require_secure_rng``    DP noise from the OS CSPRNG (a seeded PRNG is reproducible by the seeder)
``security_mode``         ``full`` (signed, encrypted, CKKS discovery, consent) or ``off``
``consent``               consent rules accepted
``max_*`` (security)      the receiving checks at least this strict (skew, window, norm ratio ...)
``required_audits``       audit campaigns that must be given to the report and pass
========================  ========================================================================

Threats: TM-06 (an operator who weakens a setting and re-hashes the config), TM-07 (budget overrun).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from secure_pcft.config import (
    CONSENT_RULES,
    EPSILON_CEILING,
    MAX_CLOCK_SKEW_S,
    MAX_HE_QUERIES,
    MAX_MESSAGE_BYTES,
    MAX_NORM_RATIO,
    MAX_ROUND_WINDOW,
    RunConfig,
    SecurityConfig,
    build_section,
    load_toml,
)
from secure_pcft.errors import ConfigError
from secure_pcft.report.checks import Check, Status
from secure_pcft.validation import require, require_range

_SEC = SecurityConfig()


@dataclass(frozen=True)
class ReviewPolicy:
    """The rules a run is judged by (see the module docstring for each field's unit)."""

    name: str = "secure-pcft default review policy"
    max_epsilon: float = 10.0
    max_delta: float = 1e-3
    max_delta_times_n: float = 0.1
    require_dp: bool = True
    require_secure_rng: bool = True
    security_mode: Literal["full", "off"] = "full"
    consent: tuple[str, ...] = ("mutual", "reciprocal")
    max_clock_skew_s: float = _SEC.max_clock_skew_s
    max_round_window: int = _SEC.round_window
    max_he_queries_per_round: int = _SEC.he_queries_per_round
    max_adapter_norm_ratio: float = _SEC.max_adapter_norm_ratio
    max_message_bytes: int = _SEC.max_message_bytes
    required_audits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        s = "policy"
        require(bool(self.name.strip()), s, "name", "a non-empty name")
        require_range(self.max_epsilon, s, "max_epsilon", 0, EPSILON_CEILING, "ε", low_open=True)
        require_range(self.max_delta, s, "max_delta", 0, 0.1, "δ", low_open=True)
        require_range(self.max_delta_times_n, s, "max_delta_times_n", 0, 1, "δ·n", low_open=True)
        require(self.security_mode in ("full", "off"), s, "security_mode", "'full' or 'off'")
        require(
            bool(self.consent) and set(self.consent) <= set(CONSENT_RULES),
            s,
            "consent",
            f"a non-empty list of {CONSENT_RULES}",
        )
        require_range(self.max_clock_skew_s, s, "max_clock_skew_s", 0, MAX_CLOCK_SKEW_S, "s")
        require_range(self.max_round_window, s, "max_round_window", 0, MAX_ROUND_WINDOW, "rounds")
        require_range(
            self.max_he_queries_per_round, s, "max_he_queries_per_round", 1, MAX_HE_QUERIES, "n"
        )
        require_range(
            self.max_adapter_norm_ratio, s, "max_adapter_norm_ratio", 1, MAX_NORM_RATIO, "ratio"
        )
        require_range(self.max_message_bytes, s, "max_message_bytes", 1, MAX_MESSAGE_BYTES, "B")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the policy (named on the report next to its verdict)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def describe(self) -> dict[str, Any]:
        """The policy as the report records it: its rules, name and digest."""
        return {"name": self.name, "sha256": self.digest(), "rules": self.to_dict()}


DEFAULT_POLICY = ReviewPolicy()


def load_policy(path: str | Path) -> ReviewPolicy:
    """Read a policy TOML file: keys of :class:`ReviewPolicy` at the top level or in ``[policy]``.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or a value out of range.
    """
    raw = load_toml(path, "policy file")
    table = raw.get("policy", raw)
    if table is not raw and len(raw) != 1:
        raise ConfigError(f"policy file {path}: one [policy] table (or keys at the top level)")
    return build_section(ReviewPolicy, "policy", table)


def policy_checks(policy: ReviewPolicy, cfg: RunConfig) -> list[Check]:
    """Run-level checks of ``cfg`` against ``policy``: DP on, the noise source, every receiving
    check at least as strict as the policy's, no ``unsafe_*`` switch. (The security mode itself is
    judged with the channels, ``security.mode`` in :mod:`~secure_pcft.report.build`.)"""
    out: list[Check] = []
    p, sec = cfg.privacy, cfg.security
    if policy.require_dp and not p.enabled:
        out.append(Check("policy.dp", "every release is differentially private", "fail",
                         f"[privacy] enabled = false; policy '{policy.name}' requires DP"))  # fmt: skip
    if p.enabled and p.unsafe_zero_noise:
        out.append(Check("policy.unsafe", "no protection is switched off", "fail",
                         "[privacy] unsafe_zero_noise = true: DP-SGD may run without noise"))  # fmt: skip
    if p.enabled and not p.secure_rng:
        status: Status = "fail" if policy.require_secure_rng else "warn"
        out.append(Check("dp.noise", "DP noise comes from a CSPRNG", status,
                         "[privacy] secure_rng = false: noise from a seeded PRNG is reproducible "
                         "by anyone who knows the seed (TM-06)"))  # fmt: skip
    elif p.enabled:
        out.append(Check("dp.noise", "DP noise comes from a CSPRNG", "pass",
                         "[privacy] secure_rng = true: noise from the OS CSPRNG"))  # fmt: skip
    if sec.mode == "full":
        weaker = _weaker_security(policy, sec)
        out.append(Check("policy.security", "receiving checks are at least as strict as the policy",
                         "fail" if weaker else "pass",
                         "; ".join(weaker) if weaker else "skew, window, HE queries, norm ratio, "
                         "message size and consent within the policy"))  # fmt: skip
    return out


def _weaker_security(policy: ReviewPolicy, sec: SecurityConfig) -> list[str]:
    limits = [
        ("max_clock_skew_s", sec.max_clock_skew_s, policy.max_clock_skew_s),
        ("round_window", sec.round_window, policy.max_round_window),
        ("he_queries_per_round", sec.he_queries_per_round, policy.max_he_queries_per_round),
        ("max_adapter_norm_ratio", sec.max_adapter_norm_ratio, policy.max_adapter_norm_ratio),
        ("max_message_bytes", sec.max_message_bytes, policy.max_message_bytes),
    ]
    out = [f"[security] {k} = {v:g} > policy {lim:g}" for k, v, lim in limits if v > lim]
    if sec.consent not in policy.consent:
        out.append(f"[security] consent = {sec.consent}, policy allows {list(policy.consent)}")
    return out


def peer_policy_checks(
    policy: ReviewPolicy, peer_id: str, epsilon: float | None, delta: float | None, n: int | None
) -> list[Check]:
    """A peer's verified ε and δ against the policy (a missing or infinite ε fails)."""
    out: list[Check] = []
    if epsilon is None:
        return out  # the ledger check has failed already; nothing verified to compare
    ok = epsilon <= policy.max_epsilon
    out.append(Check(f"policy.epsilon.{peer_id}", f"{peer_id}: ε within the policy",
                     "pass" if ok else "fail",
                     f"{peer_id}: verified ε = {epsilon:.4g}, policy at most {policy.max_epsilon:g}",
                     peer_id))  # fmt: skip
    if delta is not None:
        parts = [f"{peer_id}: δ = {delta:.3g} (policy ≤ {policy.max_delta:g})"]
        ok = delta <= policy.max_delta
        if n:
            parts.append(f"δ·n = {delta * n:.3g} with n = {n} training units "
                         f"(policy ≤ {policy.max_delta_times_n:g}, i.e. δ ≤ "
                         f"{policy.max_delta_times_n:g}/n)")  # fmt: skip
            ok = ok and delta * n <= policy.max_delta_times_n
        else:
            parts.append("n not recorded: δ·n not checked")
        out.append(Check(f"policy.delta.{peer_id}", f"{peer_id}: δ within the policy",
                         "pass" if ok else "fail", "; ".join(parts), peer_id))  # fmt: skip
    return out
