"""Validation of a received LoRA adapter before it is allowed anywhere near aggregation.

A received adapter arrives as safetensors bytes inside an opened envelope. It is decoded with
``safetensors.torch.load`` (no pickle, no ``torch.load``) and checked against the spec of the local
model: exact tensor names, shapes and dtypes, finite values, and L2 norm bounds per tensor and over
the whole adapter. Rejections raise :class:`AdapterRejectedError` naming the tensor and the reason,
never tensor values or norms.

Threats mitigated (threat_models/): malformed input; poisoned or scaled adapters from a roster
member (TM-02).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from safetensors.torch import load as _safetensors_load

from secure_pcft.errors import AdapterRejectedError, ConfigError

_MAX_LISTED = 5  # names listed in a missing/extra message


@dataclass(frozen=True)
class TensorSpec:
    """Expected shape and dtype of one adapter tensor."""

    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class AdapterSpec:
    """What a valid adapter from a peer must look like.

    Attributes:
        tensors: name -> expected :class:`TensorSpec`.
        max_tensor_norm: bound on each tensor's L2 (Frobenius) norm; ``None`` = unbounded.
        max_global_norm: bound on the L2 norm of all tensors together; ``None`` = unbounded.

    Raises:
        ConfigError: empty spec or non-positive bounds.
    """

    tensors: Mapping[str, TensorSpec]
    max_tensor_norm: float | None = None
    max_global_norm: float | None = None

    def __post_init__(self) -> None:
        if not self.tensors:
            raise ConfigError("adapter_spec.tensors: must name at least one tensor")
        for name in ("max_tensor_norm", "max_global_norm"):
            bound = getattr(self, name)
            if bound is not None and not (math.isfinite(bound) and bound > 0):
                raise ConfigError(f"adapter_spec.{name}: must be a finite L2 norm > 0 or None")
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, torch.Tensor],
        *,
        max_tensor_norm: float | None = None,
        max_global_norm: float | None = None,
    ) -> AdapterSpec:
        """Spec from the local model's own adapter state (names, shapes, dtypes)."""
        specs = {n: TensorSpec(tuple(t.shape), t.dtype) for n, t in state.items()}
        return cls(specs, max_tensor_norm=max_tensor_norm, max_global_norm=max_global_norm)


def decode_adapter(data: bytes, spec: AdapterSpec) -> dict[str, torch.Tensor]:
    """Decode safetensors bytes and validate them against ``spec``.

    Args:
        data: safetensors-serialised adapter (an opened envelope body).
        spec: what the local model expects.

    Returns:
        name -> tensor (CPU), already validated.

    Raises:
        AdapterRejectedError: undecodable bytes or any check in :func:`check_adapter` failing.
    """
    try:
        tensors = _safetensors_load(bytes(data))
    except Exception:  # safetensors raises several types on malformed input; none is trusted
        raise AdapterRejectedError("adapter: not decodable as safetensors") from None
    check_adapter(tensors, spec)
    return tensors


def check_adapter(tensors: Mapping[str, torch.Tensor], spec: AdapterSpec) -> None:
    """Validate decoded adapter tensors against ``spec``.

    Checks, in order: names (missing/extra), dtype, shape, finiteness, per-tensor L2 norm, global
    L2 norm. Norms are computed in float64.

    Raises:
        AdapterRejectedError: naming the offending tensor and the reason (never values).
    """
    missing = sorted(set(spec.tensors) - set(tensors))
    extra = sorted(set(tensors) - set(spec.tensors))
    if missing:
        raise AdapterRejectedError(f"adapter: missing tensors {_listing(missing)}")
    if extra:
        raise AdapterRejectedError(f"adapter: unexpected tensors {_listing(extra)}")
    total_sq = 0.0
    for name in sorted(spec.tensors):
        expected, tensor = spec.tensors[name], tensors[name]
        if not isinstance(tensor, torch.Tensor):
            raise AdapterRejectedError(f"adapter tensor {name!r}: not a tensor")
        if tensor.dtype != expected.dtype:
            raise AdapterRejectedError(
                f"adapter tensor {name!r}: dtype {tensor.dtype} != expected {expected.dtype}"
            )
        if tuple(tensor.shape) != expected.shape:
            raise AdapterRejectedError(
                f"adapter tensor {name!r}: shape {tuple(tensor.shape)} != expected {expected.shape}"
            )
        wide = tensor.detach().to(dtype=torch.float64)
        if not bool(torch.isfinite(wide).all()):
            raise AdapterRejectedError(f"adapter tensor {name!r}: contains NaN or Inf")
        sq = float((wide * wide).sum())
        if spec.max_tensor_norm is not None and not math.sqrt(sq) <= spec.max_tensor_norm:
            raise AdapterRejectedError(
                f"adapter tensor {name!r}: L2 norm exceeds bound {spec.max_tensor_norm}"
            )
        total_sq += sq
    if spec.max_global_norm is not None and not math.sqrt(total_sq) <= spec.max_global_norm:
        raise AdapterRejectedError(f"adapter: global L2 norm exceeds bound {spec.max_global_norm}")


def _listing(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return f"[{shown}{f', ... +{more}' if more > 0 else ''}]"
