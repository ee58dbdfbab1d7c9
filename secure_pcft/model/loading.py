"""Load a frozen base causal LM and its tokenizer from a local path — never from a hub."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from secure_pcft.config import ModelConfig
from secure_pcft.errors import ModelError

log = logging.getLogger(__name__)


@dataclass
class BaseModel:
    """A frozen base model, its tokenizer and where it came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: Path

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


def load_base(path: Path) -> BaseModel:
    """Load a causal LM from a local directory or a local ``.gguf`` file, frozen and in eval mode.

    Raises:
        ModelError: the files are missing or not a causal LM transformers can read.
    """
    path = Path(path)
    kwargs: dict[str, object] = {"local_files_only": True}
    directory = path
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{path}: a model file must be .gguf; otherwise give a directory")
        directory, kwargs["gguf_file"] = path.parent, path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load a causal LM from {path}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.requires_grad_(False)
    model.train(False)
    log.info(
        "loaded base %s (%s, %d parameters)", path, model.config.model_type, model.num_parameters()
    )
    return BaseModel(model=model, tokenizer=tokenizer, path=path)
