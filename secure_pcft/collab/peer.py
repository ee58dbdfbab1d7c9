"""A peer: its private data, its own LoRA model and trainer, and its end of the message layer.

A peer never reads another peer's objects: everything it learns about others arrives as messages
through its channel, is validated, and is then used by the protocol's phases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import torch

from secure_pcft.collab.channel import Channel, Rejection
from secure_pcft.collab.keep_best import KeptModel, Seen, base_adapter
from secure_pcft.collab.messages import Message, MessageType
from secure_pcft.collab.strategies.predictions import check_signature
from secure_pcft.config import (
    LoraSettings,
    PrivacyConfig,
    RunConfig,
    SecurityConfig,
    TrainConfig,
)
from secure_pcft.crypto.projection import ProjectionSpec
from secure_pcft.data.blocks import unit_count, unit_means
from secure_pcft.data.corpus import PeerCorpus
from secure_pcft.errors import AdapterRejectedError, ConfigError, MessageError, StrategyError
from secure_pcft.model.loading import BaseModel
from secure_pcft.model.lora import (
    AdapterState,
    adapter_spec,
    adapter_state,
    attach_lora,
    load_adapter_state,
)
from secure_pcft.privacy.budget_store import BudgetStore, data_fingerprint
from secure_pcft.privacy.dp_trainer import DpTrainer, resolve_delta
from secure_pcft.privacy.peer_privacy import PeerPrivacy
from secure_pcft.privacy.selection import SelectionPlan, plan_selection
from secure_pcft.privacy.validation_scores import validation_losses
from secure_pcft.train.evaluate import LmScore, evaluate_lm, last_position_logits
from secure_pcft.train.local import LocalTrainer
from secure_pcft.transport.base import BROADCAST

log = logging.getLogger(__name__)

#: at most this many bytes of base-model reference logits are kept per base (Peer.reference_logits)
BASE_LOGITS_CACHE_BYTES = 256 * 2**20

# what a DP peer sends with its signed ledger head attached (its receivers keep it as a receipt)
HEAD_CARRYING_TYPES = frozenset({MessageType.ADAPTER, MessageType.HE_ANSWER})


class SendOutcome(StrEnum):
    """What became of a message a peer tried to send (a fact, for logs and reports)."""

    SENT = "sent"  # handed to the channel (sealed to its recipient in secure mode)
    REFUSED_BUDGET = "refused-budget"  # the privacy budget refused the release: nothing left


@dataclass
class PeerBlocks:
    """A peer's private token blocks, shape (N, T) each.

    ``train_units`` / ``val_units``: the privacy unit of each training / validation block (N,),
    numbered 0..U-1, for ``[privacy] unit = "document"``/``"subject"``
    (runtime/assembly.py:peer_blocks); None = each block its own unit.
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    train_units: torch.Tensor | None = None
    val_units: torch.Tensor | None = None

    def to(self, device: torch.device) -> PeerBlocks:
        return PeerBlocks(
            self.train.to(device), self.val.to(device), self.test.to(device),
            self.train_units, self.val_units,
        )  # fmt: skip

    @property
    def train_units_held(self) -> int:
        """The training units DP-SGD samples and δ counts."""
        return unit_count(self.train_units, int(self.train.shape[0]))

    @property
    def val_units_held(self) -> int:
        """n, the validation units every accounted validation score averages over."""
        return unit_count(self.val_units, int(self.val.shape[0]))


@dataclass
class Inbox:
    """What a peer received during the current round (cleared at each round start)."""

    adapters: dict[int, AdapterState] = field(default_factory=dict)
    signatures: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    requests: set[int] = field(default_factory=set)
    first_choice_of: set[int] = field(default_factory=set)  # requesters that ranked us first
    declines: set[int] = field(default_factory=set)
    own_val_losses: torch.Tensor | None = None  # own adapter's per-unit validation losses (n,)
    own_signature: dict[str, torch.Tensor] | None = None  # what this peer sent, kept for scoring


