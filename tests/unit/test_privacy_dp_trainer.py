"""DP-SGD on LoRA with Opacus: updates reach the adapter, clipping is exact, noise has its scale.

Real Opacus, real peft, real (tiny, random) GPT-2 and Llama models. Base-model dropout is off in
these configs so that the per-example reference loop sees exactly the same function.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from secure_pcft.config import LoraSettings, PrivacyConfig, TrainConfig, load_config
from secure_pcft.data.blocks import PAD
from secure_pcft.errors import BudgetInfeasibleError, ConfigError, DataError, PrivacyError
from secure_pcft.model.lora import adapter_state, attach_lora
from secure_pcft.privacy import (
    DpEvent,
    DpTrainer,
    OsUrandomSource,
    calibrate_noise_multiplier,
    epsilon_spent,
    per_example_lm_loss,
    register_accountant,
)
from secure_pcft.train.local import LocalTrainer

VOCAB, T, N = 96, 16, 40


def tiny_model(arch: str, dtype: torch.dtype = torch.float32, mode: str = "paper") -> nn.Module:
    """A random tiny base with LoRA attached and a random (non-zero) B, so A gets gradients too."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if arch == "gpt2":
            cfg = GPT2Config(
                vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
            )  # fmt: skip
            base: nn.Module = GPT2LMHeadModel(cfg)
        else:
            cfg_l = LlamaConfig(
                vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                bos_token_id=0, eos_token_id=0, pad_token_id=0,
            )  # fmt: skip
            base = LlamaForCausalLM(cfg_l)
    model = attach_lora(base.to(dtype), LoraSettings(dropout=0.0, mode=mode), peer_seed=1)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    return model


def blocks(n: int = N, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, T), generator=torch.Generator().manual_seed(seed))  # (N, T)


def make(
    model: nn.Module,
    *,
    sigma: float = 1.0,
    clip: float = 1.0,
    batch: int = 8,
    data: torch.Tensor | None = None,
    seed: int = 0,
    secure: bool = False,
    **privacy: object,
) -> DpTrainer:
    pcfg = PrivacyConfig(
        enabled=True,
        noise_multiplier=sigma,
        max_grad_norm=clip,
        secure_rng=secure,
        unsafe_zero_noise=sigma == 0,  # known-answer tests of the clipping alone
        **privacy,  # type: ignore[arg-type]
    )
    tcfg = TrainConfig(batch_size=batch, lr=1e-2, total_steps=120)
    return DpTrainer(
        model, blocks() if data is None else data, tcfg, pcfg, torch.Generator().manual_seed(seed)
    )


def reference_clipped_mean(
    ref: nn.Module, data: torch.Tensor, idx: torch.Tensor, clip: float, expected_batch: int
) -> tuple[list[torch.Tensor], list[float]]:
    """Hand-written DP-SGD aggregate: Σ_i g_i · min(1, C/(‖g_i‖+1e-6)) / expected batch."""
    return clipped_sum(ref, data, [[i] for i in idx.tolist()], clip, expected_batch)


