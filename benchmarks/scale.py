"""Scale benchmark: wall time per round and peak memory by runtime, security mode and strategy.

    python benchmarks/scale.py                          # every case at 16, 32 and 64 peers
    python benchmarks/scale.py --peers 16 --case loopback-secure --case loopback-weights

Setting: the toolkit's small base, the embedded corpus (parliament speeches, peer i speaks
language i mod 3) with 16 training documents per peer, 2 warm-up steps, then 2 rounds of 2 local
steps (batch 4, block 64, eval_batches 1). The cases (``--case``, default all):

* ``loopback`` / ``flower-simulation``: ``fedavg`` in plain mode (every peer sends its adapter to
  every other peer each round: N·(N-1) adapter messages, the heaviest plain exchange), on the
  in-process loopback runtime and on Flower's simulation engine (Ray) — the runtime comparison.
* ``loopback-weights``: ``weights`` in plain mode (adapters broadcast, trust from their cosines) —
  the baseline of the next case, same strategy without the hardening.
* ``loopback-secure``: ``weights`` with ``[security] mode = "full"``: signed + encrypted envelopes,
  CKKS discovery (N·(N-1) encrypted cosines per round), top-3 selection with mutual consent, sealed
  adapters to the selected peers only. Round 1 includes the once-per-session exchange of public
  CKKS contexts (one per peer, 0.36 MB, sent to each of the N-1 others); ``setup`` reports it.
* ``loopback-validation``: ``validation`` in plain mode, every peer scoring every received
  adapter on its validation batches (N² forward passes per round); run only up to 32 peers.
* ``loopback-validation-cand4``: ``validation`` with ``candidates = 4`` (the own adapter and the 3
  closest by weight cosine: 4·N passes).

Rows of cases or sizes not run keep their earlier values in the JSON. Each (case, peers) runs in a
fresh subprocess with torch at 1 thread; within one invocation the
cases run one after another on the same machine state, so ratios between them come from one run:

* ``s_per_round``: mean wall time of rounds 1..2 (local steps + the exchange + evaluation). Loopback:
  timed around ``Simulation.round``. Flower: the relay's time per round (its hello included),
  from the results file.
* ``peak_rss_mb``: the largest *sum* of RSS over the case's process tree (the benchmark process and
  every descendant: the Ray GCS, raylet and worker/actor processes for Flower), sampled every
  0.25 s with psutil. Summing RSS counts pages shared between processes (libraries, Ray's shared
  object store) once per process, so it is an upper bound of the tree's real footprint.
* ``vs_baseline``: ``s_per_round`` over that of the case's baseline at the same N
  (``loopback-secure`` → ``loopback-weights``; validation cases and ``flower-simulation`` →
  ``loopback``), when both ran.
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
from _common import RESULTS, cpu_model, machine, provenance, write_json

ROUNDS = 2

# case -> (worker, [strategy] and [security] tables, baseline case)
CASES: dict[str, tuple[str, str, str | None]] = {
    "loopback": ("loopback", '[strategy]\nname = "fedavg"\n', None),
    "flower-simulation": ("flower-simulation", '[strategy]\nname = "fedavg"\n', "loopback"),
    "loopback-weights": ("loopback", '[strategy]\nname = "weights"\n', None),
    "loopback-secure": (
        "loopback",
        '[strategy]\nname = "weights"\n[security]\nmode = "full"\nselect_top_k = 3\n',
        "loopback-weights",
    ),
    "loopback-validation": ("loopback", '[strategy]\nname = "validation"\n', "loopback"),
    "loopback-validation-cand4": (
        "loopback",
        '[strategy]\nname = "validation"\ncandidates = 4\n',
        "loopback",
    ),
}
# Cases run only up to this many peers: N² validation passes a round at 64 peers are ~20 min of
# scoring on a 2-core machine (measured at 9-32 peers in benchmarks/validation_scale.py).
MAX_PEERS = {"loopback-validation": 32}


def run_toml(peers: int, out: Path, tables: str) -> str:
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
{tables}[output]
dir = "{out}"
save_adapters = false
"""


