"""One ranking rule for every top-k and threshold (collab/ranking.py), and the refusal of a
strategy top-k that secure-mode discovery cannot feed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from secure_pcft import run as run_module
from secure_pcft.collab.channel import PlainChannel
from secure_pcft.collab.peer import Peer, PeerBlocks, PeerSettings
from secure_pcft.collab.ranking import rank_others
from secure_pcft.collab.round import round_steps, steps_for
from secure_pcft.collab.selection import select_peers, willing_peers
from secure_pcft.collab.strategy import make_strategy, select_and_softmax
from secure_pcft.config import (
    OutputConfig,
    PrivacyConfig,
    RunConfig,
    SecurityConfig,
    StrategyConfig,
)
from secure_pcft.errors import ConfigError
from secure_pcft.model.loading import BaseModel
from secure_pcft.transport.loopback import LoopbackTransport
from tests.conftest import tiny_federation

NAN = float("nan")


def test_rank_others_orders_best_first_ties_by_index_and_skips_self_and_unknown() -> None:
    s = torch.tensor([9.0, 0.5, 0.9, NAN, 0.9, -1.0], dtype=torch.float64)
    assert rank_others(s, 0) == [2, 4, 1, 5]  # self (9.0) never ranked, NaN never ranked
    assert rank_others(s, 0, limit=2) == [2, 4]
    assert rank_others(s, 0, limit=0) == []
    assert rank_others(s, 0, threshold=0.5) == [2, 4, 1]  # >= threshold kept
    assert rank_others(s, 0, among=[1, 5, 3]) == [1, 5]
    assert rank_others(s, 2, limit=1) == [0]


def test_aggregation_and_discovery_rank_the_same_scores_the_same_way() -> None:
    # Same scores, same threshold: the strategy's top_k = k + 1 (self + k others) and
    # [security] select_top_k = k (k others) pick the same others.
    scores = torch.tensor([0.2, 0.7, 0.1, 0.7, 0.4, 0.3], dtype=torch.float64)
    support = torch.ones(6, dtype=torch.float64)
    for k in range(1, 6):
        for threshold in (None, 0.35):
            row = select_and_softmax(scores, 0, top_k=k + 1, threshold=threshold)
            kept = {j for j in range(1, 6) if float(row[j]) > 0}
            cfg = SecurityConfig(mode="full", select_top_k=k, select_threshold=threshold)
            assert (
                kept
                == select_peers(support, scores, 0, cfg)
                == willing_peers(support, scores, 0, cfg)
            ), (k, threshold)


def test_secure_mode_refuses_a_strategy_top_k_that_discovery_cannot_feed() -> None:
    weights = make_strategy(StrategyConfig(name="weights", top_k=5))
    with pytest.raises(ConfigError, match=r"top_k = 5 keeps self and 4 other.*select_top_k = 3"):
        steps_for(weights, SecurityConfig(mode="full", select_top_k=3))
    assert steps_for(weights, SecurityConfig(mode="full", select_top_k=4))  # self + 4 asked
    assert steps_for(weights, SecurityConfig(mode="full", select_top_k=0))  # 0 = ask every peer
    assert steps_for(weights, None)  # plain mode: every adapter is held
    assert steps_for(weights, SecurityConfig(mode="off", select_top_k=1))
    fedavg = make_strategy(StrategyConfig(name="fedavg", top_k=5))  # no discovery: no limit
    assert steps_for(fedavg, SecurityConfig(mode="full", select_top_k=1))


def test_a_run_with_that_mismatch_is_refused_before_any_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = RunConfig(
        strategy=StrategyConfig(name="predictions", top_k=4),
        security=SecurityConfig(mode="full", select_top_k=1),
        output=OutputConfig(dir=str(tmp_path / "out")),
    )
    with pytest.raises(ConfigError, match="select_top_k = 1"):
        round_steps(cfg)

    def no_data(*_: object) -> None:
        raise AssertionError("the data was read before the configuration was refused")

    monkeypatch.setattr(run_module, "load_federation", no_data)
    with pytest.raises(ConfigError, match="select_top_k = 1"):
        run_module.execute_run(cfg)


def test_a_dp_peer_needs_a_ledger_directory(tiny_base: BaseModel) -> None:
    fed = tiny_federation(num_peers=2, docs=8)
    cfg = RunConfig(privacy=PrivacyConfig(enabled=True, noise_multiplier=1.0))
    empty = torch.zeros((0, cfg.data.block_size), dtype=torch.long)
    channel = PlainChannel(fed.peer_ids[0], LoopbackTransport(fed.peer_ids))
    with pytest.raises(ConfigError, match="needs a ledger directory"):
        Peer(
            0, fed.peer_ids, fed.peers[0], PeerBlocks(empty, empty, empty), tiny_base,
            PeerSettings.of(cfg), channel,
        )  # fmt: skip