def clipped_sum(
    ref: nn.Module, data: torch.Tensor, groups: list[list[int]], clip: float, expected_batch: int
) -> tuple[list[torch.Tensor], list[float]]:
    """Σ_g clip_C(mean of group g's per-block gradients) / expected batch, one block at a time
    (Opacus's clip factor min(1, C/(‖g‖+1e-6))); and each group's gradient norm."""
    params = [p for p in ref.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for group in groups:
        mean = [torch.zeros_like(p) for p in params]
        for i in group:
            ref.zero_grad(set_to_none=True)
            per_example_lm_loss(ref, data[i : i + 1])[0].backward()
            for acc, p in zip(mean, params, strict=True):
                acc += p.grad.detach() / len(group)  # type: ignore[union-attr]
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in mean)))
        norms.append(norm)
        factor = min(1.0, clip / (norm + 1e-6))
        for acc, g in zip(total, mean, strict=True):
            acc += factor * g
    return [acc / expected_batch for acc in total], norms


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_dp_training_changes_the_adapter_and_the_model_output(arch: str) -> None:
    model = tiny_model(arch)
    trainer = make(model, sigma=0.5)
    probe = blocks(2, seed=9)
    before_state = adapter_state(model)
    with torch.no_grad():
        before_logits = model(input_ids=probe).logits

    trainer.train(3)

    after_state = adapter_state(model)
    changed = [n for n in before_state if not torch.equal(before_state[n], after_state[n])]
    assert len(changed) == len(before_state) > 0  # every LoRA A and B tensor moved
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=probe).logits, before_logits)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in trainer.optimizer.params} == trainable
    assert trainer.steps_done == 3


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("clip", [1e-3, 1e3], ids=["all-clipped", "none-clipped"])
def test_aggregate_equals_hand_written_per_example_clipping(arch: str, clip: float) -> None:
    model = tiny_model(arch, torch.float64)
    ref = copy.deepcopy(model)
    data = blocks()
    trainer = make(model, sigma=0.0, clip=clip, data=data)

    trainer.step()

    idx = trainer.last_batch
    assert idx.numel() > 1
    expected, norms = reference_clipped_mean(ref, data, idx, clip, trainer.expected_batch_size)
    if clip < 1:
        assert min(norms) > clip  # every example was clipped
    else:
        assert max(norms) < clip  # none was
    scale = max(float(e.abs().max()) for e in expected)
    err = max(
        float((p.grad - e).abs().max()) for p, e in zip(trainer.params, expected, strict=True)
    )  # type: ignore[operator]
    # GPT-2 runs fully in float64; Llama's RMSNorm and rotary embedding compute in float32 even in
    # a float64 model, and batched vs single-example float32 kernels round differently.
    tolerance = 1e-10 if arch == "gpt2" else 1e-6
    assert scale > 0
    assert err / scale < tolerance, f"relative error {err / scale:.2e}"


def test_aggregate_matches_in_float32_to_one_part_in_a_million() -> None:
    model = tiny_model("gpt2")
    ref = copy.deepcopy(model)
    data = blocks()
    trainer = make(model, sigma=0.0, clip=0.05, data=data)

    trainer.step()

    expected, _ = reference_clipped_mean(
        ref, data, trainer.last_batch, 0.05, trainer.expected_batch_size
    )
    scale = max(float(e.abs().max()) for e in expected)
    err = max(
        float((p.grad - e).abs().max()) for p, e in zip(trainer.params, expected, strict=True)
    )  # type: ignore[operator]
    assert err / scale < 1e-6, f"relative error {err / scale:.2e}"


def test_frozen_a_mode_trains_only_b_with_exact_clipping() -> None:
    model = tiny_model("gpt2", torch.float64, mode="frozen-a")
    ref = copy.deepcopy(model)
    data = blocks()
    a_before = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_A." in n}
    trainer = make(model, sigma=0.0, clip=1e-3, data=data)

    trainer.step()

    assert all(".lora_B." in n for n, p in model.named_parameters() if p.requires_grad)
    assert all(torch.equal(p, a_before[n]) for n, p in model.named_parameters() if n in a_before)
    expected, _ = reference_clipped_mean(
        ref, data, trainer.last_batch, 1e-3, trainer.expected_batch_size
    )
    scale = max(float(e.abs().max()) for e in expected)
    err = max(
        float((p.grad - e).abs().max()) for p, e in zip(trainer.params, expected, strict=True)
    )  # type: ignore[operator]
    assert err / scale < 1e-10


def test_optimizer_applies_adamw_to_the_private_gradient() -> None:
    model = tiny_model("gpt2")
    trainer = make(model, sigma=1.0)
    before = [p.detach().clone() for p in trainer.params]

    trainer.step()

    shadow = [p.clone().requires_grad_(True) for p in before]
    for s, p in zip(shadow, trainer.params, strict=True):
        s.grad = p.grad.detach().clone()  # type: ignore[union-attr]
    torch.optim.AdamW(shadow, lr=1e-2, weight_decay=0.0).step()
    for s, p in zip(shadow, trainer.params, strict=True):
        assert torch.allclose(s.detach(), p.detach(), rtol=0, atol=1e-7)


