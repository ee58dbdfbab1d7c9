"""The toolkit's own small CPU base model: a byte-level BPE tokenizer and a GPT-2 trained from scratch.

A collaboration run needs a frozen base that every peer holds. Downloading one at run time is not an
option (air-gapped sites, reproducibility), so the toolkit builds a small GPT-2 on a text corpus the
caller supplies (the demo uses the embedded BBC News articles) and caches it as an ordinary Hugging Face
directory: ``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json`` and a
``build_info.json`` that records the spec, the text fingerprint, the measured figures and a SHA-256 of
every file. A cached directory is reused only when all of that checks out; otherwise it is rebuilt.

Directories appear atomically (built under a temporary name next to the target, then renamed), so a
build that is killed half way never leaves a directory that later looks valid; the directory and
record machinery lives in :mod:`secure_pcft.model.cache`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from secure_pcft.errors import CorruptFileError, DataError, ModelError
from secure_pcft.model.cache import (
    BUILD_INFO_VERSION,
    PROGRESS,
    cache_lock,
    read_build_info,
    save_model_dir,
)
from secure_pcft.validation import require

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, float], None]
"""Called as ``progress(step, total_steps, train_loss)`` after every optimiser step."""

SPECIAL_TOKEN = "<|endoftext|>"
GPT2_LORA_TARGETS: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")
"""Module-name suffixes of GPT-2's attention and MLP projections (the paper's LoRA targets)."""


@dataclass(frozen=True)
class SmallBaseSpec:
    """Everything that determines a small base model (with the training texts).

    Attributes:
        vocab_size: BPE vocabulary size in tokens (byte alphabet and the special token included).
        n_layer, n_head, n_embd: GPT-2 depth, attention heads and width (``n_embd % n_head == 0``).
        n_positions: maximum context in tokens (>= ``block_size``; downstream blocks must fit).
        block_size: tokens per pretraining sequence.
        batch_size: sequences per optimiser step.
        steps: optimiser steps (fixed, not a time budget, so a spec names one model).
        lr: peak AdamW learning rate; linear warm-up, then cosine decay to ``lr / 10``.
        warmup_steps: steps of linear warm-up.
        weight_decay: AdamW weight decay on matrices (not on biases, norms or embeddings' biases).
        dropout: GPT-2 residual/embedding/attention dropout during pretraining (saved in the config).
        eval_fraction: fraction of the documents held out for the held-out perplexity.
        eval_blocks: at most this many held-out blocks are scored.
        seed: seeds the init, the held-out split and the batch order.
    """

    vocab_size: int = 4096
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 256
    n_positions: int = 256
    block_size: int = 128
    batch_size: int = 16
    steps: int = 400
    lr: float = 1.5e-3
    warmup_steps: int = 20
    weight_decay: float = 0.1
    dropout: float = 0.0
    eval_fraction: float = 0.02
    eval_blocks: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        checks: tuple[tuple[bool, str, str], ...] = (
            (self.vocab_size >= 300, "vocab_size", "tokens >= 300 (256 bytes + merges + special)"),
            (self.n_layer >= 1, "n_layer", "layers >= 1"),
            (self.n_head >= 1, "n_head", "heads >= 1"),
            (
                self.n_embd >= 8 and self.n_embd % self.n_head == 0,
                "n_embd",
                "width, a multiple of n_head",
            ),
            (self.block_size >= 8, "block_size", "tokens >= 8"),
            (self.n_positions >= self.block_size, "n_positions", "tokens >= block_size"),
            (self.batch_size >= 1, "batch_size", "sequences >= 1"),
            (self.steps >= 1, "steps", "optimiser steps >= 1"),
            (self.lr > 0, "lr", "learning rate > 0"),
            (0 <= self.warmup_steps <= self.steps, "warmup_steps", "steps in [0, steps]"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (0.0 <= self.dropout < 1.0, "dropout", "probability in [0, 1)"),
            (0.0 < self.eval_fraction < 0.5, "eval_fraction", "fraction of documents in (0, 0.5)"),
            (self.eval_blocks >= 1, "eval_blocks", "blocks >= 1"),
        )
        for ok, name, what in checks:
            require(ok, "small_base", name, what)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of this spec."""
        return _sha256_json(self.to_dict())


DEFAULT_SMALL_BASE = SmallBaseSpec()
"""The demo base: ~2.6 M parameters, a few minutes on 2 CPU cores (see the module's build_info)."""

TINY_SMALL_BASE = SmallBaseSpec(
    vocab_size=512,
    n_layer=2,
    n_head=2,
    n_embd=32,
    n_positions=128,
    block_size=32,
    batch_size=4,
    steps=8,
    lr=1e-2,
    warmup_steps=2,
    eval_fraction=0.2,
    eval_blocks=4,
)
"""A seconds-long build for tests; the model is useless as a language model."""


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def text_fingerprint(texts: Sequence[str]) -> str:
    """SHA-256 over the texts in order (length-prefixed, so boundaries count)."""
    h = hashlib.sha256()
    for text in texts:
        blob = text.encode("utf-8")
        h.update(len(blob).to_bytes(8, "little"))
        h.update(blob)
    return h.hexdigest()


# --------------------------------------------------------------------------- building


def _train_tokenizer(texts: Sequence[str], spec: SmallBaseSpec) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # Byte-level: every string (any language, any script) is encodable; unseen scripts just cost
    # more tokens per word.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,  # GPT-2 convention: pad = eos, masked out by attention/labels
        model_max_length=spec.n_positions,
    )


