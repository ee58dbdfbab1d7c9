"""Releases are facts: what results and reports say was sent is what the transport carried.

A 3-peer secure run whose DP budget runs out mid-run (so releases are refused) and whose top-1
selections are asymmetric (so requests are declined). A spy on the loopback transport reads the
cleartext envelope headers (sender, recipient, round, message type) of everything that left; the
round log, the report and the asker's inbox must agree with it exactly.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from secure_pcft.collab.strategy import make_strategy
from secure_pcft.config import (
    DataConfig,
    OutputConfig,
    PrivacyConfig,
    RunConfig,
    SecurityConfig,
    TrainConfig,
)
from secure_pcft.crypto.envelope import PREFIX, EnvelopeHeader
from secure_pcft.data.corpus import Federation
from secure_pcft.model.loading import BaseModel
from secure_pcft.privacy.accounting import epsilon_spent
from secure_pcft.privacy.events import DpEvent
from secure_pcft.report import build_report
from secure_pcft.runtime.loopback import Simulation
from tests.conftest import quick_strategy

TRAIN = TrainConfig(
    batch_size=4, lr=5e-3, warmup_steps=2, local_steps=2, total_steps=8, eval_batches=2
)
Edge = tuple[int, str, str]  # (round, sender, recipient)


def _header(wire: bytes) -> EnvelopeHeader:
    _, _, _, header_len, _ = PREFIX.unpack_from(wire)
    return EnvelopeHeader.from_bytes(wire[PREFIX.size : PREFIX.size + header_len])


def _budget_for_one_release(sim: Simulation) -> float:
    """Between the ε of the first release (warm-up + round 1) and that of the whole run."""
    trainer = sim.peers[0].trainer
    q, delta, sigma = trainer.sample_rate, trainer.delta, trainer.noise_multiplier  # type: ignore[union-attr]
    first = TRAIN.warmup_steps + TRAIN.local_steps
    e1 = epsilon_spent([DpEvent("dp-sgd", sigma, q, first, 1, "adapter")], delta)
    e2 = epsilon_spent(
        [DpEvent("dp-sgd", sigma, q, first + TRAIN.local_steps, 1, "adapter")], delta
    )
    return (e1 + e2) / 2


def _cfg(tmp: Path, strategy: str, budget: float | None) -> RunConfig:
    return RunConfig(
        data=DataConfig(block_size=16),
        train=TRAIN,
        strategy=quick_strategy(strategy),
        privacy=PrivacyConfig(enabled=True, noise_multiplier=0.8, budget_epsilon=budget),
        security=SecurityConfig(mode="full", select_top_k=1),
        output=OutputConfig(dir=str(tmp / "out")),
    )


@pytest.mark.parametrize("strategy", ["fedavg", "weights"])
def test_every_logged_adapter_was_on_the_wire_and_nothing_else(
    strategy: str, tmp_path: Path, tiny_base: BaseModel, federation: Federation
) -> None:
    probe = Simulation(_cfg(tmp_path / "probe", strategy, None), federation, tiny_base)
    budget = _budget_for_one_release(probe)
    probe.close()
    cfg = _cfg(tmp_path, strategy, budget)
    sim = Simulation(cfg, federation, tiny_base)
    wire: list[EnvelopeHeader] = []
    send = sim.transport.send

    def spy(sender: str, recipient: str, data: bytes) -> None:
        wire.append(_header(data))
        send(sender, recipient, data)

    sim.transport.send = spy  # type: ignore[method-assign]
    received: Counter[Edge] = Counter()
    try:
        sim.warmup()
        strategy_obj = make_strategy(cfg.strategy)
        for rnd in range(1, TRAIN.num_rounds + 1):
            sim.round(strategy_obj, rnd)
            received.update(
                (rnd, sim.peer_ids[j], p.peer_id) for p in sim.peers for j in p.inbox.adapters
            )
        res = sim.result(strategy_obj, 1.0)
        res.write_json(Path(cfg.output.dir) / "results.json")
    finally:
        sim.close()

    on_wire = Counter((h.round, h.sender, h.recipient) for h in wire if h.msg_type == "adapter")
    rounds = res.extra["security"]["rounds"]
    logged = Counter((r["round"], s, t) for r in rounds for s, t in r["adapters_sent"])
    refused = [(r["round"], s, t) for r in rounds for s, t in r["refused_budget"]]
    declines = Counter((h.round, h.sender, h.recipient) for h in wire if h.msg_type == "decline")

    stopped = [i["stopped_sharing_round"] for i in res.extra["privacy"].values()]
    assert any(r is not None for r in stopped), "the budget must stop someone for this test"
    if strategy == "fedavg":  # no discovery: the budget refuses answers to adapter requests
        assert refused
    assert logged == on_wire  # every logged adapter left, and nothing else did
    assert received == on_wire  # and arrived (no rejections in this run)
    assert not set(refused) & set(on_wire)
    for edge in refused:  # a refused release answers the asker with a DECLINE
        assert declines[edge] >= 1
    for r in rounds:  # consent declines are DECLINEs on the wire too
        for s, t in r["declined"]:
            assert declines[(r["round"], s, t)] >= 1

    report = build_report(Path(cfg.output.dir)).document
    for peer in report["peers"]:
        pid = peer["peer_id"]
        sent_to = Counter({t: n for (_, s, t), n in on_wire.items() if s == pid})
        got_from = Counter({s: n for (_, s, t), n in on_wire.items() if t == pid})
        assert Counter(peer["traffic"]["adapters_sent_to"]) == sent_to
        assert Counter(peer["traffic"]["adapters_received_from"]) == got_from
        ledger_adapters = sum(
            r["count"] for r in peer["privacy"]["releases"] if r["released"] == "adapter"
        )
        assert ledger_adapters == sum(sent_to.values())