def noise_only_gradients(trainer: DpTrainer, steps: int) -> torch.Tensor:
    """Noise per coordinate of ``steps`` empty-batch steps (the data gradient is exactly zero)."""
    out = []
    for _ in range(steps):
        trainer._update(torch.empty(0, dtype=torch.long))
        out.append(torch.cat([p.grad.flatten() for p in trainer.params]))  # type: ignore[union-attr]
    return torch.cat(out).double()


@pytest.mark.parametrize("secure", [False, True], ids=["seeded", "os-urandom"])
def test_noise_std_is_sigma_times_clip_over_expected_batch(secure: bool) -> None:
    sigma, clip, batch = 1.5, 0.7, 4
    trainer = make(tiny_model("gpt2"), sigma=sigma, clip=clip, batch=batch, secure=secure)

    noise = noise_only_gradients(trainer, 3)  # ~12k coordinates

    expected = sigma * clip / batch
    assert noise.numel() > 10_000
    assert float(noise.std()) == pytest.approx(expected, rel=0.05)
    assert abs(float(noise.mean())) < 5 * expected / math.sqrt(noise.numel())


def test_noise_is_the_only_difference_between_sigma_and_zero() -> None:
    quiet = make(tiny_model("gpt2"), sigma=0.0, clip=0.5, seed=3)
    noisy = make(tiny_model("gpt2"), sigma=2.0, clip=0.5, seed=3)

    quiet.step()
    noisy.step()

    assert torch.equal(quiet.last_batch, noisy.last_batch)  # batches do not depend on σ
    diff = torch.cat(
        [(n.grad - q.grad).flatten() for n, q in zip(noisy.params, quiet.params, strict=True)]
    )  # type: ignore[operator]
    assert float(diff.std()) == pytest.approx(2.0 * 0.5 / 8, rel=0.06)


def test_empty_poisson_batches_are_noise_only_steps() -> None:
    data = blocks(200)
    trainer = make(tiny_model("gpt2"), sigma=1.0, batch=1, data=data)  # q = 1/200

    losses = trainer.train(12)

    sizes = []  # batch sizes are Binomial(200, 1/200): about a third of the steps are empty
    assert trainer.steps_done == 12
    assert any(math.isnan(v) for v in losses)
    assert all(math.isfinite(float(p.grad.abs().max())) for p in trainer.params)  # type: ignore[union-attr]
    for _ in range(2000):
        sizes.append(trainer._sample().numel())
    mean = sum(sizes) / len(sizes)
    assert mean == pytest.approx(1.0, abs=0.15)
    assert sizes.count(0) / len(sizes) == pytest.approx((1 - 1 / 200) ** 200, abs=0.05)


def test_sample_rate_delta_and_calibrated_sigma() -> None:
    data = blocks(400)
    pcfg = PrivacyConfig(enabled=True, target_epsilon=3.0, accountant="rdp")
    tcfg = TrainConfig(batch_size=8, total_steps=100, warmup_steps=20, local_steps=20)

    trainer = DpTrainer(tiny_model("gpt2"), data, tcfg, pcfg, torch.Generator().manual_seed(0))

    assert trainer.sample_rate == 8 / 400
    assert trainer.delta == 1 / 4000
    assert trainer.noise_multiplier == calibrate_noise_multiplier(
        target_epsilon=3.0, delta=1 / 4000, sample_rate=8 / 400, steps=100
    )


def test_configuration_errors() -> None:
    model = tiny_model("gpt2")
    gen = torch.Generator()
    tcfg = TrainConfig(total_steps=100, warmup_steps=20, local_steps=20)
    with pytest.raises(ConfigError, match="enabled"):
        DpTrainer(model, blocks(), tcfg, PrivacyConfig(), gen)
    with pytest.raises(ConfigError, match="delta"):
        DpTrainer(
            model,
            blocks(),
            tcfg,
            PrivacyConfig(enabled=True, noise_multiplier=1.0, delta=1 / 40),
            gen,
        )
    with pytest.raises(BudgetInfeasibleError):
        DpTrainer(model, blocks(), tcfg, PrivacyConfig(enabled=True, target_epsilon=0.005), gen)
    with pytest.raises(DataError):
        DpTrainer(
            model,
            torch.empty(0, T, dtype=torch.long),
            tcfg,
            PrivacyConfig(enabled=True, noise_multiplier=1.0),
            gen,
        )


