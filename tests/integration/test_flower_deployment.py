"""Deployment for real, on loopback: a SuperLink and three sites as separate processes, with TLS
and SuperNode authentication, run two secure rounds; the results equal the loopback runtime's.

Nothing is faked: flower-superlink, flower-supernode (process isolation) and secure-pcft's
ClientApp host run as their own process groups; the run is submitted with ``flwr run``.

Equality: the warm-up is deterministic and must match exactly. After it, the only randomness that
differs between two runs of either runtime is the CKKS noise flooding of similarity answers
(fresh CSPRNG noise, σ = _params.FLOOD_SIGMA on each cosine) and the encryption randomness, which
move trust weights by ~1e-4 and test perplexities by ~1e-5 relative on this model. We allow
rtol 1e-3 on perplexities and atol 5e-3 on trust weights: far above that noise, far below any
difference a wrong schedule, a lost message or a wrong seed produces (those change the first
aggregated round by whole percents, as the missing-delivery bug this test caught did).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from secure_pcft.collab.messages import PUBLIC_MESSAGE_TYPES
from secure_pcft.config import load_config
from secure_pcft.run import execute_run
from tests.integration.flower_cluster import (  # noqa: F401  (fixture)
    Cluster,
    flower_selected,
    started,
    write_run,
)

pytestmark = [pytest.mark.flower, pytest.mark.usefixtures("flower_selected")]


def test_three_sites_two_secure_rounds_match_loopback(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    cluster = Cluster(tmp_path, run)
    results = tmp_path / "flower" / "results.json"
    t0 = time.monotonic()
    try:
        started(cluster)
        cluster.submit(results, step_timeout=120, wait=120)
        flower: dict[str, Any] = cluster.wait_results_complete(results, rounds=2, timeout=420)
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
    flower_s = time.monotonic() - t0
    torch.set_num_threads(1)
    loop = execute_run(load_config(run)).to_dict()

    assert [r["round"] for r in flower["rounds"]] == [0, 1, 2]
    assert all(r["extra"]["missing_peers"] == [] for r in flower["rounds"])
    assert flower["rounds"][0]["test_ppl"] == loop["rounds"][0]["test_ppl"]  # deterministic
    for fr, lr in zip(flower["rounds"][1:], loop["rounds"][1:], strict=True):
        for a, b in zip(fr["test_ppl"], lr["test_ppl"], strict=True):
            assert math.isclose(a, b, rel_tol=1e-3), (fr["round"], a, b)
        for row_f, row_l in zip(fr["trust"], lr["trust"], strict=True):
            assert max(abs(x - y) for x, y in zip(row_f, row_l, strict=True)) < 5e-3
        for a, b in zip(fr["bytes_sent"], lr["bytes_sent"], strict=True):
            assert abs(a - b) / b < 0.01  # ciphertext sizes vary a little
        assert fr["messages_sent"] == lr["messages_sent"]
        assert fr["extra"]["adopted"] == lr["extra"]["adopted"]  # the same candidates adopted
        assert fr["extra"]["alone"] == lr["extra"]["alone"]
    assert flower["strategy"] == loop["strategy"]  # one label for one run, in both runtimes
    for fk, lk in zip(flower["kept"], loop["kept"], strict=True):  # what each site keeps
        assert (fk["origin"], fk["start"]["origin"]) == (lk["origin"], lk["start"]["origin"])
        assert math.isclose(fk["test_ppl"], lk["test_ppl"], rel_tol=1e-3)
    fs, ls = flower["extra"]["security"], loop["extra"]["security"]
    assert fs["rounds"] == ls["rounds"]  # same selections, same adapters sent, same declines
    assert fs["fingerprints"] == ls["fingerprints"]
    assert abs(fs["he_context_bytes"] - ls["he_context_bytes"]) / ls["he_context_bytes"] < 0.01
    assert all(not v for v in flower["rejections"].values())
    # The relay host is blind: what its SuperLink stored holds the relayed envelopes (magic SPCF),
    # no LoRA tensor name of a plaintext adapter, and no message in clear but a public one. Public
    # envelopes (magic SPCP) carry their message (magic SPCM) in clear by design, so whether an
    # he-context message is still in the database when the run ends depends on SQLite's page reuse
    # (CI saw both); every message header in clear must name a public type. A message header is
    # canonical JSON whose last key is "type" (an envelope header's is "msg_type", which the
    # pattern's leading quote excludes).
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("superlink.db*"))
    assert stored.count(b"SPCF") > 0
    assert b"lora_A" not in stored and b"lora_B" not in stored
    clear_types = {m.decode() for m in re.findall(rb'"type":"([a-z-]+)"\}', stored)}
    assert clear_types <= {str(t) for t in PUBLIC_MESSAGE_TYPES}, clear_types
    print(f"flower deployment run: {flower_s:.0f} s wall (setup, 2 rounds, teardown)")
