"""Per-example next-token loss: the unit DP reasons about (one example = one token block)."""

from __future__ import annotations

import torch
from torch import nn

from secure_pcft.data.blocks import PAD, has_padding, model_inputs


def per_example_lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each block, in nats.

    Each example is one block of shape (T,); its loss is the mean over its predicted tokens (T-1,
    or fewer where the block ends in :data:`~secure_pcft.data.blocks.PAD` padding), so every
    example weighs the same whatever the batch. This is what DP-SGD clips per example and what the
    validation mechanism clips per example.

    Args:
        model: a causal LM returning ``.logits`` of shape (B, T, V) for ``input_ids`` (B, T).
        batch: token ids, shape (B, T), T >= 2; padding only after a block's first 2 tokens.

    Returns:
        Losses, shape (B,), float32 (or the logits' dtype if wider).
    """
    padded = has_padding(batch)
    logits = model(input_ids=model_inputs(batch) if padded else batch).logits[:, :-1, :]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # (B, T-1, V)
    targets = batch[:, 1:]  # (B, T-1)
    nll = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none",
        ignore_index=PAD,
    ).view(batch.shape[0], -1)  # fmt: skip
    if not padded:
        return nll.mean(dim=1)  # (B,)
    real = (targets != PAD).sum(dim=1).clamp_min(1)
    return nll.sum(dim=1) / real  # ignored targets add 0
