"""Run a collaboration on your own text files (one per site), from Python.

    python examples/run_on_own_files.py site_a.txt site_b.txt site_c.txt --reference public.txt

Each file is one site's private text (txt: one document per line; jsonl/csv: a `text` field).
"""

from __future__ import annotations

import argparse

from secure_pcft.config import DataConfig, RunConfig, StrategyConfig, TrainConfig
from secure_pcft.run import execute_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--reference", default="", help="public reference text (default: BBC News)")
    ap.add_argument("--strategy", default="predictions")
    ap.add_argument("--output", default="runs/own_files")
    args = ap.parse_args()
    cfg = RunConfig(
        data=DataConfig(source="files", paths=tuple(args.files), reference_path=args.reference),
        train=TrainConfig(warmup_steps=30, local_steps=15, total_steps=90),
        strategy=StrategyConfig(name=args.strategy),
    )
    cfg = cfg.replace(output=cfg.output.__class__(dir=args.output))
    result = execute_run(cfg)
    for pid, ppl in zip(result.peer_ids, result.final.test_ppl, strict=True):
        print(f"{pid:<20} test perplexity {ppl:8.2f}")
    print(f"results and adapters in {args.output}")


if __name__ == "__main__":
    main()
