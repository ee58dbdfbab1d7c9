"""DP-SGD step time over plain step time, same model, same batch (target: ratio <= 1.5).

Model: a random GPT-2 sized like a ~5M-parameter base (vocab 8192, 4 layers, width 256), blocks of
64 tokens, batch 8, LoRA r=4 (alpha 32, dropout 0.1) on c_attn, c_proj, c_fc. Plain = the
toolkit's ``LocalTrainer`` step (AdamW); DP = ``DpTrainer`` (Opacus per-example gradients,
clipping, Gaussian noise, AdamW). Steps of the variants are interleaved so machine load drifts
hit all of them alike; after warm-up the median over N steps is reported.

    python benchmarks/dp_step_time.py [--steps 30] [--warmup 5] [--threads 0] [--device cpu]

Prints a table and writes ``benchmarks/results/dp_step_time.json`` with the machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance

from secure_pcft.config import LoraSettings, PrivacyConfig, TrainConfig
from secure_pcft.model.lora import attach_lora
from secure_pcft.privacy import DpTrainer
from secure_pcft.train.local import LocalTrainer

RESULTS = Path(__file__).with_name("results") / "dp_step_time.json"
BLOCK, BATCH, POOL = 64, 8, 512


def base_model(device: torch.device) -> GPT2LMHeadModel:
    cfg = GPT2Config(
        vocab_size=8192, n_positions=128, n_embd=256, n_layer=4, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return GPT2LMHeadModel(cfg).to(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def machine(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "device": str(device),
        "versions": {p: version(p) for p in ("torch", "opacus", "peft", "transformers")},
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured steps per variant")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    settings = LoraSettings(r=4, alpha=32.0, dropout=0.1, targets=("c_attn", "c_proj", "c_fc"))

    def fresh() -> torch.nn.Module:
        # One base per variant, moved after attach_lora (which draws LoRA inits on the CPU).
        return attach_lora(base_model(torch.device("cpu")), settings, 1).to(device)

    pool = torch.randint(0, 8192, (POOL, BLOCK), generator=torch.Generator().manual_seed(0)).to(
        device
    )
    batch_idx = torch.arange(BATCH, device=device)  # the same 8 blocks for every variant
    tcfg = TrainConfig(batch_size=BATCH)
    plain = LocalTrainer(fresh(), pool[:BATCH], tcfg, torch.Generator().manual_seed(0))

    def dp(secure: bool) -> DpTrainer:
        pcfg = PrivacyConfig(
            enabled=True, noise_multiplier=1.0, max_grad_norm=1.0, secure_rng=secure
        )
        return DpTrainer(fresh(), pool, tcfg, pcfg, torch.Generator().manual_seed(0))

    seeded, secure = dp(False), dp(True)
    variants: dict[str, Callable[[], object]] = {
        "plain (LocalTrainer)": plain.step,
        "DP-SGD, same batch (seeded noise)": lambda: seeded._update(batch_idx),
        "DP-SGD, same batch (os.urandom noise)": lambda: secure._update(batch_idx),
        "DP-SGD, Poisson batch (E[B]=8)": seeded.step,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.warmup + args.steps):
        for name, fn in variants.items():
            t = timed(fn, device)
            if i >= args.warmup:
                times[name].append(t)

    n_params = sum(p.numel() for p in plain.model.parameters() if not p.requires_grad)
    n_lora = sum(p.numel() for p in plain.params)
    ref = statistics.median(times["plain (LocalTrainer)"])
    rows = []
    print(
        f"GPT-2 {n_params / 1e6:.2f}M params, LoRA {n_lora} trainable, block {BLOCK}, batch {BATCH}"
    )
    print(f"{'variant':42s} {'median ms':>10s} {'p25 ms':>8s} {'p75 ms':>8s} {'ratio':>6s}")
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4)
        med = statistics.median(ts)
        rows.append(
            {"variant": name, "median_s": med, "p25_s": q[0], "p75_s": q[2], "ratio": med / ref}
        )
        print(f"{name:42s} {med * 1e3:10.1f} {q[0] * 1e3:8.1f} {q[2] * 1e3:8.1f} {med / ref:6.2f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "dp_step_time",
        "machine": machine(device),
        "config": {
            "base_params": n_params,
            "lora_params": n_lora,
            "block": BLOCK,
            "batch": BATCH,
            "lora": {"r": 4, "alpha": 32, "dropout": 0.1, "targets": list(settings.targets)},
            "warmup": args.warmup,
            "steps": args.steps,
            "sigma": 1.0,
            "max_grad_norm": 1.0,
        },
        "results": rows,
        "dp_over_plain_same_batch": rows[1]["ratio"],
        "target_ratio": 1.5,
    }
    report = {"_meta": provenance(None, "dp_step_time.py"), **report}
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
