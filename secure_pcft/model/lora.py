"""LoRA adapters through peft, and the adapter state that travels between peers.

Each peer owns a copy of the base model whose frozen weights are *shared* in memory with every
other peer's copy (deepcopy with a pre-filled memo), so N peers cost one base plus N adapters.
"""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from secure_pcft.config import LoraSettings
from secure_pcft.errors import AdapterRejectedError, ModelError

AdapterState = dict[str, torch.Tensor]

# Attention and MLP projections per architecture (the paper adapts GPT-2's c_attn, c_proj, c_fc).
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


def lora_targets(model: PreTrainedModel, settings: LoraSettings) -> tuple[str, ...]:
    """The module names LoRA adapts: the config's list, else the architecture's default.

    ``["all-linear"]`` means every linear layer except the LM head (peft's keyword).

    Raises:
        ModelError: no default mapping is known for this architecture and none was configured,
            or a configured target names no linear layer of the model (the message lists them).
    """
    if settings.targets:
        linear = sorted(
            name
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear | Conv1D) and not name.endswith("lm_head")
        )
        leaves = sorted({name.rsplit(".", 1)[-1] for name in linear})
        if settings.targets == ("all-linear",):
            return tuple(leaves)
        unknown = [
            t for t in settings.targets if not any(n == t or n.endswith("." + t) for n in linear)
        ]
        if unknown:
            raise ModelError(
                f"[lora] targets: {unknown} name no linear layer of this model; its linear layers "
                f'are {leaves} (or use ["all-linear"])'
            )
        return settings.targets
    model_type = str(model.config.model_type)
    if model_type not in DEFAULT_TARGETS:
        raise ModelError(
            f"no default LoRA targets for model type {model_type!r}; set [lora] targets"
        )
    return DEFAULT_TARGETS[model_type]


def _lora_params(model: nn.Module, kind: str) -> list[tuple[str, nn.Parameter]]:
    return sorted((n, p) for n, p in model.named_parameters() if f".{kind}." in n)


def attach_lora(base: PreTrainedModel, settings: LoraSettings, peer_seed: int) -> PeftModel:
    """Return a peer's own LoRA model over ``base`` (frozen weights shared, not copied).

    The LoRA-A initialisation follows ``settings.mode``: ``paper`` draws it from ``peer_seed``
    (independent per peer); ``shared-init`` and ``frozen-a`` draw it from the consortium's public
    seed, so every peer starts from the same A (``frozen-a`` then keeps it fixed). B starts at 0.
    A is drawn on the CPU whatever the base's device, so a seed gives the same A on CPU and GPU.
    """
    memo: dict[int, object] = {id(p): p for p in base.parameters()}
    private_copy = copy.deepcopy(base, memo)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(lora_targets(base, settings)),
        fan_in_fan_out=str(base.config.model_type) == "gpt2",
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):  # peft's own init draws from the global RNG (then
        model = get_peft_model(private_copy, config)  # overwritten): leave the caller's alone
    seed = peer_seed if settings.mode == "paper" else settings.public_seed
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in _lora_params(model, "lora_A"):
            # peft's own default for A (Kaiming-uniform, a=sqrt(5)), drawn from our CPU generator
            # into a CPU tensor of the parameter's dtype, then copied to the parameter's device:
            # a CPU generator cannot fill a CUDA tensor, and the init must not depend on the device.
            init = torch.empty(param.shape, dtype=param.dtype)
            nn.init.kaiming_uniform_(init, a=5**0.5, generator=generator)
            param.copy_(init)
        for _, param in _lora_params(model, "lora_B"):
            param.zero_()
    if settings.mode == "frozen-a":
        for _, param in _lora_params(model, "lora_A"):
            param.requires_grad_(False)
    return model


def adapter_state(model: nn.Module) -> AdapterState:
    """The tensors that train and travel: every trainable LoRA parameter, by name (detached CPU
    copies, whatever the model's device: they are serialised, compared and averaged on the CPU)."""
    return {
        n: p.detach().to("cpu", copy=True)
        for n, p in model.named_parameters()
        if p.requires_grad and ".lora_" in n
    }


def adapter_spec(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes a received adapter must have to fit ``model``."""
    return {n: (tuple(t.shape), t.dtype) for n, t in adapter_state(model).items()}


def load_adapter_state(model: nn.Module, state: AdapterState) -> None:
    """Copy ``state`` into the model's trainable LoRA parameters, in place.

    Raises:
        AdapterRejectedError: names, shapes or dtypes differ from the model's, or values are not finite.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad and ".lora_" in n}
    if set(params) != set(state):
        missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        raise AdapterRejectedError(
            f"adapter tensors differ: {len(missing)} missing, {len(extra)} unexpected"
        )
    for name, tensor in state.items():
        target = params[name]
        if tensor.shape != target.shape or tensor.dtype != target.dtype:
            raise AdapterRejectedError(f"tensor {name}: shape/dtype does not match the model")
        if not torch.isfinite(tensor).all():
            raise AdapterRejectedError(f"tensor {name}: contains NaN or Inf")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)
