"""``reference``: loss calibrated by a reference model (Carlini et al. 2021; Watson et al. 2022).

Threat: TM-01 / TM-05 (peers holding the shared adapter), TM-03 / TM-04 with security ``off``,
TM-06 (recorded traffic decrypted with stolen keys).
A record can have low loss because it is easy (typical text), not because it was trained on;
subtracting its loss under a reference model removes most of that. Two references:

* ``base`` (default): the public frozen base model. Score = loss_base(x) − loss_target(x): what
  the adapter "learned" about x. Free for every peer.
* ``population``: an adapter the attacker trains itself with the consortium's recipe on its own
  population data (what a curious peer of the same domain has anyway). Score =
  loss_reference_adapter(x) − loss_target(x): also removes what any adapter of the domain learns.
* ``peer``: on a collaboration target (``[target.collaboration]``), the adapter a same-domain peer
  released in the same round — what a curious peer of the consortium received, no training.
"""

from __future__ import annotations

import numpy as np
import torch

from secure_pcft.audit.attack import Attack, AttackResult, membership_result, register_attack
from secure_pcft.audit.collab_target import peer_reference_model
from secure_pcft.audit.scoring import block_losses
from secure_pcft.audit.target import AuditTarget, train_adapter
from secure_pcft.errors import ConfigError


@register_attack
class ReferenceAttack(Attack):
    """Score = loss_reference(x) − loss_target(x). Measures TM-01, TM-03, TM-04, TM-05, TM-06.

    Args:
        reference: ``base`` (the public base model), ``population`` (an adapter the attacker
            trains on all of its population data with the target's recipe) or ``peer`` (the
            adapter a same-domain peer released in the target's round; collaboration targets).
    """

    name = "reference"
    threat_models = ("TM-01", "TM-03", "TM-04", "TM-05", "TM-06")
    candidate_scores = True  # one score per candidate block (averaged per unit by the runner)

    def __init__(self, reference: str = "base") -> None:
        if reference not in ("base", "population", "peer"):
            raise ConfigError("[attack] reference: 'base', 'population' or 'peer'")
        self.reference = reference

    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        model = target.require_model()
        ref: torch.nn.Module
        if self.reference == "base":
            ref = target.base.model
        elif self.reference == "peer":
            ref = peer_reference_model(target, seed=int(rng.integers(0, 2**31 - 1)))
        else:
            seed = int(rng.integers(0, 2**31 - 1))
            ref = train_adapter(
                target.base, target.population, target.recipe, seed, units=target.population_units
            ).model
        members = block_losses(ref, target.members) - block_losses(model, target.members)
        nonmembers = block_losses(ref, target.nonmembers) - block_losses(model, target.nonmembers)
        return membership_result(
            self.name,
            self.threat_models,
            members,
            nonmembers,
            details={"reference": self.reference},
        )
