"""TOML values must have the field's type: the field, the expected type and the value are named.

Before this check `batch_size = 4.5` passed validation and crashed after the model had loaded,
`batch_size = true` trained with batch size 1, and a string where a number belongs failed with
"'>=' not supported between 'str' and 'int'" and no field named.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from secure_pcft.cli import main
from secure_pcft.config import config_from_dict, load_config, toml_nesting
from secure_pcft.errors import ConfigError


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"batch_size": 4.5}}, "[train] batch_size: expected an integer, got 4.5 (float)"),
        ({"train": {"batch_size": True}}, "[train] batch_size: expected an integer, got True (bool)"),
        ({"train": {"lr": "fast"}}, "[train] lr: expected a number, got 'fast' (str)"),
        ({"privacy": {"enabled": 1}}, "[privacy] enabled: expected true or false, got 1 (int)"),
        ({"privacy": {"target_epsilon": "8"}}, "[privacy] target_epsilon: expected a number"),
        ({"lora": {"targets": ["c_attn", 3]}}, "[lora] targets[1]: expected a string, got 3"),
        ({"lora": {"targets": "c_attn"}}, "[lora] targets: expected a list, got 'c_attn'"),
        ({"lora": {"mode": "frozen"}}, "[lora] mode: expected one of 'paper', 'shared-init'"),
        ({"data": {"source": 7}}, "[data] source: expected a string, got 7 (int)"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_names_field_type_and_value(
    raw: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert message in str(err.value)


def test_integers_are_accepted_for_numbers_and_become_floats() -> None:
    cfg = config_from_dict({"train": {"lr": 1}, "privacy": {"max_grad_norm": 2}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.privacy.max_grad_norm, float)
    assert cfg.lora.targets == () and config_from_dict(
        {"lora": {"targets": ["c_fc"]}}
    ).lora.targets == ("c_fc",)


def test_the_cli_refuses_a_mistyped_config_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\nbase = "/nonexistent/model"\n[train]\nbatch_size = 4.5\n')
    assert main(["run", str(toml)]) == 3
    err = capsys.readouterr().err
    assert "[train] batch_size: expected an integer, got 4.5" in err
    assert "nonexistent" not in err  # the base was never looked for


# ---- values that would switch a protection off (issue: compliance record) -----------------------
@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("security", "max_clock_skew_s", float("inf")),
        ("security", "max_adapter_norm_ratio", 1e300),
        ("security", "round_window", 10**9),
        ("security", "he_queries_per_round", 10**6),
        ("security", "max_message_bytes", 2**62),
        ("train", "lr", float("inf")),
        ("train", "total_steps", 10**18),
        ("privacy", "target_epsilon", float("inf")),
        ("privacy", "budget_epsilon", float("inf")),
        ("privacy", "max_grad_norm", float("inf")),
        ("privacy", "validation_noise_multiplier", float("inf")),
        ("privacy", "noise_multiplier", 0.0),
        ("privacy", "noise_multiplier", float("nan")),
    ],
)
def test_values_that_switch_a_protection_off_are_refused_with_their_range(
    section: str, key: str, value: object
) -> None:
    raw: dict[str, dict[str, object]] = {section: {key: value}}
    if section == "privacy":
        raw["privacy"]["enabled"] = True
        if key != "noise_multiplier":
            raw["privacy"].setdefault("noise_multiplier", 1.0)
        if key == "target_epsilon":
            raw["privacy"].pop("noise_multiplier")

    with pytest.raises(ConfigError, match=rf"\[{section}\] {key}: .* in [\[(]"):
        config_from_dict(raw)


def test_a_key_typo_is_refused_with_the_closest_key() -> None:
    with pytest.raises(
        ConfigError, match=r"\[train\] unknown key\(s\): local_step \(did you mean local_steps\?\)"
    ):
        config_from_dict({"train": {"local_step": 3}})


@pytest.mark.parametrize(
    "text",
    [
        "[train]\nseed = " + "9" * 5000 + "\n",  # beyond Python's int-conversion limit
        "x = " + "[" * 5000 + "]" * 5000 + "\n",  # nested far beyond any config
        "# " + "x" * (2 * 1024 * 1024) + "\n",  # larger than any config
    ],
    ids=["5000-digit-int", "deep-nesting", "2-MiB"],
)
def test_hostile_toml_is_a_config_error_and_exit_3(tmp_path: Path, text: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text)

    with pytest.raises(ConfigError):
        load_config(path)
    assert main(["run", str(path)]) == 3


def test_nesting_is_counted_outside_strings_and_comments() -> None:
    assert toml_nesting('a = "[[[[["\n# {{{{{\n[t]\nb = [[1], [2]]\n') == 2
    assert toml_nesting("s = '''[[[\n]]]'''\n") == 0
