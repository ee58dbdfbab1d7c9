"""``canary``: exposure and extraction of secrets inserted into a peer's data (Carlini et al. 2019).

Threat: TM-01 / TM-05 (peers that receive the adapter), TM-03 / TM-04 with security ``off``, TM-06
(stolen keys decrypting recorded traffic): the
attacker holds base + shared adapter and knows the canary *format* (the public prefix and the
digit pattern), not the secret.

* **Exposure** of a secret s in a space R of |R| = 10^digits candidates: log2 |R| − log2 rank(s),
  where candidates are ranked by their NLL after the prefix under base + adapter. Exact ranking
  would score all |R| candidates; as in the Secret Sharer paper the rank is estimated from S
  candidates sampled uniformly from R (``exposure_bits``: conservative, at most log2(S + 1)) and
  extrapolated by a normal fit of the candidates' NLLs (``exposure_bits_fit``). A secret the model
  never saw has expected exposure ≈ 1.44 bits (``exposure_bits_not_inserted`` shows it).
* **Extraction**: greedy decoding from the prefix; a canary is extracted if the decoded tokens
  spell its secret exactly.
"""

from __future__ import annotations

import numpy as np

from secure_pcft.audit.attack import Attack, AttackResult, membership_result, register_attack
from secure_pcft.audit.metrics import fitted_exposure, sampled_exposure
from secure_pcft.audit.scoring import continuation_nll, greedy_continuation
from secure_pcft.audit.target import AuditTarget


@register_attack
class CanaryExposure(Attack):
    """Exposure (bits) and greedy extraction of inserted canaries. Measures TM-01, TM-03, TM-04,
    TM-05, TM-06.

    Scores for the ROC: −NLL of inserted (members) vs never-inserted (non-members) secrets.
    """

    name = "canary"
    threat_models = ("TM-01", "TM-03", "TM-04", "TM-05", "TM-06")
    units = ("block", "document", "subject")  # each inserted canary is a document of its own

    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        model = target.require_model()
        canaries = target.require_canaries()
        spec, space = canaries.spec, canaries.space_size
        candidates = canaries.candidates(target.base.tokenizer, spec.candidates, rng)
        cand_nll = continuation_nll(model, canaries.prefix_ids, candidates)
        nll = continuation_nll(model, canaries.prefix_ids, canaries.secret_ids)
        sampled = np.array([sampled_exposure(x, cand_nll, space) for x in nll])
        fitted = np.array([fitted_exposure(x, cand_nll, space) for x in nll])
        extracted = np.array(
            [
                tuple(greedy_continuation(model, canaries.prefix_ids, len(ids))) == ids
                for ids in canaries.secret_ids
            ]
        )
        inc = np.array(canaries.included)
        metrics = {
            "exposure_bits": float(sampled[inc].mean()),
            "exposure_bits_max": float(sampled[inc].max()),
            "exposure_bits_fit": float(fitted[inc].mean()),
            "exposure_bits_not_inserted": float(sampled[~inc].mean()) if (~inc).any() else np.nan,
            "exposure_bits_cap": float(np.log2(spec.candidates + 1)),
            "extraction_rate": float(extracted[inc].mean()),
            "extraction_rate_not_inserted": float(extracted[~inc].mean())
            if (~inc).any()
            else np.nan,
            "canary_copies": float(spec.copies),
        }
        details = {
            "space_size": space,
            "kind": spec.kind,
            "candidates_sampled": spec.candidates,
            "per_canary": [
                {
                    "inserted": bool(i),
                    "exposure_bits": float(e),
                    "exposure_bits_fit": float(f),
                    "extracted": bool(x),
                }
                for i, e, f, x in zip(inc, sampled, fitted, extracted, strict=True)
            ],
        }
        if (~inc).any():
            return membership_result(
                self.name, self.threat_models, -nll[inc], -nll[~inc],
                extra_metrics=metrics, details=details,
            )  # fmt: skip
        return AttackResult(
            self.name, self.threat_models, tuple(-nll), (), metrics, details
        )  # pragma: no cover - CanarySpec always draws negatives
