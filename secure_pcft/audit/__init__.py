"""Audits that *measure* what a peer's shared artefacts leak (docs/design.md, "Audits").

- Attacks (one module each, one registry): ``loss``, ``reference``, ``lira-offline``, ``rmia``
  (membership inference on a shared adapter), ``signature-mia`` (membership from prediction
  signatures / encrypted-similarity answers, population-data attacker), ``signature-twin-mia`` (the
  same channel, informed attacker with twin adapters), ``canary`` (exposure and extraction of inserted
  secrets), ``one-run-epsilon`` (empirical ε lower bound, Steinke et al. 2023),
  ``span-reconstruction`` (tokens from a LoRA update, DAGER-style).
- :mod:`~secure_pcft.audit.metrics`: ROC AUC, TPR at low FPR, exposure, token precision/recall,
  Clopper–Pearson; :mod:`~secure_pcft.audit.epsilon_bounds`: the one-run ε bound.
- :mod:`~secure_pcft.audit.campaign` / :mod:`~secure_pcft.audit.runner`: declarative TOML
  campaigns (``audits/``) run by ``secure-pcft audit``.
- Targets: a peer trained alone (:mod:`~secure_pcft.audit.target`), one observed update
  (:mod:`~secure_pcft.audit.updates`), or the adapter a peer released in the last round of a real
  collaboration (:mod:`~secure_pcft.audit.collab_target`, ``[target.collaboration]``).

Every attack names the threat models (``threat_models/TM-xx``) whose adversary it plays.
"""

from secure_pcft.audit.attack import (
    Attack,
    AttackResult,
    attack_names,
    make_attack,
    membership_result,
    register_attack,
)
from secure_pcft.audit.campaign import (
    AttackSpec,
    Campaign,
    UpdateSpec,
    campaign_from_dict,
    load_campaign,
)
from secure_pcft.audit.canaries import CanarySet, CanarySpec, draw_canaries
from secure_pcft.audit.collab_target import CollaborationSpec, build_collaboration_target
from secure_pcft.audit.epsilon_bounds import (
    OneRunOutcome,
    epsilon_lower_bound,
    one_run_epsilon,
    p_value_one_run,
)
from secure_pcft.audit.metrics import (
    clopper_pearson,
    exposure_from_rank,
    membership_metrics,
    roc_auc,
    roc_curve,
    roc_points,
    token_precision_recall,
    tpr_at_fpr,
)
from secure_pcft.audit.runner import CampaignResult, run_campaign, write_summary
from secure_pcft.audit.target import (
    AuditTarget,
    LoraUpdate,
    Recipe,
    TargetSpec,
    TrainedAdapter,
    build_target,
    train_adapter,
)
from secure_pcft.audit.updates import build_update_target, capture_update

__all__ = [
    "Attack",
    "AttackResult",
    "AttackSpec",
    "AuditTarget",
    "Campaign",
    "CampaignResult",
    "CanarySet",
    "CanarySpec",
    "CollaborationSpec",
    "LoraUpdate",
    "OneRunOutcome",
    "Recipe",
    "TargetSpec",
    "TrainedAdapter",
    "UpdateSpec",
    "attack_names",
    "build_collaboration_target",
    "build_target",
    "build_update_target",
    "campaign_from_dict",
    "capture_update",
    "clopper_pearson",
    "draw_canaries",
    "epsilon_lower_bound",
    "exposure_from_rank",
    "load_campaign",
    "make_attack",
    "membership_metrics",
    "membership_result",
    "one_run_epsilon",
    "p_value_one_run",
    "register_attack",
    "roc_auc",
    "roc_curve",
    "roc_points",
    "run_campaign",
    "token_precision_recall",
    "tpr_at_fpr",
    "train_adapter",
    "write_summary",
]
