"""Nested state (optimiser state dicts, RNG states) as safetensors + JSON, never pickle.

``encode_state`` splits a tree of dicts, lists, tuples, scalars and tensors into a JSON-compatible
skeleton and a flat ``{name: tensor}`` map; ``decode_state`` puts them back together. Dict keys
may be ``str`` or ``int`` (optimiser states index parameters by int). Anything else is refused.
"""

from __future__ import annotations

from typing import Any

import torch

from secure_pcft.runtime.flower.errors import StateError

_TENSOR = "__tensor__"
_INT_KEYS = "__int_keys__"
_TUPLE = "__tuple__"


def encode_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``obj`` into (JSON skeleton, tensors).

    Raises:
        StateError: a value that is neither a tensor, a JSON scalar, a list/tuple nor a dict with
            str/int keys.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = value.detach().contiguous().cpu().clone()
            return {_TENSOR: name}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, tuple):
            return {_TUPLE: [walk(v) for v in value]}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                if any(k in (_TENSOR, _INT_KEYS, _TUPLE) for k in value):
                    raise StateError("state dict uses a reserved key")
                return {k: walk(v) for k, v in value.items()}
            if all(isinstance(k, int) and not isinstance(k, bool) for k in value):
                return {_INT_KEYS: [[k, walk(v)] for k, v in value.items()]}
            raise StateError("state dict keys must be all str or all int")
        raise StateError(f"cannot store a {type(value).__name__} in peer state")

    return walk(obj), tensors


def decode_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state`.

    Raises:
        StateError: the skeleton names a missing tensor or is malformed.
    """

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            if set(value) == {_TENSOR}:
                name = value[_TENSOR]
                if not isinstance(name, str) or name not in tensors:
                    raise StateError("peer state refers to a missing tensor")
                return tensors[name]
            if set(value) == {_TUPLE}:
                return tuple(walk(v) for v in _as_list(value[_TUPLE]))
            if set(value) == {_INT_KEYS}:
                out: dict[int, Any] = {}
                for item in _as_list(value[_INT_KEYS]):
                    if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int):
                        raise StateError("malformed int-keyed dict in peer state")
                    out[item[0]] = walk(item[1])
                return out
            return {k: walk(v) for k, v in value.items()}
        return value

    return walk(skeleton)


def _as_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise StateError("malformed peer state")
    return value
