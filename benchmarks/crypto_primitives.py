"""Benchmark of the crypto layer: envelopes, adapter checks, JL projection, CKKS similarity.

Prints one table and writes ``benchmarks/results/crypto_primitives.json``. Timings are medians of
``--reps`` runs on the current machine (CPU, single-threaded TenSEAL); sizes are exact bytes.

    python benchmarks/crypto_primitives.py [--reps 7] [--pairs 40] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts
import torch
from nacl.public import Box
from nacl.signing import VerifyKey
from safetensors.torch import save as safetensors_save

if __package__ in (None, ""):  # run as a script from a checkout: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance

from secure_pcft.crypto import _params
from secure_pcft.crypto.adapter_checks import AdapterSpec, decode_adapter
from secure_pcft.crypto.envelope import Inbox, InboxPolicy, Sealer
from secure_pcft.crypto.he_similarity import ResponderPolicy, SimilarityAsker, SimilarityResponder
from secure_pcft.crypto.identity import Identity
from secure_pcft.crypto.projection import ProjectionSpec, project
from secure_pcft.crypto.roster import Roster

Row = dict[str, Any]


def median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def unit(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v)


def _open_next(inbox: Inbox, wires: Iterator[bytes]) -> object:
    return inbox.open(next(wires))


def bench_envelopes(reps: int) -> list[Row]:
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    roster = Roster([alice.public(), bob.public()])
    sealer = Sealer(alice)
    rows = []
    for size in (1024, 1 << 20, 8 << 20):
        body = np.random.default_rng(0).bytes(size)
        wires = [sealer.seal(bob.public(), "adapter", 0, body) for _ in range(reps)]
        inbox = Inbox(bob, roster, InboxPolicy(max_body_bytes=16 << 20))
        it = iter(wires)
        rows.append(
            {
                "group": "envelope",
                "case": f"body {size} B",
                "seal_ms": median_ms(partial(sealer.seal, bob.public(), "adapter", 0, body), reps),
                "open_ms": median_ms(partial(_open_next, inbox, it), reps),
                "overhead_bytes": len(wires[0]) - size,
            }
        )
    return rows


def _bare_round_trip(
    box: Box, signer: Identity, verify_key: VerifyKey, body: bytes, v2: bool
) -> None:
    """The primitives alone, no framing or checks: what an envelope cannot be faster than."""
    ct = box.encrypt(body)
    if v2:
        sig = signer.sign(hashlib.sha256(ct).digest())
        verify_key.verify(hashlib.sha256(ct).digest(), sig)
    else:
        sig = signer.sign(ct)
        verify_key.verify(ct, sig)
    box.decrypt(ct)


def bench_envelope_vs_primitives(reps: int) -> list[Row]:
    """Seal + open against bare Box + Ed25519, interleaved in one loop, min of ``reps``.

    ``bare_v1`` signs the ciphertext itself (what wire format v1 did: Ed25519 hashes it twice with
    SHA-512 when signing, once when verifying); ``bare_v2`` signs SHA-256(ciphertext), as v2 does.
    """
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    roster = Roster([alice.public(), bob.public()])
    sealer = Sealer(alice)
    box = alice.box_for(bob.public())  # one shared key: the two sides' costs are the same
    verify_key = VerifyKey(alice.public().sign_pk)
    rows = []
    for size in (1 << 20, 2_400_000, 8 << 20):  # 2.4 MB: a GPT-2-small LoRA adapter
        body = np.random.default_rng(1).bytes(size)
        inbox = Inbox(bob, roster, InboxPolicy(max_body_bytes=16 << 20))

        def envelope(body: bytes = body, inbox: Inbox = inbox) -> None:
            inbox.open(sealer.seal(bob.public(), "adapter", 0, body))

        cases: dict[str, Callable[[], object]] = {
            "envelope": envelope,
            "bare_v2": partial(_bare_round_trip, box, alice, verify_key, body, True),
            "bare_v1": partial(_bare_round_trip, box, alice, verify_key, body, False),
        }
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(reps):
            for name, fn in cases.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
        rows.append(
            {
                "group": "envelope-v2",
                "case": f"seal+open vs primitives, body {size / 1e6:.1f} MB",
                "envelope_mb_per_s": size / 1e6 / best["envelope"],
                "bare_v2_mb_per_s": size / 1e6 / best["bare_v2"],
                "bare_v1_mb_per_s": size / 1e6 / best["bare_v1"],
                "envelope_over_bare_v2": best["envelope"] / best["bare_v2"],
                "envelope_over_bare_v1": best["envelope"] / best["bare_v1"],
            }
        )
    return rows


def bench_adapter_check(reps: int) -> list[Row]:
    # GPT-2-small-like LoRA (r=4 on c_attn, c_proj, c_fc, mlp.c_proj of 12 blocks): ~0.8 M numbers
    g = torch.Generator().manual_seed(0)
    shapes = {"c_attn": (768, 2304), "attn.c_proj": (768, 768), "c_fc": (768, 3072)}
    shapes["mlp.c_proj"] = (3072, 768)
    state = {}
    for layer in range(12):
        for name, (d_in, d_out) in shapes.items():
            state[f"h.{layer}.{name}.lora_A.weight"] = torch.randn(4, d_in, generator=g) * 0.01
            state[f"h.{layer}.{name}.lora_B.weight"] = torch.randn(d_out, 4, generator=g) * 0.01
    data = safetensors_save(state)
    spec = AdapterSpec.from_state_dict(state, max_tensor_norm=10.0, max_global_norm=100.0)
    numel = sum(t.numel() for t in state.values())
    return [
        {
            "group": "adapter_check",
            "case": f"{len(state)} tensors, {numel} numbers",
            "decode_and_check_ms": median_ms(lambda: decode_adapter(data, spec), reps),
            "bytes": len(data),
        }
    ]


def bench_projection(reps: int, pairs: int) -> list[Row]:
    rows = []
    for big_d in (100_000, 1_000_000):
        state = {"w": torch.from_numpy(np.random.default_rng(1).standard_normal(big_d))}
        for dim in (1024, 4096):
            spec = ProjectionSpec(seed=20240401, dim=dim)
            rows.append(
                {
                    "group": "projection",
                    "case": f"D={big_d} -> d={dim}",
                    "ms": median_ms(partial(project, state, spec), max(3, reps // 2)),
                }
            )
    rng = np.random.default_rng(2)
    for dim in (1024, 4096):
        spec = ProjectionSpec(seed=20240401, dim=dim)
        errs = []
        for _ in range(pairs):
            x, z = unit(rng, 50_000), unit(rng, 50_000)
            cos = float(rng.uniform(-1, 1))
            y = cos * x + np.sqrt(1 - cos**2) * (z - (z @ x) * x) / np.linalg.norm(z - (z @ x) * x)
            px = project({"w": torch.from_numpy(x)}, spec)
            py = project({"w": torch.from_numpy(y)}, spec)
            errs.append(abs(float(px @ py) - float(x @ y)))
        rows.append(
            {
                "group": "projection",
                "case": f"JL |cos error| d={dim}, D=5e4, {pairs} pairs",
                "mean_abs_err": float(np.mean(errs)),
                "max_abs_err": float(np.max(errs)),
            }
        )
    return rows


def _ctx_sizes() -> list[Row]:
    rows = []
    for mods in ((60, 40, 40, 60), _params.COEFF_MOD_BIT_SIZES):
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=list(mods), n_threads=1)
        ctx.global_scale = 2.0**40
        no_gal = ctx.serialize(save_secret_key=False, save_galois_keys=False, save_relin_keys=False)
        ctx.generate_galois_keys()
        full = ctx.serialize(save_secret_key=False, save_galois_keys=True, save_relin_keys=False)
        private = ctx.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
        x = ts.ckks_vector(ctx, [0.01] * 4096).serialize()
        rows.append(
            {
                "group": "ckks_sizes",
                "case": f"coeff_mod {list(mods)}",
                "public_no_galois_B": len(no_gal),
                "public_default_galois_B": len(full),
                "private_no_galois_B": len(private),
                "query_ciphertext_B": len(x),
            }
        )
    return rows


def bench_he(reps: int, pairs: int) -> list[Row]:
    rows = _ctx_sizes()
    start = time.perf_counter()
    asker = SimilarityAsker()
    public = asker.public_context()
    keygen_ms = 1000 * (time.perf_counter() - start)
    responder = SimilarityResponder(ResponderPolicy(max_queries_per_round=10**9))
    register_ms = median_ms(partial(responder.register_context, "a", public), 3)
    rng = np.random.default_rng(3)
    x, y = unit(rng, 4096), unit(rng, 4096)
    query = asker.query(x)
    answer = responder.answer("a", 0, query, y)
    rows.append(
        {
            "group": "ckks_sizes",
            "case": "secure_pcft (public key only, rotation-free)",
            "public_context_B": len(public),
            "query_ciphertext_B": len(query),
            "answer_B": len(answer),
            "keygen_and_serialise_ms": keygen_ms,
            "register_context_ms": register_ms,
        }
    )
    for dim in (1024, 4096):
        x, y = unit(rng, dim), unit(rng, dim)
        q = asker.query(x)
        a = responder.answer("a", 0, q, y)
        rows.append(
            {
                "group": "ckks_time",
                "case": f"d={dim}",
                "encrypt_ms": median_ms(partial(asker.query, x), reps),
                "answer_ms": median_ms(partial(responder.answer, "a", 0, q, y), reps),
                "decrypt_ms": median_ms(partial(asker.decrypt, a), reps),
            }
        )
    ctx = ts.context_from(public)
    flooded, raw = [], []
    for i in range(pairs):
        dim = 1024 if i % 2 else 4096
        x, y = unit(rng, dim), unit(rng, dim)
        if i % 3 == 0:
            y = 0.8 * x + 0.6 * y
            y /= np.linalg.norm(y)
        q = asker.query(x)
        flooded.append(asker.decrypt(responder.answer("a", 0, q, y)) - float(x @ y))
        padded = np.zeros(4096)
        padded[:dim] = y
        # the product alone: no re-randomisation, no mask, no flood; the asker sums the slots
        bare = ts.ckks_vector_from(ctx, q) * padded.tolist()
        raw.append(asker.decrypt(bare.serialize()) - float(x @ y))
    for label, errs in (("with flooding (shipped)", flooded), ("CKKS only, no flooding", raw)):
        arr = np.abs(np.array(errs))
        rows.append(
            {
                "group": "ckks_error",
                "case": f"{label}, {pairs} pairs",
                "mean_abs_err": float(arr.mean()),
                "max_abs_err": float(arr.max()),
                "std_err": float(np.std(errs)),
            }
        )
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"{'group':<14} {'case':<44} metrics")
    print("-" * 110)
    for row in rows:
        metrics = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if k not in ("group", "case")
        )
        print(f"{row['group']:<14} {row['case']:<44} {metrics}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=40)
    default_out = Path(__file__).resolve().parent / "results" / "crypto_primitives.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = (
        bench_envelopes(args.reps)
        + bench_envelope_vs_primitives(args.reps)
        + bench_adapter_check(args.reps)
        + bench_projection(args.reps, args.pairs)
        + bench_he(args.reps, args.pairs)
    )
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor(),
        "tenseal": ts.__version__,
        "torch": torch.__version__,
        "reps": args.reps,
        "pairs": args.pairs,
        "ckks": {
            "poly_modulus_degree": _params.POLY_MODULUS_DEGREE,
            "coeff_mod_bit_sizes": list(_params.COEFF_MOD_BIT_SIZES),
            "scale_bits": 40,
            "flood_sigma": _params.FLOOD_SIGMA,
        },
    }
    stamp = provenance(argv, "crypto_primitives.py")
    args.out.write_text(json.dumps({"_meta": stamp, "meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
