"""Received-adapter validation: names, shapes, dtypes, finiteness, norm bounds; messages carry no values."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save as safetensors_save

from secure_pcft.crypto.adapter_checks import AdapterSpec, TensorSpec, check_adapter, decode_adapter
from secure_pcft.errors import AdapterRejectedError, ConfigError

MARKER = 1234.5678  # a distinctive value that must never appear in an error message


def local_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "h.0.attn.c_attn.lora_A.weight": torch.randn(4, 16, generator=g) * 0.1,
        "h.0.attn.c_attn.lora_B.weight": torch.randn(48, 4, generator=g) * 0.1,
        "h.0.mlp.c_fc.lora_A.weight": torch.randn(4, 16, generator=g) * 0.1,
    }


SPEC = AdapterSpec.from_state_dict(local_state(), max_tensor_norm=5.0, max_global_norm=8.0)


def rejected(tensors: dict[str, torch.Tensor], spec: AdapterSpec = SPEC) -> str:
    with pytest.raises(AdapterRejectedError) as info:
        decode_adapter(safetensors_save(tensors), spec)
    message = str(info.value)
    assert str(MARKER) not in message and "1234" not in message
    return message


def test_valid_adapter_round_trips_through_safetensors() -> None:
    state = local_state()

    decoded = decode_adapter(safetensors_save(state), SPEC)

    assert decoded.keys() == state.keys()
    assert all(torch.equal(decoded[k], state[k]) for k in state)


def test_missing_tensor_is_rejected() -> None:
    state = local_state()
    del state["h.0.mlp.c_fc.lora_A.weight"]

    assert "missing" in rejected(state) and "c_fc" in rejected(state)


def test_extra_tensor_is_rejected() -> None:
    state = {**local_state(), "h.0.attn.c_proj.lora_A.weight": torch.zeros(4, 16)}

    assert "unexpected" in rejected(state) and "c_proj" in rejected(state)


def test_wrong_shape_is_rejected() -> None:
    state = local_state()
    state["h.0.attn.c_attn.lora_B.weight"] = torch.full((48, 8), MARKER)

    message = rejected(state)
    assert "lora_B" in message and "shape" in message and "(48, 8)" in message


def test_wrong_dtype_is_rejected() -> None:
    state = local_state()
    state["h.0.mlp.c_fc.lora_A.weight"] = state["h.0.mlp.c_fc.lora_A.weight"].double()

    assert "dtype" in rejected(state)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(bad: float) -> None:
    state = local_state()
    state["h.0.attn.c_attn.lora_A.weight"][1, 2] = bad

    message = rejected(state)
    assert "NaN or Inf" in message and "c_attn.lora_A" in message


def test_tensor_norm_above_bound_is_rejected() -> None:
    state = local_state()
    state["h.0.attn.c_attn.lora_A.weight"][0, 0] = 5.5  # one tensor's norm > 5

    message = rejected(state)
    assert "c_attn.lora_A" in message and "L2 norm exceeds bound 5.0" in message


def test_global_norm_above_bound_is_rejected() -> None:
    state = local_state()
    for name in state:  # each tensor stays under 5, together above 8
        state[name][0, 0] = 4.7

    assert "global L2 norm exceeds bound 8.0" in rejected(state)


def test_norm_bounds_are_optional() -> None:
    state = local_state()
    state["h.0.attn.c_attn.lora_A.weight"][0, 0] = MARKER

    check_adapter(state, AdapterSpec.from_state_dict(local_state()))


@pytest.mark.parametrize(
    "data", [b"", b"\x00" * 7, b"\xff" * 64, b"garbage that is not safetensors"]
)
def test_undecodable_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(AdapterRejectedError, match="safetensors"):
        decode_adapter(data, SPEC)


def test_truncated_safetensors_is_rejected() -> None:
    data = safetensors_save(local_state())

    with pytest.raises(AdapterRejectedError):
        decode_adapter(data[:-10], SPEC)


def test_spec_validation() -> None:
    with pytest.raises(ConfigError):
        AdapterSpec({})
    with pytest.raises(ConfigError, match="max_tensor_norm"):
        AdapterSpec({"a": TensorSpec((1,), torch.float32)}, max_tensor_norm=0.0)
    with pytest.raises(ConfigError, match="max_global_norm"):
        AdapterSpec({"a": TensorSpec((1,), torch.float32)}, max_global_norm=float("nan"))