def test_release_bookkeeping() -> None:
    trainer = make(tiny_model("gpt2"))
    trainer.train(3)

    event = trainer.pending_event(round=0, recipients=("peer-1",))
    trainer.mark_released(event)
    again = trainer.pending_event(round=0, released="signature")
    trainer.train(2)

    assert (event.mechanism, event.steps, event.sample_rate) == ("dp-sgd", 3, 8 / N)
    assert event.noise_multiplier == trainer.noise_multiplier
    assert again.steps == 0  # same model again: post-processing, 0 ε
    assert trainer.pending_event(round=1).steps == 2
    foreign = make(tiny_model("gpt2"), sigma=2.0).pending_event(round=0)
    with pytest.raises(PrivacyError):
        trainer.mark_released(foreign)


def test_state_dict_restores_a_reproducible_run() -> None:
    model = tiny_model("gpt2")
    trainer = make(model, sigma=1.0)
    trainer.train(2)
    snapshot = (adapter_state(model), copy.deepcopy(trainer.state_dict()))
    trainer.train(2)
    first = adapter_state(model)

    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in snapshot[0]:
                p.copy_(snapshot[0][n])
    trainer.load_state_dict(snapshot[1])
    trainer.train(2)

    assert all(torch.equal(first[n], t) for n, t in adapter_state(model).items())
    assert trainer.steps_done == 4


def test_secure_rng_noise_is_not_reproducible_from_the_seed() -> None:
    a = make(tiny_model("gpt2"), secure=True, seed=5)
    b = make(tiny_model("gpt2"), secure=True, seed=5)

    assert isinstance(a.optimizer.source, OsUrandomSource)
    assert not torch.equal(noise_only_gradients(a, 1), noise_only_gradients(b, 1))


def test_same_interface_as_local_trainer() -> None:
    dp = make(tiny_model("gpt2"))
    local = LocalTrainer(tiny_model("gpt2"), blocks(), TrainConfig(), torch.Generator())

    for name in (
        "step",
        "train",
        "steps_done",
        "state_dict",
        "load_state_dict",
        "optimizer",
        "model",
        "blocks",
    ):
        assert hasattr(dp, name) and hasattr(local, name)
    assert isinstance(dp.train(1)[0], float)


def test_the_seeded_prng_warning_is_logged_once_per_process(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import secure_pcft.privacy.dp_trainer as dp

    monkeypatch.setattr(dp, "_SEEDED_WARNED", False)
    with caplog.at_level("WARNING", logger="secure_pcft.privacy.dp_trainer"):
        for seed in range(3):  # one trainer per peer, as a run builds them
            make(tiny_model("gpt2"), seed=seed)
        make(tiny_model("gpt2"), secure=True)
    assert sum("seeded PRNG" in r.getMessage() for r in caplog.records) == 1


def test_a_registered_accountant_is_usable_from_toml_and_an_unknown_one_is_refused_where_used(
    tmp_path: Path,
) -> None:
    """``[privacy] accountant`` names any registered accountant; the name is checked when a DP
    trainer is built, with a typed error (not at a fixed list in the config)."""
    register_accountant("test-rdp-doubled", lambda history, delta: 2 * epsilon_spent(
        [DpEvent("dp-sgd", s, q, n, 0, "t") for s, q, n in history], delta, "rdp"
    ), force=True)  # fmt: skip
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[privacy]\nenabled = true\ntarget_epsilon = 3.0\naccountant = "test-rdp-doubled"\n'
    )
    pcfg = load_config(toml).privacy
    tcfg = TrainConfig(batch_size=8, total_steps=100, warmup_steps=20, local_steps=20)
    gen = torch.Generator().manual_seed(0)
    trainer = DpTrainer(tiny_model("gpt2"), blocks(400), tcfg, pcfg, gen)
    plain_rdp = calibrate_noise_multiplier(
        target_epsilon=3.0, delta=1 / 4000, sample_rate=8 / 400, steps=100
    )
    assert trainer.noise_multiplier > plain_rdp  # calibrated with the doubled ε
    for bad in ("nope", "RDP"):
        with pytest.raises(ConfigError, match="accountant"):
            cfg = dataclasses.replace(pcfg, accountant=bad)
            DpTrainer(tiny_model("gpt2"), blocks(400), tcfg, cfg, gen)


