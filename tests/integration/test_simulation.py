"""Multi-peer rounds through the real message layer on the tiny base."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from secure_pcft.collab.messages import MessageType
from secure_pcft.collab.strategy import make_strategy
from secure_pcft.config import DataConfig, LoraSettings, RunConfig, StrategyConfig, TrainConfig
from secure_pcft.data.corpus import Federation
from secure_pcft.model.loading import BaseModel, load_base
from secure_pcft.runtime.loopback import Simulation
from tests.conftest import quick_strategy

TRAIN = TrainConfig(
    batch_size=4, lr=5e-3, warmup_steps=2, local_steps=2, total_steps=6, eval_batches=2
)


def cfg(strategy: str, mode: str = "paper") -> RunConfig:
    return RunConfig(
        lora=LoraSettings(mode=mode),  # type: ignore[arg-type]
        data=DataConfig(block_size=16),
        train=TRAIN,
        strategy=quick_strategy(strategy),
    )


@pytest.mark.parametrize(
    "name", ["local", "fedavg", "oracle", "weights", "predictions", "validation"]
)
def test_every_strategy_runs_rounds(
    name: str, tiny_base: BaseModel, federation: Federation
) -> None:
    sim = Simulation(cfg(name), federation, tiny_base)
    sim.warmup()
    strategy = make_strategy(cfg(name).strategy)
    sim.run_rounds(strategy)
    res = sim.result(strategy, 0.0)
    assert len(res.rounds) == 1 + TRAIN.num_rounds
    last = res.final
    trust = torch.tensor(last.trust)
    assert trust.shape == (3, 3)
    assert torch.allclose(trust.sum(1), torch.ones(3, dtype=trust.dtype))
    assert all(p > 1.0 for p in last.test_ppl)
    if name in ("local", "oracle"):  # the three tiny peers have three different domains
        assert sum(last.bytes_sent) == 0
    else:
        assert all(b > 0 for b in last.bytes_sent)
    assert all(not r for r in res.rejections.values())


def test_fedavg_leaves_every_peer_with_the_same_adapter(
    tiny_base: BaseModel, federation: Federation
) -> None:
    sim = Simulation(cfg("fedavg", mode="shared-init"), federation, tiny_base)
    sim.warmup()
    sim.round(make_strategy(StrategyConfig(name="fedavg")), 1)
    a = [p.adapter() for p in sim.peers]
    for other in a[1:]:
        assert all(torch.allclose(other[k], a[0][k], atol=1e-6) for k in a[0])


def test_local_strategy_equals_training_alone(tiny_base: BaseModel, federation: Federation) -> None:
    sim = Simulation(cfg("local"), federation, tiny_base)
    sim.warmup()
    before = sim.snapshot()
    sim.round(make_strategy(StrategyConfig(name="local")), 1)
    after_round = [p.adapter() for p in sim.peers]
    sim.restore(before)  # each peer's dropout stream goes back to where the round started it
    for p in sim.peers:
        p.train(TRAIN.local_steps)
    alone = [p.adapter() for p in sim.peers]
    for x, y in zip(after_round, alone, strict=True):
        assert all(torch.allclose(x[k], y[k]) for k in x)


def test_each_peer_draws_dropout_from_its_own_stream(
    tiny_base: BaseModel, federation: Federation
) -> None:
    """A peer's masks depend on neither the other peers nor the caller's RNG (the Flower runtime
    trains one peer per site: both runtimes must draw the same masks), and dropout is really on."""
    assert cfg("local").lora.dropout > 0
    caller = torch.get_rng_state()
    forward = Simulation(cfg("local"), federation, tiny_base)
    for p in forward.peers:
        p.train(3)
    assert torch.equal(torch.get_rng_state(), caller)  # the caller's global RNG is untouched
    torch.manual_seed(12345)  # a different caller state must not matter
    backward = Simulation(cfg("local"), federation, tiny_base)
    for p in reversed(backward.peers):
        p.train(3)
    for a, b in zip(forward.peers, backward.peers, strict=True):
        x, y = a.adapter(), b.adapter()
        assert all(torch.equal(x[k], y[k]) for k in x)
    # the stream advances: one more step from the same adapter and optimiser state with a fresh
    # stream draws other masks than the continued one
    peer = forward.peers[0]
    state, rng = peer.adapter(), peer.rng_snapshot()
    opt = copy.deepcopy(peer.trainer.state_dict())  # the optimiser's tensors change in place
    peer.train(1)
    continued = peer.adapter()
    peer.set_adapter(state)
    peer.trainer.load_state_dict(copy.deepcopy(opt))
    peer.restore_rng((rng[0], None))
    peer.train(1)
    assert all(torch.equal(continued[k], peer.adapter()[k]) for k in continued)
    peer.set_adapter(state)
    peer.trainer.load_state_dict(copy.deepcopy(opt))
    peer.restore_rng((torch.Generator().manual_seed(999).get_state(), None))
    peer.train(1)
    assert not all(torch.equal(continued[k], peer.adapter()[k]) for k in continued)


def test_frozen_a_sends_only_b(tiny_base: BaseModel, federation: Federation) -> None:
    sim = Simulation(cfg("fedavg", mode="frozen-a"), federation, tiny_base)
    names = list(sim.peers[0].adapter())
    assert names and all(".lora_B." in n for n in names)
    a_before = [
        p.detach().clone() for n, p in sim.peers[0].model.named_parameters() if ".lora_A." in n
    ]
    sim.warmup()
    a_after = [p for n, p in sim.peers[0].model.named_parameters() if ".lora_A." in n]
    assert all(torch.equal(x, y) for x, y in zip(a_before, a_after, strict=True))


def test_shared_init_gives_every_peer_the_same_a(
    tiny_base: BaseModel, federation: Federation
) -> None:
    shared = Simulation(cfg("fedavg", mode="shared-init"), federation, tiny_base)
    paper = Simulation(cfg("fedavg", mode="paper"), federation, tiny_base)

    def a_of(sim: Simulation, i: int) -> list[torch.Tensor]:
        return [p for n, p in sim.peers[i].model.named_parameters() if ".lora_A." in n]

    assert all(torch.equal(x, y) for x, y in zip(a_of(shared, 0), a_of(shared, 1), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a_of(paper, 0), a_of(paper, 1), strict=True))


def test_frozen_base_weights_are_shared_not_copied(
    tiny_base: BaseModel, federation: Federation
) -> None:
    sim = Simulation(cfg("local"), federation, tiny_base)
    w0 = dict(sim.peers[0].model.named_parameters())
    w1 = dict(sim.peers[1].model.named_parameters())
    frozen = [n for n, p in w0.items() if not p.requires_grad]
    assert frozen and all(w0[n].data_ptr() == w1[n].data_ptr() for n in frozen)


@pytest.mark.parametrize("name", ["fedavg", "predictions", "validation"])
def test_branching_after_the_first_local_phase_equals_a_fresh_run(
    name: str, tiny_base: BaseModel, federation: Federation
) -> None:
    """Strategies share the warm-up and round 1's local steps (compare_strategies, benchmarks):
    a branch must end exactly where a run of that strategy alone ends."""
    strategy = make_strategy(cfg(name).strategy)
    alone = Simulation(cfg(name), federation, tiny_base)
    alone.warmup()
    alone.run_rounds(strategy)

    shared = Simulation(cfg(name), federation, tiny_base)
    branch = shared.branch_point()
    assert branch.first_round_trained
    shared.run_rounds(make_strategy(StrategyConfig(name="local")), first_trained=True)
    ran = shared.run_branch(branch, cfg(name).strategy, evaluate_every_round=False)
    assert ran.name == strategy.name and shared.cfg.strategy == cfg(name).strategy

    assert [r.trust for r in shared.records] == [r.trust for r in alone.records]
    assert shared.records[-1].test_ppl == alone.records[-1].test_ppl
    assert all(not r.test_ppl for r in shared.records[1:-1])  # only the last round scored
    for x, y in zip(shared.peers, alone.peers, strict=True):
        a, b = x.adapter(), y.adapter()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_base_reference_logits_are_the_shared_base_models_and_a_bad_signature_is_rejected(
    tiny_base: BaseModel, tiny_base_dir: Path, federation: Federation
) -> None:
    sim = Simulation(cfg("predictions", "shared-init"), federation, tiny_base)
    sim.warmup()
    ref = sim.reference[:4]
    fresh = load_base(tiny_base_dir).model.eval()
    with torch.no_grad():
        want = fresh(input_ids=ref).logits[:, -1, :].float()
    peer = sim.peers[0]
    with torch.no_grad():
        assert torch.allclose(peer.reference_logits(ref, base=True), want, atol=1e-5)
        assert not torch.allclose(peer.reference_logits(ref), want, atol=1e-5)  # trained adapter
    # computed once per row on the shared base: another peer and a later batch reuse the rows
    cached = dict(tiny_base.reference_logits)
    assert len(cached) >= 4
    with torch.no_grad():
        other = sim.peers[1].reference_logits(sim.reference[2:6], base=True)
    assert torch.equal(other[:2], peer.reference_logits(ref, base=True)[2:])
    assert torch.allclose(other, fresh(input_ids=sim.reference[2:6]).logits[:, -1, :], atol=1e-5)
    assert len(tiny_base.reference_logits) == len(cached) + 2  # only the two new rows
    # a malformed signature from another peer is rejected at the door, typed, not filed
    peer.begin_round(1)
    sim.peers[1].begin_round(1)
    sim.peers[1].send(0, MessageType.SIGNATURE, {"shift": torch.ones(8, dtype=torch.float64)})
    sim.transport.deliver()  # the simulation's transport is staged (a relay's step barrier)
    peer.collect()
    assert 1 not in peer.inbox.signatures
    assert peer.channel.rejections[-1].error == "MessageError"


def test_plain_loopback_channels_enforce_the_configured_message_limit(
    tiny_base: BaseModel, federation: Federation
) -> None:
    """The loopback runtime limits plain messages as a Flower site's channel does: by
    [security] max_message_bytes, not by a built-in default."""
    from secure_pcft.config import SecurityConfig

    small = RunConfig(
        data=DataConfig(block_size=16),
        train=TRAIN,
        strategy=quick_strategy("fedavg"),
        security=SecurityConfig(max_message_bytes=256),  # smaller than any adapter message
    )
    sim = Simulation(small, federation, tiny_base)
    assert all(p.channel.max_bytes == 256 for p in sim.peers)  # type: ignore[attr-defined]
    sim.warmup()
    strategy = make_strategy(small.strategy)
    sim.run_rounds(strategy)
    rejected = sim.result(strategy, 0.0).rejections
    assert all(rejected[p] for p in sim.peer_ids)  # every peer refused its partners' adapters
    assert all("over the 256-byte limit" in r["reason"] for rs in rejected.values() for r in rs)


def test_the_base_logits_cache_stays_within_its_bound(
    tiny_base: BaseModel, federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    import secure_pcft.collab.peer as peer_module

    sim = Simulation(cfg("predictions", "shared-init"), federation, tiny_base)
    tiny_base.reference_logits.clear()
    row_bytes = 4 * tiny_base.model.config.vocab_size
    monkeypatch.setattr(peer_module, "BASE_LOGITS_CACHE_BYTES", 3 * row_bytes)
    peer = sim.peers[0]
    with torch.no_grad():
        direct = peer._base_forward(sim.reference[:5])
        assert torch.allclose(peer.reference_logits(sim.reference[:2], base=True), direct[:2])
        # five rows do not fit a bound of three: computed directly, the cache never exceeds it
        assert torch.allclose(peer.reference_logits(sim.reference[:5], base=True), direct)
    assert len(tiny_base.reference_logits) <= 3
