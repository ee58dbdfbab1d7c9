"""Load a frozen base causal LM and its tokenizer from a local path — never from a hub."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.activations import GELUTanh, NewGELUActivation
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from secure_pcft.config import ModelConfig
from secure_pcft.errors import ModelError

log = logging.getLogger(__name__)


@dataclass
class BaseModel:
    """A frozen base model, its tokenizer and where it came from.

    ``reference_logits``: last-position logits of the frozen base on public reference rows, by
    the row's token bytes — the same for every peer built on this base and in every round (the
    base never changes), so each row is computed once per process (collab/peer.py).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: Path
    reference_logits: dict[bytes, torch.Tensor] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def device(self) -> torch.device:
        """Where the base's weights (and so every peer's computation) live."""
        return next(self.model.parameters()).device

    @property
    def model_type(self) -> str:
        return str(self.model.config.model_type)

    @property
    def eos_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ModelError(f"tokenizer at {self.path} has no EOS token")
        return int(eos)


def resolve_base_path(cfg: ModelConfig) -> Path:
    """Turn ``cfg.base`` into a local model directory (or ``.gguf`` file), building it if needed.

    Raises:
        ModelError: the path does not exist or a ready base cannot be built.
    """
    if cfg.base == "small":
        from secure_pcft.data.embedded import bbc_news_texts
        from secure_pcft.model.small_base import ensure_small_base

        return ensure_small_base(cfg.cache_path / "bases", bbc_news_texts)
    if cfg.base == "smollm2":
        from secure_pcft.model.smollm2 import ensure_smollm2

        return ensure_smollm2(cfg.cache_path / "bases")
    path = Path(cfg.base).expanduser()
    if not path.exists():
        raise ModelError(
            f"[model] base: {path} does not exist (give 'small', 'smollm2', a local model "
            "directory or a local .gguf file; nothing is downloaded at run time)"
        )
    return path


def fuse_tanh_gelu(model: nn.Module) -> int:
    """Swap transformers' ``gelu_new`` modules for PyTorch's fused tanh GELU; returns how many.

    Both compute 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) — the same function, outputs equal to
    float rounding (max |Δ| 4.8e-7 on inputs in ±16) — but ``gelu_new`` runs it as six separate
    element-wise ops (and as many in backward): forward + backward on an (8, 64, 1024) activation took
    11.0 ms vs 5.6 ms on one CPU core, i.e. ~6 % of a small-base LoRA step (two of them per ~170 ms
    step; estimated from that microbenchmark, not timed end to end).
    """
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


# Any one of these makes a complete tokenizer (fast JSON, GPT-2 BPE pair, SentencePiece).
_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",))


def _require_tokenizer_files(directory: Path) -> None:
    """A base folder must carry its tokenizer: without one, transformers builds an *empty* tokenizer
    of the model's class and the run fails much later with a misleading message.

    Raises:
        ModelError: none of the tokenizer file sets is present.
    """
    if not directory.is_dir():
        raise ModelError(f"{directory}: not a model folder")
    if not any(all((directory / f).is_file() for f in files) for files in _TOKENIZER_FILES):
        wanted = " or ".join(" + ".join(files) for files in _TOKENIZER_FILES)
        raise ModelError(
            f"{directory}: no tokenizer files (need {wanted}); save the tokenizer next to the "
            "model (tokenizer.save_pretrained(folder))"
        )


def resolve_device(spec: str) -> torch.device:
    """``[model] device`` → a torch device: ``auto`` is the first CUDA device when PyTorch sees
    one, else the CPU.

    Raises:
        ModelError: a CUDA device is named but PyTorch sees none (or not that many).
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ModelError(
                f"[model] device = {spec!r}, but PyTorch sees {count} CUDA device(s) "
                f"(torch {torch.__version__}); use 'auto' or 'cpu'"
            )
    return device


def load_base(path: Path, device: str | torch.device = "cpu") -> BaseModel:
    """Load a causal LM from a local directory or a local ``.gguf`` file, frozen and in eval mode,
    onto ``device`` (a torch device, or a ``[model] device`` string such as ``auto``).

    ``gelu_new`` activations are replaced by the same function's fused kernel (:func:`fuse_tanh_gelu`).

    Raises:
        ModelError: the files are missing or not a causal LM transformers can read, or the
            device does not exist.
    """
    target = resolve_device(device) if isinstance(device, str) else device
    path = Path(path)
    kwargs: dict[str, object] = {"local_files_only": True}
    directory = path
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{path}: a model file must be .gguf; otherwise give a directory")
        directory, kwargs["gguf_file"] = path.parent, path.name
    else:
        _require_tokenizer_files(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load a causal LM from {path}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    fuse_tanh_gelu(model)
    nn.Module.to(model, target)  # transformers types .to() for dtype casts only
    model.requires_grad_(False)
    model.train(False)
    log.info(
        "loaded base %s (%s, %d parameters, on %s)",
        path,
        model.config.model_type,
        model.num_parameters(),
        target,
    )
    return BaseModel(model=model, tokenizer=tokenizer, path=path)
