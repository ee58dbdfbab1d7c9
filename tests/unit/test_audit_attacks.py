"""Attacks on real (tiny) training runs: power on an overfit non-DP adapter, chance under DP,
sound ε lower bounds, token recovery from a single-step update, and the attack registry.

The base is a 64-wide, 2-layer GPT-2 *pretrained for a few seconds* on the fixture's domain
sentences (and digit strings): a random GPT-2 cannot be fitted through LoRA at all (its tiny tied
embeddings cap every logit), so it would make every attack look powerless. Dropout is off in the
base, as in the toolkit's own small base. Larger, statistical versions: tests/slow/test_audit_power.py.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from secure_pcft.audit import (
    Attack,
    AttackResult,
    AuditTarget,
    CanarySpec,
    Recipe,
    TargetSpec,
    attack_names,
    build_target,
    capture_update,
    make_attack,
    register_attack,
)
from secure_pcft.audit.mia_signature_twin import locate_rows
from secure_pcft.config import DataConfig, LoraSettings, PrivacyConfig, RunConfig, TrainConfig
from secure_pcft.data.blocks import encode_blocks
from secure_pcft.data.corpus import Federation, PeerCorpus
from secure_pcft.errors import AuditError, ConfigError, RegistryError
from secure_pcft.model.loading import BaseModel, load_base
from tests.conftest import _sentences, build_tiny_base

BLOCK = 16


@functools.cache
def audit_base_dir() -> Path:
    """Build (once per process) the tiny *pretrained* base the audit tests share."""
    directory = Path(tempfile.mkdtemp(prefix="audit-base-"))
    atexit.register(shutil.rmtree, directory, True)
    build_tiny_base(directory)  # tokenizer (and a random model we replace)
    base = load_base(directory)
    tok = base.tokenizer
    texts = [s for d in ("a", "b", "c") for s in _sentences(d, 200, 7)]
    g = torch.Generator().manual_seed(3)
    digits = ["-".join(str(int(x)) for x in torch.randint(0, 10, (6,), generator=g)) for _ in texts]
    texts = [
        f"{t} number {d}" if i % 2 else t
        for i, (t, d) in enumerate(zip(texts, digits, strict=True))
    ]
    stream = torch.tensor(
        [
            i
            for ids in tok(texts, add_special_tokens=False)["input_ids"]
            for i in (*ids, tok.eos_token_id)
        ]
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = GPT2Config(
            vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=2, n_head=2,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        )  # fmt: skip
        model = GPT2LMHeadModel(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(120):
            starts = torch.randint(0, len(stream) - 32, (16,), generator=g)
            batch = torch.stack([stream[int(i) : int(i) + 32] for i in starts])
            opt.zero_grad()
            model(input_ids=batch, labels=batch).loss.backward()
            opt.step()
    model.save_pretrained(directory)
    return directory


def audit_federation(docs: int = 48) -> Federation:
    """Two peers of domain "a" (target + attacker's population), disjoint sentences."""
    peers = []
    for i in range(2):
        s = _sentences("a", 2 * docs, seed=300 + i)
        peers.append(
            PeerCorpus(
                f"p{i}",
                tuple(s[:docs]),
                tuple(s[docs : docs + docs // 2]),
                tuple(s[docs + docs // 2 :]),
                {"a": 1.0},
            )
        )
    return Federation(tuple(peers), tuple(_sentences("b", 40, 5)), ("a",), "audit test federation")


def run_config(*, dp_epsilon: float | None = None, steps: int = 100, batch: int = 32) -> RunConfig:
    privacy = (
        PrivacyConfig(enabled=True, target_epsilon=dp_epsilon) if dp_epsilon else PrivacyConfig()
    )
    return RunConfig(
        lora=LoraSettings(r=8, dropout=0.0),
        data=DataConfig(block_size=BLOCK),
        train=TrainConfig(batch_size=batch, lr=5e-3, warmup_steps=0, total_steps=steps),
        privacy=privacy,
    )


@pytest.fixture(scope="module")
def base() -> BaseModel:
    return load_base(audit_base_dir())


@pytest.fixture(scope="module")
def overfit_target(base: BaseModel) -> AuditTarget:
    """Non-DP, ~100 epochs of full-batch AdamW on ~30 blocks, with 4 digit canaries x 8 copies."""
    canaries = CanarySpec(count=4, copies=8, digits=4, prefix="number", candidates=300)
    spec = TargetSpec(run=run_config(steps=100, batch=64), canaries=canaries)
    return build_target(spec, base, audit_federation(), seed=1)


@pytest.fixture(scope="module")
def dp_target(base: BaseModel) -> AuditTarget:
    """DP-SGD at ε = 1 (δ = 1/(10 N)), with 48 random-token canaries, each in with probability ½."""
    canaries = CanarySpec(kind="tokens", length=8, count=48, copies=1, inclusion=0.5, candidates=50)
    spec = TargetSpec(run=run_config(dp_epsilon=1.0, steps=30, batch=8), canaries=canaries)
    return build_target(spec, base, audit_federation(), seed=2)


# ---------------------------------------------------------------------------- power (non-DP)


@pytest.mark.parametrize("name", ["loss", "reference"])
def test_membership_inference_detects_an_overfit_non_dp_adapter(
    overfit_target: AuditTarget, name: str
) -> None:
    result = make_attack(name).run(overfit_target, np.random.default_rng(0))

    assert result.metrics["roc_auc"] >= 0.9
    assert result.metrics["n_members"] >= 20 and result.metrics["n_nonmembers"] >= 20
    assert "TM-01" in result.threat_models


def test_inserted_canaries_are_exposed_and_ranked_above_fresh_secrets(
    overfit_target: AuditTarget,
) -> None:
    result = make_attack("canary").run(overfit_target, np.random.default_rng(0))

    m = result.metrics
    assert m["exposure_bits"] >= 4.0  # ≥ 16x more likely than a random 4-digit secret
    assert m["exposure_bits"] > m["exposure_bits_not_inserted"] + 2.0
    assert m["roc_auc"] >= 0.9
    assert m["extraction_rate_not_inserted"] == 0.0


def test_results_serialise_to_json_without_private_text(overfit_target: AuditTarget) -> None:
    result = make_attack("canary").run(overfit_target, np.random.default_rng(0))

    text = json.dumps(result.to_dict(include_scores=True))

    assert "serial" not in text and "plant" not in text  # no prefix, no training text
    assert json.loads(text)["metrics"]["roc_auc"] == pytest.approx(result.metrics["roc_auc"])


# ---------------------------------------------------------------------------- DP


def test_membership_inference_is_near_chance_under_dp_with_small_epsilon(
    dp_target: AuditTarget,
) -> None:
    assert dp_target.epsilon == pytest.approx(1.0, abs=0.05)

    for name in ("loss", "reference"):
        result = make_attack(name).run(dp_target, np.random.default_rng(0))
        assert abs(result.metrics["roc_auc"] - 0.5) <= 0.15, name


def test_one_run_epsilon_lower_bound_never_exceeds_the_accountants_epsilon(
    dp_target: AuditTarget,
) -> None:
    attack = make_attack("one-run-epsilon", guesses=[[12, 12], [4, 4], [24, 0]])

    result = attack.run(dp_target, np.random.default_rng(0))

    m = result.metrics
    assert m["epsilon"] == pytest.approx(dp_target.epsilon)
    assert 0.0 <= m["epsilon_lb"] <= m["epsilon"]
    assert m["sound"] == 1.0
    assert m["canaries"] == 48 and 0 < m["canaries_included"] < 48


def test_one_run_audit_refuses_canaries_that_are_not_fair_single_units(
    overfit_target: AuditTarget,
) -> None:
    with pytest.raises(AuditError, match=r"inclusion = 0\.5 and copies = 1"):
        make_attack("one-run-epsilon").run(overfit_target, np.random.default_rng(0))


# ---------------------------------------------------------------------------- reconstruction


def _update_target(
    base: BaseModel,
    *,
    lora: dict[str, object] | None = None,
    privacy: PrivacyConfig | None = None,
    **kw: object,
) -> tuple[AuditTarget, torch.Tensor]:
    """One observed update on the first 16-token block of the target peer (LoRA r = 16, no dropout
    unless ``lora`` says otherwise), after 5 warm-up steps on its other blocks."""
    blocks = encode_blocks(audit_federation().peers[0].train, base.tokenizer, BLOCK)
    settings = LoraSettings(**{"r": 16, "dropout": 0.0, **(lora or {})})  # type: ignore[arg-type]
    recipe = Recipe(settings, TrainConfig(batch_size=8, lr=5e-3), privacy or PrivacyConfig())
    batch = blocks[:1]
    update = capture_update(base, batch, blocks[1:], recipe, warm_steps=5, seed=0, **kw)  # type: ignore[arg-type]
    empty = blocks[:0]
    return AuditTarget(base, recipe, None, empty, empty, empty, empty, update=update), batch


def test_span_test_recovers_the_tokens_of_a_single_sgd_step(base: BaseModel) -> None:
    target, _ = _update_target(base, optimizer="sgd", lr=0.1)

    result = make_attack("span-reconstruction").run(target, np.random.default_rng(0))

    m = result.metrics
    assert m["token_precision"] == 1.0
    assert m["token_recall"] >= 0.8  # the last position is invisible at layer 0
    assert m["sequence_token_accuracy"] >= 0.9
    assert m["roc_auc"] >= 0.99


def test_span_test_finds_no_exact_tokens_after_an_adamw_step(base: BaseModel) -> None:
    target, _ = _update_target(base, optimizer="adamw", lr=5e-3)

    result = make_attack("span-reconstruction").run(target, np.random.default_rng(0))

    assert result.metrics["token_recall"] <= 0.2  # sign-like Adam step breaks the span


def test_span_test_needs_an_update(overfit_target: AuditTarget) -> None:
    with pytest.raises(AuditError, match="observed update"):
        make_attack("span-reconstruction").run(overfit_target, np.random.default_rng(0))


# ---------------------------------------------------------------------------- registry


def test_registry_lists_every_builtin_attack() -> None:
    assert set(attack_names()) >= {
        "loss", "reference", "lira-offline", "rmia", "signature-mia", "signature-twin-mia",
        "canary", "one-run-epsilon", "span-reconstruction",
    }  # fmt: skip


def test_registry_refuses_a_silent_overwrite_and_allows_force() -> None:
    class Fake(Attack):
        name = "loss"
        threat_models = ("TM-01",)

        def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
            raise NotImplementedError

    original = type(make_attack("loss"))
    with pytest.raises(RegistryError, match="already registered"):
        register_attack(Fake)
    try:
        register_attack(Fake, force=True)
        assert isinstance(make_attack("loss"), Fake)
    finally:
        register_attack(original, force=True)
    assert type(make_attack("loss")) is original


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("no-such-attack", {}, "unknown attack"),
        ("loss", {"shadows": 2}, "takes no arguments"),
        ("lira-offline", {"shadows": 0}, "shadows"),
        ("reference", {"reference": "oracle"}, "reference"),
        ("signature-mia", {"observation": "logits"}, "observation"),
        ("signature-twin-mia", {"observation": "logits"}, "observation"),
        ("signature-twin-mia", {"known_seed": 1}, "known_seed"),
        ("signature-twin-mia", {"group_size": 0}, "group_size"),
        ("one-run-epsilon", {"guesses": [[1, 2, 3]]}, "guesses"),
        ("span-reconstruction", {"threshold": 2.0}, "threshold"),
    ],
)
def test_bad_attack_names_and_parameters_raise_config_errors(
    name: str, params: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        make_attack(name, **params)


def test_every_attack_docstring_names_the_threat_models_it_measures() -> None:
    for name in attack_names():
        cls = type(make_attack(name))
        assert cls.threat_models and all(t in (cls.__doc__ or "") for t in cls.threat_models)


def test_lira_and_rmia_run_on_shadows_trained_with_the_targets_recipe(base: BaseModel) -> None:
    """Smoke only (2 cheap shadows); their power is measured in tests/slow."""
    spec = TargetSpec(run=run_config(steps=4, batch=8), max_candidates=6)
    target = build_target(spec, base, audit_federation(), seed=3)

    for name in ("lira-offline", "rmia"):
        result = make_attack(name, shadows=2).run(target, np.random.default_rng(0))
        assert result.metrics["n_members"] == 6
        assert 0.0 <= result.metrics["roc_auc"] <= 1.0
    assert len(target.shadows) == 2  # shared between the two attacks
    assert not math.isnan(result.metrics["tpr_at_1pct_fpr"])


# ---------------------------------------------------------------------- signature twins


def test_signature_twin_score_is_positive_at_the_twin_with_the_set() -> None:
    attack = make_attack("signature-twin-mia")
    rng = np.random.default_rng(0)
    w, o = np.array([1.0, 2.0, 0.0]), np.array([0.0, 2.0, 1.0])
    assert attack._score(w, w, o, rng) == pytest.approx(np.sqrt(2) / 2)
    assert attack._score(o, w, o, rng) == pytest.approx(-np.sqrt(2) / 2)
    assert attack._score((w + o) / 2 + np.array([0.0, 5.0, 0.0]), w, o, rng) == pytest.approx(0)
    assert attack._score(w, w, w, rng) == 0.0  # a set that moves nothing is no evidence


def test_signature_twin_game_finds_the_overfit_targets_sets(overfit_target: AuditTarget) -> None:
    """With the target's seed and an overfit target the pairs are oriented the right way: members
    sit nearer their ``with`` twin than non-members do. The first, biased design of the game scored
    0.06 and 0.0 here; the fixed one 0.78 / 0.69 (signature / similarity, 6 + 6 sets) in the
    environment of 2026-12-03 and 0.58 / 0.58 in a fresh one of 2026-12-04 (0.59 / 0.56 with 12 +
    12 sets): the signal on this tiny target is weak and moves with the numerics of the libraries,
    so the test asserts the orientation (better than chance), which the biased design failed by
    far. Both observations play the same game on the same twins (trained once, cached)."""
    target = dataclasses.replace(overfit_target, twins={})
    for observation in ("signature", "similarity"):
        attack = make_attack(
            "signature-twin-mia", observation=observation, group_size=2, max_groups=6,
            known_seed=True,
        )  # fmt: skip
        result = attack.run(target, np.random.default_rng(0))
        assert len(result.member_scores) == 6 and len(result.nonmember_scores) == 6
        assert result.metrics["roc_auc"] > 0.5, observation
        assert result.metrics["twin_runs"] == 24.0
        assert len(target.twins) == 24  # the second observation trained nothing new


def test_signature_twin_game_needs_the_training_data(overfit_target: AuditTarget) -> None:
    attack = make_attack("signature-twin-mia", group_size=2, max_groups=1)
    without = dataclasses.replace(overfit_target, train_blocks=None)
    with pytest.raises(AuditError, match="training data"):
        attack.run(without, np.random.default_rng(0))


def test_locate_rows_finds_each_row_once_and_refuses_a_stranger() -> None:
    data = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 6]])
    assert locate_rows(data, torch.tensor([[1, 2], [1, 2], [5, 6]])) == [0, 2, 3]
    with pytest.raises(AuditError, match="not in the target"):
        locate_rows(data, torch.tensor([[1, 2], [1, 2], [1, 2]]))
