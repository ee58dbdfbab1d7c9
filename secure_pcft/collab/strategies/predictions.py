"""``predictions``: trust from how alike peers predict on the public reference set.

Each peer's signature is its last-position logits on shared public reference sequences, truncated
to the top-``SIGNATURE_TOP_K`` entries (the rest count as 0). d_ij is the mean L1 distance between
the two sparse logit vectors; the row is normalised (d̃_ij = d_ij / Σ_k d_ik) and
W_ij = softmax_j(−10 · d̃_ij / T) (the paper's rule).

Known limit (docs/design.md): after row normalisation the weight on the true group is capped (≈0.73 for
9 peers in 3 groups). ``calibrated = true`` instead standardises the distances to the *other*
peers (z_ij = (d_ij − mean_{k≠i} d_ik) / std_{k≠i} d_ik) and uses softmax(−CALIBRATED_GAIN · z / T).
Self is scored like its closest other peer: its own distance is 0 by construction, and including
it in the standardisation (or scoring it from its 0) would always hand it nearly all the weight,
collapsing the rule to ``local``.

``signature = "logprob-shift"`` compares what each adapter *changed*: the shift of the next-token
log-probabilities against the shared (public) base model on the reference set,
Δ = log_softmax(z_adapter) − log_softmax(z_base), shape (R, V), JL-sketched to one unit vector u
(:mod:`secure_pcft.crypto.projection`, the consortium's public seed). d_ij = ‖u_i − u_j‖ =
√(2 − 2⟨u_i, u_j⟩), then the same paper / calibrated rule. Because u is exactly the vector secure
mode encrypts, the plain and the encrypted rule are one rule. Why: the top-100 logits are dominated
by what every adapter inherits from the base (and by their scale), so under DP noise their angle does
not separate domains (docs/design.md, "Prediction signatures"); the shift removes that common part.

Secure mode (encrypted discovery): with ``logprob-shift`` the encrypted vector is u itself, so the
row is the plain rule (± the CKKS flooding noise on the cosines). With ``top-logits`` it is the JL
sketch of the dense top-100 logits, L2-normalised; CKKS gives inner products, not L1, so the
distance becomes the chordal √(2 − 2·cos) of those unit vectors — not the plain rule, and measured
worse under DP (README, "Privacy–utility").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import torch

from secure_pcft.collab.strategy import (
    Discovery,
    ScoreSoftmaxStrategy,
    StrategyOptions,
    TrustContext,
    UnitVector,
    answered,
    option,
    register_strategy,
    select_and_softmax,
)
from secure_pcft.crypto.projection import ProjectionSpec, project
from secure_pcft.errors import CryptoError, StrategyError
from secure_pcft.validation import require, require_range

if TYPE_CHECKING:
    from secure_pcft.collab.peer import Peer

SignatureKind = Literal["top-logits", "logprob-shift"]
SIGNATURES: tuple[str, ...] = get_args(SignatureKind)
SIGNATURE_TOP_K = 100
DEFAULT_REFERENCE_BATCHES = 4  # public reference batches a round compares signatures on
PAPER_GAIN = 10.0
CALIBRATED_GAIN = 4.0
SHIFT = "shift"  # the one tensor of a logprob-shift signature: the unit sketch (dim,)
_UNIT_TOLERANCE = 1e-6


def prediction_signature(
    last_logits: torch.Tensor, top_k: int = SIGNATURE_TOP_K
) -> dict[str, torch.Tensor]:
    """Sparse signature from last-position logits (R, V): top-k ``indices`` (int64) and ``values``."""
    k = min(top_k, last_logits.shape[-1])
    values, indices = torch.topk(last_logits.to(torch.float32), k, dim=-1)  # (R, k)
    return {"indices": indices.to(torch.int64), "values": values}


def logprob_shift(last_logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    """log_softmax(adapter logits) − log_softmax(base logits), both (R, V) → (R, V) float64."""
    if last_logits.shape != base_logits.shape or last_logits.ndim != 2:
        raise StrategyError("adapter and base logits must have the same shape (R, V)")
    a = torch.log_softmax(last_logits.to(torch.float64), dim=-1)
    return a - torch.log_softmax(base_logits.to(torch.float64), dim=-1)


def shift_vector(
    last_logits: torch.Tensor, base_logits: torch.Tensor, spec: ProjectionSpec
) -> torch.Tensor:
    """The unit vector (spec.dim,) float64 that ``logprob-shift`` compares (plain and secure).

    Raises:
        StrategyError: the adapter does not change the base's predictions at all (an untrained
            adapter: nothing to compare yet), or the logits are not finite.
    """
    try:
        return torch.from_numpy(project({SHIFT: logprob_shift(last_logits, base_logits)}, spec))
    except CryptoError as exc:
        raise StrategyError(f"logprob-shift signature: {exc} (train before scoring)") from exc


def shift_signature(
    last_logits: torch.Tensor, base_logits: torch.Tensor, spec: ProjectionSpec
) -> dict[str, torch.Tensor]:
    """The ``logprob-shift`` signature message: ``{"shift": unit vector (spec.dim,)}``."""
    return {SHIFT: shift_vector(last_logits, base_logits, spec)}


def shift_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Chordal distance √(2 − 2⟨u_a, u_b⟩) of two ``logprob-shift`` signatures.

    Raises:
        StrategyError: a signature that is not one finite unit vector of the same length.
    """
    ua, ub = _unit(a), _unit(b)
    if ua.shape != ub.shape:
        raise StrategyError("logprob-shift signatures of different lengths")
    return math.sqrt(max(0.0, 2.0 - 2.0 * float(ua @ ub)))


