"""Shared bits of the benchmark scripts: machine description, schedule, JSON output."""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from secure_pcft.config import TrainConfig
from secure_pcft.fileio import write_text_atomic

# machine(), cpu_model() and git_state() are re-exported: the benchmark scripts import them from here
from secure_pcft.provenance import cpu_model as cpu_model
from secure_pcft.provenance import git_state as git_state
from secure_pcft.provenance import machine as machine
from secure_pcft.provenance import stamp
from secure_pcft.third_party import quiet_third_party

# Every benchmark (and scale.py's worker processes) prints its tables without the third-party
# warnings the CLI silences too (secure_pcft/third_party.py lists them).
quiet_third_party()

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


SCHEDULES = ("default", "quick", "paper")


def train_schedule(schedule: str = "default") -> TrainConfig:
    """The benchmarks' schedule (strategies.py, privacy_utility.py): batch 8, lr 3e-3.

    ``default``: 30 warm-up + 3 rounds of 10 local steps (60 steps); ``quick``:
    10 warm-up + 2 rounds (30 steps); ``paper``: the paper's long schedule, 100 warm-up steps,
    then rounds of 25 up to 500 steps.

    The full run had 20 warm-up + 4 rounds (also 60 steps) until the strategies benchmark had to fit
    30 minutes on 2 cores: every strategy pays for the steps after round 1's local phase, so one
    round fewer cuts a third of the per-strategy work (README, "Strategies").
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    train = TrainConfig(batch_size=8, lr=3e-3, warmup_steps=30, local_steps=10, total_steps=60)
    if schedule == "quick":
        return replace(train, warmup_steps=10, total_steps=30)
    if schedule == "paper":
        return replace(train, warmup_steps=100, local_steps=25, total_steps=500)
    return train


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``results/<name>`` atomically: a killed run leaves the previous file, never half."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(RESULTS / name, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def provenance(argv: Sequence[str] | None, script: str) -> dict[str, Any]:
    """What a published figure needs beside it: commit (and dirty flag), command (``argv``, or
    this process's arguments when None), the dependency set (SHA-256 of constraints.txt), the
    machine and the date."""
    argv = sys.argv[1:] if argv is None else argv
    constraints = REPO / "constraints.txt"
    deps = hashlib.sha256(constraints.read_bytes()).hexdigest() if constraints.exists() else ""
    return {
        **stamp(" ".join(["python", f"benchmarks/{script}", *argv])),
        "constraints_sha256": deps,
        "device": {"type": "cpu", "cuda": torch.cuda.is_available()},
    }


def load_results(path: Path) -> dict[str, Any]:
    """An existing results JSON (for ``--merge``), or an empty one."""
    if not path.exists():
        return {}
    value = json.loads(path.read_text())
    return value if isinstance(value, dict) else {}
