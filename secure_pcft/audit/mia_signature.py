"""``signature-mia``: membership inference from what peers see *besides* adapters.

Threat. Before choosing whom to trust, peers compare each other on the *public* reference set:
with security ``off`` the ``predictions`` strategy broadcasts each peer's prediction signature
(top-100 last-position logits on public reference blocks) to everyone (TM-01, TM-03, TM-04); with
security ``full`` an asker only learns ⟨x, y⟩ + η for a unit vector x *it chooses* and the
responder's unit signature sketch y (CKKS, noise-flooded; TM-02: a malicious asker need not send
its honest vector). The reference set is public, so a signature cannot contain a private record
verbatim; what it can carry is the *effect* of training on the record on the model's predictions.

Test (a distinguishing game per candidate record set S, offline): the attacker trains one OUT
shadow adapter with the consortium's recipe on its population data, then measures the direction
in signature space in which training on S moves predictions,

    d_S = sig(OUT fine-tuned on S) − sig(OUT fine-tuned on a population control set),

(both fine-tunes with the same steps and seed, so the difference isolates S), and asks whether the
target moved the same way: score(S) = cos(d_S, sig(target) − sig(OUT)). Members should align
better than non-members. In ``similarity`` mode the attacker gets only the encrypted-similarity
answer for x_S = unit(sketch(d_S)): score(S) = (⟨x_S, y_target⟩ + η) − ⟨x_S, y_OUT⟩, with η the
responder's flooding noise (σ = :data:`~secure_pcft.crypto._params.FLOOD_SIGMA`); one query per
candidate set, so the per-round query cap (``he_queries_per_round``) bounds how many sets it can
test per round. The HE answer is simulated in plaintext (inner product + the same Gaussian
flooding): the CKKS error (≤ 2e-6, tested in tests/unit/test_crypto_he_similarity.py) is
irrelevant at the AUC's resolution.

Measured so far: the signal is weak and, on the tiny test base, *inverted* (members align less
than non-members; AUC ≈ 0.2 on 7 + 7 sets, tests/slow/test_audit_power.py). The attack does not
calibrate the sign of its score on the attacker's own data; a shadow-calibrated orientation is an
open improvement. What the tests do establish is that the similarity answers rank candidate sets
like the clear signatures (Spearman ≥ 0.9): encrypted discovery hides the vector, not this signal.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from secure_pcft.audit.attack import (
    Attack,
    AttackResult,
    membership_result,
    register_attack,
    require_positive_int,
)
from secure_pcft.audit.scoring import last_position_logits
from secure_pcft.audit.shadows import shadow_adapters
from secure_pcft.audit.target import AuditTarget
from secure_pcft.collab.strategies.predictions import prediction_signature, signature_vector
from secure_pcft.config import TrainConfig
from secure_pcft.crypto import _params
from secure_pcft.crypto.projection import ProjectionSpec, project
from secure_pcft.errors import ConfigError
from secure_pcft.model.lora import adapter_state, attach_lora, load_adapter_state
from secure_pcft.train.local import LocalTrainer


def dense_signature(model: torch.nn.Module, reference: torch.Tensor) -> np.ndarray:
    """The protocol's prediction signature, densified and flattened: shape (R·V,)."""
    logits = last_position_logits(model, reference)  # (R, V)
    sig = prediction_signature(logits)
    dense = torch.zeros(logits.shape, dtype=torch.float64)
    dense.scatter_(1, sig["indices"], sig["values"].to(torch.float64))
    return dense.reshape(-1).numpy()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0