def _unit(sig: dict[str, torch.Tensor]) -> torch.Tensor:
    u = sig.get(SHIFT)
    if set(sig) != {SHIFT} or u is None or u.ndim != 1 or not u.is_floating_point():
        raise StrategyError(f"a logprob-shift signature is one 1-D float tensor {SHIFT!r}")
    u = u.to(torch.float64)
    if not bool(torch.isfinite(u).all()) or abs(float(u.norm()) - 1.0) > _UNIT_TOLERANCE:
        raise StrategyError("a logprob-shift signature must be a finite unit vector")
    return u


def prediction_signature_of(
    peer: Peer, kind: SignatureKind, reference: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``peer``'s prediction signature of the kind ``kind`` on the reference blocks."""
    logits = peer.reference_logits(reference)
    if kind == "logprob-shift":
        base = peer.reference_logits(reference, base=True)
        return shift_signature(logits, base, peer.settings.sketch)
    return prediction_signature(logits)


def signature_vector(last_logits: torch.Tensor, spec: ProjectionSpec) -> UnitVector:
    """Sketch of the dense top-100 logits (R, V) → unit vector (spec.dim,)."""
    sig = prediction_signature(last_logits)
    dense = torch.zeros(last_logits.shape, dtype=torch.float64)
    dense.scatter_(1, sig["indices"], sig["values"].to(torch.float64))  # (R, V)
    return project({"signature": dense}, spec)


def is_shift_signature(sig: dict[str, torch.Tensor]) -> bool:
    return set(sig) == {SHIFT}


def check_signature(sig: dict[str, torch.Tensor]) -> None:
    """Refuse a received signature that is neither a well-formed top-logits nor a logprob-shift one.

    Raises:
        StrategyError: wrong tensors, shapes, dtypes, negative indices or non-finite values.
    """
    if is_shift_signature(sig):
        _unit(sig)
        return
    idx, val = sig.get("indices"), sig.get("values")
    if set(sig) != {"indices", "values"} or idx is None or val is None:
        raise StrategyError("a top-logits signature is the tensors 'indices' and 'values'")
    if idx.shape != val.shape or idx.ndim != 2 or idx.dtype != torch.int64:
        raise StrategyError("top-logits signature: indices (R, k) int64 and values (R, k)")
    if not val.is_floating_point() or not bool(torch.isfinite(val).all()):
        raise StrategyError("top-logits signature: values must be finite floats")
    if idx.numel() and int(idx.min()) < 0:
        raise StrategyError("top-logits signature: negative index")


def _dense(sig: dict[str, torch.Tensor], vocab: int) -> torch.Tensor:
    idx, val = sig["indices"], sig["values"]
    if idx.shape != val.shape or idx.ndim != 2:
        raise StrategyError("malformed prediction signature")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= vocab):
        raise StrategyError("prediction signature index out of range")
    out = torch.zeros(idx.shape[0], vocab, dtype=torch.float64)
    out.scatter_(1, idx, val.to(torch.float64))
    return out  # (R, V)


