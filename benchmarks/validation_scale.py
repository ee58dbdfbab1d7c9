"""Benchmark: the ``validation`` strategy at scale — every adapter scored vs pre-selected candidates.

    python benchmarks/validation_scale.py                    # 9, 16 and 32 peers
    python benchmarks/validation_scale.py --peers 16 --candidates 4

Every adapter a peer scores costs a forward pass over its validation batches ([train]
eval_batches), so a plain-mode round of ``validation`` costs N² passes; ``candidates = k`` scores
the own adapter and the k-1 others closest by weight cosine (N·k passes). For each N, both
variants run the same round from the same warm-up snapshot in this process (interleaved, so the
ratio is from one run on one machine state). Reported: wall time of the round's scoring (the
``score`` phase of every peer), the whole round (local steps, exchange, scoring, aggregation;
the test splits are not scored inside the round), validation passes counted, and the mean test
perplexity after the round (one round only: a cost measurement, not a utility one).

Setting: small base, embedded corpus (peer i speaks language i mod 3), 16 training documents per
peer, 4 warm-up steps, one round of 2 local steps, batch 4, block 64, eval_batches 2, torch 1
thread. Writes benchmarks/results/validation_scale.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, machine, write_json

from secure_pcft.collab import protocol
from secure_pcft.collab.strategy import make_strategy, strategy_label
from secure_pcft.config import DataConfig, OutputConfig, RunConfig, StrategyConfig, TrainConfig
from secure_pcft.data.settings import load_federation
from secure_pcft.model.loading import load_base, resolve_base_path
from secure_pcft.runtime.loopback import Simulation

TRAIN = TrainConfig(
    batch_size=4, lr=3e-3, warmup_steps=4, local_steps=2, total_steps=6, eval_batches=2
)


def run_size(peers: int, candidates: int, out: Path) -> dict[str, Any]:
    cfg = RunConfig(
        data=DataConfig(source="embedded", num_peers=peers, docs_per_peer=16, block_size=64),
        train=TRAIN,
        strategy=StrategyConfig(name="validation"),
        output=OutputConfig(dir=str(out / f"n{peers}"), save_adapters=False),
    )
    sim = Simulation(cfg, load_federation(cfg.data), load_base(resolve_base_path(cfg.model)))
    sim.warmup()
    warm = sim.snapshot()
    passes = {"n": 0}
    for p in sim.peers:  # count the validation forward passes each variant makes
        original = p.validation_perplexity

        def counted(state: Any, original: Any = original) -> float:
            passes["n"] += 1
            return float(original(state))

        p.validation_perplexity = counted  # type: ignore[method-assign]
    score_s = {"s": 0.0}
    real_score = protocol.score

    def timed_score(*args: Any, **kw: Any) -> torch.Tensor:
        t0 = time.perf_counter()
        try:
            return real_score(*args, **kw)
        finally:
            score_s["s"] += time.perf_counter() - t0

    protocol.score = timed_score  # type: ignore[assignment]
    out_rows: dict[str, Any] = {}
    try:
        for scfg in (
            StrategyConfig(name="validation"),
            StrategyConfig(name="validation", options={"candidates": candidates}),
        ):
            sim.restore(warm)
            sim.cfg = replace(cfg, strategy=scfg)
            passes["n"], score_s["s"] = 0, 0.0
            t0 = time.perf_counter()
            sim.round(make_strategy(scfg), 1, evaluate=False)
            round_s = time.perf_counter() - t0
            ppl = [p.evaluate("test").perplexity for p in sim.peers]
            out_rows[strategy_label(scfg)] = {
                "round_s": round_s,
                "score_s": score_s["s"],
                "validation_passes": passes["n"],
                "mean_test_ppl_after_round": sum(ppl) / len(ppl),
            }
    finally:
        protocol.score = real_score  # type: ignore[assignment]
    full, cand = out_rows["validation"], out_rows[f"validation-cand{candidates}"]
    out_rows["score_time_ratio"] = cand["score_s"] / full["score_s"]
    out_rows["round_time_ratio"] = cand["round_s"] / full["round_s"]
    return out_rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--peers", type=int, action="append", help="peer counts (default 9, 16, 32)")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("/tmp/secure-pcft-validation-scale"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for n in args.peers or [9, 16, 32]:
        results[str(n)] = run_size(n, args.candidates, args.out)
        r = results[str(n)]
        print(
            f"N={n:>3}: score phase {r['validation']['score_s']:.1f} s → "
            f"{r[f'validation-cand{args.candidates}']['score_s']:.1f} s "
            f"(×{r['score_time_ratio']:.3f}), round ×{r['round_time_ratio']:.3f}, passes "
            f"{r['validation']['validation_passes']} → "
            f"{r[f'validation-cand{args.candidates}']['validation_passes']}",
            flush=True,
        )
    payload = {
        **results,
        "_meta": {
            "command": "python benchmarks/validation_scale.py " + " ".join(argv or sys.argv[1:]),
            "candidates": args.candidates,
            "train": TRAIN.__dict__,
            "seconds": time.perf_counter() - started,
            "machine": machine() | {"cpu_model": cpu_model()},
        },
    }
    print(f"wrote {write_json('validation_scale.json', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
