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
from secure_pcft.data.blocks import encode_blocks, encode_unit_blocks, unit_count
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
    base: BaseModel,
    blocks: torch.Tensor,
    recipe: Recipe,
    seed: int,
    units: torch.Tensor | None = None,
) -> TrainedAdapter:
    """Train a fresh adapter on ``blocks`` (N, T) with ``recipe``: a real run of the toolkit's
    trainers (``LocalTrainer`` or the Opacus ``DpTrainer``), reproducible from ``seed``.

    ``units``: the privacy unit of each block for a recipe whose ``[privacy] unit`` is
    ``document``/``subject``; None there = each block its own unit (an attacker's shadow or
    reference model trained on blocks whose documents it does not track).

    Raises:
        ConfigError / DataError / ModelError: as the trainers raise them.
    """
    if recipe.privacy.unit == "block":
        units = None
    elif units is None:
        units = torch.arange(int(blocks.shape[0]))
    model = attach_lora(base.model, recipe.lora, peer_seed=seed)
    generator = torch.Generator().manual_seed(seed)
    steps = recipe.train.total_steps
    # LoRA dropout draws from torch's global RNG: run from a forked, seeded state (restored after).
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if recipe.privacy.enabled:
            trainer = DpTrainer(model, blocks, recipe.train, recipe.privacy, generator, units=units)
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
        unit: the privacy unit of the target's recipe (``[privacy] unit``): with ``document`` /
            ``subject`` a candidate record is a whole unit — ``member_units`` /
            ``nonmember_units`` (N,) say which unit each candidate block belongs to, and the
            campaign runner averages a block-scoring attack's scores per unit;
            ``population_units`` tags the population's blocks the same way, so that the
            attacker's shadow and reference adapters train as the target did (same unit,
            same per-document blocks).
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
    unit: str = "block"
    member_units: torch.Tensor | None = None
    nonmember_units: torch.Tensor | None = None
    population_units: torch.Tensor | None = None

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
        max_candidates: cap on member and on non-member candidates scored (blocks, or whole
            documents / subjects in those units; 0 = all).
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


def cap_units(
    blocks: torch.Tensor, units: torch.Tensor | None, cap: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """At most ``cap`` candidate units with all their blocks (a random subset, renumbered
    0..k-1; 0 = all); for block candidates (``units`` None) :func:`cap_blocks`."""
    if units is None:
        return cap_blocks(blocks, cap, rng), None
    count = unit_count(units, int(blocks.shape[0]))
    if not cap or count <= cap:
        return blocks, units
    chosen = torch.from_numpy(rng.permutation(count)[:cap])
    keep = torch.isin(units, chosen)
    renumber = torch.full((count,), -1, dtype=torch.long)
    renumber[chosen.sort().values] = torch.arange(cap)
    return blocks[keep], renumber[units[keep]]


def encode_docs(base: BaseModel, docs: Sequence[str], block_size: int) -> torch.Tensor:
    return encode_blocks(list(docs), base.tokenizer, block_size)


def encode_candidates(
    base: BaseModel, docs: Sequence[str], block_size: int, unit: str, keys: Sequence[str] = ()
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Candidate records of a target in its privacy unit: a block stream (``block``; units
    None), or per-document blocks tagged with their document (``document``) or with
    ``keys[i]``, the subject of document i (``subject``)."""
    if unit == "block":
        return encode_docs(base, docs, block_size), None
    names = keys if unit == "subject" else [str(i) for i in range(len(docs))]
    out = encode_unit_blocks(list(docs), list(names), base.tokenizer, block_size)
    return out.ids, out.units


def population_candidates(
    base: BaseModel, pop: Sequence[PeerCorpus], block_size: int, unit: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The attacker's population data (every split of ``pop``) in the target's unit: blocks cut
    and tagged as the target's training data was, for shadows trained with its recipe."""
    splits = ("train", "val", "test")
    docs = [d for p in pop for split in splits for d in getattr(p, split)]
    keys = (
        [k for p in pop for split in splits for k in p.subjects(split)] if unit == "subject" else []
    )
    return encode_candidates(base, docs, block_size, unit, keys)


def split_candidates(
    base: BaseModel, peer: PeerCorpus, block_size: int, unit: str
) -> tuple[tuple[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]:
    """The target's members (its training data) and non-members (its held-out val + test data)
    as candidates in ``unit``. Subjects: a member is a subject with training documents (all of
    them), a non-member a subject none of whose documents was trained on.

    Raises:
        AuditError: (subjects) no held-out subject without training documents.
        DataError: a document naming no subject.
    """
    held_out = (*peer.val, *peer.test)
    if unit != "subject":
        return (
            encode_candidates(base, peer.train, block_size, unit),
            encode_candidates(base, held_out, block_size, unit),
        )
    trained = peer.subjects("train")
    held = dict(zip(held_out, peer.subjects("val") + peer.subjects("test"), strict=True))
    outside = [d for d in held_out if held[d] not in set(trained)]
    if not outside:
        raise AuditError(
            f"{peer.peer_id}: every held-out subject also has training documents; a subject-level "
            "membership audit needs subjects none of whose documents was trained on"
        )
    return (
        encode_candidates(base, peer.train, block_size, unit, trained),
        encode_candidates(base, outside, block_size, unit, [held[d] for d in outside]),
    )


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
    bs, unit = spec.run.data.block_size, spec.run.privacy.unit
    (members, member_units), (nonmembers, nonmember_units) = split_candidates(base, peer, bs, unit)
    population, population_units = population_candidates(base, pop, bs, unit)
    reference = encode_docs(base, federation.reference, bs)
    train_blocks, train_units = members, member_units
    canaries = None
    if spec.canaries is not None:
        canaries = draw_canaries(spec.canaries, base.tokenizer, members, rng)
        train_blocks = torch.cat([members, canaries.blocks])
        order = torch.from_numpy(rng.permutation(train_blocks.shape[0]))
        train_blocks = train_blocks[order]
        if member_units is not None:  # each canary is a document (a subject) of its own
            first = unit_count(member_units, 0)
            extra = torch.arange(first, first + int(canaries.blocks.shape[0]))
            train_units = torch.cat([member_units, extra])[order]
    recipe = Recipe.from_run(spec.run)
    trained = train_adapter(base, train_blocks, recipe, seed, units=train_units)
    members, member_units = cap_units(members, member_units, spec.max_candidates, rng)
    nonmembers, nonmember_units = cap_units(nonmembers, nonmember_units, spec.max_candidates, rng)
    log.info(
        "target %s: %d member / %d non-member / %d population blocks, ε=%.3g",
        peer.peer_id, members.shape[0], nonmembers.shape[0], population.shape[0], trained.epsilon,
    )  # fmt: skip
    return AuditTarget(
        base=base,
        recipe=recipe,
        model=trained.model,
        members=members,
        nonmembers=nonmembers,
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
        unit=unit,
        member_units=member_units,
        nonmember_units=nonmember_units,
        population_units=population_units,
    )
