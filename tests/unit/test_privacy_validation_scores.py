"""The accounted validation mechanism: clipping, noise scale, sensitivity, and its ledger event."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from secure_pcft.config import LoraSettings, PrivacyConfig
from secure_pcft.errors import ConfigError, PrivacyError
from secure_pcft.model.lora import attach_lora
from secure_pcft.privacy import noisy_validation_scores, validation_losses
from secure_pcft.train.evaluate import evaluate_lm

TINY_SIGMA = 1e-12  # the config needs σ > 0; this makes the noise negligible


def cfg(sigma: float = 2.0, clip: float = 10.0, secure: bool = False) -> PrivacyConfig:
    return PrivacyConfig(
        validation_noise_multiplier=sigma, validation_loss_clip=clip, secure_rng=secure
    )


def test_losses_are_clipped_to_zero_and_clip_before_averaging() -> None:
    losses = {7: torch.tensor([0.5, 20.0, math.nan, -1.0]), 9: torch.tensor([1.0, 2.0, 3.0, 4.0])}

    out = noisy_validation_scores(losses, cfg(TINY_SIGMA), round=3, generator=torch.Generator())

    assert out.losses[7] == pytest.approx((0.5 + 10.0 + 10.0 + 0.0) / 4)
    assert out.losses[9] == pytest.approx(2.5)
    assert out.perplexities[9] == pytest.approx(math.exp(2.5))


def test_event_records_the_gaussian_mechanism_per_candidate() -> None:
    losses = {j: torch.full((16,), 3.0) for j in range(3)}

    event = noisy_validation_scores(losses, cfg(2.5), round=4, generator=torch.Generator()).event

    assert (event.mechanism, event.noise_multiplier, event.sample_rate) == (
        "gaussian-validation",
        2.5,
        1.0,
    )
    assert (event.steps, event.round, event.released, event.recipients) == (
        3,
        4,
        "validation-scores",
        (),
    )


@pytest.mark.parametrize("secure", [False, True], ids=["seeded", "os-urandom"])
def test_noise_std_is_sigma_clip_over_n(secure: bool) -> None:
    sigma, clip, n = 2.0, 10.0, 50
    losses = {j: torch.full((n,), 5.0) for j in range(4000)}

    out = noisy_validation_scores(
        losses, cfg(sigma, clip, secure), round=0, generator=torch.Generator().manual_seed(0)
    )

    values = torch.tensor(list(out.losses.values()), dtype=torch.float64)
    assert float(values.std()) == pytest.approx(sigma * clip / n, rel=0.05)
    assert float(values.mean()) == pytest.approx(5.0, abs=4 * sigma * clip / n / math.sqrt(4000))


def test_replacing_one_example_moves_the_noiseless_score_by_at_most_clip_over_n() -> None:
    gen = torch.Generator().manual_seed(1)
    clip, n = 10.0, 20
    for _ in range(200):
        base = torch.rand(n, generator=gen) * 30 - 5
        other = base.clone()
        other[int(torch.randint(n, (1,), generator=gen))] = float(
            torch.rand(1, generator=gen) * 1e3 - 500
        )

        out = noisy_validation_scores(
            {0: base, 1: other}, cfg(TINY_SIGMA, clip), round=0, generator=gen
        )

        assert abs(out.losses[0] - out.losses[1]) <= clip / n + 1e-9


def test_misuse_is_refused() -> None:
    with pytest.raises(PrivacyError, match="no candidates"):
        noisy_validation_scores({}, cfg(), round=0, generator=torch.Generator())
    with pytest.raises(PrivacyError, match="same n"):
        noisy_validation_scores(
            {0: torch.ones(3), 1: torch.ones(4)}, cfg(), round=0, generator=torch.Generator()
        )
    with pytest.raises(ConfigError, match="generator"):
        noisy_validation_scores({0: torch.ones(3)}, cfg(), round=0)


def test_per_block_losses_agree_with_the_evaluator_and_keep_the_mode() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = GPT2LMHeadModel(
            GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)
        )
    model = attach_lora(base, LoraSettings(), peer_seed=0)
    model.train()
    val = torch.randint(0, 64, (10, 12), generator=torch.Generator().manual_seed(2))

    per_block = validation_losses(model, val, batch_size=4)

    assert per_block.shape == (10,)
    assert model.training
    assert float(per_block.mean()) == pytest.approx(evaluate_lm(model, val).loss, rel=1e-5)
    assert validation_losses(model, val, max_blocks=3).shape == (3,)
