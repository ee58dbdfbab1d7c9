"""Observed adapter updates: the view of an attacker who sees a peer's adapter before and after
some local steps (TM-01 / TM-05 receiving it every round; TM-03 / TM-04 with security ``off``).

:func:`capture_update` produces such an update with the toolkit's real code: a peer warms its
adapter up on its other data (so LoRA-B is non-zero, as it is after the first round — at B = 0
the LoRA-A gradient is exactly zero), then takes ``steps`` steps on the audited batch with
plain SGD (what a FedSGD-style exchange of single-step updates reveals), the toolkit's AdamW
``LocalTrainer``, or its Opacus ``DpTrainer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import torch

from secure_pcft.audit.target import (
    AuditTarget,
    LoraUpdate,
    Recipe,
    TargetSpec,
    encode_docs,
    select_peers,
)
from secure_pcft.config import TrainConfig
from secure_pcft.data.corpus import Federation
from secure_pcft.errors import AuditError, ConfigError
from secure_pcft.model.loading import BaseModel
from secure_pcft.model.lora import adapter_state, attach_lora
from secure_pcft.privacy.dp_trainer import DpTrainer
from secure_pcft.train.local import LocalTrainer
from secure_pcft.validation import require

if TYPE_CHECKING:
    from secure_pcft.audit.campaign import UpdateSpec

UpdateOptimizer = Literal["sgd", "adamw", "dp-sgd"]
UPDATE_OPTIMIZERS: tuple[str, ...] = get_args(UpdateOptimizer)


def capture_update(
    base: BaseModel,
    batch: torch.Tensor,
    warm_blocks: torch.Tensor,
    recipe: Recipe,
    *,
    optimizer: str = "sgd",
    steps: int = 1,
    lr: float = 1e-2,
    warm_steps: int = 20,
    seed: int = 0,
) -> LoraUpdate:
    """Warm an adapter up on ``warm_blocks``, then record its update on ``batch`` (B, T).

    Args:
        base: the frozen base.
        batch: the audited blocks: every step uses all of them (full batch).
        warm_blocks: the peer's other data for the warm-up (recipe's AdamW, batch size).
        recipe: LoRA settings, warm-up training config, privacy config (``dp-sgd`` needs DP on).
        optimizer: ``sgd`` (plain SGD, lr ``lr``), ``adamw`` (the toolkit's LocalTrainer) or
            ``dp-sgd`` (the toolkit's Opacus DpTrainer, AdamW inside, q = 1 on the batch).
        steps: optimiser steps on the batch.
        lr: learning rate of the audited steps.
        warm_steps: warm-up steps (>= 1, so that LoRA-B is non-zero).
        seed: seeds the LoRA init, batch order and dropout.

    Raises:
        ConfigError: unknown optimizer, steps/warm_steps < 1, or ``dp-sgd`` without DP enabled.
    """
    s = "target.update"
    require(optimizer in UPDATE_OPTIMIZERS, s, "optimizer", f"one of {UPDATE_OPTIMIZERS}")
    require(steps >= 1 and warm_steps >= 1, s, "steps, warm_steps", "optimiser steps >= 1")
    model = attach_lora(base.model, recipe.lora, peer_seed=seed)
    g = torch.Generator().manual_seed(seed)
    cfg = TrainConfig(batch_size=batch.shape[0], lr=lr, warmup_steps=0, total_steps=steps)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        LocalTrainer(model, warm_blocks, recipe.train, g).train(warm_steps)
        before = adapter_state(model)
        if optimizer == "sgd":
            params = [p for p in model.parameters() if p.requires_grad]
            sgd = torch.optim.SGD(params, lr=lr)
            model.train()
            for _ in range(steps):
                sgd.zero_grad(set_to_none=True)
                model(input_ids=batch, labels=batch).loss.backward()
                sgd.step()
        elif optimizer == "adamw":
            LocalTrainer(model, batch, cfg, g).train(steps)
        else:
            if not recipe.privacy.enabled:
                raise ConfigError("[target.update] optimizer = 'dp-sgd' needs [privacy] enabled")
            trainer = DpTrainer(model, batch, cfg, recipe.privacy, g)
            try:
                trainer.train(steps)
            finally:
                trainer.close()
    return LoraUpdate(before, adapter_state(model), batch.clone(), steps, optimizer,
                      optimizer == "dp-sgd")  # fmt: skip


def build_update_target(
    spec: TargetSpec, update: UpdateSpec, base: BaseModel, federation: Federation, seed: int
) -> AuditTarget:
    """An :class:`AuditTarget` holding one observed update of the attacked peer (no adapter).

    The audited batch is ``update.batch_blocks`` of the peer's training blocks drawn with the
    trial's seed, cut to ``update.tokens`` tokens; the warm-up uses the peer's other blocks.

    Raises:
        AuditError: the peer has no training block left for the warm-up.
    """
    peer, pop = select_peers(federation, spec)
    members = encode_docs(base, peer.train, spec.run.data.block_size)
    if members.shape[0] <= update.batch_blocks:
        raise AuditError(
            f"peer {peer.peer_id} has {members.shape[0]} training blocks; the update audit needs "
            f"more than batch_blocks = {update.batch_blocks} (the rest warm the adapter up)"
        )
    tokens = update.tokens or members.shape[1]
    order = torch.from_numpy(np.random.default_rng([seed, 17]).permutation(members.shape[0]))
    batch = members[order[: update.batch_blocks], :tokens]
    recipe = Recipe.from_run(spec.run)
    observed = capture_update(
        base, batch, members[order[update.batch_blocks :]], recipe, optimizer=update.optimizer,
        steps=update.steps, lr=update.lr, warm_steps=update.warm_steps, seed=seed,
    )  # fmt: skip
    empty = members[:0]
    return AuditTarget(
        base=base, recipe=recipe, model=None, members=empty, nonmembers=empty,
        population=empty, reference=empty, update=observed, seed=seed,
        notes={"peer": peer.peer_id, "population_peers": [p.peer_id for p in pop],
               "batch_shape": list(batch.shape), "optimizer": update.optimizer},
    )  # fmt: skip
