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
"""

from __future__ import annotations

import torch

from secure_pcft.collab.strategy import (
    Discovery,
    ScoreSoftmaxStrategy,
    TrustContext,
    register_strategy,
)
from secure_pcft.errors import StrategyError

SIGNATURE_TOP_K = 100
PAPER_GAIN = 10.0
CALIBRATED_GAIN = 4.0


def prediction_signature(
    last_logits: torch.Tensor, top_k: int = SIGNATURE_TOP_K
) -> dict[str, torch.Tensor]:
    """Sparse signature from last-position logits (R, V): top-k ``indices`` (int64) and ``values``."""
    k = min(top_k, last_logits.shape[-1])
    values, indices = torch.topk(last_logits.to(torch.float32), k, dim=-1)  # (R, k)
    return {"indices": indices.to(torch.int64), "values": values}


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


@register_strategy
class PredictionTrust(ScoreSoftmaxStrategy):
    name = "predictions"
    discovery = Discovery.SIGNATURES

    def scores(self, ctx: TrustContext) -> torch.Tensor:
        mine = ctx.signatures.get(ctx.self_index)
        if mine is None:
            raise StrategyError("predictions strategy needs this peer's own signature")
        known = sorted(ctx.signatures)
        d = torch.tensor(
            [signature_distance(mine, ctx.signatures[j]) for j in known], dtype=torch.float64
        )
        s = torch.full((ctx.num_peers,), float("-inf"), dtype=torch.float64)
        s[known] = distance_scores(d, known.index(ctx.self_index), self.cfg.calibrated)
        return s


def distance_scores(d: torch.Tensor, self_pos: int, calibrated: bool) -> torch.Tensor:
    """Scores (higher = more trusted) from one row of signature distances, self at ``self_pos``.

    The paper's rule −PAPER_GAIN · d / Σd, or the calibrated z-score rule. Shared by the plain and
    the encrypted (``he_scoring``) predictions strategies so both apply the same formula.
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
