"""Token blocks: documents -> one EOS-separated token stream -> fixed-length training sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

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
