"""Loading a local base: the fused tanh-GELU swap changes speed, not the function."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.activations import GELUTanh, NewGELUActivation

from secure_pcft.errors import ModelError
from secure_pcft.model.loading import load_base


def test_gelu_new_is_swapped_for_the_fused_kernel_with_the_same_outputs(
    tiny_base_dir: Path,
) -> None:
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_base_dir), local_files_only=True)
    plain.train(False)
    assert any(type(m) is NewGELUActivation for m in plain.modules())  # the stored config's

    base = load_base(tiny_base_dir)
    kinds = [type(m) for m in base.model.modules()]
    assert NewGELUActivation not in kinds and GELUTanh in kinds

    ids = torch.randint(
        0, plain.config.vocab_size, (3, 16), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        want, got = plain(input_ids=ids).logits, base.model(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5, rtol=1e-5)
    assert not torch.equal(want, torch.zeros_like(want))


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelError, match="gguf"):
        load_base(f)


def test_a_base_folder_without_tokenizer_files_is_refused(
    tiny_base_dir: Path, tmp_path: Path
) -> None:
    # It used to load: transformers built an empty GPT-2 tokenizer, and the run failed much later.
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_base_dir / name, bare / name)

    with pytest.raises(ModelError, match="no tokenizer files"):
        load_base(bare)
    shutil.copy(tiny_base_dir / "tokenizer.json", bare / "tokenizer.json")
    shutil.copy(tiny_base_dir / "tokenizer_config.json", bare / "tokenizer_config.json")
    assert load_base(bare).tokenizer.eos_token_id is not None
