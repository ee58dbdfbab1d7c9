"""Scale benchmark: wall time per round and peak memory, loopback runtime vs Flower simulation (Ray).

    python benchmarks/scale.py                 # 16 and 64 peers (writes results/scale.json)
    python benchmarks/scale.py --peers 16      # one size

Setting: the toolkit's small base, the embedded corpus (parliament speeches, peer i speaks
language i mod 3) with 16 training documents per peer, ``fedavg`` in plain mode (every peer sends
its adapter to every other peer each round: N·(N-1) adapter messages per round, the heaviest
exchange of the plain strategies), 2 warm-up steps, then 2 rounds of 2 local steps (batch 4,
block 64). Security is off: CKKS contexts (~0.36 MB per ordered pair since discovery needs no
rotation keys; 9.2 MB before) would add ~1.5 GB of setup traffic to a 64-peer secure session,
which measures TenSEAL, not the runtime.

Each (runtime, peers) case runs in a fresh subprocess with torch at 1 thread:

* ``s_per_round``: mean wall time of rounds 1..2 (local steps + the exchange + evaluation). Loopback:
  timed around ``Simulation.round``. Flower: the relay's time per round (its hello included),
  from the results file.
* ``peak_rss_mb``: the largest *sum* of RSS over the case's process tree (the benchmark process and
  every descendant: the Ray GCS, raylet and worker/actor processes for Flower), sampled every
  0.25 s with psutil. Summing RSS counts pages shared between processes (libraries, Ray's shared
  object store) once per process, so it is an upper bound of the tree's real footprint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from _common import cpu_model, machine, write_json

ROUNDS = 2


def run_toml(peers: int, out: Path) -> str:
    return f"""
[model]
base = "small"
[data]
source = "embedded"
num_peers = {peers}
docs_per_peer = 16
block_size = 64
[train]
batch_size = 4
warmup_steps = 2
local_steps = 2
total_steps = {2 + 2 * ROUNDS}
eval_batches = 1
[strategy]
name = "fedavg"
[output]
dir = "{out}"
save_adapters = false
"""


# ---- workers (one per case, in their own process) -------------------------------------------
def worker_loopback(config: Path, out: Path) -> dict[str, Any]:
    import torch

    from secure_pcft.collab.simulation import Simulation
    from secure_pcft.collab.strategy import make_strategy
    from secure_pcft.config import load_config
    from secure_pcft.data.settings import load_federation
    from secure_pcft.model.loading import load_base, resolve_base_path

    torch.set_num_threads(1)
    cfg = load_config(config)
    sim = Simulation(cfg, load_federation(cfg.data), load_base(resolve_base_path(cfg.model)))
    sim.warmup()
    strategy = make_strategy(cfg.strategy)
    times = []
    for r in range(1, cfg.train.num_rounds + 1):
        t0 = time.perf_counter()
        sim.round(strategy, r)
        times.append(time.perf_counter() - t0)
    final = sim.records[-1]
    return {
        "round_seconds": times,
        "final_mean_test_ppl": sum(final.test_ppl) / len(final.test_ppl),
    }


def worker_flower(config: Path, out: Path) -> dict[str, Any]:
    import torch

    from secure_pcft.transport.flower.simulation import simulate

    torch.set_num_threads(1)
    result = simulate(config, out, num_cpus=2, object_store_mb=128)
    rounds = [r for r in result["rounds"] if r["round"] > 0]
    ppl = [v for v in rounds[-1]["test_ppl"] if v is not None]
    return {
        "round_seconds": [r["extra"]["seconds"] for r in rounds],
        "final_mean_test_ppl": sum(ppl) / len(ppl),
        "missing_peers": {str(r["round"]): r["extra"]["missing_peers"] for r in rounds},
    }


# ---- driver --------------------------------------------------------------------------------
def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_case(runtime: str, peers: int, work: Path) -> dict[str, Any]:
    case = work / f"{runtime}-{peers}"
    case.mkdir(parents=True, exist_ok=True)
    config = case / "run.toml"
    config.write_text(run_toml(peers, case / "out"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    argv = [sys.executable, __file__, "--worker", runtime, "--config", str(config)]
    t0 = time.perf_counter()
    with (case / "log.txt").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        ps = psutil.Process(proc.pid)
        peak, stop = 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, _tree_rss(ps))
                stop.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        stop.set()
        sampler.join()
    if rc != 0:
        raise SystemExit(f"{runtime} with {peers} peers failed; see {case / 'log.txt'}")
    data = json.loads((case / "worker.json").read_text())
    times = data.pop("round_seconds")
    return {
        "s_per_round": sum(times) / len(times),
        "peak_rss_mb": peak / 2**20,
        "round_seconds": times,
        "total_wall_s": time.perf_counter() - t0,
        **data,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, action="append", help="peer counts (default 16 and 64)")
    ap.add_argument("--worker", choices=["loopback", "flower-simulation"], help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = worker_loopback if args.worker == "loopback" else worker_flower
        out = fn(args.config, args.config.parent / "out")
        (args.config.parent / "worker.json").write_text(json.dumps(out))
        return
    peer_counts = args.peers or [16, 64]
    table: dict[str, dict[str, dict[str, Any]]] = {"loopback": {}, "flower-simulation": {}}
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        for n in peer_counts:
            for runtime in table:
                print(f"{runtime}, {n} peers ...", flush=True)
                table[runtime][str(n)] = run_case(runtime, n, Path(tmp))
    print(f"\n{'runtime':<20}{'peers':>6}{'s/round':>10}{'peak RSS MB':>13}{'final ppl':>11}")
    for runtime, rows in table.items():
        for n, row in rows.items():
            print(
                f"{runtime:<20}{n:>6}{row['s_per_round']:>10.1f}{row['peak_rss_mb']:>13.0f}"
                f"{row['final_mean_test_ppl']:>11.1f}"
            )
    meta = {
        "machine": {
            **machine(),
            "cpu_model": cpu_model(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "setting": "small base, embedded corpus, fedavg, plain mode, 2 warm-up + 2 rounds of 2 "
        "local steps, batch 4, block 64, torch 1 thread; Ray: 2 CPUs, 1 ClientApp actor",
        "rss": "peak of the summed RSS of the case's process tree, sampled every 0.25 s",
    }
    payload: dict[str, Any] = {
        runtime: {n: {**row, **meta} for n, row in rows.items()} for runtime, rows in table.items()
    }
    path = write_json("scale.json", payload)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
