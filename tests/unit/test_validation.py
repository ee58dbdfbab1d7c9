"""Config field checks: one helper, one message shape ``[section] field: what``, for every config."""

from __future__ import annotations

import math

import pytest

from secure_pcft.audit.campaign import UpdateSpec
from secure_pcft.audit.updates import UPDATE_OPTIMIZERS
from secure_pcft.config import DataConfig, SecurityConfig
from secure_pcft.errors import ConfigError
from secure_pcft.model.small_base import TINY_SMALL_BASE, SmallBaseSpec
from secure_pcft.validation import is_int, require


def test_require_passes_silently_and_fails_with_section_field_and_unit() -> None:
    require(True, "data", "block_size", "tokens in [8, 4096]")

    with pytest.raises(ConfigError) as info:
        require(False, "data", "block_size", "tokens in [8, 4096]")

    assert str(info.value) == "[data] block_size: tokens in [8, 4096]"


@pytest.mark.parametrize(("value", "ok"), [(0, True), (-3, True), (True, False), (1.0, False)])
def test_is_int_refuses_bools_and_floats(value: object, ok: bool) -> None:
    assert is_int(value) is ok


# Exact messages as they were before the configs shared the helper.
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DataConfig(block_size=4), "[data] block_size: tokens in [8, 4096]"),
        (
            lambda: SecurityConfig(round_window=True),  # type: ignore[arg-type]
            "[security] round_window: rounds >= 0",
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
