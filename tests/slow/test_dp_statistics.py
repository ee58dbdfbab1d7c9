"""Statistical audits of the DP mechanisms (run with ``-m slow``; fast versions live in tests/unit).

- DP-SGD noise: per-coordinate std σ·C/B_expected to 1 %, zero mean, Gaussian shape (KS test,
  kurtosis), for the seeded and the OS-CSPRNG sources.
- DP-SGD clipping over many real batches: the noiseless aggregate never exceeds |B|·C/B_expected
  and equals the hand-written per-example loop at every step.
- Validation mechanism: noisy scores are N(mean, (σ·C/n)²).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy import stats
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from secure_pcft.config import LoraSettings, PrivacyConfig, TrainConfig
from secure_pcft.model.lora import attach_lora
from secure_pcft.privacy import DpTrainer, noisy_validation_scores, per_example_lm_loss

pytestmark = pytest.mark.slow
VOCAB, T = 128, 16


@pytest.fixture(autouse=True)
def _only_when_selected(request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")


def model(width: int = 64) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=VOCAB, n_positions=32, n_embd=width, n_layer=2, n_head=2,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
            )
        )  # fmt: skip
    m = attach_lora(base, LoraSettings(dropout=0.0), peer_seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    return m


def trainer(
    m: nn.Module, sigma: float, clip: float, batch: int, secure: bool = False, n: int = 200
) -> DpTrainer:
    data = torch.randint(0, VOCAB, (n, T), generator=torch.Generator().manual_seed(0))
    pcfg = PrivacyConfig(
        enabled=True, noise_multiplier=sigma, max_grad_norm=clip, secure_rng=secure
    )
    return DpTrainer(m, data, TrainConfig(batch_size=batch), pcfg, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("secure", [False, True], ids=["seeded", "os-urandom"])
def test_dp_sgd_noise_is_gaussian_with_the_configured_scale(secure: bool) -> None:
    sigma, clip, batch = 1.3, 0.8, 8
    tr = trainer(model(), sigma, clip, batch, secure)
    samples = []
    for _ in range(30):  # empty batches: the data gradient is exactly zero
        tr._update(torch.empty(0, dtype=torch.long))
        samples.append(torch.cat([p.grad.flatten() for p in tr.params]))  # type: ignore[union-attr]
    z = torch.cat(samples).double() / (sigma * clip / batch)

    assert z.numel() > 200_000
    assert float(z.std()) == pytest.approx(1.0, rel=0.01)
    assert abs(float(z.mean())) < 5 / math.sqrt(z.numel())
    assert float(stats.kurtosis(z.numpy(), fisher=False)) == pytest.approx(3.0, abs=0.05)
    assert stats.kstest(z[:50_000].numpy(), "norm").pvalue > 1e-4


def test_noise_over_real_batches_is_independent_of_the_data() -> None:
    quiet, noisy = trainer(model(), 0.0, 0.5, 8), trainer(model(), 2.0, 0.5, 8)
    diffs = []
    for _ in range(20):
        quiet.step()
        noisy.step()
        assert torch.equal(quiet.last_batch, noisy.last_batch)
        diffs.append(
            torch.cat(
                [
                    (a.grad - b.grad).flatten()
                    for a, b in zip(noisy.params, quiet.params, strict=True)
                ]
            )
        )  # type: ignore[operator]
        # keep both models identical so the next data gradients match
        with torch.no_grad():
            for a, b in zip(noisy.params, quiet.params, strict=True):
                a.copy_(b)
    d = torch.cat(diffs).double()

    assert float(d.std()) == pytest.approx(2.0 * 0.5 / 8, rel=0.01)


def test_clipping_holds_and_matches_the_reference_on_many_batches() -> None:
    m = model(32).double()
    ref = copy.deepcopy(m)
    tr = trainer(m, 0.0, 0.02, 6, n=60)
    ref_params = [p for p in ref.parameters() if p.requires_grad]
    worst = 0.0
    for _ in range(15):
        with torch.no_grad():
            for r, p in zip(ref_params, tr.params, strict=True):
                r.copy_(p)
        tr.step()
        idx = tr.last_batch
        expected = [torch.zeros_like(p) for p in ref_params]
        for i in idx.tolist():
            ref.zero_grad(set_to_none=True)
            per_example_lm_loss(ref, tr.blocks[i : i + 1])[0].backward()
            g = [p.grad.detach() for p in ref_params]  # type: ignore[union-attr]
            norm = float(torch.sqrt(sum((x**2).sum() for x in g)))
            for e, x in zip(expected, g, strict=True):
                e += min(1.0, 0.02 / (norm + 1e-6)) * x / tr.expected_batch_size
        got = torch.cat([p.grad.flatten() for p in tr.params])  # type: ignore[union-attr]
        want = torch.cat([e.flatten() for e in expected])
        assert float(got.norm()) <= idx.numel() * 0.02 / tr.expected_batch_size + 1e-12
        if idx.numel():
            worst = max(worst, float((got - want).abs().max() / want.abs().max()))
    assert worst < 1e-10


def test_validation_noise_is_gaussian_with_std_sigma_clip_over_n() -> None:
    sigma, clip, n = 3.0, 8.0, 40
    losses = {j: torch.full((n,), 4.0) for j in range(50_000)}
    cfg = PrivacyConfig(
        validation_noise_multiplier=sigma, validation_loss_clip=clip, secure_rng=True
    )

    out = noisy_validation_scores(losses, cfg, round=0)

    z = (torch.tensor(list(out.losses.values()), dtype=torch.float64) - 4.0) / (sigma * clip / n)
    assert float(z.std()) == pytest.approx(1.0, rel=0.01)
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-4
