"""``span-reconstruction``: which tokens (and where) a peer trained on, from one observed LoRA update.

Threat: TM-01 / TM-05 (peers receiving the adapter every round), TM-03 / TM-04 with security
``off``, TM-06 with stolen keys — anyone who sees a peer's adapter before and after local steps.

Method (after DAGER, Petrov et al. 2024, adapted to LoRA). In the first transformer layer the
query/key/value projection sees x_t = LN(token embedding + position embedding) (GPT-2 ``ln_1``;
Llama: RMSNorm of the token embedding, no position). LoRA adds (α/r)·B·A·x_t, so the gradient of
the loss w.r.t. A is

    ∇A = (α/r) · Σ_t (Bᵀ g_t) x_tᵀ        (r × d),  g_t = ∂L/∂(output at t),

and every row of ∇A lies in span{x_t : t in the batch}. For each vocabulary token v and position
p, the attacker (who holds the public base) computes x_{v,p} and its relative residual after
projection onto the row space of the observed ΔA = A_after − A_before; a residual near 0 says
"(v, p) was in the batch". Recovered (token, position) pairs give token precision/recall and, for
one sequence, its exact reconstruction (the best token per position).

Conditions under which the test is exact (measured in tests/slow/test_audit_power.py):

* the update is *linear* in the gradient: plain SGD steps (or shared gradients). AdamW rescales
  every coordinate separately (its first step is ≈ −lr·sign(∇A)), which breaks the span.
* B ≠ 0 (at B = 0, ∇A = 0: the first step from a fresh init shows nothing).
* rank: rank(ΔA) <= r per step, so the span is complete only if the batch has at most
  ``r`` distinct inputs x_t per step (or the steps together span them); with r = 4 and a 64-token
  block only the dominant directions show.
* no dropout on the layer input (LoRA dropout masks coordinates per token; base dropout too).
* no DP noise: DP-SGD's Gaussian noise fills ΔA's row space with random directions.
* the last position of a sequence is invisible (nothing attends to it, it predicts no label);
  position-level figures and the exact-sequence check cover positions 0 … T−2.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from secure_pcft.audit.attack import Attack, AttackResult, membership_result, register_attack
from secure_pcft.audit.metrics import token_precision_recall
from secure_pcft.audit.target import AuditTarget
from secure_pcft.errors import AuditError, ConfigError
from secure_pcft.model.lora import AdapterState

_FIRST_LORA_A = {
    "gpt2": re.compile(r"\.h\.0\.attn\.c_attn\.lora_A\."),
    "llama": re.compile(r"\.layers\.0\.self_attn\.q_proj\.lora_A\."),
}


def first_layer_lora_a(state: AdapterState, model_type: str) -> str:
    """Name of the first layer's LoRA-A tensor on the attention input projection.

    Raises:
        AuditError: unsupported architecture, or the tensor is not in the adapter (not adapted,
            or frozen-a mode where A does not travel).
    """
    pattern = _FIRST_LORA_A.get(model_type)
    if pattern is None:
        raise AuditError(f"span reconstruction supports {sorted(_FIRST_LORA_A)}, not {model_type}")
    names = [n for n in state if pattern.search(n)]
    if len(names) != 1:
        raise AuditError("the shared adapter has no first-layer LoRA-A on the attention input")
    return names[0]


@torch.no_grad()
def first_layer_inputs(model: Any, position: int | None) -> torch.Tensor:
    """x_{v,p} for every vocabulary token v at ``position``: shape (V, d), float64.

    GPT-2: ln_1(wte[v] + wpe[p]); Llama: input_layernorm(embed[v]) (``position`` ignored).
    ``model`` is the frozen base (a transformers ``PreTrainedModel``).
    """
    model_type = str(model.config.model_type)
    if model_type == "gpt2":
        tr = model.transformer
        pos = 0 if position is None else position
        return torch.as_tensor(tr.h[0].ln_1(tr.wte.weight + tr.wpe.weight[pos])).double()
    if model_type == "llama":
        inner = model.model
        return torch.as_tensor(inner.layers[0].input_layernorm(inner.embed_tokens.weight)).double()
    raise AuditError(f"span reconstruction supports gpt2 and llama, not {model_type}")


def row_space(delta: torch.Tensor, rank_tol: float, noise_floor: float = 0.0) -> torch.Tensor:
    """Orthonormal basis (d, k) of the row space of ``delta`` (r, d): the directions whose singular
    values exceed both ``rank_tol`` · the largest and ``noise_floor`` (absolute)."""
    _, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    if s.numel() == 0 or float(s[0]) <= noise_floor:
        raise AuditError("the observed LoRA-A update is zero (B = 0 or no step): nothing to test")
    return vh[(s > rank_tol * s[0]) & (s > noise_floor)].T


def float_noise_floor(before: torch.Tensor, after: torch.Tensor) -> float:
    """Singular-value level of the rounding error in ``after − before`` (the states' own dtype):
    a few units in the last place of the largest entry, times sqrt(max dimension)."""
    ulp = torch.finfo(after.dtype).eps * float(torch.maximum(before.abs().max(), after.abs().max()))
    return 4.0 * ulp * max(after.shape) ** 0.5


def relative_residuals(candidates: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """||x − P x|| / ||x|| for each row x of ``candidates`` (N, d); ``basis`` (d, k)."""
    proj = candidates @ basis @ basis.T
    return (candidates - proj).norm(dim=1) / candidates.norm(dim=1).clamp_min(1e-30)


@register_attack
class SpanReconstruction(Attack):
    """Token (and position) recovery from one LoRA update. Measures TM-01, TM-03, TM-04, TM-05, TM-06.

    Args:
        threshold: a (token, position) counts as recovered if its relative residual is below.
        rank_tol: singular values below ``rank_tol`` · max are treated as zero (besides the
            float rounding floor of the observed states, always applied).
    """

    name = "span-reconstruction"
    threat_models = ("TM-01", "TM-03", "TM-04", "TM-05", "TM-06")

    def __init__(self, threshold: float = 0.05, rank_tol: float = 1e-7) -> None:
        if not 0.0 < threshold < 1.0 or not 0.0 < rank_tol < 1.0:
            raise ConfigError("[attack] threshold, rank_tol: relative values in (0, 1)")
        self.threshold, self.rank_tol = float(threshold), float(rank_tol)

    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        update = target.update
        if update is None:
            raise AuditError("span reconstruction needs an observed update ([target.update])")
        base = target.base.model
        model_type = str(base.config.model_type)
        name = first_layer_lora_a(update.after, model_type)
        before, after = update.before[name], update.after[name]
        basis = row_space(after - before, self.rank_tol, float_noise_floor(before, after))  # (d, k)
        batch = update.batch  # (B, T)
        positions = range(batch.shape[1]) if model_type == "gpt2" else [None]
        residual = torch.stack(
            [relative_residuals(first_layer_inputs(base, p), basis) for p in positions]
        )  # (P, V)
        best = residual.min(dim=0).values  # (V,) best over positions
        truth = set(batch.reshape(-1).tolist())
        predicted = {v for v in range(best.numel()) if float(best[v]) <= self.threshold}
        metrics = token_precision_recall(predicted, truth)
        metrics["update_rank"] = float(basis.shape[1])
        if model_type == "gpt2":
            metrics.update(_positions(residual, batch, self.threshold))
        used = torch.zeros(best.numel(), dtype=torch.bool)
        used[sorted(truth)] = True
        return membership_result(
            self.name, self.threat_models, (-best[used]).numpy(), (-best[~used]).numpy(),
            extra_metrics=metrics,
            details={**self.params(), "optimizer": update.optimizer, "steps": update.steps,
                     "dp": update.dp, "batch_shape": list(batch.shape)},
        )  # fmt: skip


def _positions(residual: torch.Tensor, batch: torch.Tensor, threshold: float) -> dict[str, float]:
    """(token, position) recall/precision and, for one sequence, exact-sequence recovery.

    The last position is left out: its layer-0 input reaches no loss term (nothing attends to it
    and its own prediction has no label), so no update can show it.
    """
    last = batch.shape[1] - 1
    pairs_true = {(p, int(v)) for row in batch for p, v in enumerate(row[:last].tolist())}
    hits = (residual[:last] <= threshold).nonzero().tolist()  # [[p, v], ...]
    pairs_pred = {(p, v) for p, v in hits}
    correct = len(pairs_true & pairs_pred)
    out = {
        "position_token_recall": correct / len(pairs_true),
        "position_token_precision": correct / len(pairs_pred) if pairs_pred else 0.0,
    }
    if batch.shape[0] == 1:
        guess = residual[:last].argmin(dim=1)  # (P-1,) best token per position
        out["sequence_token_accuracy"] = float((guess == batch[0, :last]).double().mean())
        out["exact_sequence"] = float(bool((guess == batch[0, :last]).all()))
    return out
