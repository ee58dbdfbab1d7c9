"""Canaries: random secrets inserted into a peer's training data (Secret Sharer, Carlini et al. 2019).

Two kinds:

* ``digits``: the text ``"<prefix> d-d-d-d-d-d"`` (e.g. ``"serial number 7-4-1-9-0-3"``): the prefix
  is public, the digits are the secret, drawn uniformly from a space of 10^digits candidates —
  the form for exposure and extraction audits.
* ``tokens``: ``length`` token ids drawn uniformly from the vocabulary (EOS excluded), scored
  after a lone EOS — distinct content per canary, the usual input-space canary of one-run ε
  audits (canaries sharing one prefix compete for the same next-token distribution).

Each canary block is one training sequence (the DP unit): ``EOS, prefix, secret, EOS`` followed by
filler tokens copied from one of the peer's own training blocks, so the block looks like the
peer's other data. An inserted canary occupies ``copies`` such blocks.

Which canaries are inserted is decided by fair coins when ``inclusion = 0.5`` (the one-run ε audit
needs exactly that) or always when ``inclusion = 1.0``; never-inserted canaries are the negatives
against which the inserted ones are ranked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from secure_pcft.errors import AuditError
from secure_pcft.validation import require, require_int


@dataclass(frozen=True)
class CanarySpec:
    """How many secrets, in what form, inserted how often.

    Attributes:
        kind: ``digits`` (prefix + digit secret) or ``tokens`` (random token sequence).
        count: canaries drawn (inserted and not), >= 2.
        copies: training blocks per inserted canary (1 for the one-run ε audit: one DP unit each).
        inclusion: probability that a canary is inserted: 1.0 (all; ``count`` fresh secrets are
            then drawn as never-inserted negatives) or 0.5 (independent fair coins).
        digits: ``digits`` kind: secret digits; the candidate space has 10^digits members.
        prefix: ``digits`` kind: the public text before the secret.
        length: ``tokens`` kind: tokens per canary; the space has V^length members.
        candidates: secrets sampled to estimate exposure.
    """

    kind: str = "digits"
    count: int = 16
    copies: int = 4
    inclusion: float = 1.0
    digits: int = 6
    prefix: str = "serial number"
    length: int = 12
    candidates: int = 2000

    def __post_init__(self) -> None:
        s = "canaries"
        require(self.kind in ("digits", "tokens"), s, "kind", "'digits' or 'tokens'")
        for name, value, low in (
            ("count", self.count, 2),
            ("copies", self.copies, 1),
            ("digits", self.digits, 1),
            ("length", self.length, 1),
            ("candidates", self.candidates, 10),
        ):
            require_int(value, s, name, low)
        require(
            self.inclusion in (0.5, 1.0),
            s,
            "inclusion",
            "probability 1.0 (all) or 0.5 (fair coins)",
        )
        require(self.digits <= 12, s, "digits", "at most 12 (candidate space 10^digits)")
        require(bool(self.prefix.strip()), s, "prefix", "non-empty public text before the secret")

    def space_size(self, vocab_size: int) -> float:
        """Number of possible secrets: 10^digits, or V^length (EOS excluded) for ``tokens``."""
        if self.kind == "digits":
            return float(10**self.digits)
        return float(vocab_size - 1) ** self.length


def format_secret(digits: np.ndarray) -> str:
    """``[7, 4, 1]`` → ``"7-4-1"``."""
    return "-".join(str(int(d)) for d in digits)


@dataclass(frozen=True)
class CanarySet:
    """Drawn canaries and the blocks that carry the inserted ones.

    Attributes:
        spec: how they were drawn.
        included: whether each canary was inserted (inserted first, if inclusion = 1.0).
        prefix_ids: token ids of ``EOS + prefix`` (the context every secret is scored in).
        secret_ids: token ids of each secret (``" " + digits``, or the random tokens).
        blocks: the inserted canary blocks, shape (copies · inserted, T).
        space_size: number of possible secrets.
    """

    spec: CanarySpec
    included: tuple[bool, ...]
    prefix_ids: tuple[int, ...]
    secret_ids: tuple[tuple[int, ...], ...]
    blocks: torch.Tensor
    space_size: float

    def candidates(
        self, tokenizer: PreTrainedTokenizerBase, count: int, rng: np.random.Generator
    ) -> list[tuple[int, ...]]:
        """``count`` secrets drawn uniformly from the candidate space, as token ids."""
        return _draw_secrets(self.spec, tokenizer, count, rng)


def _draw_secrets(
    spec: CanarySpec, tokenizer: PreTrainedTokenizerBase, count: int, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    if spec.kind == "digits":
        return [
            tuple(tokenizer(" " + format_secret(d), add_special_tokens=False)["input_ids"])
            for d in rng.integers(0, 10, size=(count, spec.digits))
        ]
    eos = int(tokenizer.eos_token_id)
    ids = rng.integers(0, len(tokenizer) - 1, size=(count, spec.length))
    ids = ids + (ids >= eos)  # skip EOS: uniform over the other V - 1 tokens
    return [tuple(int(t) for t in row) for row in ids]


def draw_canaries(
    spec: CanarySpec,
    tokenizer: PreTrainedTokenizerBase,
    filler: torch.Tensor,
    rng: np.random.Generator,
) -> CanarySet:
    """Draw secrets and coins, and build the blocks of the inserted canaries.

    Args:
        spec: what to draw.
        tokenizer: the base model's tokenizer.
        filler: the peer's training blocks, shape (N, T); block length T is taken from it.
        rng: the auditor's generator (secrets, coins, filler choice — all drawn before training).

    Raises:
        AuditError: the tokenizer has no EOS, or a canary does not fit in one block.
    """
    eos = tokenizer.eos_token_id
    if not isinstance(eos, int):
        raise AuditError("canaries need a tokenizer with an EOS token")
    n = spec.count * (2 if spec.inclusion == 1.0 else 1)
    secret_ids = tuple(_draw_secrets(spec, tokenizer, n, rng))
    if spec.inclusion == 1.0:
        included = tuple([True] * spec.count + [False] * spec.count)
    else:
        included = tuple(bool(c) for c in rng.integers(0, 2, size=n))
    prefix_ids: tuple[int, ...] = (eos,)
    if spec.kind == "digits":
        prefix_ids = (eos, *tokenizer(spec.prefix, add_special_tokens=False)["input_ids"])
    block_len = int(filler.shape[1])
    # Filler sources are drawn for every canary, inserted or not, so nothing depends on the coins.
    sources = rng.integers(0, filler.shape[0], size=(n, spec.copies))
    rows = []
    for i in range(n):
        head = [*prefix_ids, *secret_ids[i], eos]
        if len(head) >= block_len:
            raise AuditError(f"a canary takes {len(head)} tokens; blocks hold only {block_len}")
        for c in range(spec.copies):
            row = filler[int(sources[i, c])].clone()
            row[len(head) :] = row[: block_len - len(head)].clone()
            row[: len(head)] = torch.tensor(head, dtype=row.dtype)
            if included[i]:
                rows.append(row)
    blocks = torch.stack(rows) if rows else filler[:0].clone()
    space = spec.space_size(len(tokenizer))
    return CanarySet(spec, included, prefix_ids, secret_ids, blocks, space)