# ---- workers (one per case, in their own process) -------------------------------------------
def worker_loopback(config: Path, out: Path) -> dict[str, Any]:
    import torch

    from secure_pcft.collab.strategy import make_strategy
    from secure_pcft.config import load_config
    from secure_pcft.data.settings import load_federation
    from secure_pcft.model.loading import load_base, resolve_base_path
    from secure_pcft.runtime.loopback import Simulation

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
    row: dict[str, Any] = {
        "round_seconds": times,
        "final_mean_test_ppl": sum(final.test_ppl) / len(final.test_ppl),
    }
    if sim.security is not None:
        from secure_pcft.transport.meter import SESSION_SETUP

        report = sim.security.report()
        links = sim.meter.links(SESSION_SETUP)  # a public context goes to "*": every other peer
        received = [
            sum(t.bytes for (s, r), t in links.items() if s != p and r in ("*", p))
            for p in sim.peer_ids
        ]
        row["setup"] = {
            "he_context_bytes": report["he_context_bytes"],
            "he_context_messages": report["he_context_messages"],
            "he_context_bytes_per_peer_sent": report["he_context_bytes"] / len(sim.peers),
            "he_context_bytes_per_peer_received": sum(received) / len(received),
        }
        row["adapters_sent_per_round"] = [len(r["adapters_sent"]) for r in report["rounds"]]
    return row


def worker_flower(config: Path, out: Path) -> dict[str, Any]:
    import torch

    from secure_pcft.runtime.flower.simulation import simulate

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


def run_case(name: str, peers: int, work: Path) -> dict[str, Any]:
    runtime, tables, _ = CASES[name]
    case = work / f"{name}-{peers}"
    case.mkdir(parents=True, exist_ok=True)
    config = case / "run.toml"
    config.write_text(run_toml(peers, case / "out", tables))
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
        tail = (case / "log.txt").read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"{name} with {peers} peers failed (exit {rc}):\n" + "\n".join(tail))
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
    ap.add_argument(
        "--peers", type=int, action="append", help="peer counts (default 16, 32 and 64)"
    )
    ap.add_argument("--case", choices=list(CASES), action="append", help="cases (default all)")
    ap.add_argument("--worker", choices=["loopback", "flower-simulation"], help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = worker_loopback if args.worker == "loopback" else worker_flower
        out = fn(args.config, args.config.parent / "out")
        (args.config.parent / "worker.json").write_text(json.dumps(out))
        return
    peer_counts = args.peers or [16, 32, 64]
    cases = args.case or list(CASES)
    table: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in cases}
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        for n in peer_counts:
            for name in cases:
                if n > MAX_PEERS.get(name, n):
                    continue
                print(f"{name}, {n} peers ...", flush=True)
                try:
                    table[name][str(n)] = run_case(name, n, Path(tmp))
                except SystemExit as exc:  # a failed case is recorded; the others still run
                    print(exc, flush=True)
                    table[name][str(n)] = {"failed": str(exc)[-3000:]}
                write_results(table)  # after every case: a long run killed later keeps these
    print_table(table)
    print(f"\nwrote {RESULTS / 'scale.json'}")


def write_results(table: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Same-run ratios to each case's baseline, merged into results/scale.json."""
    for name, rows in table.items():
        base = CASES[name][2]
        for n, row in rows.items():
            other = table.get(base, {}).get(n, {}) if base else {}
            if "s_per_round" in row and "s_per_round" in other:
                row["vs_baseline"] = {
                    "case": base,
                    "ratio": row["s_per_round"] / other["s_per_round"],
                }
    meta = {
        "machine": {
            **machine(),
            "cpu_model": cpu_model(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "setting": "small base, embedded corpus, 2 warm-up + 2 rounds of 2 local steps, batch 4, "
        "block 64, eval_batches 1, torch 1 thread; Ray: 2 CPUs, 1 ClientApp actor",
        "rss": "peak of the summed RSS of the case's process tree, sampled every 0.25 s",
    }
    # Cases and sizes not run now keep their earlier rows (each row carries its machine and
    # setting; vs_baseline ratios are only ever computed within one run).
    previous = RESULTS / "scale.json"
    payload: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    stamp = provenance(None, "scale.py")
    for name, rows in table.items():
        payload.setdefault(name, {}).update(
            {
                n: {**row, **meta, "case": CASES[name][1], "provenance": stamp}
                for n, row in rows.items()
            }
        )
    payload["_meta"] = stamp  # the latest run; each row keeps the stamp of the run that made it
    write_json("scale.json", payload)


def print_table(table: dict[str, dict[str, dict[str, Any]]]) -> None:
    print(
        f"\n{'case':<28}{'peers':>6}{'s/round':>10}{'vs base':>9}{'peak RSS MB':>13}"
        f"{'final ppl':>11}"
    )
    for name, rows in table.items():
        for n, row in rows.items():
            if "failed" in row:
                print(f"{name:<28}{n:>6}  FAILED (see scale.json)")
                continue
            ratio = row.get("vs_baseline", {}).get("ratio")
            shown = f"{ratio:>9.2f}" if ratio is not None else f"{'-':>9}"
            print(
                f"{name:<28}{n:>6}{row['s_per_round']:>10.1f}{shown}{row['peak_rss_mb']:>13.0f}"
                f"{row['final_mean_test_ppl']:>11.1f}"
            )


if __name__ == "__main__":
    main()
