"""The attacked peer: its training recipe, its data as the attacker and the auditor see them, and
the real training run that produces the adapter under audit.

Roles (threat_models/): the *attacker* holds the public base model, the target's shared adapter
(or update), the public reference set, the consortium's training recipe (configs are shared;
Kerckhoffs) and *population* data from the same distribution as the target's (e.g. a curious
peer of the same domain, TM-01). The *auditor* additionally knows the ground truth: which blocks
were members, which canaries were inserted, which tokens were in a batch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from peft import PeftModel

from secure_pcft.audit.canaries import CanarySet, CanarySpec, draw_canaries
from secure_pcft.config import LoraSettings, PrivacyConfig, RunConfig, TrainConfig
from secure_pcft.data.blocks import encode_blocks
from secure_pcft.data.corpus import Federation, PeerCorpus
from secure_pcft.errors import AuditError, ConfigError
from secure_pcft.model.loading import BaseModel
from secure_pcft.model.lora import AdapterState, attach_lora
from secure_pcft.privacy.accounting import epsilon_spent
from secure_pcft.privacy.dp_trainer import DpTrainer
from secure_pcft.train.local import LocalTrainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How a peer trains its adapter: the part of the run config an attacker can replicate.

    ``train.total_steps`` local steps (no aggregation), DP-SGD if ``privacy.enabled``.
    """

    lora: LoraSettings
    train: TrainConfig
    privacy: PrivacyConfig

    @classmethod
    def from_run(cls, cfg: RunConfig) -> Recipe:
        return cls(cfg.lora, cfg.train, cfg.privacy)


@dataclass
class TrainedAdapter:
    """A base + adapter model (eval mode) and the privacy its training cost.

    Attributes:
        model: the peft model.
        epsilon: ε at ``delta`` from the accountant (inf without DP).
        delta: δ of the run (None without DP).
        noise_multiplier: σ of DP-SGD (0 without DP).
        steps: optimiser steps taken.
    """

    model: PeftModel
    epsilon: float
    delta: float | None
    noise_multiplier: float
    steps: int


def train_adapter(
    base: BaseModel, blocks: torch.Tensor, recipe: Recipe, seed: int
) -> TrainedAdapter:
    """Train a fresh adapter on ``blocks`` (N, T) with ``recipe``: a real run of the toolkit's
    trainers (``LocalTrainer`` or the Opacus ``DpTrainer``), reproducible from ``seed``.

    Raises:
        ConfigError / DataError / ModelError: as the trainers raise them.
    """
    model = attach_lora(base.model, recipe.lora, peer_seed=seed)
    generator = torch.Generator().manual_seed(seed)
    steps = recipe.train.total_steps
    # LoRA dropout draws from torch's global RNG: run from a forked, seeded state (restored after).
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if recipe.privacy.enabled:
            trainer = DpTrainer(model, blocks, recipe.train, recipe.privacy, generator)
            try:
                trainer.train(steps)
                event = trainer.pending_event(round=0, released="adapter")
                eps = epsilon_spent([event], trainer.delta, trainer.privacy.accountant)
                out = TrainedAdapter(model, eps, trainer.delta, trainer.noise_multiplier, steps)
            finally:
                trainer.close()
        else:
            LocalTrainer(model, blocks, recipe.train, generator).train(steps)
            out = TrainedAdapter(model, math.inf, None, 0.0, steps)
    model.train(False)
    return out


@dataclass
class LoraUpdate:
    """One observed update of a peer's adapter (what a reconstruction attacker diffs).

    Attributes:
        before, after: adapter states around the update (the attacker saw both).
        batch: the token blocks actually used, shape (B, T) — ground truth, auditor only.
        steps: optimiser steps between ``before`` and ``after``.
        optimizer: ``sgd`` or ``adamw``.
        dp: whether the steps were DP-SGD steps.
    """

    before: AdapterState
    after: AdapterState
    batch: torch.Tensor
    steps: int
    optimizer: str
    dp: bool


@dataclass
class AuditTarget:
    """Everything an audit needs about one attacked peer (see the module docstring for roles).

    Attributes:
        base: the public frozen base model.
        recipe: the training recipe (shared within the consortium).
        model: base + the attacked adapter, eval mode (None for an update-only target).
        members, nonmembers: candidate records (token blocks) and their truth, (N, T) each.
        population: attacker-held blocks from the same distribution, disjoint from both.
        reference: the public reference blocks (prediction signatures).
        canaries: drawn canaries (None if none were inserted).
        epsilon, delta: what the accountant says about the target's training.
        update: an observed update (reconstruction audits).
        seed: the trial's seed.
        train_blocks: every block the target trained on, in training order (members and inserted
            canaries) — the auditor's truth, and the informed attacker's knowledge in
            ``signature-twin-mia`` (None for an update-only target).
        notes: JSON-ready facts about the run (peer, sizes, σ).
        peer_adapters: for a collaboration target (:mod:`.collab_target`), the adapters the
            population peers released in the target's round, by peer id (what a same-domain
            curious peer received); empty otherwise.
        shadows: shadow adapters trained so far (a cache shared by the attacks of a campaign).
        twins: twin adapters of ``signature-twin-mia`` trained so far (cache, by seed and data).
    """

    base: BaseModel
    recipe: Recipe
    model: PeftModel | None
    members: torch.Tensor
    nonmembers: torch.Tensor
    population: torch.Tensor
    reference: torch.Tensor
    canaries: CanarySet | None = None
    epsilon: float = math.inf
    delta: float | None = None
    update: LoraUpdate | None = None
    seed: int = 0
    train_blocks: torch.Tensor | None = None
    notes: dict[str, object] = field(default_factory=dict)
    peer_adapters: dict[str, AdapterState] = field(default_factory=dict, repr=False)
    shadows: list[TrainedAdapter] = field(default_factory=list, repr=False)
    twins: dict[str, TrainedAdapter] = field(default_factory=dict, repr=False)

    def require_model(self) -> PeftModel:
        if self.model is None:
            raise AuditError("this attack needs the target's shared adapter (none was trained)")
        return self.model

    def require_train_blocks(self) -> torch.Tensor:
        if self.train_blocks is None:
            raise AuditError("this attack needs the target's training data (an update-only target)")
        return self.train_blocks

    def require_canaries(self) -> CanarySet:
        if self.canaries is None:
            raise AuditError("this attack needs canaries: set [target.canaries] in the campaign")
        return self.canaries


