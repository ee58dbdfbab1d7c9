"""TOML values must have the field's type: the field, the expected type and the value are named.

Before this check `batch_size = 4.5` passed validation and crashed after the model had loaded,
`batch_size = true` trained with batch size 1, and a string where a number belongs failed with
"'>=' not supported between 'str' and 'int'" and no field named.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from secure_pcft.cli import main
from secure_pcft.config import config_from_dict
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
