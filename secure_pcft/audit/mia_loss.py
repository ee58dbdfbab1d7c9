"""``loss``: membership inference by the target model's loss on the record (Yeom et al. 2018).

Threat: TM-01 (curious peer) and TM-05 (colluding peers) holding a peer's shared adapter, and
TM-03 / TM-04 whenever adapters travel unencrypted (security mode ``off``), TM-06 after a key
theft decrypts recorded traffic (no forward secrecy). The attacker needs
only the public base model, the adapter and the candidate record. Score = −(mean next-token NLL
of the block under base + adapter): training records tend to have lower loss.
"""

from __future__ import annotations

import numpy as np

from secure_pcft.audit.attack import Attack, AttackResult, membership_result, register_attack
from secure_pcft.audit.scoring import block_losses
from secure_pcft.audit.target import AuditTarget


@register_attack
class LossAttack(Attack):
    """Score = −loss(base + adapter, record). Measures TM-01, TM-03, TM-04, TM-05, TM-06."""

    name = "loss"
    threat_models = ("TM-01", "TM-03", "TM-04", "TM-05", "TM-06")
    candidate_scores = True  # one score per candidate block (averaged per unit by the runner)

    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        model = target.require_model()
        members = -block_losses(model, target.members)
        nonmembers = -block_losses(model, target.nonmembers)
        return membership_result(self.name, self.threat_models, members, nonmembers)
