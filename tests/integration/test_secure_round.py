"""Secure rounds end to end on the tiny base: sealed envelopes, CKKS discovery, selection, consent.

Nothing is faked: real PyNaCl envelopes, real TenSEAL, real peft adapters, loopback transport. The
wire traffic is captured at the transport (what a network or a relay would see) and inspected.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from secure_pcft.cli import main
from secure_pcft.collab import round as round_steps_module
from secure_pcft.collab.encrypted_discovery import collect_answers, send_queries
from secure_pcft.collab.strategies.weights import rowwise_cosine
from secure_pcft.collab.strategy import make_strategy
from secure_pcft.config import (
    DataConfig,
    RunConfig,
    SecurityConfig,
    StrategyConfig,
    TrainConfig,
)
from secure_pcft.crypto.consortium import Consortium
from secure_pcft.data.corpus import Federation
from secure_pcft.model.loading import BaseModel
from secure_pcft.runtime.loopback import Simulation
from secure_pcft.transport.meter import SESSION_SETUP
from tests.conftest import quick_strategy
from tests.integration.test_cli import _config

TRAIN = TrainConfig(
    batch_size=4, lr=5e-3, warmup_steps=2, local_steps=2, total_steps=6, eval_batches=2
)
PREFIX = struct.Struct(">4sB16sII")  # envelope framing, from crypto/envelope.py's docstring

Wire = tuple[str, str, bytes]


def cfg(strategy: str, security: SecurityConfig) -> RunConfig:
    return RunConfig(
        data=DataConfig(block_size=16),
        train=TRAIN,
        strategy=quick_strategy(strategy),
        security=security,
    )


def capture(
    sim: Simulation, tamper: Callable[[str, str, bytes], bytes] | None = None
) -> list[Wire]:
    """Record (and optionally alter) every byte string handed to the transport (broadcasts with
    recipient ``"*"``)."""
    wires: list[Wire] = []
    send, broadcast = sim.transport.send, sim.transport.broadcast

    def recording_send(sender: str, recipient: str, data: bytes) -> None:
        if tamper is not None:
            data = tamper(sender, recipient, data)
        wires.append((sender, recipient, data))
        send(sender, recipient, data)

    def recording_broadcast(sender: str, data: bytes) -> None:
        if tamper is not None:
            data = tamper(sender, "*", data)
        wires.append((sender, "*", data))
        broadcast(sender, data)

    sim.transport.send = recording_send  # type: ignore[method-assign]
    sim.transport.broadcast = recording_broadcast  # type: ignore[method-assign]
    return wires


def header(wire: bytes) -> dict[str, Any]:
    """The cleartext, signed envelope header (what a relay sees)."""
    _, _, _, h, _ = PREFIX.unpack_from(wire)
    return dict(json.loads(wire[PREFIX.size : PREFIX.size + h]))


def run(sim: Simulation, name: str) -> torch.Tensor:
    sim.warmup()
    sim.run_rounds(make_strategy(sim.cfg.strategy))
    return torch.tensor(sim.records[-1].trust)


@pytest.mark.parametrize("name", ["weights", "predictions"])
def test_secure_round_agrees_with_the_plain_round(
    name: str, tiny_base: BaseModel, federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spy on the discovery steps: what each peer encrypted and what it decrypted, per round.
    vectors: dict[tuple[int, int], np.ndarray] = {}
    decrypted: dict[tuple[int, int], tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def spy_queries(peer: Any, vector: Any, agent: Any) -> None:
        vectors[(peer.round, peer.index)] = vector
        send_queries(peer, vector, agent)

    def spy_answers(peer: Any, rnd: int, agent: Any) -> torch.Tensor:
        cos = collect_answers(peer, rnd, agent)
        decrypted[(rnd, peer.index)] = (cos, peer.adapter())
        return cos

    monkeypatch.setattr(round_steps_module, "send_queries", spy_queries)
    monkeypatch.setattr(round_steps_module, "collect_answers", spy_answers)
    # select everyone and let every asker have it: only the discovery mechanism differs
    secure_cfg = SecurityConfig(mode="full", select_top_k=0, consent="asker")
    plain = Simulation(cfg(name, SecurityConfig()), federation, tiny_base)
    secure = Simulation(cfg(name, secure_cfg), federation, tiny_base)
    w_plain, w_secure = run(plain, name), run(secure, name)

    rounds = sorted({r for r, _ in decrypted})
    assert rounds == list(range(1, TRAIN.num_rounds + 1)) and len(decrypted) == 3 * len(rounds)
    for rnd in rounds:
        v = np.stack([vectors[(rnd, i)] for i in range(3)])
        cos = [decrypted[(rnd, i)][0] for i in range(3)]
        adapters = [decrypted[(rnd, i)][1] for i in range(3)]
        exact = torch.tensor(v @ v.T)
        assert (torch.stack(cos) - exact).abs().max() <= 1e-3  # CKKS + flooding error bound
        if name == "weights":  # the sketch estimates the strategy's own score
            plain_scores = torch.tensor(
                [[rowwise_cosine(a, b) for b in adapters] for a in adapters]
            )
            assert (torch.stack(cos) - plain_scores).abs().max() <= 0.05
    assert torch.allclose(w_secure, w_plain, atol=0.02)
    if name == "weights":  # same quantity up to JL error: the most trusted other peer agrees
        for i in range(3):
            others = [j for j in range(3) if j != i]
            best_plain = max(others, key=lambda j: float(w_plain[i, j]))
            assert best_plain == max(others, key=lambda j: float(w_secure[i, j]))
    ppl_plain, ppl_secure = plain.records[-1].test_ppl, secure.records[-1].test_ppl
    assert ppl_secure == pytest.approx(ppl_plain, rel=1e-2)
    res = secure.result(make_strategy(secure.cfg.strategy), 0.0)
    assert all(not r for r in res.rejections.values())
    setup_bytes = res.extra["security"]["he_context_bytes"]
    assert res.extra["security"]["he_context_messages"] == 3  # one public upload per peer
    assert setup_bytes == secure.meter.sent(SESSION_SETUP).bytes
    assert setup_bytes / 3 < 450_000  # a public key alone (~0.36 MB), no Galois keys
    links = secure.meter.links(SESSION_SETUP)  # each peer's one upload, to everyone
    assert sorted(links) == [(p, "*") for p in sorted(federation.peer_ids)]
    for record in res.rounds[1:]:  # contexts are session setup, not per-round cost
        assert sum(record.bytes_sent) > 0


def test_wire_carries_no_keys_no_adapter_bytes_and_adapters_follow_consent(
    tmp_path: Path, tiny_base: BaseModel, federation: Federation
) -> None:
    keys = Consortium.create(tmp_path / "keys", federation.peer_ids)
    security = SecurityConfig(
        mode="full", key_dir=str(tmp_path / "keys"), select_top_k=1, consent="mutual"
    )
    sim = Simulation(cfg("weights", security), federation, tiny_base)
    assert sim.security is not None
    assert sim.security.consortium.fingerprints() == keys.fingerprints()
    sim.warmup()
    wires = capture(sim)
    for p in sim.peers:  # each from its own dropout stream
        p.train(TRAIN.local_steps)
    shared = [p.adapter() for p in sim.peers]  # what each peer has to share this round
    trust = sim.aggregation_phase(make_strategy(sim.cfg.strategy), 1)

    # sealed envelopes only, but for one public CKKS context per peer (the public key, in clear)
    public = [(s, header(w)["msg_type"]) for s, r, w in wires if w[:4] == b"SPCP"]
    assert sorted(public) == [(p, "he-context") for p in sorted(federation.peer_ids)]
    assert all(w[:4] == b"SPCF" for _, r, w in wires if r != "*") and len(wires) > 3
    blob = b"".join(data for _, _, data in wires)
    for key_file in (tmp_path / "keys").glob("*.key"):
        secret = json.loads(key_file.read_text())
        for field in ("sign_sk", "box_sk"):
            assert secret[field].encode() not in blob
            assert base64.b64decode(secret[field]) not in blob
    tensors = [t.numpy().tobytes() for state in shared for t in state.values()]
    assert all(len(t) >= 64 for t in tensors)
    assert not any(t in blob for t in tensors)

    # consent: with top-1 choices, an adapter crosses an edge only if both ends chose each other
    kinds = Counter(
        (h["msg_type"], h["sender"], h["recipient"]) for h in map(header, (w for *_, w in wires))
    )
    adapters = {(s, r): n for (k, s, r), n in kinds.items() if k == "adapter"}
    requests = Counter(
        s for (k, s, _), n in kinds.items() if k == "adapter-request" for _ in range(n)
    )
    assert all(n == 1 for n in adapters.values()) and all(n == 1 for n in requests.values())
    adapter_edges = set(adapters)
    selected = sim.security.report()["rounds"][-1]["selected"]
    assert all(len(v) == 1 for v in selected.values())
    mutual = {(s, r) for r, chosen in selected.items() for s in chosen if r in selected[s]}
    assert adapter_edges == mutual and len(mutual) == 2  # 3 peers: one mutual pair
    declines = [(s, r) for (k, s, r), n in kinds.items() if k == "decline"]
    assert len(declines) == 1
    ids = list(federation.peer_ids)
    for s, r in adapter_edges:
        assert trust[ids.index(r), ids.index(s)] > 0
    ((_, lonely),) = declines
    assert trust[ids.index(lonely)].tolist() == [1.0 if p == lonely else 0.0 for p in ids]
    assert all(not p.channel.rejections for p in sim.peers)


def test_plain_traffic_does_carry_adapter_bytes(
    tiny_base: BaseModel, federation: Federation
) -> None:
    # the control for the check above: the same detector finds the tensors in plain traffic
    sim = Simulation(cfg("fedavg", SecurityConfig()), federation, tiny_base)
    sim.warmup()
    wires = capture(sim)
    shared = [p.adapter() for p in sim.peers]
    sim.aggregation_phase(make_strategy(sim.cfg.strategy), 1)
    blob = b"".join(data for *_, data in wires)
    assert all(t.numpy().tobytes() in blob for state in shared for t in state.values())


def test_tampered_and_poisoned_adapters_are_rejected_and_the_round_goes_on(
    tiny_base: BaseModel, federation: Federation
) -> None:
    sim = Simulation(cfg("fedavg", SecurityConfig(mode="full")), federation, tiny_base)
    sim.warmup()
    honest = sim.peers[1].adapter
    sim.peers[1].adapter = lambda: {k: 1000.0 * v for k, v in honest().items()}  # type: ignore[method-assign]

    def flip(sender: str, recipient: str, data: bytes) -> bytes:
        if (sender, recipient) == ("peer-2", "peer-0") and header(data)["msg_type"] == "adapter":
            data = data[:-80] + bytes([data[-80] ^ 1]) + data[-79:]
        return data

    capture(sim, tamper=flip)
    record = sim.round(make_strategy(sim.cfg.strategy), 1)

    trust = torch.tensor(record.trust)
    assert trust[0].tolist() == [1.0, 0.0, 0.0]  # lost peer-1 (poisoned) and peer-2 (tampered)
    assert trust[2, 1] == 0 and trust[2, 0] > 0 and trust[1, 0] > 0
    errors0 = {(r.claimed_sender, r.error) for r in sim.peers[0].channel.rejections}
    assert errors0 == {("peer-1", "AdapterRejectedError"), ("peer-2", "BadSignatureError")}
    errors2 = {(r.claimed_sender, r.error) for r in sim.peers[2].channel.rejections}
    assert errors2 == {("peer-1", "AdapterRejectedError")}
    assert all(p > 1.0 for p in record.test_ppl)


@pytest.mark.parametrize("name", ["local", "fedavg", "oracle", "validation"])
def test_other_strategies_run_under_security(
    name: str, tiny_base: BaseModel, federation: Federation
) -> None:
    sim = Simulation(cfg(name, SecurityConfig(mode="full")), federation, tiny_base)
    sim.warmup()
    record = sim.round(make_strategy(sim.cfg.strategy), 1)
    trust = torch.tensor(record.trust)
    assert torch.allclose(trust.sum(1), torch.ones(3, dtype=trust.dtype))
    if name in ("local", "oracle"):  # three peers, three domains: nobody to exchange with
        assert sum(record.bytes_sent) == 0 and torch.equal(trust, torch.eye(3, dtype=trust.dtype))
    else:
        assert all(b > 0 for b in record.bytes_sent)
        assert (trust > 0).sum() > 3  # some peer aggregated with another
    assert all(not p.channel.rejections for p in sim.peers)


def test_cli_keys_and_secure_run(
    tmp_path: Path, tiny_base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_dir = tmp_path / "keys"
    printed = {}
    for name in ("site-0", "site-1", "site-2"):
        assert main(["keys", "new", name, "--dir", str(key_dir)]) == 0
        out = capsys.readouterr().out
        first = out.splitlines()[0].split()
        assert first[0] == name and re.fullmatch(r"[0-9a-f]{32}", first[1])
        printed[name] = first[1]
        secret = json.loads((key_dir / f"{name}.key").read_text())
        assert secret["sign_sk"] not in out and secret["box_sk"] not in out
        assert (key_dir / f"{name}.key").stat().st_mode & 0o777 == 0o600
    assert main(["keys", "roster", str(key_dir)]) == 0
    out = capsys.readouterr().out
    assert all(f"{n} {fp}" in out for n, fp in printed.items())

    config = _config(tmp_path, tiny_base_dir, "weights")
    config.write_text(
        config.read_text() + f'[security]\nmode = "full"\nkey_dir = "{key_dir}"\nselect_top_k = 1\n'
    )
    assert main(["run", str(config)]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["summary"]["total_bytes_sent"] > 0
    assert result["rejections"] == {"site-0": [], "site-1": [], "site-2": []}
    security = result["extra"]["security"]
    assert security["fingerprints"] == printed
    assert security["he_context_bytes"] > 0 and len(security["rounds"]) == 2


def test_logprob_shift_predictions_are_one_rule_in_plain_and_secure_mode(
    tiny_base: BaseModel, federation: Federation
) -> None:
    # The secure peers encrypt exactly the plain-mode signature: the trust rows may differ only
    # by the CKKS flooding noise on the cosines (~1e-4), not by a different distance.
    strategy = StrategyConfig(
        name="predictions",
        options={"signature": "logprob-shift", "calibrated": True, "reference_batches": 1},
    )
    secure_cfg = SecurityConfig(mode="full", select_top_k=0, consent="asker")
    plain = Simulation(
        replace(cfg("predictions", SecurityConfig()), strategy=strategy), federation, tiny_base
    )
    secure = Simulation(
        replace(cfg("predictions", secure_cfg), strategy=strategy), federation, tiny_base
    )
    w_plain, w_secure = run(plain, "predictions"), run(secure, "predictions")
    for rp, rs in zip(plain.records[1:], secure.records[1:], strict=True):
        assert torch.allclose(torch.tensor(rs.trust), torch.tensor(rp.trust), atol=2e-3, rtol=0)
    assert torch.allclose(w_secure, w_plain, atol=2e-3, rtol=0)
    assert float(w_plain.max()) < 0.999  # peers did average (the comparison is not vacuous)
    assert secure.records[-1].test_ppl == pytest.approx(plain.records[-1].test_ppl, rel=1e-3)
    # the plain signatures on the wire are unit sketches, not logits
    sigs = [p.inbox.own_signature for p in plain.peers]
    assert all(s is not None and set(s) == {"shift"} for s in sigs)


def test_consent_sees_the_requests_of_the_round_it_answers(
    tmp_path: Path, tiny_base: BaseModel, federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reciprocal`` consent answers every asker's first choice: the ``rank = 1`` requests must be
    read before consent is decided. (They were read only inside the answer step, after consent had
    been computed from an empty set, so the first-choice rule never applied.)"""
    import secure_pcft.collab.round as round_module

    Consortium.create(tmp_path / "keys", federation.peer_ids)
    security = SecurityConfig(
        mode="full", key_dir=str(tmp_path / "keys"), select_top_k=1, consent="reciprocal"
    )
    sim = Simulation(cfg("weights", security), federation, tiny_base)
    seen: list[set[int]] = []
    real = round_module.consented

    def spy(*args: Any, **kw: Any) -> set[int]:
        seen.append(set(kw["first_choice_of"]))
        return real(*args, **kw)

    monkeypatch.setattr(round_module, "consented", spy)
    sim.warmup()
    for p in sim.peers:
        p.train(TRAIN.local_steps)
    sim.aggregation_phase(make_strategy(sim.cfg.strategy), 1)

    # top-1: each peer asks one peer, naming it its first choice; consent saw every such request
    assert sum(len(s) for s in seen) == len(sim.peers)
    assert seen == [p.inbox.first_choice_of for p in sim.peers]
    assert sim.security.report()["rounds"][-1]["declined"] == []  # each got its first choice's
