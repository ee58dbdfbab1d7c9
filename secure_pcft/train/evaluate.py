"""Perplexity and next-token accuracy of a causal LM on token blocks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from secure_pcft.data.blocks import PAD, model_inputs
from secure_pcft.model.merged_scoring import scoring_model


@dataclass(frozen=True)
class LmScore:
    """Mean next-token loss (nats/token), its perplexity, and top-1 next-token accuracy."""

    loss: float
    perplexity: float
    accuracy: float
    tokens: int


@torch.no_grad()
def evaluate_lm(
    model: nn.Module, blocks: torch.Tensor, batch_size: int = 16, max_batches: int | None = None
) -> LmScore:
    """Score ``model`` on ``blocks`` (shape (N, T)) with teacher forcing.

    Every block contributes T-1 predicted tokens (fewer where it ends in
    :data:`~secure_pcft.data.blocks.PAD` padding: padding is never a target). ``max_batches`` caps the work (the first batches
    are used, so repeated calls score the same tokens). A large pass runs through a merged view of
    a LoRA model (:func:`~secure_pcft.model.merged_scoring.scoring_model`: the same function, at
    the base model's speed).
    """
    was_training = model.training
    model.train(False)
    total_loss, total_correct, total_tokens = 0.0, 0, 0
    scored = (
        blocks.shape[0] if max_batches is None else min(blocks.shape[0], max_batches * batch_size)
    )
    scorer = scoring_model(model, scored * blocks.shape[1])
    try:
        for b, start in enumerate(range(0, blocks.shape[0], batch_size)):
            if max_batches is not None and b >= max_batches:
                break
            batch = blocks[start : start + batch_size]  # (B, T)
            logits = scorer(input_ids=model_inputs(batch)).logits  # (B, T, V)
            # Position t predicts token t+1; the last position predicts nothing (PAD). Scoring
            # all T positions against shifted targets reads the logits as they are: slicing off
            # the last position first would copy the whole (B, T-1, V) tensor.
            targets = nn.functional.pad(batch[:, 1:], (0, 1), value=PAD)  # (B, T)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum",
                ignore_index=PAD,
            )  # fmt: skip
            total_loss += float(loss)
            total_correct += int((logits.argmax(-1) == targets).sum())  # PAD never matches
            total_tokens += int((targets != PAD).sum())
    finally:
        model.train(was_training)
    mean = total_loss / max(total_tokens, 1)
    return LmScore(
        loss=mean,
        perplexity=math.exp(min(mean, 50.0)),
        accuracy=total_correct / max(total_tokens, 1),
        tokens=total_tokens,
    )


@torch.no_grad()
def last_position_logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The model's logits at the last position of each block (R, T) → (R, V), float32 on the CPU,
    in eval mode (the caller's mode is restored). Only the last position goes through the LM head
    where the model supports ``logits_to_keep``; a large pass runs through a merged LoRA view
    (:func:`~secure_pcft.model.merged_scoring.scoring_model`)."""
    was = model.training
    model.train(False)
    scorer = scoring_model(model, tokens.numel())
    try:
        try:
            out = scorer(input_ids=tokens, logits_to_keep=1)
        except TypeError:  # a model class without ``logits_to_keep``
            out = scorer(input_ids=tokens)
        return out.logits[:, -1, :].float().cpu()
    finally:
        model.train(was)
