"""scoring_model: a merged LoRA view for large no-grad passes — the same function as the peer's model,
built without touching the shared base, and never used where it would not be exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer

from secure_pcft.config import LoraSettings
from secure_pcft.model import merged_scoring
from secure_pcft.model.loading import BaseModel, load_base
from secure_pcft.model.lora import attach_lora
from secure_pcft.model.merged_scoring import MERGE_MIN_TOKENS, scoring_model
from secure_pcft.privacy.validation_scores import validation_losses
from secure_pcft.train.evaluate import evaluate_lm, last_position_logits
from tests.conftest import build_tiny_base

BIG = MERGE_MIN_TOKENS  # a pass large enough to be merged


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_base(tmp_path_factory.mktemp("tiny-llama"), arch="llama")


def _trained_lora(base: BaseModel) -> torch.nn.Module:
    model = attach_lora(base.model, LoraSettings(), peer_seed=1)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:  # B = 0 would make the merge a no-op
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return model


def _blocks(base: BaseModel, n: int = 6, t: int = 16) -> torch.Tensor:
    vocab = int(base.model.config.vocab_size)
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(5))


def _base_weights(base: BaseModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in base.model.named_parameters()}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])  # GPT-2's transposed Conv1D, Llama's Linear
def test_merged_view_computes_the_same_logits_and_leaves_the_model_alone(
    arch: str, tiny_base: BaseModel, llama_dir: Path
) -> None:
    base = tiny_base if arch == "gpt2" else load_base(llama_dir)
    model = _trained_lora(base)
    model.train(True)
    before = _base_weights(base)
    adapter_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    tokens = _blocks(base)
    with torch.no_grad():
        view = scoring_model(model, BIG)
        merged = view(input_ids=tokens).logits
        model.train(False)
        unmerged = model(input_ids=tokens).logits
        model.train(True)
        base_only = base.model(input_ids=tokens).logits

    assert view is not model
    assert not any(isinstance(m, LoraLayer) for m in view.modules())
    assert not view.training and model.training
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert (merged - base_only).abs().max() > 1e-2  # the adapter really is in the view
    for name, weight in base.model.named_parameters():  # the shared base: bit for bit
        assert torch.equal(weight, before[name]), name
    for name, param in model.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, adapter_before[name]), name
    assert sum(isinstance(m, LoraLayer) for m in model.modules()) > 0


def test_small_passes_and_gradients_keep_the_model_itself(tiny_base: BaseModel) -> None:
    model = _trained_lora(tiny_base)
    with torch.no_grad():
        assert scoring_model(model, BIG - 1) is model
    assert scoring_model(model, BIG) is model  # gradients on: a merged view would not train


def test_not_merged_where_it_would_not_be_exact(
    tiny_base: BaseModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _trained_lora(tiny_base)
    with torch.no_grad():
        assert scoring_model(tiny_base.model, BIG) is tiny_base.model  # no adapter at all
        with model.disable_adapter():  # a base-model pass: the adapter must stay out
            assert scoring_model(model, BIG) is model
        layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
        layer.use_dora["default"] = True  # a variant the plain merge does not cover
        assert scoring_model(model, BIG) is model
        layer.use_dora["default"] = False
        monkeypatch.setattr(merged_scoring, "MERGE_MAX_BYTES", 0)  # no memory for the view
        assert scoring_model(model, BIG) is model
        monkeypatch.undo()
        assert scoring_model(model, BIG) is not model  # the same model, nothing in the way
        half = attach_lora(tiny_base.model.to(torch.bfloat16), LoraSettings(), peer_seed=1)
        assert scoring_model(half, BIG) is half  # bf16 W + s·B·A would round the update away


def test_view_does_not_fire_the_models_hooks(tiny_base: BaseModel) -> None:
    model = _trained_lora(tiny_base)
    calls: list[str] = []
    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    handle = layer.get_base_layer().register_forward_hook(lambda *_: calls.append("hook"))
    try:
        with torch.no_grad():
            scoring_model(model, BIG)(input_ids=_blocks(tiny_base))
    finally:
        handle.remove()
    assert calls == []


def test_scoring_functions_give_the_same_numbers_merged_or_not(
    tiny_base: BaseModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _trained_lora(tiny_base)
    blocks = _blocks(tiny_base, n=20)
    plain = (
        evaluate_lm(model, blocks, batch_size=8),
        validation_losses(model, blocks, batch_size=8),
        last_position_logits(model, blocks),
    )
    built: list[torch.nn.Module] = []
    real = merged_scoring.scoring_model

    def spy(m: torch.nn.Module, tokens: int) -> torch.nn.Module:
        built.append(real(m, tokens))
        return built[-1]

    monkeypatch.setattr(merged_scoring, "MERGE_MIN_TOKENS", 1)
    for module in ("secure_pcft.train.evaluate", "secure_pcft.privacy.validation_scores"):
        monkeypatch.setattr(f"{module}.scoring_model", spy)
    merged = (
        evaluate_lm(model, blocks, batch_size=8),
        validation_losses(model, blocks, batch_size=8),
        last_position_logits(model, blocks),
    )

    assert len(built) == 3 and all(v is not model for v in built)
    assert merged[0].loss == pytest.approx(plain[0].loss, rel=1e-6)
    assert merged[0].accuracy == pytest.approx(plain[0].accuracy, abs=1 / merged[0].tokens)
    torch.testing.assert_close(merged[1], plain[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged[2], plain[2], rtol=1e-5, atol=1e-5)
