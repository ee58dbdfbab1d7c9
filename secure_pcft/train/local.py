"""Plain (non-private) local training of a peer's LoRA parameters.

The optimiser state stays with the peer: aggregation replaces the LoRA parameters in place and the
trainer carries on with its own AdamW moments, as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from secure_pcft.config import TrainConfig
from secure_pcft.data.blocks import model_inputs
from secure_pcft.errors import DataError


class LocalTrainer:
    """Minibatch AdamW on the trainable (LoRA) parameters of one peer's model.

    Args:
        model: the peer's peft model; only parameters with ``requires_grad`` train.
        blocks: the peer's private training token blocks, shape (N, T) (padding allowed:
            :data:`~secure_pcft.data.blocks.PAD`).
        cfg: batch size, learning rate, weight decay.
        generator: the peer's own RNG for batch sampling.
    """

    def __init__(
        self, model: nn.Module, blocks: torch.Tensor, cfg: TrainConfig, generator: torch.Generator
    ) -> None:
        if blocks.ndim != 2 or blocks.shape[0] == 0:
            raise DataError("training blocks must be a non-empty (N, T) tensor")
        self.model = model
        self.blocks = blocks
        self.cfg = cfg
        self.generator = generator
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_done = 0
        self._order = torch.empty(0, dtype=torch.long)

    def _next_batch(self) -> torch.Tensor:
        # Epoch-wise shuffling without replacement: each block seen once per pass.
        n, b = self.blocks.shape[0], min(self.cfg.batch_size, self.blocks.shape[0])
        if self._order.numel() < b:
            self._order = torch.cat([self._order, torch.randperm(n, generator=self.generator)])
        idx, self._order = self._order[:b], self._order[b:]
        return self.blocks[idx]  # (B, T)

    def step(self) -> float:
        """One optimiser step; returns the batch's mean next-token loss (nats)."""
        self.model.train()
        batch = self._next_batch()
        self.optimizer.zero_grad(set_to_none=True)
        # labels keep the padding (-100, ignored by the loss); the inputs replace it
        loss = self.model(input_ids=model_inputs(batch), labels=batch).loss
        loss.backward()
        self.optimizer.step()
        self.steps_done += 1
        return float(loss.detach())

    def train(self, steps: int) -> list[float]:
        """Run ``steps`` optimiser steps and return their losses."""
        return [self.step() for _ in range(steps)]

    def state_dict(self) -> dict[str, Any]:
        """Optimiser + sampler state (for snapshots; local only, never sent)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "order": self._order.clone(),
            "steps_done": self.steps_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self._order = state["order"].clone()
        self.steps_done = int(state["steps_done"])
