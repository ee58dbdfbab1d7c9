"""Audit targets trained in a real collaboration: the adapter a peer *released* in a round.

The targets of :mod:`.target` train one peer alone. What a curious peer (TM-01) or a colluding
group (TM-05) actually receives is different: in every round a peer starts from its aggregate of
the previous round, takes its local steps and sends the result. This module runs the toolkit's
own :class:`~secure_pcft.runtime.loopback.Simulation` over every peer of the campaign's
federation (warm-up, then ``[train]`` rounds with the campaign's strategy, DP-SGD and its
accountant when ``[target.privacy]`` is on) and keeps, from the last round, the adapters as they
left the peers — the attacked peer's and those of the peers whose data the attacker holds.

The attacker of ``reference`` with ``reference = "peer"`` is such a peer: it scores a block by
the loss gap between the adapter it received from a same-domain peer in the same round and the
target's. Members are the target's training blocks, non-members its held-out blocks (whole
documents or subjects when the run's ``[privacy] unit`` says so).

Campaign file: ``[target.collaboration] strategy = "fedavg"`` (a strategy label, see
``StrategyConfig.label``) next to the ordinary ``[target.*]`` run sections.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from peft import PeftModel

from secure_pcft.audit.target import (
    AuditTarget,
    Recipe,
    TargetSpec,
    cap_units,
    encode_docs,
    population_candidates,
    select_peers,
    split_candidates,
)
from secure_pcft.collab.strategy import make_strategy, strategy_from_label
from secure_pcft.config import OutputConfig, StrategyConfig
from secure_pcft.data.corpus import Federation
from secure_pcft.errors import AuditError, ConfigError
from secure_pcft.model.loading import BaseModel
from secure_pcft.model.lora import AdapterState, attach_lora, load_adapter_state
from secure_pcft.runtime.loopback import Simulation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollaborationSpec:
    """``[target.collaboration]``: the strategy the consortium runs (a label, e.g. ``fedavg``,
    ``weights-top3``, ``predictions-calibrated``); the schedule is ``[target.train]``'s."""

    strategy: str = "fedavg"

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, str) or not self.strategy:
            raise ConfigError("[target.collaboration] strategy: a strategy label, e.g. 'fedavg'")
        strategy_from_label(self.strategy)  # unknown names and options fail here

    @property
    def strategy_config(self) -> StrategyConfig:
        return strategy_from_label(self.strategy)


def build_collaboration_target(
    spec: TargetSpec,
    collab: CollaborationSpec,
    base: BaseModel,
    federation: Federation,
    seed: int,
) -> AuditTarget:
    """Run the collaboration for real and return the attacked peer's last released adapter.

    Raises:
        ConfigError: canaries requested (not inserted into collaboration runs), fewer than one
            aggregation round, or an invalid run configuration.
        AuditError: the target did not release an adapter in the last round (privacy budget),
            or no population peer (see :func:`~secure_pcft.audit.target.select_peers`).
    """
    if spec.canaries is not None:
        raise ConfigError("[target.canaries] are not inserted into collaboration targets")
    if spec.run.train.num_rounds < 1:
        raise ConfigError("[target.train] a collaboration target needs at least one round")
    peer, pop = select_peers(federation, spec)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="secure-pcft-collab-target-") as tmp:
        cfg = replace(
            spec.run,
            strategy=collab.strategy_config,
            train=replace(spec.run.train, seed=seed),
            output=OutputConfig(dir=str(Path(tmp) / "run")),
            privacy=replace(spec.run.privacy, ledger_dir=str(Path(tmp) / "ledgers")),
        )
        strategy = make_strategy(cfg.strategy)
        sim = Simulation(cfg, federation, base)
        try:
            sim.warmup()
            rounds = cfg.train.num_rounds
            released: dict[str, AdapterState] = {}
            for r in range(1, rounds + 1):
                sim.local_phase()
                if r == rounds:  # what each peer sends in the last round: its local result
                    released = {p.peer_id: p.adapter() for p in sim.peers}
                sim.round(strategy, r, trained=True, evaluate=False)
            target_peer = sim.peers[federation.peer_ids.index(peer.peer_id)]
            privacy = target_peer.privacy.summary() if target_peer.privacy else None
        finally:
            sim.close()
    _check_released(peer.peer_id, privacy, rounds)
    recipe = Recipe.from_run(cfg)
    model = _model_with(base, recipe, released[peer.peer_id], seed)
    bs, unit = cfg.data.block_size, cfg.privacy.unit
    (train_blocks, train_units), (nonmembers, nonmember_units) = split_candidates(
        base, peer, bs, unit
    )
    population, population_units = population_candidates(base, pop, bs, unit)
    members, member_units = cap_units(train_blocks, train_units, spec.max_candidates, rng)
    nonmembers, nonmember_units = cap_units(nonmembers, nonmember_units, spec.max_candidates, rng)
    epsilon = _number(privacy, "epsilon_spent", float("inf"))
    delta = _number(privacy, "delta", float("nan")) if privacy else None
    sigma = _number(privacy, "noise_multiplier", 0.0)
    log.info(
        "collaboration target %s (%s, %d rounds): %d member / %d non-member blocks, ε=%.3g",
        peer.peer_id, collab.strategy, rounds, members.shape[0], nonmembers.shape[0], epsilon,
    )  # fmt: skip
    return AuditTarget(
        base=base,
        recipe=recipe,
        model=model,
        members=members,
        nonmembers=nonmembers,
        population=population,
        reference=encode_docs(base, federation.reference, bs),
        epsilon=epsilon,
        delta=delta,
        seed=seed,
        train_blocks=train_blocks,
        peer_adapters={p.peer_id: released[p.peer_id] for p in pop},
        notes={
            "peer": peer.peer_id,
            "population_peers": [p.peer_id for p in pop],
            "collaboration": collab.strategy,
            "rounds": rounds,
            "steps": cfg.train.total_steps,
            "noise_multiplier": sigma,
            "released_round": rounds,
        },
        unit=unit,
        member_units=member_units,
        nonmember_units=nonmember_units,
        population_units=population_units,
    )


def _number(summary: dict[str, object] | None, key: str, default: float) -> float:
    value = summary.get(key) if summary else None
    return float(value) if isinstance(value, int | float) else default


def _check_released(peer_id: str, privacy: dict[str, object] | None, rnd: int) -> None:
    """Refuse a target whose last-round adapter never left it (its budget stopped sharing)."""
    stop = privacy.get("stopped_sharing_round") if privacy else None
    if isinstance(stop, int) and stop <= rnd:
        raise AuditError(
            f"{peer_id} stopped sharing at round {stop} (privacy budget): its round-{rnd} adapter "
            "was never released, so there is nothing to attack; raise the budget or the rounds"
        )


def _model_with(base: BaseModel, recipe: Recipe, state: AdapterState, seed: int) -> PeftModel:
    model = attach_lora(base.model, recipe.lora, peer_seed=seed)
    load_adapter_state(model, state)
    model.train(False)
    return model


def peer_reference_model(target: AuditTarget, seed: int) -> PeftModel:
    """Base + the adapter a same-domain peer released in the target's round (the attacker's).

    Raises:
        AuditError: the target was not trained in a collaboration (no peer adapters).
    """
    if not target.peer_adapters:
        raise AuditError(
            "reference = 'peer' needs a collaboration target ([target.collaboration]): the "
            "adapter a same-domain peer released in the same round"
        )
    first = sorted(target.peer_adapters)[0]
    return _model_with(target.base, target.recipe, target.peer_adapters[first], seed)
