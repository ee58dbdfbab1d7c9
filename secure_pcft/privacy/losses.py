"""Per-example next-token loss: the unit DP reasons about (one example = one token block)."""

from __future__ import annotations

import torch
from torch import nn


def per_example_lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each block, in nats.

    Each example is one block of shape (T,); its loss is the mean over its T-1 predicted tokens,
    so every example weighs the same whatever the batch. This is what DP-SGD clips per example
    and what the validation mechanism clips per example.

    Args:
        model: a causal LM returning ``.logits`` of shape (B, T, V) for ``input_ids`` (B, T).
        batch: token ids, shape (B, T), T >= 2.

    Returns:
        Losses, shape (B,), float32 (or the logits' dtype if wider).
    """
    logits = model(input_ids=batch).logits[:, :-1, :]  # (B, T-1, V)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    targets = batch[:, 1:]  # (B, T-1)
    nll = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return nll.view(batch.shape[0], -1).mean(dim=1)  # (B,)
