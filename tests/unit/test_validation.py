"""Config field checks: one helper, one message shape ``[section] field: what``, for every config."""

from __future__ import annotations

import math

import pytest

from secure_pcft.audit.attack import require_positive_int
from secure_pcft.audit.campaign import UpdateSpec
from secure_pcft.audit.canaries import CanarySpec
from secure_pcft.audit.updates import UPDATE_OPTIMIZERS, capture_update
from secure_pcft.config import DataConfig, SecurityConfig
from secure_pcft.errors import ConfigError
from secure_pcft.model.small_base import TINY_SMALL_BASE, SmallBaseSpec
from secure_pcft.validation import is_int, require, require_int


def test_require_passes_silently_and_fails_with_section_field_and_unit() -> None:
    require(True, "data", "block_size", "tokens in [8, 4096]")

    with pytest.raises(ConfigError) as info:
        require(False, "data", "block_size", "tokens in [8, 4096]")

    assert str(info.value) == "[data] block_size: tokens in [8, 4096]"


@pytest.mark.parametrize(("value", "ok"), [(0, True), (-3, True), (True, False), (1.0, False)])
def test_is_int_refuses_bools_and_floats(value: object, ok: bool) -> None:
    assert is_int(value) is ok


@pytest.mark.parametrize(
    ("value", "unit", "message"),
    [
        (1, "", "[canaries] copies: an integer >= 2"),
        (True, "", "[canaries] copies: an integer >= 2"),
        (2.0, "", "[canaries] copies: an integer >= 2"),
        ("3", "blocks", "[canaries] copies: blocks, an integer >= 2"),
    ],
)
def test_require_int_returns_the_int_or_names_field_unit_and_bound(
    value: object, unit: str, message: str
) -> None:
    assert require_int(2, "canaries", "copies", 2, unit) == 2

    with pytest.raises(ConfigError) as info:
        require_int(value, "canaries", "copies", 2, unit)

    assert str(info.value) == message


# Exact messages: each names the table, the field and the expected value with its unit.
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DataConfig(block_size=4), "[data] block_size: tokens in [8, 4096], got 4"),
        (
            lambda: SecurityConfig(round_window=True),  # type: ignore[arg-type]
            "[security] round_window: rounds, an integer",
        ),
        (
            lambda: SmallBaseSpec(**{**TINY_SMALL_BASE.to_dict(), "n_embd": 33}),
            "[small_base] n_embd: width, a multiple of n_head",
        ),
        (
            lambda: SmallBaseSpec(**{**TINY_SMALL_BASE.to_dict(), "warmup_steps": 9}),
            "[small_base] warmup_steps: steps in [0, steps]",
        ),
        (
            lambda: UpdateSpec(optimizer="lbfgs"),
            f"[target.update] optimizer: one of {UPDATE_OPTIMIZERS}",
        ),
        (lambda: UpdateSpec(steps=True), "[target.update] steps: an integer >= 1"),
        (lambda: UpdateSpec(warm_steps=0), "[target.update] warm_steps: an integer >= 1"),
        (lambda: UpdateSpec(batch_blocks=1.0), "[target.update] batch_blocks: an integer >= 1"),  # type: ignore[arg-type]
        (
            lambda: UpdateSpec(tokens=1),
            "[target.update] tokens: tokens per sequence, >= 2 (0 = whole block)",
        ),
        (
            lambda: UpdateSpec(tokens=-2),
            "[target.update] tokens: tokens per sequence, >= 2 (0 = whole block)",
        ),
        (
            lambda: UpdateSpec(tokens=True),
            "[target.update] tokens: tokens per sequence, >= 2 (0 = whole block)",
        ),
        (lambda: UpdateSpec(lr=0.0), "[target.update] lr: learning rate > 0"),
        (lambda: UpdateSpec(lr=math.nan), "[target.update] lr: learning rate > 0"),
        (lambda: CanarySpec(kind="words"), "[canaries] kind: 'digits' or 'tokens'"),
        (lambda: CanarySpec(count=1), "[canaries] count: an integer >= 2"),
        (lambda: CanarySpec(copies=True), "[canaries] copies: an integer >= 1"),
        (lambda: CanarySpec(candidates=10.0), "[canaries] candidates: an integer >= 10"),  # type: ignore[arg-type]
        (
            lambda: CanarySpec(inclusion=0.3),
            "[canaries] inclusion: probability 1.0 (all) or 0.5 (fair coins)",
        ),
        (
            lambda: CanarySpec(digits=13),
            "[canaries] digits: at most 12 (candidate space 10^digits)",
        ),
        (
            lambda: CanarySpec(prefix=" "),
            "[canaries] prefix: non-empty public text before the secret",
        ),
        (
            lambda: require_positive_int(0, "shadows", "number of shadow adapters"),
            "[attack] shadows: number of shadow adapters, an integer >= 1",
        ),
        (
            lambda: require_positive_int(True, "group_size", "blocks per set"),
            "[attack] group_size: blocks per set, an integer >= 1",
        ),
        (
            lambda: capture_update(None, None, None, None, optimizer="lbfgs"),  # type: ignore[arg-type]
            f"[target.update] optimizer: one of {UPDATE_OPTIMIZERS}",
        ),
        (
            lambda: capture_update(None, None, None, None, warm_steps=0),  # type: ignore[arg-type]
            "[target.update] steps, warm_steps: optimiser steps >= 1",
        ),
    ],
)
def test_config_errors_keep_their_messages(build: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()  # type: ignore[operator]

    assert str(info.value) == message


def test_update_spec_accepts_its_edge_values() -> None:
    spec = UpdateSpec(tokens=0, steps=1, warm_steps=1, batch_blocks=1, lr=1e-9)

    assert spec.tokens == 0
    assert UpdateSpec(tokens=False).tokens == 0  # as before: a bool is an int here
    assert UpdateSpec(tokens=2).tokens == 2


def test_attack_and_canary_integers_pass_through_at_their_lower_bounds() -> None:
    assert require_positive_int(1, "shadows", "number of shadow adapters") == 1
    spec = CanarySpec(count=2, copies=1, digits=12, length=1, candidates=10)
    assert (spec.count, spec.digits, spec.candidates) == (2, 12, 10)
