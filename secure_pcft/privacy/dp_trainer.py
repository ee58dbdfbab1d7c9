"""DP-SGD on a peer's LoRA parameters with Opacus (per-unit clipping, Gaussian noise, Poisson).

Mitigates TM-01 / TM-05 (recipients of the adapter running membership inference, canary
extraction or reconstruction on it): the adapter is an (ε, δ)-DP function of the training data,
with neighbouring datasets differing in one *privacy unit* (``[privacy] unit``):

* ``block`` — one token block of shape (T,) (the stream of all documents cut into blocks).
* ``document`` — one document: all of its blocks (data/blocks.py:encode_unit_blocks).
* ``subject`` — one data subject: all blocks of all of its documents.

Every step samples each of the U units independently with probability q = batch_size / U
(Poisson sampling over units, which the accountants assume), computes per-block gradients with
Opacus's ``GradSampleModule`` (hooks on the LoRA ``nn.Linear`` layers; the frozen base layers need
no per-sample gradients), averages each sampled unit's per-block gradients into one per-unit
gradient (its blocks in the step: at most ``max_unit_blocks``, drawn afresh each step when it holds
more), clips each unit's gradient over all trainable tensors to L2 norm ``max_grad_norm`` = C,
sums, adds N(0, σ²C²) per coordinate and divides by the *expected* batch q·U (Opacus's
``DPOptimizer``), then steps AdamW (post-processing). A unit's whole contribution to a step is one
vector of norm ≤ C whatever the number of its blocks or documents, so the Gaussian mechanism's
sensitivity — and the accountant's ε at sampling rate q — hold for the unit. With the ``block``
unit each block is its own unit and nothing is averaged. An empty Poisson batch still gets a
noise-only step, as the analysis assumes.

The optimiser state stays with the peer, as in :class:`~secure_pcft.train.local.LocalTrainer`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn

from secure_pcft.config import PrivacyConfig, TrainConfig
from secure_pcft.errors import ConfigError, DataError, ModelError, PrivacyError
from secure_pcft.privacy.accounting import calibrate_noise_multiplier, check_accountant
from secure_pcft.privacy.events import DpEvent
from secure_pcft.privacy.losses import per_example_lm_loss
from secure_pcft.privacy.randomness import OsUrandomSource, RandomSource, SeededSource

log = logging.getLogger(__name__)
_SEEDED_WARNED = False  # the seeded-PRNG warning has been logged in this process


class SourcedDPOptimizer(DPOptimizer):
    """Opacus's ``DPOptimizer`` with its Gaussian noise drawn from a :class:`RandomSource`.

    Clipping, summing and scaling are Opacus's own; only ``add_noise`` is replaced so that the
    noise can come from the OS CSPRNG (Opacus's secure mode needs torchcsprng).

    ``audit_gradient`` (audits only, :mod:`secure_pcft.audit.whitebox`): called with the summed
    clipped gradients (one tensor per parameter) after clipping and before the noise, to add the
    gradients of audit canaries exactly as further examples' clipped gradients would be added.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, *, source: RandomSource, **kwargs: Any
    ) -> None:
        super().__init__(optimizer, **kwargs)
        self.source = source
        self.audit_gradient: Callable[[list[torch.Tensor]], None] | None = None

    def add_noise(self) -> None:
        std = float(self.noise_multiplier * self.max_grad_norm)
        if self.audit_gradient is not None:
            self.audit_gradient([p.summed_grad for p in self.params])
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            summed = p.summed_grad
            if std > 0:
                noise = self.source.gaussian(summed.shape, std, summed.dtype, summed.device)
            else:
                noise = torch.zeros_like(summed)
            p.grad = (summed + noise).view_as(p)
            _mark_as_processed(p.summed_grad)


def resolve_delta(delta: float | None, n_train: int, unit: str = "block") -> float:
    """δ for a peer with ``n_train`` training units (blocks, documents or subjects): the
    configured one, else 1/(10·n_train).

    Raises:
        ConfigError: a configured δ is not below 1/n_train (it would allow publishing a record).
    """
    if delta is None:
        return 1.0 / (10 * n_train)
    if delta >= 1.0 / n_train:
        raise ConfigError(
            f"[privacy] delta: δ={delta:g} must be < 1/n_train = {1.0 / n_train:g} per peer "
            f"({n_train} training {unit}s)"
        )
    return delta