@dataclass(frozen=True)
class PeerSettings:
    """The sections of a run's configuration a peer reads; nothing else of the run reaches it."""

    lora: LoraSettings
    train: TrainConfig
    privacy: PrivacyConfig
    security: SecurityConfig

    @classmethod
    def of(cls, cfg: RunConfig) -> PeerSettings:
        return cls(cfg.lora, cfg.train, cfg.privacy, cfg.security)

    @property
    def sketch(self) -> ProjectionSpec:
        """The consortium's public JL sketch for signatures and encrypted discovery."""
        return ProjectionSpec(seed=self.lora.public_seed, dim=self.security.projection_dim)


def dropout_stream(seed: int, index: int) -> torch.Tensor:
    """The initial torch CPU RNG state of peer ``index``'s dropout masks in a run seeded ``seed``."""
    return torch.Generator().manual_seed(seed * 7907 + index).get_state()


class Peer:
    """One participant of a collaboration run.

    Args:
        index: position of this peer in ``peer_ids``.
        peer_ids: every peer of the run, in order.
        corpus: this peer's private splits (and known domain mix, if any).
        blocks: the same splits as token blocks.
        base: the frozen base (its weights are shared, never modified).
        settings: the sections of the run's configuration it uses.
        channel: this peer's end of the message layer.
        ledger_dir: where its privacy ledger lives (required with DP on).
        scoring_queries: accounted private scores per round its privacy plan reserves (DP on).
        selection_candidates: candidates its per-round choice scores (``[strategy] accept``:
            3; 1 = no choice); with DP the plan reserves the choice's queries when informative.
        budget_store: the site's budget store (with DP: earlier runs on the same training data
            count against this run's budget); None for experiments comparing alternatives.

    Attributes:
        selection: the plan of its per-round choice (privacy/selection.py).
        kept: the best model it has seen on its validation split (collab/keep_best.py).
    """

    def __init__(
        self,
        index: int,
        peer_ids: tuple[str, ...],
        corpus: PeerCorpus,
        blocks: PeerBlocks,
        base: BaseModel,
        settings: PeerSettings,
        channel: Channel,
        ledger_dir: Path | None = None,
        scoring_queries: int = 0,
        selection_candidates: int = 1,
        budget_store: BudgetStore | None = None,
    ) -> None:
        self.index = index
        self.peer_ids = peer_ids
        self.peer_id = peer_ids[index]
        self.corpus = corpus
        self.device = base.device  # the blocks live with the model (a no-op on the CPU)
        self.blocks = blocks.to(self.device)
        self.settings = cfg = settings
        self.channel = channel
        self._base_logits = base.reference_logits  # shared by every peer on this base
        self.model = attach_lora(base.model, cfg.lora, peer_seed=cfg.train.seed * 1009 + index)
        self.spec = adapter_spec(self.model)
        generator = torch.Generator().manual_seed(cfg.train.seed * 7919 + index)
        n_train, n_val = self.blocks.train_units_held, self.blocks.val_units_held
        delta = (
            resolve_delta(cfg.privacy.delta, n_train, cfg.privacy.unit)
            if cfg.privacy.enabled and n_train
            else 1.0
        )
        self.selection: SelectionPlan = plan_selection(
            cfg.privacy, candidates=selection_candidates, rounds=cfg.train.num_rounds,
            val_blocks=n_val, delta=delta,
        )  # fmt: skip
        self.kept = KeptModel()
        self.release_transform: Callable[[AdapterState], AdapterState] | None = None
        self.receipts: list[dict[str, object]] = []  # signed ledger heads of adapters received
        self.privacy: PeerPrivacy | None = None
        self.trainer: LocalTrainer | DpTrainer
        if cfg.privacy.enabled:
            if ledger_dir is None:
                raise ConfigError(f"peer {self.peer_id}: DP is on, so it needs a ledger directory")
            self.privacy = PeerPrivacy(
                self.peer_id, self.model, self.blocks.train, cfg.privacy, cfg.train, generator,
                ledger_dir, scoring_queries, self.selection.reserved(),
                None if budget_store is None
                else (budget_store, BudgetStore.key(self.peer_id, data_fingerprint(corpus.train))),
                units=self.blocks.train_units,
            )  # fmt: skip
            self.trainer = self.privacy.trainer
        else:
            self.trainer = LocalTrainer(self.model, self.blocks.train, cfg.train, generator)
        self.inbox = Inbox()
        self.round = 0
        # Dropout draws from torch's global RNG (on a GPU, from the device's): each peer trains
        # from its own stream, seeded from the run seed and its index, so a peer's masks depend
        # neither on the runtime driving it nor on the other peers (the loopback simulation and a
        # Flower site draw the same ones), and the caller's RNG is left as it was.
        self.dropout_rng: torch.Tensor = dropout_stream(cfg.train.seed, index)
        self._device_rng: torch.Tensor | None = None  # the CUDA generator's, once trained there

    # ---- local work -------------------------------------------------------------------------
    def train(self, steps: int) -> list[float]:
        """``steps`` local steps, dropout masks drawn from this peer's own stream."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.set_rng_state(self.dropout_rng)
            if cuda:
                if self._device_rng is None:
                    seed = int(torch.randint(0, 2**62, (1,)).item())  # from the peer's stream
                    with torch.cuda.device(self.device):
                        torch.cuda.manual_seed(seed)
                else:
                    torch.cuda.set_rng_state(self._device_rng, self.device)
            try:
                return self.trainer.train(steps)
            finally:
                self.dropout_rng = torch.get_rng_state()
                if cuda:
                    self._device_rng = torch.cuda.get_rng_state(self.device)

    def rng_snapshot(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Copies of the dropout streams (CPU, and the GPU's once trained there)."""
        dev = None if self._device_rng is None else self._device_rng.clone()
        return self.dropout_rng.clone(), dev

    def restore_rng(self, snapshot: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        """Continue the dropout streams from :meth:`rng_snapshot` (a GPU stream of None is
        derived afresh from the CPU stream at the next training step)."""
        cpu, dev = snapshot
        self.dropout_rng = cpu.clone()
        self._device_rng = None if dev is None else dev.clone()

    def adapter(self) -> AdapterState:
        return adapter_state(self.model)

    def released_adapter(self) -> AdapterState:
        """The adapter as this peer sends it: its own, unless an evaluation harness made it a
        poisoning partner (``release_transform``, audit/poisoning.py; TM-02 robustness runs)."""
        state = self.adapter()
        return state if self.release_transform is None else self.release_transform(state)

    def set_adapter(self, state: AdapterState) -> None:
        load_adapter_state(self.model, state)

    def evaluate(self, split: str = "test", max_batches: int | None = None) -> LmScore:
        blocks = getattr(self.blocks, split)
        return evaluate_lm(self.model, blocks, batch_size=16, max_batches=max_batches)

    def evaluate_state(self, state: AdapterState, split: str = "test") -> LmScore:
        """:meth:`evaluate` of another adapter state (the own adapter is restored after)."""
        own = self.adapter()
        try:
            self.set_adapter(state)
            return self.evaluate(split)
        finally:
            self.set_adapter(own)

    def val_losses(self, state: AdapterState) -> torch.Tensor:
        """Exact per-unit losses (n,) of ``state`` on the private validation split (own adapter
        restored after). Never released: for the peer's own choices (acceptance, kept model)."""
        own = self.adapter()
        try:
            self.set_adapter(state)
            return self._unit_val_losses()
        finally:
            self.set_adapter(own)

    def _unit_val_losses(self) -> torch.Tensor:
        """The loaded adapter's validation losses per privacy unit (n,): per block, or the mean
        over each document's / subject's blocks — what every validation score averages, so one
        unit moves a score by at most clip / n."""
        return unit_means(validation_losses(self.model, self.blocks.val), self.blocks.val_units)

    def begin_keeping(self) -> Seen:
        """Fix the kept model's starting point after the warm-up: the base (B = 0), or the
        warm-up adapter where the validation split supports it (collab/keep_best.py)."""
        warm = self.adapter()
        base = base_adapter(warm)
        return self.kept.begin(
            Seen(base, self.val_losses(base), "base", 0),
            Seen(warm, self.val_losses(warm), "warm-up", 0),
        )

    def validation_perplexity(self, state: AdapterState) -> float:
        """Perplexity of ``state`` on this peer's private validation split (own adapter restored).

        With DP on, the score is the accounted noisy mechanism of :mod:`privacy.validation_scores`.

        Raises:
            BudgetExhaustedError: with DP on, the score would exceed the privacy budget.
        """
        own = self.adapter()
        try:
            self.set_adapter(state)
            if self.privacy is not None:  # private data shapes a release: accounted mechanism
                return self.privacy.noisy_validation_perplexity(self._unit_val_losses())
            return self.evaluate("val", max_batches=self.settings.train.eval_batches).perplexity
        finally:
            self.set_adapter(own)

    def validation_gap(self, state: AdapterState) -> float:
        """Mean per-unit loss gap (nats) of ``state`` to this peer's own adapter on its private
        validation split; with DP on, the accounted mechanism of
        :func:`~secure_pcft.privacy.validation_scores.noisy_validation_gaps`.

        Raises:
            BudgetExhaustedError: with DP on, the score would exceed the privacy budget.
        """
        if self.inbox.own_val_losses is None:  # the own adapter does not change while scoring
            self.inbox.own_val_losses = self._unit_val_losses()
        own = self.adapter()
        try:
            self.set_adapter(state)
            losses = self._unit_val_losses()
            if self.privacy is not None:
                return self.privacy.noisy_validation_gap(losses, self.inbox.own_val_losses)
            return float((losses - self.inbox.own_val_losses).mean())
        finally:
            self.set_adapter(own)

    @torch.no_grad()
    def reference_logits(self, reference: torch.Tensor, *, base: bool = False) -> torch.Tensor:
        """Last-position logits on public reference blocks (R, T) → (R, V), on the CPU.

        ``base``: of the shared base model, with this peer's adapter switched off (public: every
        peer computes the same logits). Those are kept per reference row on the base
        (:attr:`BaseModel.reference_logits`): a row is computed once per process, not once per
        peer and round (bounded by :data:`BASE_LOGITS_CACHE_BYTES`).
        """
        if not base:
            return last_position_logits(self.model, reference.to(self.device))
        rows = reference.cpu()
        keys = [row.numpy().tobytes() for row in rows]
        cache = self._base_logits
        todo = [i for i, k in enumerate(keys) if k not in cache]
        if todo:
            fresh = self._base_forward(rows[todo])
            found = {keys[i]: row for i, row in zip(todo, fresh, strict=True)}
            out = torch.stack([found[k] if k in found else cache[k] for k in keys])
            room = BASE_LOGITS_CACHE_BYTES // (fresh[0].numel() * fresh.element_size())
            if len(cache) + len(found) > room:
                cache.clear()  # bounded: start over rather than grow without limit
            if len(found) <= room:  # a batch larger than the bound is never kept
                cache.update(found)
            return out
        return torch.stack([cache[k] for k in keys])

    def _base_forward(self, rows: torch.Tensor) -> torch.Tensor:
        # peft's disable_adapter() re-enables the adapter on exit by marking *every* LoRA
        # tensor trainable, which would unfreeze A in frozen-a mode (and change the adapter's
        # tensor set, so peers reject each other's adapters): restore the flags it touched.
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        try:
            with self.model.disable_adapter():
                return last_position_logits(self.model, rows.to(self.device))
        finally:
            for param, flag in flags:
                param.requires_grad_(flag)

    # ---- messages ---------------------------------------------------------------------------
    def begin_round(self, rnd: int) -> None:
        self.round = rnd
        self.inbox = Inbox()
        if self.privacy is not None:
            self.privacy.round = rnd

    def send(
        self,
        recipient: int,
        msg_type: MessageType,
        tensors: dict[str, torch.Tensor] | None = None,
        meta: dict[str, object] | None = None,
        *,
        encoded: bytes | None = None,
    ) -> SendOutcome:
        """Send one message; with DP on, a release is first recorded in the ledger (fail closed).

        ``encoded``: ``encode_tensors(tensors)`` computed once by a caller that sends the same
        tensors to several peers (see :class:`~secure_pcft.collab.messages.Message`).

        Returns:
            ``SENT`` once the channel took the message; ``REFUSED_BUDGET`` when the privacy
            budget refused the release (nothing left this peer). Callers log only what was sent.
        """
        to = self.peer_ids[recipient]
        if self.privacy is not None and not self.privacy.authorize(
            str(msg_type), to, release=msg_type.release
        ):
            return SendOutcome.REFUSED_BUDGET
        sign = getattr(self.channel, "sign", None)
        if msg_type in HEAD_CARRYING_TYPES and self.privacy is not None and callable(sign):
            # the release is in the ledger now: its signed head travels with the adapter (or the
            # similarity answer), and the receiver keeps it (a later rewrite contradicts it; TM-06)
            meta = {**(meta or {}), "ledger_head": self.privacy.signed_head(sign)}
        self.channel.send(
            Message(
                msg_type,
                self.peer_id,
                to,
                self.round,
                dict(meta or {}),
                dict(tensors or {}),
                encoded=encoded,
            )
        )
        return SendOutcome.SENT

    def publish(
        self,
        msg_type: MessageType,
        tensors: dict[str, torch.Tensor],
        *,
        encoded: bytes | None = None,
    ) -> None:
        """Send one public message (a public type, e.g. the CKKS public context) to every peer
        at once: one upload, fanned out by the transport. Public types are never releases, so
        the privacy ledger is not involved."""
        self.channel.publish(
            Message(msg_type, self.peer_id, BROADCAST, self.round, {}, dict(tensors),
                    encoded=encoded)
        )  # fmt: skip

    def answer_request(self, recipient: int, *, consent: bool) -> SendOutcome | None:
        """Answer one adapter request: the adapter if ``consent`` and the budget allow it, else a
        ``DECLINE`` that says why (``no consent`` / ``budget``). Returns the adapter's outcome,
        None when declined for lack of consent."""
        if not consent:
            self.send(recipient, MessageType.DECLINE, meta={"reason": "no consent"})
            return None
        outcome = self.send(recipient, MessageType.ADAPTER, self.released_adapter())
        if outcome is SendOutcome.REFUSED_BUDGET:
            self.send(recipient, MessageType.DECLINE, meta={"reason": "budget"})
        return outcome

    def collect(self) -> None:
        """Read the channel and file each valid message in the inbox; reject the rest."""
        for msg in self.channel.receive():
            try:
                self._file(msg)
            except MessageError as exc:
                self.channel.rejections.append(Rejection(msg.sender, type(exc).__name__, str(exc)))
                log.warning(
                    "%s rejected %s from %s: %s", self.peer_id, msg.msg_type, msg.sender, exc
                )

    def keep_receipt(self, msg: Message) -> None:
        """Keep the sender's signed ledger head that came with an accepted message, for the
        report's cross-check (verified there against the roster and the sender's ledger)."""
        head = msg.meta.get("ledger_head")
        if isinstance(head, dict):
            self.receipts.append(
                {"from": msg.sender, "round": msg.round, "type": str(msg.msg_type), "head": head}
            )

    def _file(self, msg: Message) -> None:
        if msg.sender not in self.peer_ids:
            raise MessageError("sender is not a peer of this run")
        if msg.round != self.round:
            raise MessageError(f"message for round {msg.round} during round {self.round}")
        j = self.peer_ids.index(msg.sender)
        if msg.msg_type is MessageType.ADAPTER:
            self.inbox.adapters[j] = self.check_adapter(msg.tensors)
            self.keep_receipt(msg)
        elif msg.msg_type is MessageType.SIGNATURE:
            try:
                check_signature(msg.tensors)
            except StrategyError as exc:
                raise MessageError(f"malformed signature: {exc}") from exc
            self.inbox.signatures[j] = msg.tensors
        elif msg.msg_type is MessageType.ADAPTER_REQUEST:
            self.inbox.requests.add(j)
            if msg.meta.get("rank") == 1:  # the asker says we are its closest peer (consent)
                self.inbox.first_choice_of.add(j)
        elif msg.msg_type is MessageType.DECLINE:
            self.inbox.declines.add(j)
        else:
            raise MessageError(f"unexpected message type {msg.msg_type}")

    def check_adapter(self, state: AdapterState) -> AdapterState:
        """Accept a received adapter only if it fits this model exactly and is finite.

        Raises:
            AdapterRejectedError: missing/extra tensors, wrong shape/dtype, NaN/Inf.
        """
        if set(state) != set(self.spec):
            raise AdapterRejectedError("adapter tensors do not match this model")
        for name, (shape, dtype) in self.spec.items():
            t = state[name]
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise AdapterRejectedError(f"tensor {name}: wrong shape or dtype")
            if not torch.isfinite(t).all():
                raise AdapterRejectedError(f"tensor {name}: NaN or Inf")
        return state