def signature_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Mean (over reference sequences) L1 distance between two sparse logit signatures."""
    if a["indices"].shape[0] != b["indices"].shape[0]:
        raise StrategyError("signatures cover different numbers of reference sequences")
    vocab = int(max(a["indices"].max(), b["indices"].max())) + 1
    return float((_dense(a, vocab) - _dense(b, vocab)).abs().sum(dim=1).mean())


@dataclass(frozen=True)
class PredictionOptions(StrategyOptions):
    """``[strategy]`` keys of ``predictions``.

    Attributes:
        signature: what a peer's predictions are compared by. ``top-logits`` (the paper's): its
            top-100 last-position logits on the reference set, compared by L1 distance in plain
            mode (CKKS computes inner products only, so secure mode can only take the chordal
            distance of the L2-normalised vectors, a different rule). ``logprob-shift``: the
            change of its next-token log-probabilities against the shared base model on the
            reference set, JL-sketched to a unit vector; compared by chordal distance in *both*
            modes (one rule: the plain-mode signature is that unit vector, secure mode computes
            its inner products under CKKS). See docs/design.md.
        calibrated: set the temperature from the spread of the distances instead of the paper's
            fixed factor 10 (docs/design.md, known limit of the paper's rule).
        reference_batches: public reference batches per round.
    """

    signature: SignatureKind = option("top-logits", values={"logprob-shift": "shift"})
    calibrated: bool = option(False, label="calibrated")
    reference_batches: int = option(DEFAULT_REFERENCE_BATCHES, label="ref")

    def __post_init__(self) -> None:
        require(self.signature in SIGNATURES, "strategy", "signature", f"one of {SIGNATURES}")
        require_range(self.reference_batches, "strategy", "reference_batches", 1, 10_000, "batches")


@register_strategy
class PredictionTrust(ScoreSoftmaxStrategy):
    name = "predictions"
    discovery = Discovery.SIGNATURES
    encrypted = True
    Options = PredictionOptions
    options: PredictionOptions

    def reference_batches(self) -> int:
        return self.options.reference_batches

    def signature(self, peer: Peer, reference: torch.Tensor) -> dict[str, torch.Tensor]:
        return prediction_signature_of(peer, self.options.signature, reference)

    def scores(self, ctx: TrustContext) -> torch.Tensor:
        mine = ctx.signatures.get(ctx.self_index)
        if mine is None:
            raise StrategyError("predictions strategy needs this peer's own signature")
        shift = self.options.signature == "logprob-shift"
        if is_shift_signature(mine) != shift:
            raise StrategyError(f"this peer's own signature is not a {self.options.signature} one")
        # a peer that sent the other kind of signature (misconfigured) gets no score
        known = sorted(j for j, sig in ctx.signatures.items() if is_shift_signature(sig) == shift)
        distance = shift_distance if shift else signature_distance
        d = torch.tensor([distance(mine, ctx.signatures[j]) for j in known], dtype=torch.float64)
        s = torch.full((ctx.num_peers,), float("-inf"), dtype=torch.float64)
        s[known] = distance_scores(d, known.index(ctx.self_index), self.options.calibrated)
        return s

    def encrypted_vector(
        self, peer: Peer, reference: torch.Tensor, spec: ProjectionSpec
    ) -> UnitVector:
        if self.options.signature == "logprob-shift":
            # the plain-mode signature itself (built with the peer's discovery sketch)
            u = self.signature(peer, reference)[SHIFT]
            if u.shape != (spec.dim,):
                raise StrategyError("logprob-shift signature length differs from the sketch")
            return u.numpy()
        return signature_vector(peer.reference_logits(reference), spec)

    def encrypted_row(self, cosines: torch.Tensor, self_index: int) -> torch.Tensor:
        known = answered(cosines, self_index)
        cos = cosines.to(torch.float64).clone()
        cos[self_index] = 1.0
        d = torch.sqrt(torch.clamp(2.0 - 2.0 * cos[known], min=0.0))
        s = torch.full_like(cos, float("-inf"))
        s[known] = distance_scores(d, int(known[:self_index].sum()), self.options.calibrated)
        return select_and_softmax(
            s / self.cfg.temperature, self_index, self.cfg.top_k, self.cfg.threshold
        )


def distance_scores(d: torch.Tensor, self_pos: int, calibrated: bool) -> torch.Tensor:
    """Scores (higher = more trusted) from one row of signature distances, self at ``self_pos``.

    The paper's rule −PAPER_GAIN · d / Σd, or the calibrated z-score rule. Shared by the plain and
    the encrypted rule (:meth:`PredictionTrust.encrypted_row`) so both apply the same formula.
    """
    if calibrated:
        return _calibrated_scores(d, self_pos)
    total = d.sum()
    return -PAPER_GAIN * (d / total if float(total) > 0 else torch.zeros_like(d))


def _calibrated_scores(d: torch.Tensor, self_pos: int) -> torch.Tensor:
    """−gain · z-scores of the distances to the other peers; self gets its closest peer's score."""
    others = torch.cat([d[:self_pos], d[self_pos + 1 :]])
    if others.numel() == 0:
        return torch.zeros_like(d)
    std = others.std(unbiased=False)
    z = (d - others.mean()) / std if float(std) > 0 else torch.zeros_like(d)
    scores = -CALIBRATED_GAIN * z
    scores[self_pos] = scores[torch.arange(d.numel()) != self_pos].max()
    return scores