def unit_groups(units: torch.Tensor) -> list[torch.Tensor]:
    """The block indices of each unit, ``groups[u]`` (k_u,), for units numbered 0..U-1.

    Raises:
        DataError: ``units`` is not a 1-D tensor numbering every unit 0..U-1 at least once.
    """
    if units.ndim != 1 or units.numel() == 0:
        raise DataError("units must be a non-empty 1-D tensor (one unit per block)")
    order = torch.argsort(units, stable=True)
    counts = torch.bincount(units)
    if int(units.min()) < 0 or bool((counts == 0).any()):
        raise DataError("units must number every unit 0..U-1 with at least one block each")
    return list(torch.split(order, counts.tolist()))


class DpTrainer:
    """DP-SGD with AdamW on the trainable (LoRA) parameters of one peer's model.

    Same interface as :class:`~secure_pcft.train.local.LocalTrainer`: :meth:`step`,
    :meth:`train`, ``steps_done``, :meth:`state_dict` / :meth:`load_state_dict`, ``optimizer``,
    ``model``, ``blocks``. While attached, forward passes of ``model`` in training mode with
    gradients enabled go through Opacus's hooks: evaluate under ``torch.no_grad()``.

    Args:
        model: the peer's peft model; only parameters with ``requires_grad`` train.
        blocks: the peer's private training token blocks, shape (N, T).
        train_cfg: batch size (the *expected* Poisson batch, in units), learning rate, weight
            decay, ``total_steps`` (the planned run, for calibration).
        privacy_cfg: σ or target ε, δ, C, accountant, secure RNG.
        generator: the peer's RNG; drives Poisson sampling and (seeded mode) the noise seed.
        reserved: events planned besides DP-SGD (e.g. validation releases) that a target ε
            must leave room for when σ is calibrated.
        optimizer: ``adamw`` (runs) or ``sgd`` (white-box audits: plain SGD on the noisy
            gradient, so an audit canary's effect on a coordinate adds up step by step).
        units: the privacy unit of each block, shape (N,), numbered 0..U-1
            (:func:`~secure_pcft.data.blocks.encode_unit_blocks`); None = each block its own
            unit (``[privacy] unit = "block"``).

    Attributes:
        unit: ``privacy_cfg.unit``.
        num_units: U, the training units held (= N for the block unit).
        sample_rate: q = expected batch / U.
        noise_multiplier: σ (given, or calibrated for ``train_cfg.total_steps`` steps).
        delta: δ of the peer (configured, else 1/(10·U)).
        expected_batch_size: q·U, the denominator of the noisy mean gradient.
        steps_released: steps already covered by a recorded release (see :meth:`pending_event`).
        last_batch: indices of the blocks in the last step, shape (B,), B may be 0.

    Raises:
        DataError: ``blocks`` is not a non-empty (N, T>=2) tensor, or ``units`` does not number
            its blocks' units.
        ConfigError: DP is not enabled, δ >= 1/N, or (BudgetInfeasibleError) the target ε is
            unreachable for the planned steps.
        ModelError: nothing trainable, or a trainable layer Opacus cannot handle.
    """

    def __init__(
        self,
        model: nn.Module,
        blocks: torch.Tensor,
        train_cfg: TrainConfig,
        privacy_cfg: PrivacyConfig,
        generator: torch.Generator,
        *,
        reserved: Sequence[DpEvent] = (),
        optimizer: str = "adamw",
        units: torch.Tensor | None = None,
    ) -> None:
        if blocks.ndim != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
            raise DataError("training blocks must be a non-empty (N, T) tensor with T >= 2")
        if not privacy_cfg.enabled:
            raise ConfigError(
                "[privacy] enabled: DpTrainer needs DP enabled (else use LocalTrainer)"
            )
        self.model, self.blocks, self.cfg, self.privacy = model, blocks, train_cfg, privacy_cfg
        self.generator = generator
        self.unit = privacy_cfg.unit
        if (units is None) != (self.unit == "block"):
            raise ConfigError(
                f"[privacy] unit = {self.unit!r}: the trainer needs "
                + ("no unit tags" if units is None else "each block's unit")
                + " (data/blocks.py:encode_unit_blocks)"
            )
        if units is not None and units.shape != (blocks.shape[0],):
            raise DataError(f"units must tag each of the {blocks.shape[0]} blocks once")
        self._groups = None if units is None else unit_groups(units.cpu())
        n = int(blocks.shape[0]) if self._groups is None else len(self._groups)
        self.num_units = n
        self.expected_batch_size = min(train_cfg.batch_size, n)
        self.sample_rate = self.expected_batch_size / n
        self.delta = resolve_delta(privacy_cfg.delta, n, self.unit)
        self.max_grad_norm = privacy_cfg.max_grad_norm
        check_accountant(privacy_cfg.accountant)
        self.accountant = privacy_cfg.accountant
        self.noise_multiplier = self._resolve_sigma(reserved)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ModelError("the model has no trainable parameters to train with DP-SGD")
        try:
            self._gsm = GradSampleModule(
                model, batch_first=True, loss_reduction="mean", strict=True
            )
        except NotImplementedError as exc:
            raise ModelError(f"Opacus cannot compute per-example gradients here: {exc}") from exc
        self._sampling, self._noise = self._sources(generator)
        if optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"DpTrainer optimizer: 'adamw' or 'sgd', got {optimizer!r}")
        inner: torch.optim.Optimizer = (
            torch.optim.AdamW(self.params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
            if optimizer == "adamw"
            else torch.optim.SGD(self.params, lr=train_cfg.lr)
        )
        self.optimizer = SourcedDPOptimizer(
            inner,
            source=self._noise,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=self.expected_batch_size,
            loss_reduction="mean",
        )
        self.steps_done = 0
        self.steps_released = 0
        self.last_batch = torch.empty(0, dtype=torch.long)

    def _resolve_sigma(self, reserved: Sequence[DpEvent]) -> float:
        if self.privacy.noise_multiplier is not None:
            if self.privacy.noise_multiplier == 0:
                log.warning("DP-SGD with σ = 0: clipping only, no privacy (ε = ∞)")
            return float(self.privacy.noise_multiplier)
        assert self.privacy.target_epsilon is not None  # PrivacyConfig guarantees one of the two
        sigma = calibrate_noise_multiplier(
            target_epsilon=self.privacy.target_epsilon,
            delta=self.delta,
            sample_rate=self.sample_rate,
            steps=self.cfg.total_steps,
            accountant=self.accountant,
            reserved=reserved,
        )
        log.info(
            "calibrated σ=%.4f for ε=%g, δ=%.3g over %d steps at q=%.4f (%s)",
            sigma, self.privacy.target_epsilon, self.delta, self.cfg.total_steps,
            self.sample_rate, self.accountant,
        )  # fmt: skip
        return sigma

    def _sources(self, generator: torch.Generator) -> tuple[RandomSource, RandomSource]:
        if self.privacy.secure_rng:
            return OsUrandomSource(), OsUrandomSource()
        global _SEEDED_WARNED
        if not _SEEDED_WARNED:  # once per process: a run builds one trainer per peer
            _SEEDED_WARNED = True
            log.warning(
                "DP noise comes from a seeded PRNG: reproducible, but not private against anyone who "
                "knows the seed; set [privacy] secure_rng = true for real releases"
            )
        # A separate noise stream, so that the batches do not depend on σ.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return SeededSource(generator), SeededSource(torch.Generator().manual_seed(seed))

    # ---- training -----------------------------------------------------------------------------
    def _sample(self) -> torch.Tensor:
        take = self._sampling.uniform(self.num_units) < self.sample_rate  # (U,)
        return take.nonzero().flatten()  # (B,), B ~ Binomial(U, q)

    def _unit_batch(self, sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The blocks of the sampled units and, for document/subject units, the position in
        ``sampled`` of each block's unit (None for the block unit: block i is unit i)."""
        if self._groups is None or sampled.numel() == 0:
            return sampled, None
        cap = self.privacy.max_unit_blocks
        picked: list[torch.Tensor] = []
        owner: list[torch.Tensor] = []
        for pos, u in enumerate(sampled.tolist()):
            group = self._groups[u]
            if group.numel() > cap:  # a fresh random subset each step (compute bound only)
                group = group[torch.argsort(self._sampling.uniform(group.numel()))[:cap]]
            picked.append(group)
            owner.append(torch.full((group.numel(),), pos, dtype=torch.long))
        return torch.cat(picked), torch.cat(owner)

    def _update(self, sampled: torch.Tensor) -> float:
        """One DP step on the sampled units (B may be 0); returns the mean loss of their blocks
        (NaN if B = 0)."""
        self.model.train()
        idx, owner = self._unit_batch(sampled)
        self.last_batch = idx
        self.optimizer.zero_grad(set_to_none=True)
        loss = math.nan
        if idx.numel() == 0:
            for p in self.params:  # no data: the step releases pure noise, as accounted
                p.grad_sample = p.new_zeros((0, *p.shape))  # type: ignore[attr-defined]
        else:
            batch = self.blocks[idx].to(self.params[0].device)  # (B, T)
            with warnings.catch_warnings():
                # Layer-0 LoRA inputs do not require grad; Opacus only needs the output grads.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                per_example = per_example_lm_loss(self._gsm, batch)  # (B,)
                # "mean" reduction: Opacus rescales by B, so grad_sample[i] = ∇ loss_i.
                per_example.mean().backward()
            loss = float(per_example.detach().mean())
            if owner is not None:
                self._per_unit_gradients(owner.to(batch.device), int(sampled.numel()))
        self.optimizer.step()
        self.steps_done += 1
        return loss

    def _per_unit_gradients(self, owner: torch.Tensor, units: int) -> None:
        """Replace each parameter's per-block gradients (B, ...) by per-unit means (units, ...):
        the rows Opacus then clips to C, one per unit."""
        sizes = torch.bincount(owner, minlength=units)
        for p in self.params:
            per_block = p.grad_sample  # type: ignore[attr-defined]
            summed = per_block.new_zeros((units, *per_block.shape[1:])).index_add_(
                0, owner, per_block
            )
            shape = (units,) + (1,) * (per_block.ndim - 1)
            p.grad_sample = summed / sizes.to(summed.dtype).view(shape)  # type: ignore[attr-defined]

    def step(self) -> float:
        """One DP-SGD step; returns the sampled blocks' mean next-token loss (nats), NaN if none."""
        return self._update(self._sample())

    def train(self, steps: int) -> list[float]:
        """Run ``steps`` DP-SGD steps and return their losses."""
        return [self.step() for _ in range(steps)]

    # ---- accounting ----------------------------------------------------------------------------
    @property
    def unreleased_steps(self) -> int:
        """DP-SGD steps taken since the last recorded release."""
        return max(0, self.steps_done - self.steps_released)

    def pending_event(
        self, *, round: int, released: str = "adapter", recipients: Sequence[str] = ()
    ) -> DpEvent:
        """The event to record before releasing anything derived from the current model.

        It covers every step since the last recorded release (``steps`` may be 0 for a second
        release of the same model, which costs no ε but is still logged).
        """
        return DpEvent(
            "dp-sgd", self.noise_multiplier, self.sample_rate, self.unreleased_steps, round,
            released, tuple(recipients),
        )  # fmt: skip

    def planned_event(self) -> DpEvent:
        """Every DP-SGD step of the planned run (``[train] total_steps``) as one event: what the
        run's plan costs (calibration and the default budget use it; never recorded)."""
        return DpEvent(
            "dp-sgd", self.noise_multiplier, self.sample_rate, self.cfg.total_steps, 0, "planned"
        )

    def mark_released(self, event: DpEvent) -> None:
        """Note that ``event`` (from :meth:`pending_event`) is now recorded in the ledger.

        Raises:
            PrivacyError: the event does not describe this trainer's mechanism.
        """
        if (event.mechanism, event.noise_multiplier, event.sample_rate) != (
            "dp-sgd", self.noise_multiplier, self.sample_rate,
        ):  # fmt: skip
            raise PrivacyError("the event was not produced by this trainer")
        self.steps_released = min(self.steps_done, self.steps_released + event.steps)

    # ---- snapshots -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Optimiser + sampler state and step counters (local only, never sent).

        The OS-CSPRNG source has no state. Restoring an older snapshot can only make the next
        release record *more* steps than strictly needed (never fewer).
        """
        noise = self._noise.generator.get_state() if isinstance(self._noise, SeededSource) else None
        return {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "noise_generator": noise,
            "steps_done": self.steps_done,
            "steps_released": self.steps_released,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if isinstance(self._noise, SeededSource) and state.get("noise_generator") is not None:
            self._noise.generator.set_state(state["noise_generator"])
        self.steps_done = int(state["steps_done"])
        self.steps_released = int(state["steps_released"])

    def close(self) -> None:
        """Detach Opacus's hooks and per-sample attributes from the model."""
        self._gsm._close()