@dataclass(frozen=True)
class TargetSpec:
    """Which peer is attacked, what the attacker holds, and how the target trains.

    Attributes:
        run: model, lora, data, train and privacy sections of an ordinary run config.
        peer: the attacked peer's id (empty = the first peer).
        population_peers: peers whose data (all splits) the attacker holds; empty = every other
            peer with the same known domain mix as the target.
        canaries: canaries inserted into the target's training data (None = none).
        max_candidates: cap on member and on non-member blocks scored (0 = all).
    """

    run: RunConfig
    peer: str = ""
    population_peers: tuple[str, ...] = ()
    canaries: CanarySpec | None = None
    max_candidates: int = 0

    def __post_init__(self) -> None:
        if self.max_candidates < 0:
            raise ConfigError("[target] max_candidates: blocks >= 0 (0 = all)")


def select_peers(fed: Federation, spec: TargetSpec) -> tuple[PeerCorpus, list[PeerCorpus]]:
    """The attacked peer and the peers whose data the attacker holds.

    Raises:
        ConfigError: unknown peer ids, or the target among the population peers.
        AuditError: no population peer (none named, none with the same domain mix).
    """
    by_id = {p.peer_id: p for p in fed.peers}
    peer = by_id.get(spec.peer) if spec.peer else fed.peers[0]
    if peer is None:
        raise ConfigError(f"[target] peer: {spec.peer!r} is not one of {fed.peer_ids}")
    if spec.population_peers:
        unknown = [p for p in spec.population_peers if p not in by_id]
        if unknown or peer.peer_id in spec.population_peers:
            raise ConfigError(
                f"[target] population_peers: {unknown or [peer.peer_id]} invalid (unknown, or "
                "the target itself)"
            )
        pop = [by_id[p] for p in spec.population_peers]
    else:
        pop = [
            p
            for p in fed.peers
            if p.peer_id != peer.peer_id and p.domain_mix and p.domain_mix == peer.domain_mix
        ]
    if not pop:
        raise AuditError(
            f"no population data for {peer.peer_id}: no other peer shares its domain mix; name "
            "[target] population_peers (attacker-held data of the same distribution)"
        )
    return peer, pop


def cap_blocks(blocks: torch.Tensor, cap: int, rng: np.random.Generator) -> torch.Tensor:
    """At most ``cap`` of ``blocks`` (a random subset; 0 = all)."""
    if cap and blocks.shape[0] > cap:
        return blocks[torch.from_numpy(rng.permutation(blocks.shape[0])[:cap])]
    return blocks


def encode_docs(base: BaseModel, docs: Sequence[str], block_size: int) -> torch.Tensor:
    return encode_blocks(list(docs), base.tokenizer, block_size)


def build_target(
    spec: TargetSpec, base: BaseModel, federation: Federation, seed: int
) -> AuditTarget:
    """Train the attacked peer's adapter for real and assemble the audit's view of it.

    Members are the peer's training blocks, non-members its held-out (val + test) blocks: same
    distribution, never trained on. Inserted canary blocks are shuffled into the training data.

    Raises:
        AuditError / ConfigError: see :func:`select_peers`; trainer errors propagate.
    """
    rng = np.random.default_rng(seed)
    peer, pop = select_peers(federation, spec)
    bs = spec.run.data.block_size
    members = encode_docs(base, peer.train, bs)
    nonmembers = encode_docs(base, (*peer.val, *peer.test), bs)
    population = encode_docs(base, [d for p in pop for d in (*p.train, *p.val, *p.test)], bs)
    reference = encode_docs(base, federation.reference, bs)
    train_blocks = members
    canaries = None
    if spec.canaries is not None:
        canaries = draw_canaries(spec.canaries, base.tokenizer, members, rng)
        train_blocks = torch.cat([members, canaries.blocks])
        train_blocks = train_blocks[torch.from_numpy(rng.permutation(train_blocks.shape[0]))]
    recipe = Recipe.from_run(spec.run)
    trained = train_adapter(base, train_blocks, recipe, seed)
    log.info(
        "target %s: %d member / %d non-member / %d population blocks, ε=%.3g",
        peer.peer_id, members.shape[0], nonmembers.shape[0], population.shape[0], trained.epsilon,
    )  # fmt: skip
    return AuditTarget(
        base=base,
        recipe=recipe,
        model=trained.model,
        members=cap_blocks(members, spec.max_candidates, rng),
        nonmembers=cap_blocks(nonmembers, spec.max_candidates, rng),
        population=population,
        reference=reference,
        canaries=canaries,
        epsilon=trained.epsilon,
        delta=trained.delta,
        seed=seed,
        train_blocks=train_blocks,
        notes={
            "peer": peer.peer_id,
            "population_peers": [p.peer_id for p in pop],
            "train_blocks": int(train_blocks.shape[0]),
            "noise_multiplier": trained.noise_multiplier,
            "steps": trained.steps,
        },
    )
