"""encode_blocks: EOS-separated token stream cut into full blocks, with a real tiny HF tokenizer."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from secure_pcft.data.blocks import encode_blocks
from secure_pcft.errors import DataError, ModelError

EOS = "<|endoftext|>"
CORPUS = ["the pump moves water", "the tank is full", "water flows to the tank"]


def _tokenizer(eos: str | None = EOS) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["[UNK]", EOS]))
    if eos is None:
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, unk_token="[UNK]")


def test_blocks_shape_dtype_and_eos_separation() -> None:
    tok = _tokenizer()
    texts = ["the pump moves water", "the tank is full"]  # 4 + 1 + 4 + 1 = 10 tokens

    blocks = encode_blocks(texts, tok, block_size=4)

    assert blocks.shape == (2, 4)
    assert blocks.dtype == torch.long
    stream = blocks.flatten().tolist()
    expected = tok(texts[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert stream[:5] == expected
    assert stream.count(tok.eos_token_id) == 1  # the second EOS fell in the dropped tail


def test_ragged_tail_is_dropped_and_exact_fit_kept() -> None:
    tok = _tokenizer()

    exact = encode_blocks(["the tank is full"], tok, block_size=5)  # 4 tokens + EOS
    ragged = encode_blocks(["the tank is full", "water"], tok, block_size=3)  # 7 tokens

    assert exact.shape == (1, 5)
    assert exact[0, -1].item() == tok.eos_token_id
    assert ragged.shape == (2, 3)


def test_too_little_text_for_one_block_raises() -> None:
    tok = _tokenizer()

    with pytest.raises(DataError, match="5 tokens, fewer than one block of 64"):
        encode_blocks(["the tank is full"], tok, block_size=64)
    with pytest.raises(DataError, match="0 tokens"):
        encode_blocks([], tok, block_size=8)
    with pytest.raises(DataError, match="block_size"):
        encode_blocks(CORPUS, tok, block_size=0)


def test_tokenizer_without_eos_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="eos"):
        encode_blocks(CORPUS, _tokenizer(eos=None), block_size=4)
