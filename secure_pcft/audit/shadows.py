"""Shadow adapters: what an attacker trains itself to learn how the target's recipe behaves.

Each shadow is a real training run of the consortium's recipe (same LoRA settings, steps, DP
configuration and privacy unit) on a random half of the attacker's population data (half of its
blocks, or of its documents / subjects); the candidate records are never
in it, so every shadow is an OUT model for every candidate (the *offline* setting of LiRA and
RMIA: no training per candidate). Shadows depend only on the target's seed and their index, and
are cached on the target so that several attacks of one campaign share them.
"""

from __future__ import annotations

import numpy as np
import torch

from secure_pcft.audit.scoring import block_losses
from secure_pcft.audit.target import AuditTarget, TrainedAdapter, train_adapter
from secure_pcft.data.blocks import unit_count
from secure_pcft.errors import AuditError


def shadow_adapters(target: AuditTarget, count: int) -> list[TrainedAdapter]:
    """The first ``count`` shadows of ``target`` (trained on demand, then cached).

    Raises:
        AuditError: fewer than 2 population blocks to halve.
    """
    if target.population.shape[0] < 2:
        raise AuditError("shadow training needs at least 2 population blocks")
    cache = target.shadows
    units = target.population_units
    n = unit_count(units, int(target.population.shape[0]))
    while len(cache) < count:
        index = len(cache)
        rng = np.random.default_rng([target.seed, 7_001, index])
        half = torch.from_numpy(rng.permutation(n)[: max(1, n // 2)])
        seed = int(rng.integers(0, 2**31 - 1))
        if units is None:
            blocks, kept = target.population[half], None
        else:  # half of the population's units (documents, subjects), each with all its blocks
            chosen = torch.isin(units, half)
            blocks, kept = (
                target.population[chosen],
                torch.unique(units[chosen], return_inverse=True)[1],
            )
        cache.append(train_adapter(target.base, blocks, target.recipe, seed, units=kept))
    return cache[:count]


def shadow_losses(shadows: list[TrainedAdapter], blocks: torch.Tensor) -> np.ndarray:
    """Per-block mean NLL under every shadow, shape (K, N)."""
    return np.stack([block_losses(s.model, blocks) for s in shadows])
