"""Token blocks: documents -> fixed-length training sequences.

* :func:`encode_blocks` — one EOS-separated stream of all documents, cut into full blocks (the
  privacy unit is the block: a block may hold the end of one document and the start of the next).
* :func:`encode_unit_blocks` — each document cut on its own, its last block padded, every block
  tagged with its privacy unit (a document, or a data subject's documents).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch

from secure_pcft.errors import DataError, ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def encode_blocks(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block_size: int
) -> torch.Tensor:
    """Tokenise ``texts``, end each with EOS, concatenate and cut into full blocks.

    The ragged tail (fewer than ``block_size`` tokens) is dropped, so every block is real text and
    needs no attention mask; a peer loses at most ``block_size - 1`` tokens. Special tokens (BOS)
    are not added: EOS alone separates documents, as in GPT-2 pretraining.

    Args:
        texts: documents in the order they should appear in the stream.
        tokenizer: a Hugging Face tokenizer with an ``eos_token_id``.
        block_size: tokens per block.

    Returns:
        ``torch.long`` tensor of token ids, shape ``(n_blocks, block_size)``.

    Raises:
        DataError: ``block_size < 1``, or fewer tokens than one block (the message gives both
            counts, never the text).
        ModelError: the tokenizer has no EOS token.
    """
    if block_size < 1:
        raise DataError(f"block_size must be >= 1 token, got {block_size}")
    eos = tokenizer.eos_token_id
    if not isinstance(eos, int):
        raise ModelError("the tokenizer has no eos_token_id; documents cannot be separated")
    stream: list[int] = []
    if texts:
        # verbose=False: the stream is cut into blocks below, so "longer than model_max_length"
        # warnings about single documents are noise.
        encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            stream.extend(ids)
            stream.append(eos)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise DataError(
            f"{len(texts)} documents give {len(stream)} tokens, fewer than one block of "
            f"{block_size}; "
            "add documents or lower block_size"
        )
    return torch.tensor(stream[: n_blocks * block_size], dtype=torch.long).view(
        n_blocks, block_size
    )


#: Marks the padding of a unit block's last positions: the label-ignore index of
#: ``torch.nn.functional.cross_entropy`` (and of Hugging Face ``labels``), a value no tokenizer
#: produces. Padding is never a target; as an input it is replaced by token 0 (:func:`model_inputs`),
#: which the causal mask hides from every real position before it.
PAD = -100


class UnitBlocks(NamedTuple):
    """Token blocks that each belong to exactly one privacy unit (a document or a data subject).

    Attributes:
        ids: token ids, shape (N, T); a block's padding (its last positions only) is :data:`PAD`.
        units: the unit of each block, shape (N,), ``torch.long`` in 0..U-1 (numbered in order
            of first appearance).
        keys: the unit keys, ``keys[u]`` names unit ``u`` (a document index or a subject id).
    """

    ids: torch.Tensor
    units: torch.Tensor
    keys: tuple[str, ...]

    @property
    def num_units(self) -> int:
        return len(self.keys)


def model_inputs(batch: torch.Tensor) -> torch.Tensor:
    """``batch`` with :data:`PAD` replaced by token 0, ready for the model (a no-op without
    padding). Right padding is invisible to the real positions under a causal mask."""
    return batch.clamp_min(0)


def has_padding(batch: torch.Tensor) -> bool:
    return bool((batch == PAD).any())


def encode_unit_blocks(
    texts: Sequence[str],
    unit_keys: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
) -> UnitBlocks:
    """Tokenise each document on its own and cut it into blocks that never span two documents.

    Each document ends with EOS and is cut into ``block_size`` blocks; its last block is
    right-padded with :data:`PAD` (a tail of fewer than 2 real tokens has no target to predict and
    is dropped, so a document gives at least one block unless it is that short altogether). Every
    block belongs to the unit ``unit_keys[i]`` of its document ``i``: several documents may share a
    unit (a data subject's documents), no block holds text of two units — what the privacy unit's
    accounting needs (privacy/dp_trainer.py).

    Args:
        texts: documents.
        unit_keys: the unit of each document (same length as ``texts``).
        tokenizer: a Hugging Face tokenizer with an ``eos_token_id``.
        block_size: tokens per block (>= 2).

    Returns:
        The blocks, their units and the unit keys (documents too short for a block drop out, and
        a unit with no block left is not numbered).

    Raises:
        DataError: ``block_size < 2``, mismatched lengths, or no block at all.
        ModelError: the tokenizer has no EOS token.
    """
    if block_size < 2:
        raise DataError(f"block_size must be >= 2 tokens for unit blocks, got {block_size}")
    if len(texts) != len(unit_keys):
        raise DataError(f"{len(texts)} documents but {len(unit_keys)} unit keys")
    eos = tokenizer.eos_token_id
    if not isinstance(eos, int):
        raise ModelError("the tokenizer has no eos_token_id; documents cannot be separated")
    rows: list[list[int]] = []
    owners: list[int] = []
    number: dict[str, int] = {}
    encoded = (
        tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        if texts
        else []
    )
    for ids, key in zip(encoded, unit_keys, strict=True):
        tokens = [*ids, eos]
        for start in range(0, len(tokens), block_size):
            piece = tokens[start : start + block_size]
            if len(piece) < 2:
                break
            rows.append(piece + [PAD] * (block_size - len(piece)))
            owners.append(number.setdefault(key, len(number)))
    if not rows:
        raise DataError(f"{len(texts)} documents give no block of at least 2 tokens; add documents")
    return UnitBlocks(
        torch.tensor(rows, dtype=torch.long),
        torch.tensor(owners, dtype=torch.long),
        tuple(number),
    )


def unit_count(units: torch.Tensor | None, blocks: int) -> int:
    """The units held: U for unit tags numbered 0..U-1, or ``blocks`` when ``units`` is None (each
    block its own unit)."""
    if units is None:
        return blocks
    return int(units.max()) + 1 if units.numel() else 0


def unit_means(values: torch.Tensor, units: torch.Tensor | None) -> torch.Tensor:
    """Per-unit mean of per-block ``values`` (N,) → (U,), units numbered 0..U-1; ``units`` None
    (each block its own unit) returns ``values`` unchanged."""
    if units is None:
        return values
    units = units.to(values.device)
    count = unit_count(units, 0)
    sums = torch.zeros(count, dtype=values.dtype, device=values.device).index_add_(0, units, values)
    sizes = torch.bincount(units, minlength=count).to(values.dtype)
    return sums / sizes
