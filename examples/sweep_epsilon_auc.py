"""Train DP adapters at several ε on one peer of the embedded corpus, attack each, and tabulate
membership-inference AUC against ε (TM-01).

    python examples/sweep_epsilon_auc.py [--base small] [--eps 0.5 1 2 4 8 inf] [--steps 120]

Writes ``<output>/epsilon_auc.csv`` and ``<output>/epsilon_auc.svg`` (a hand-written SVG line
plot: matplotlib is not a dependency of the toolkit). ``inf`` means no DP.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from secure_pcft.audit import TargetSpec, build_target, make_attack
from secure_pcft.config import DataConfig, ModelConfig, PrivacyConfig, RunConfig, TrainConfig
from secure_pcft.data.settings import load_federation
from secure_pcft.model.loading import load_base, resolve_base_path

ATTACKS = ("loss", "reference")


def svg_plot(rows: list[dict[str, float]], path: Path) -> None:
    """AUC (y, 0.4..1) against log2 ε (x), one polyline per attack; ``inf`` drawn at the right."""
    w, h, pad = 520, 320, 50
    finite = [r["epsilon"] for r in rows if math.isfinite(r["epsilon"])]
    lo, hi = math.log2(min(finite)), math.log2(max(finite)) + 1  # one slot for ε = ∞

    def x(eps: float) -> float:
        v = math.log2(eps) if math.isfinite(eps) else hi
        return pad + (v - lo) / max(hi - lo, 1e-9) * (w - 2 * pad)

    def y(auc: float) -> float:
        return h - pad - (auc - 0.4) / 0.6 * (h - 2 * pad)

    colours = {"loss": "#1f77b4", "reference": "#d62728"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{pad}" y1="{y(0.5)}" x2="{w - pad}" y2="{y(0.5)}" stroke="#999" '
             'stroke-dasharray="4"/>',
             f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle" font-size="12">ε (log scale; '
             'right end: no DP)</text>',
             f'<text x="14" y="{h / 2}" font-size="12" transform="rotate(-90 14 {h / 2})" '
             'text-anchor="middle">MIA ROC AUC</text>']  # fmt: skip
    for r in rows:
        label = "∞" if not math.isfinite(r["epsilon"]) else f"{r['epsilon']:g}"
        parts.append(f'<text x="{x(r["epsilon"])}" y="{h - pad + 15}" font-size="10" '
                     f'text-anchor="middle">{label}</text>')  # fmt: skip
    for auc in (0.5, 0.75, 1.0):
        parts.append(f'<text x="{pad - 8}" y="{y(auc) + 4}" font-size="10" '
                     f'text-anchor="end">{auc:g}</text>')  # fmt: skip
    for i, name in enumerate(ATTACKS):
        pts = " ".join(f"{x(r['epsilon']):.1f},{y(r[name]):.1f}" for r in rows)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colours[name]}" '
                     'stroke-width="2"/>')  # fmt: skip
        parts.append(f'<text x="{w - pad + 4}" y="{pad + 14 * i}" font-size="11" '
                     f'fill="{colours[name]}">{name}</text>')  # fmt: skip
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", default="small")
    p.add_argument("--eps", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0, math.inf])
    p.add_argument("--steps", type=int, default=120, help="DP-SGD steps per adapter")
    p.add_argument("--output", type=Path, default=Path("runs/sweep_epsilon"))
    args = p.parse_args()

    run = RunConfig(
        model=ModelConfig(base=args.base),
        data=DataConfig(source="embedded", num_peers=6, docs_per_peer=40, block_size=64),
        train=TrainConfig(batch_size=8, lr=2e-3, warmup_steps=0, total_steps=args.steps),
    )
    base = load_base(resolve_base_path(run.model))
    federation = load_federation(run.data)
    rows = []
    print(
        f"{'target ε':>9}{'accountant ε':>14}{'σ':>8}"
        + "".join(f"{a + ' AUC':>16}" for a in ATTACKS)
    )
    for eps in sorted(args.eps):
        privacy = (
            PrivacyConfig(enabled=True, target_epsilon=eps)
            if math.isfinite(eps)
            else PrivacyConfig()
        )
        target = build_target(
            TargetSpec(run=replace(run, privacy=privacy)), base, federation, seed=0
        )
        row = {"epsilon": eps, "accountant_epsilon": target.epsilon,
               "sigma": float(target.notes["noise_multiplier"])}  # type: ignore[arg-type]  # fmt: skip
        for i, name in enumerate(ATTACKS):
            row[name] = make_attack(name).run(target, np.random.default_rng(i)).metrics["roc_auc"]
        rows.append(row)
        print(f"{eps:>9g}{target.epsilon:>14.3g}{row['sigma']:>8.3f}"
              + "".join(f"{row[a]:>16.3f}" for a in ATTACKS))  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    with (args.output / "epsilon_auc.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    svg_plot(rows, args.output / "epsilon_auc.svg")
    print(f"wrote {args.output / 'epsilon_auc.csv'} and {args.output / 'epsilon_auc.svg'}")


if __name__ == "__main__":
    main()
