"""Score a LoRA model at its base model's speed: a transient view with the adapter merged in.

A peft LoRA layer computes ``base(x) + s·B(A(x))``: next to every adapted matmul it runs two thin
ones (rank r) and a scale and an add over the output. With no gradients needed, the same function
is one matmul with ``W + s·B·A``. On SmolLM2-135M (LoRA r 4 on its seven linear types, 2 threads)
the side path costs 5–12 % of a scoring pass (four interleaved measurements against the base
alone), and building the merged weights 0.1–0.2 s (one pass over the adapted weights): it pays off
beyond ≈ 6–30 blocks of 64 tokens.

:func:`scoring_model` therefore gives a *separate* module for large no-grad passes: every module is
a shallow twin of the peer's own (the same tensors, fresh parameter dicts, no hooks), and each LoRA
layer is replaced by a twin of its base layer holding its own merged weight. Nothing is written
into the base weights the peers share, the peer's model is left exactly as it was (no merge /
unmerge round trip that would leave rounding residue in a shared tensor), and the view is thrown
away after the pass. The merged weights are computed by peft's own ``get_delta_weight``, so
scaling and GPT-2's transposed layout follow the library. Outputs equal the unmerged model's up to
float rounding (one addition order).

Falls back to the model itself — never to an approximation — when the pass is small
(< :data:`MERGE_MIN_TOKENS`), the merged weights would take more than
:data:`MERGE_MAX_BYTES` of memory, gradients are on, or the model is anything but plain LoRA
on linear layers with one active, enabled, unmerged adapter in the base's own fp32 / fp64 dtype (DoRA,
LoRA bias, other variants, adapters switched off for a base-model pass, half-precision weights, where
W + s·B·A would round the update away, instance-level ``forward`` overrides).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import cast

import torch
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from torch import nn

# Break-even on SmolLM2-135M at 2 threads is ≈ 400–2,000 tokens (0.1–0.2 s of merging against
# 5–12 % of ≈ 0.13 s per 64-token block); 4,096 keeps a margin for other shapes and machines. A round's test
# scoring (eval_batches 8 × 16 blocks × 64 tokens = 8,192) is merged; validation and reference
# passes (a few to 32 blocks) are not.
MERGE_MIN_TOKENS = 4096
# The merged view holds one extra copy of every adapted weight while it lives (SmolLM2-135M: 0.42
# GB in fp32); beyond this a device keeps the slower, memory-free side path.
MERGE_MAX_BYTES = 2 * 1024**3

_EXACT_DTYPES = (torch.float32, torch.float64)

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def scoring_model(model: nn.Module, tokens: int) -> nn.Module:
    """The module to run a no-grad scoring pass of ``tokens`` tokens through: a merged view of a
    LoRA model where that is exact and pays off, else ``model`` itself (see the module doc).

    The view is in eval mode; the caller's ``model`` is not touched (its mode included)."""
    if tokens < MERGE_MIN_TOKENS or torch.is_grad_enabled():
        return model
    layers = _mergeable_layers(model)
    if layers is None:
        return model
    size = sum(_base_weight(layer).nbytes for layer in layers.values())
    if size > MERGE_MAX_BYTES:
        return model
    get_base_model = getattr(model, "get_base_model", None)  # a PeftModel's wrapped transformer
    inner: nn.Module = model if get_base_model is None else get_base_model()
    view = _twin(inner, layers)
    view.train(False)
    return view


def _mergeable_layers(model: nn.Module) -> dict[int, LoraLinear] | None:
    """The model's LoRA layers by id, or None when a merged view would not be exactly the model's
    function (or there is nothing to merge)."""
    layers: dict[int, LoraLinear] = {}
    for module in model.modules():
        if "forward" in vars(module):  # an instance-level forward (e.g. an offloading hook)
            return None
        if not isinstance(module, LoraLayer):
            continue
        if type(module) is not LoraLinear or module.disable_adapters or module.merged:
            return None
        active = module.active_adapters
        if len(active) != 1:
            return None
        name = active[0]
        if (
            module.use_dora.get(name, False)
            or module.lora_bias.get(name, False)
            or module.lora_variant.get(name) is not None
        ):
            return None
        weight = _base_weight(module)
        if weight.dtype not in _EXACT_DTYPES or module.lora_B[name].weight.dtype != weight.dtype:
            return None  # a low-precision merge would round the small update away
        layers[id(module)] = module
    return layers or None


@torch.no_grad()
def _twin(module: nn.Module, layers: dict[int, LoraLinear]) -> nn.Module:
    """A shallow copy of ``module``'s tree sharing its tensors, LoRA layers replaced by their base
    layers with merged weights. Fresh parameter, buffer and module dicts and no hooks, so nothing
    done to the twin reaches the original."""
    lora = layers.get(id(module))
    if lora is not None:
        base = lora.get_base_layer()
        twin = _shallow(base)
        (name,) = lora.active_adapters
        merged = lora.get_delta_weight(name)  # a fresh tensor: the base weight is only read
        merged.add_(_base_weight(lora))
        twin._parameters["weight"] = nn.Parameter(merged, requires_grad=False)
        return twin
    twin = _shallow(module)
    for child_name, child in module._modules.items():
        twin._modules[child_name] = None if child is None else _twin(child, layers)
    return twin


def _base_weight(layer: LoraLinear) -> torch.Tensor:
    return cast(torch.Tensor, layer.get_base_layer().weight)


def _shallow(module: nn.Module) -> nn.Module:
    twin = copy.copy(module)
    twin._parameters = dict(module._parameters)
    twin._buffers = dict(module._buffers)
    twin._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    twin._modules = {}
    for attr in _HOOK_DICTS:
        if attr in vars(module):
            setattr(twin, attr, OrderedDict())
    return twin