# ---- privacy units: documents and data subjects ---------------------------------------------

# 12 units of 1..6 blocks over the N = 40 blocks (unit u holds blocks of consecutive indices)
UNIT_SIZES = [1, 6, 2, 5, 3, 4, 1, 6, 2, 4, 3, 3]
UNITS = torch.repeat_interleave(torch.arange(len(UNIT_SIZES)), torch.tensor(UNIT_SIZES))


def padded_blocks(seed: int = 0) -> torch.Tensor:
    """blocks() whose every third block ends in 5 padding positions (a document's last block)."""
    data = blocks(seed=seed).clone()
    data[::3, -5:] = PAD
    return data


def make_units(model: nn.Module, *, unit: str = "document", **kw: object) -> DpTrainer:
    sigma, clip = float(kw.pop("sigma", 0.0)), float(kw.pop("clip", 1.0))  # type: ignore[arg-type]
    pcfg = PrivacyConfig(
        enabled=True, noise_multiplier=sigma, max_grad_norm=clip, unit=unit,  # type: ignore[arg-type]
        unsafe_zero_noise=sigma == 0, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    tcfg = TrainConfig(batch_size=4, lr=1e-2, total_steps=120)
    return DpTrainer(
        model, padded_blocks(), tcfg, pcfg, torch.Generator().manual_seed(3), units=UNITS
    )


def hand_written_unit_aggregate(
    ref: nn.Module, data: torch.Tensor, used: torch.Tensor, clip: float, expected_batch: int
) -> tuple[list[torch.Tensor], list[float]]:
    """Σ_u clip_C( mean of unit u's per-block gradients ) / expected batch, one block at a time."""
    sampled = dict.fromkeys(UNITS[used].tolist())  # the sampled units, in order
    groups = [[i for i in used.tolist() if UNITS[i] == u] for u in sampled]
    return clipped_sum(ref, data, groups, clip, expected_batch)


@pytest.mark.parametrize("clip", [1e-3, 1e3], ids=["all-clipped", "none-clipped"])
def test_each_document_contributes_one_clipped_gradient(clip: float) -> None:
    model = tiny_model("gpt2", torch.float64)
    ref = copy.deepcopy(model)
    trainer = make_units(model, clip=clip)

    trainer.step()

    used = trainer.last_batch
    assert UNITS[used].unique().numel() > 1  # several documents, some of several blocks
    expected, norms = hand_written_unit_aggregate(
        ref, padded_blocks(), used, clip, trainer.expected_batch_size
    )
    if clip < 1:
        assert min(norms) > clip  # every document's gradient was clipped to C
    else:
        assert max(norms) < clip
    scale = max(float(e.abs().max()) for e in expected)
    err = max(
        float((p.grad - e).abs().max()) for p, e in zip(trainer.params, expected, strict=True)
    )  # type: ignore[operator]
    assert scale > 0 and err / scale < 1e-10, f"relative error {err / scale:.2e}"


def test_a_documents_whole_contribution_is_bounded_by_the_clip_norm() -> None:
    """With one document sampled alone and noise off, the step's summed gradient has norm ≤ C
    however many blocks the document has (the bound DP's sensitivity rests on)."""
    clip = 1e-3
    trainer = make_units(tiny_model("gpt2", torch.float64), clip=clip)
    big = int(torch.argmax(torch.tensor(UNIT_SIZES)))
    trainer._update(torch.tensor([big]))
    summed = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in trainer.params))  # type: ignore[union-attr]
    assert float(summed) * trainer.expected_batch_size <= clip * (1 + 1e-9)
    assert float(summed) * trainer.expected_batch_size == pytest.approx(clip, rel=1e-4)


def test_a_large_unit_contributes_a_fresh_random_subset_of_at_most_max_unit_blocks() -> None:
    trainer = make_units(tiny_model("gpt2"), max_unit_blocks=2)
    big = int(torch.argmax(torch.tensor(UNIT_SIZES)))  # 6 blocks
    seen = set()
    for _ in range(6):
        trainer._update(torch.tensor([big]))
        assert trainer.last_batch.numel() == 2 and bool((UNITS[trainer.last_batch] == big).all())
        seen.add(tuple(sorted(trainer.last_batch.tolist())))
    assert len(seen) > 1