def _token_stream(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    eos = int(tokenizer.eos_token_id)
    ids: list[int] = []
    # The raw backend: whole documents exceed model_max_length, which is fine for a stream.
    for enc in tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)  # (N,)


def _tokenize(
    train_texts: Sequence[str], eval_texts: Sequence[str], spec: SmallBaseSpec
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Train the tokenizer on the training documents only; return it and both token streams."""
    try:
        tokenizer = _train_tokenizer(train_texts, spec)
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise ModelError(f"training the BPE tokenizer failed: {exc}") from exc
    train_stream = _token_stream(tokenizer, train_texts)
    eval_stream = _token_stream(tokenizer, eval_texts)
    logger.info(
        "small base: %d train tokens, %d held-out tokens, spec %s",
        train_stream.numel(),
        eval_stream.numel(),
        spec.digest()[:12],
    )
    return tokenizer, train_stream, eval_stream


def _split_documents(
    texts: Sequence[str], spec: SmallBaseSpec, gen: torch.Generator
) -> tuple[list[str], list[str]]:
    order = torch.randperm(len(texts), generator=gen).tolist()
    n_eval = min(len(texts) - 1, max(1, round(spec.eval_fraction * len(texts))))
    held = set(order[:n_eval])
    train = [t for i, t in enumerate(texts) if i not in held]
    held_out = [t for i, t in enumerate(texts) if i in held]
    return train, held_out


def _lr_at(step: int, spec: SmallBaseSpec) -> float:
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    span = max(1, spec.steps - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / span)
    floor = spec.lr / 10
    return floor + (spec.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _new_model(spec: SmallBaseSpec, eos_id: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=spec.vocab_size,
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=spec.dropout,
        embd_pdrop=spec.dropout,
        attn_pdrop=spec.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # transformers cannot infer it from the class name "LMHead"
    return model


def _optimizer(model: torch.nn.Module, spec: SmallBaseSpec) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=(0.9, 0.95))


@torch.no_grad()
def heldout_perplexity(model: Any, stream: torch.Tensor, block_size: int, max_blocks: int) -> float:
    """Token-weighted perplexity of ``model`` on non-overlapping blocks of a token stream.

    Args:
        stream: token ids, shape ``(N,)``.
        block_size: tokens per scored block.
        max_blocks: score at most this many blocks (the first ones).
    """
    model.train(False)
    total_nll, total_tokens = 0.0, 0
    for start in range(0, max(1, stream.numel() - 1), block_size):
        if start // block_size >= max_blocks:
            break
        block = stream[start : start + block_size].unsqueeze(0)  # (1, T)
        if block.shape[1] < 2:
            break
        loss = model(input_ids=block, labels=block).loss
        n = block.shape[1] - 1
        total_nll += float(loss) * n
        total_tokens += n
    if total_tokens == 0:
        raise DataError("held-out text is too short to score (fewer than 2 tokens)")
    return math.exp(total_nll / total_tokens)


def _pretrain(
    model: Any,
    stream: torch.Tensor,
    spec: SmallBaseSpec,
    gen: torch.Generator,
    progress: ProgressCallback | None,
) -> float:
    """Run ``spec.steps`` AdamW steps on random blocks of ``stream``; return the mean loss of the
    last 10 steps (recorded as ``final_train_loss``)."""
    if stream.numel() <= spec.block_size:
        raise DataError(
            f"training text has {stream.numel()} tokens; need more than block_size={spec.block_size}"
        )
    opt = _optimizer(model, spec)
    offsets = torch.arange(spec.block_size)
    recent: list[float] = []
    model.train()
    for step in range(spec.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, spec)
        starts = torch.randint(
            0, stream.numel() - spec.block_size + 1, (spec.batch_size,), generator=gen
        )
        batch = stream[starts[:, None] + offsets]  # (B, T)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = float(loss.detach())
        recent = [*recent[-9:], value]
        if progress is not None:
            progress(step + 1, spec.steps, value)
        tenth = max(1, spec.steps // 10)
        if (step + 1) % tenth == 0 or step + 1 == spec.steps:
            # progress, shown by the CLI by default: a first run would be minutes of silence
            PROGRESS.info(
                "building the small base: %d%% (step %d/%d, train loss %.3f)",
                100 * (step + 1) // spec.steps, step + 1, spec.steps, value,
            )  # fmt: skip
    return sum(recent) / len(recent)


def build_small_base(
    texts: Sequence[str],
    out_dir: Path,
    spec: SmallBaseSpec = DEFAULT_SMALL_BASE,
    *,
    source: str = "",
    progress: ProgressCallback | None = None,
) -> Path:
    """Train a tokenizer and a small GPT-2 on ``texts`` and save them as a Hugging Face directory.

    All randomness derives from ``spec.seed`` (a private ``torch.Generator`` for the split and the
    batches; the init and any dropout run inside ``torch.random.fork_rng``), so the caller's global
    RNG state is untouched and a (texts, spec) pair names one model on a given platform.

    Args:
        texts: training documents (at least 2; a fraction ``spec.eval_fraction`` is held out).
        out_dir: the directory to create (replaced atomically if it exists).
        spec: sizes and schedule.
        source: one line describing where the texts come from, recorded in ``build_info.json``.
        progress: optional ``(step, total, loss)`` callback; an exception it raises aborts the
            build and leaves ``out_dir`` as it was.

    Returns:
        ``out_dir``, loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``.

    Raises:
        DataError: fewer than 2 texts, or too little text for one block.
        ModelError: the tokenizer or model cannot be built.
    """
    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        raise DataError("a small base needs at least 2 non-empty training texts")
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(spec.seed)
    train_texts, eval_texts = _split_documents(texts, spec, gen)
    tokenizer, train_stream, eval_stream = _tokenize(train_texts, eval_texts, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = _new_model(spec, int(tokenizer.eos_token_id))
        train_loss = _pretrain(model, train_stream, spec, gen, progress)
    train_seconds = time.perf_counter() - started
    ppl = heldout_perplexity(model, eval_stream, spec.block_size, spec.eval_blocks)
    info = {
        "kind": "small-base",
        "version": BUILD_INFO_VERSION,
        "spec": spec.to_dict(),
        "spec_digest": spec.digest(),
        "text_fingerprint": text_fingerprint(texts),
        "source": source,
        "documents": {"train": len(train_texts), "heldout": len(eval_texts)},
        "tokens": {"train": int(train_stream.numel()), "heldout": int(eval_stream.numel())},
        "steps": spec.steps,
        "train_seconds": round(train_seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "final_train_loss": round(train_loss, 4),
        "heldout_ppl": round(ppl, 3),
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer_size": len(tokenizer),  # <= vocab_size: small corpora run out of merges
        "torch_version": torch.__version__,
    }
    save_model_dir(Path(out_dir), model, tokenizer, info, started)
    logger.info(
        "small base built in %.0f s: train loss %.3f, held-out ppl %.1f -> %s",
        info["build_seconds"],
        train_loss,
        ppl,
        out_dir,
    )
    return Path(out_dir)


# --------------------------------------------------------------------------- cache


def small_base_dir(cache_dir: Path, spec: SmallBaseSpec, fingerprint: str) -> Path:
    """The cache directory for (spec, texts): ``<cache_dir>/small-<16 hex>``."""
    key = _sha256_json({"spec": spec.to_dict(), "texts": fingerprint, "v": BUILD_INFO_VERSION})
    return Path(cache_dir).expanduser() / f"small-{key[:16]}"


def _cached_ok(directory: Path, spec: SmallBaseSpec, fingerprint: str) -> bool:
    if not directory.is_dir():
        return False
    try:
        info = read_build_info(directory)
    except CorruptFileError as exc:
        logger.warning("cached small base is unusable, rebuilding: %s", exc)
        return False
    if info.get("spec") != spec.to_dict() or info.get("text_fingerprint") != fingerprint:
        logger.warning("cached small base %s does not match the spec/texts, rebuilding", directory)
        return False
    return True


def ensure_small_base(
    cache_dir: Path,
    texts_factory: Callable[[], Sequence[str]],
    spec: SmallBaseSpec = DEFAULT_SMALL_BASE,
    *,
    source: str = "",
    progress: ProgressCallback | None = None,
) -> Path:
    """Return a valid cached small base for (spec, texts), building it first if needed.

    The cache key is the spec plus a fingerprint of the texts, so ``texts_factory`` is always
    called (reading the embedded corpus costs well under a second; the build costs minutes). A
    cached directory is reused only if every file is present and matches the SHA-256 recorded in
    ``build_info.json``, and the recorded spec and text fingerprint match; anything else is
    rebuilt in place, atomically.

    Args:
        cache_dir: the folder that holds the cached bases (e.g. ``~/.cache/secure-pcft/bases``).
        texts_factory: returns the training documents.
        spec: the model to build.
        source: recorded in ``build_info.json`` when a build happens (default: the factory's
            qualified name).
        progress: passed to :func:`build_small_base`.

    Returns:
        The model directory.

    Raises:
        DataError, ModelError: as :func:`build_small_base`.
    """
    texts = list(texts_factory())
    fingerprint = text_fingerprint([t for t in texts if t.strip()])
    target = small_base_dir(cache_dir, spec, fingerprint)
    if _cached_ok(target, spec, fingerprint):
        logger.info("reusing cached small base %s", target)
        return target
    with cache_lock(target):  # a second process waits here and reuses the first one's build
        if _cached_ok(target, spec, fingerprint):
            return target
        PROGRESS.info(
            "first use: building the toolkit's small base into %s (minutes on a CPU; cached "
            "after)", target,
        )  # fmt: skip
        if not source:
            module = getattr(texts_factory, "__module__", "?")
            name = getattr(texts_factory, "__qualname__", type(texts_factory).__name__)
            source = f"{module}.{name}"
        return build_small_base(texts, target, spec, source=source, progress=progress)
