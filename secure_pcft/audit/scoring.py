"""What an attacker computes with a model it holds: per-record losses, sequence NLLs, logits.

All functions run the model in eval mode under ``torch.no_grad()`` and restore its mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from secure_pcft.privacy.losses import per_example_lm_loss


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was = model.training
    model.train(False)
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was)


def block_losses(
    model: nn.Module, blocks: torch.Tensor, batch_size: int = 32
) -> npt.NDArray[np.float64]:
    """Mean next-token NLL of each block (nats/token): the unit DP protects, shape (N,)."""
    out = []
    with eval_mode(model):
        for start in range(0, blocks.shape[0], batch_size):
            out.append(per_example_lm_loss(model, blocks[start : start + batch_size]).double())
    return torch.cat(out).numpy() if out else np.zeros(0)


def continuation_nll(
    model: nn.Module,
    prefix: Sequence[int],
    continuations: Sequence[Sequence[int]],
    batch: int = 256,
) -> npt.NDArray[np.float64]:
    """Total NLL (nats) of each continuation given ``prefix``: −log P(continuation | prefix).

    Continuations may differ in length (they are right-padded; padding is never scored).

    Returns:
        float64 array, shape (len(continuations),).
    """
    out = np.zeros(len(continuations), dtype=np.float64)
    p = len(prefix)
    with eval_mode(model):
        for start in range(0, len(continuations), batch):
            chunk = continuations[start : start + batch]
            width = max(len(c) for c in chunk)
            ids = torch.zeros((len(chunk), p + width), dtype=torch.long)  # (B, P+W)
            mask = torch.zeros((len(chunk), width), dtype=torch.bool)  # (B, W)
            ids[:, :p] = torch.tensor(list(prefix), dtype=torch.long)
            for i, c in enumerate(chunk):
                ids[i, p : p + len(c)] = torch.tensor(list(c), dtype=torch.long)
                mask[i, : len(c)] = True
            logits = model(input_ids=ids).logits[:, p - 1 : p + width - 1, :].double()  # (B, W, V)
            logp = torch.log_softmax(logits, dim=-1)
            tok = logp.gather(-1, ids[:, p:].unsqueeze(-1)).squeeze(-1)  # (B, W)
            out[start : start + len(chunk)] = (-(tok * mask).sum(dim=1)).numpy()
    return out


def last_position_logits(
    model: nn.Module, blocks: torch.Tensor, batch_size: int = 32
) -> torch.Tensor:
    """Last-position logits on (R, T) blocks → (R, V) float32 (what prediction signatures use)."""
    out = []
    with eval_mode(model):
        for start in range(0, blocks.shape[0], batch_size):
            out.append(model(input_ids=blocks[start : start + batch_size]).logits[:, -1, :].float())
    return torch.cat(out)


@torch.no_grad()
def greedy_continuation(model: nn.Module, prefix: Sequence[int], length: int) -> list[int]:
    """``length`` greedily decoded tokens after ``prefix`` (argmax at every step)."""
    ids = torch.tensor([list(prefix)], dtype=torch.long)
    with eval_mode(model):
        for _ in range(length):
            nxt = model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return ids[0, len(prefix) :].tolist()