def test_an_empty_poisson_batch_of_units_is_a_noise_only_step() -> None:
    trainer = make_units(tiny_model("gpt2"), sigma=1.0)
    before = [p.detach().clone() for p in trainer.params]
    assert math.isnan(trainer._update(torch.empty(0, dtype=torch.long)))
    assert trainer.last_batch.numel() == 0 and trainer.steps_done == 1
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.params, strict=True))


def test_units_are_sampled_and_accounted_as_units() -> None:
    pcfg = PrivacyConfig(enabled=True, target_epsilon=8.0, accountant="gdp", unit="document")
    tcfg = TrainConfig(batch_size=4, total_steps=100, warmup_steps=20, local_steps=20)
    trainer = DpTrainer(
        tiny_model("gpt2"), padded_blocks(), tcfg, pcfg, torch.Generator().manual_seed(0),
        units=UNITS,
    )  # fmt: skip
    units = len(UNIT_SIZES)
    assert (trainer.num_units, trainer.sample_rate) == (units, 4 / units)
    assert trainer.delta == 1 / (10 * units)
    counts = [trainer._sample().numel() for _ in range(3000)]
    assert sum(counts) / len(counts) == pytest.approx(4.0, abs=0.15)  # Poisson over 12 units
    # ε of the planned run against an independent μ-GDP computation at q = units per step / units
    sigma, q, steps = trainer.noise_multiplier, 4 / units, 100
    mu = q * math.sqrt(steps * (math.exp(sigma**-2) - 1))

    def delta_of(eps: float) -> float:
        phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
        return phi(-eps / mu + mu / 2) - math.exp(eps) * phi(-eps / mu - mu / 2)

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_of(mid) > trainer.delta else (lo, mid)
    eps = epsilon_spent([trainer.planned_event()], trainer.delta, "gdp")
    assert eps == pytest.approx(hi, rel=1e-6)
    assert eps == pytest.approx(8.0, rel=1e-2)  # calibrated for the target over units


def test_unit_configuration_errors() -> None:
    model = tiny_model("gpt2")
    tcfg = TrainConfig(total_steps=100, warmup_steps=20, local_steps=20)
    doc = PrivacyConfig(enabled=True, noise_multiplier=1.0, unit="document")
    gen = torch.Generator()
    with pytest.raises(ConfigError, match="unit"):
        DpTrainer(model, blocks(), tcfg, doc, gen)  # a document unit needs the blocks' units
    with pytest.raises(ConfigError, match="unit"):
        DpTrainer(model, blocks(), tcfg, PrivacyConfig(enabled=True, noise_multiplier=1.0), gen,
                  units=UNITS)  # fmt: skip
    with pytest.raises(DataError, match="tag each"):
        DpTrainer(model, blocks(), tcfg, doc, gen, units=UNITS[:-1])
    with pytest.raises(DataError, match="number every unit"):
        DpTrainer(model, blocks(), tcfg, doc, gen, units=UNITS * 2)  # odd numbers unused
    with pytest.raises(ConfigError, match="delta"):
        DpTrainer(model, blocks(), tcfg, dataclasses.replace(doc, delta=0.09), gen, units=UNITS)
    with pytest.raises(ConfigError, match="unit"):
        PrivacyConfig(unit="paragraph")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_unit_blocks"):
        PrivacyConfig(max_unit_blocks=0)


def test_padding_is_never_a_target() -> None:
    """A padded block's loss is the loss of its real tokens alone."""
    model = tiny_model("gpt2", torch.float64)
    row = blocks(1, seed=4)
    padded = row.clone()
    padded[0, -5:] = PAD
    with torch.no_grad():
        short = per_example_lm_loss(model, row[:, :-5])
        assert float(per_example_lm_loss(model, padded)[0]) == pytest.approx(float(short[0]))
        assert float(per_example_lm_loss(model, row)[0]) != pytest.approx(float(short[0]))
