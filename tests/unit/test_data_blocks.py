"""encode_blocks: EOS-separated token stream cut into full blocks, with a real tiny HF tokenizer."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from secure_pcft.data.blocks import (
    PAD,
    encode_blocks,
    encode_unit_blocks,
    has_padding,
    model_inputs,
    unit_means,
)
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


# ---- unit blocks: one document (or subject) per block, padded ---------------------------------


def test_unit_blocks_never_span_two_documents_and_pad_the_last_block() -> None:
    tok = _tokenizer()
    eos = tok.eos_token_id
    texts = ["the pump moves water", "the tank is full", "water"]  # 5, 5 and 2 tokens with EOS

    out = encode_unit_blocks(texts, ["a", "b", "a"], tok, block_size=3)

    ids = tok(texts, add_special_tokens=False)["input_ids"]
    assert out.ids.tolist() == [
        ids[0][:3], [*ids[0][3:], eos, PAD],  # document 0: 3 + 2 real tokens
        ids[1][:3], [*ids[1][3:], eos, PAD],  # document 1 starts a fresh block
        [*ids[2], eos, PAD],  # document 2: one padded block
    ]  # fmt: skip
    assert out.units.tolist() == [0, 0, 1, 1, 0]  # subjects "a" and "b", numbered as they appear
    assert out.keys == ("a", "b") and out.num_units == 2


def test_unit_blocks_drop_a_tail_with_nothing_to_predict() -> None:
    tok = _tokenizer()
    # 4 tokens + EOS = 5 with block_size 4: the tail [EOS] alone has no target and is dropped
    out = encode_unit_blocks(["the pump moves water"], ["0"], tok, block_size=4)
    assert out.ids.shape == (1, 4) and not has_padding(out.ids)
    with pytest.raises(DataError, match="no block"):
        encode_unit_blocks([], [], tok, block_size=4)
    with pytest.raises(DataError, match="unit keys"):
        encode_unit_blocks(["water"], [], tok, block_size=4)
    with pytest.raises(ModelError):
        encode_unit_blocks(CORPUS, ["0", "1", "2"], _tokenizer(eos=None), block_size=4)


def test_unit_means_average_each_units_blocks() -> None:
    values = torch.tensor([1.0, 3.0, 10.0, 5.0])
    assert unit_means(values, torch.tensor([0, 0, 1, 0])).tolist() == [3.0, 10.0]
    assert unit_means(values, None) is values
    assert torch.equal(model_inputs(torch.tensor([[4, PAD]])), torch.tensor([[4, 0]]))