class SignatureGame(Attack):
    """What the signature-channel games share: the observation and the candidate sets.

    Args:
        observation: ``signature`` (the broadcast signature, security off) or ``similarity``
            (one encrypted-similarity answer per candidate set, security full).
        group_size: records (blocks) per candidate set S.
        max_groups: candidate sets scored per class (members / non-members).
        reference_blocks: public reference blocks in a signature.
    """

    threat_models = ("TM-01", "TM-02", "TM-03", "TM-04")

    def __init__(
        self, observation: str, group_size: int, max_groups: int, reference_blocks: int
    ) -> None:
        if observation not in ("signature", "similarity"):
            raise ConfigError("[attack] observation: 'signature' or 'similarity'")
        self.observation = observation
        self.group_size = require_positive_int(group_size, "group_size", "blocks per set")
        self.max_groups = require_positive_int(max_groups, "max_groups", "sets per class")
        self.reference_blocks = require_positive_int(
            reference_blocks, "reference_blocks", "public reference blocks"
        )


@register_attack
class SignatureMia(SignatureGame):
    """Membership of record sets from prediction signatures or similarity answers.

    Measures TM-01, TM-02, TM-03, TM-04 (see the module docstring for the game).

    Args: those of :class:`SignatureGame` (defaults: signature, 1 block, 32 sets, 32 blocks), and
        probe_steps: fine-tuning steps of the OUT shadow on S (and on the control set).
    """

    name = "signature-mia"

    def __init__(
        self,
        observation: str = "signature",
        group_size: int = 1,
        probe_steps: int = 10,
        max_groups: int = 32,
        reference_blocks: int = 32,
    ) -> None:
        super().__init__(observation, group_size, max_groups, reference_blocks)
        self.probe_steps = require_positive_int(probe_steps, "probe_steps", "optimiser steps")

    def _probe(self, target: AuditTarget, start: dict[str, torch.Tensor], blocks: torch.Tensor,
               seed: int) -> torch.nn.Module:  # fmt: skip
        model = attach_lora(target.base.model, target.recipe.lora, peer_seed=seed)
        load_adapter_state(model, copy.deepcopy(start))
        cfg = TrainConfig(
            batch_size=blocks.shape[0], lr=target.recipe.train.lr, warmup_steps=0,
            total_steps=self.probe_steps,
        )  # fmt: skip
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            LocalTrainer(model, blocks, cfg, torch.Generator().manual_seed(seed)).train(
                self.probe_steps
            )
        return model

    def _groups(self, blocks: torch.Tensor) -> list[torch.Tensor]:
        n = (blocks.shape[0] // self.group_size) * self.group_size
        groups = list(blocks[:n].split(self.group_size))
        return groups[: self.max_groups]

    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        model = target.require_model()
        reference = target.reference[: self.reference_blocks]
        out = shadow_adapters(target, 1)[0].model
        start = adapter_state(out)
        seed = int(rng.integers(0, 2**31 - 1))
        control_idx = rng.permutation(target.population.shape[0])[: self.group_size]
        control = self._probe(target, start, target.population[control_idx], seed)
        sig_control, sig_out = dense_signature(control, reference), dense_signature(out, reference)
        sig_target = dense_signature(model, reference)
        spec = ProjectionSpec(seed=target.recipe.lora.public_seed)
        y_target = signature_vector(last_position_logits(model, reference), spec)
        y_out = signature_vector(last_position_logits(out, reference), spec)
        scores: list[list[float]] = [[], []]
        for k, blocks in enumerate((target.members, target.nonmembers)):
            for group in self._groups(blocks):
                d = (
                    dense_signature(self._probe(target, start, group, seed), reference)
                    - sig_control
                )
                if self.observation == "signature":
                    scores[k].append(_cos(d, sig_target - sig_out))
                else:
                    x = project({"signature": torch.from_numpy(d.reshape(reference.shape[0], -1))},
                                spec)  # fmt: skip
                    answer = float(x @ y_target) + float(rng.normal(0.0, _params.FLOOD_SIGMA))
                    scores[k].append(answer - float(x @ y_out))
        return membership_result(
            self.name,
            self.threat_models,
            scores[0],
            scores[1],
            extra_metrics={"queries_per_set": 1.0 if self.observation == "similarity" else 0.0},
            details=self.params(),
        )
