"""``signature-twin-mia``: membership of record sets from prediction signatures, informed attacker.

Threat. The same channel as ``signature-mia`` (TM-01, TM-03, TM-04: a peer's prediction signature
on the public reference set, broadcast with security ``off``; TM-02: one encrypted-similarity
answer ⟨x, y⟩ + η per query with security ``full``), played by the strongest attacker DP's
guarantee is stated against: it knows the consortium's recipe and *every* record of the target's
training data except whether one candidate set S was in it. ``signature-mia`` (population data
only) measures what a realistic curious peer finds; this attack measures what the channel carries,
so a weak result there cannot be read as "the channel leaks nothing".

Game, per candidate set S of ``group_size`` blocks (members: drawn from the training data;
non-members: from the held-out blocks). The attacker trains a *pair* of twins per set with the
recipe, all from one seed of its own (not the target's: the initialisation and batch order are
private randomness). Both twins of a pair start from the training data D with one random slot R
of ``group_size`` other rows taken out, and differ only by S, at the same rows (same batches):

* member S (in D): ``with`` = D with R replaced by population blocks; ``without`` = that, with S's
  rows replaced by other population blocks too;
* non-member S: ``with`` = D with R's rows replaced by S; ``without`` = D with R replaced by
  population blocks.

With ``w`` and ``o`` the signatures of the twins with and without S, the score is where the
target's signature ``t`` falls along the line between them:

    score(S) = ⟨t − (w + o)/2, (w − o)/‖w − o‖⟩          (``observation = "signature"``)

positive when the target is closer to the twin with S. In ``similarity`` mode the attacker gets
only the encrypted-similarity answer for its chosen query x = unit(y_w − y_o) on the unit sketches
y: score(S) = (⟨x, y_t⟩ + η) − ⟨x, (y_w + y_o)/2⟩, one query per set (simulated in plaintext with
the responder's flooding noise η ~ N(0, FLOOD_SIGMA²); the CKKS error is far below the AUC's
resolution). Under DP the twins are DP runs of the same recipe; DP bounds any test of one set by
group privacy (``group_size`` records: (k·ε, k·e^((k−1)ε)·δ)), so at ε = 1 and 4-block sets it
bounds little.

Why pairs, and no twin on D itself (the first version of this attack): twins from one seed share
most of that seed's deviation, and a perturbed twin partly loses it, so the difference between a
twin on D and any perturbed twin points back along D-twin's own seed deviation. Using the one D
twin as ``with`` for members and as ``without`` for non-members gave every member score and every
non-member score the same offset with opposite signs: AUC 0.22 [0.06, 0.42] on 12 + 12 sets of
the non-DP campaign target, and 0.67 on another draw — the game's own artefact, not leakage.
With a pair per set, both twins are perturbed alike and nothing is shared between sets.

Cost: 2 × (member sets + non-member sets) training runs of the recipe, shared by the attacks of a
campaign that play the same game (twins are cached on the target).

``known_seed = true`` gives the attacker the target's seed too (a check of the game's orientation
in the tests, not a realistic threat).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from secure_pcft.audit.attack import (
    AttackResult,
    membership_result,
    register_attack,
)
from secure_pcft.audit.mia_signature import SignatureGame, dense_signature
from secure_pcft.audit.scoring import last_position_logits
from secure_pcft.audit.target import AuditTarget, train_adapter
from secure_pcft.collab.strategies.predictions import signature_vector
from secure_pcft.crypto import _params
from secure_pcft.crypto.projection import ProjectionSpec
from secure_pcft.errors import AuditError, ConfigError


def locate_rows(data: torch.Tensor, rows: torch.Tensor) -> list[int]:
    """Index in ``data`` of every row of ``rows`` (each data row used once; duplicates allowed).

    Raises:
        AuditError: a row of ``rows`` is not in ``data``.
    """
    where: dict[bytes, list[int]] = {}
    for i, row in enumerate(data):
        where.setdefault(row.numpy().tobytes(), []).append(i)
    out = []
    for row in rows:
        free = where.get(row.numpy().tobytes())
        if not free:
            raise AuditError("a member block is not in the target's training data")
        out.append(free.pop(0))
    return out


def twin_model(target: AuditTarget, blocks: torch.Tensor, seed: int) -> torch.nn.Module:
    """The recipe trained on ``blocks`` from ``seed`` (cached on the target: attacks of one
    campaign that need the same twin train it once)."""
    key = hashlib.sha256(seed.to_bytes(8, "little") + blocks.numpy().tobytes()).hexdigest()
    if key not in target.twins:
        target.twins[key] = train_adapter(target.base, blocks, target.recipe, seed)
    return target.twins[key].model


@register_attack
class SignatureTwinMia(SignatureGame):
    """Membership of record sets from signatures against twins (informed attacker).

    Measures TM-01, TM-02, TM-03, TM-04 (see the module docstring for the game).

    Args: those of :class:`~secure_pcft.audit.mia_signature.SignatureGame` (defaults: signature,
        4 blocks, 8 sets, 32 blocks), and
        known_seed: the attacker also knows the target's seed (a sanity check of the game).
    """

    name = "signature-twin-mia"

    def __init__(
        self,
        observation: str = "signature",
        group_size: int = 4,
        max_groups: int = 8,
        reference_blocks: int = 32,
        known_seed: bool = False,
    ) -> None:
        super().__init__(observation, group_size, max_groups, reference_blocks)
        if not isinstance(known_seed, bool):
            raise ConfigError("[attack] known_seed: true or false")
        self.known_seed = known_seed

    def _observe(
        self, model: torch.nn.Module, reference: torch.Tensor, spec: ProjectionSpec
    ) -> np.ndarray:
        """What the attacker sees of a model: its dense signature, or its unit sketch."""
        if self.observation == "signature":
            return dense_signature(model, reference)
        return signature_vector(last_position_logits(model, reference), spec).astype(np.float64)

    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        model = target.require_model()
        data = target.require_train_blocks()
        g = self.group_size
        if target.population.shape[0] < g:
            raise AuditError(f"signature-twin-mia needs at least {g} population blocks")
        spec = ProjectionSpec(seed=target.recipe.lora.public_seed)
        reference = target.reference[: self.reference_blocks]
        # The game (sets, swaps, twin seed) depends only on the target's seed and the attack's
        # shape, so a `signature` and a `similarity` attack of one campaign play the same game on
        # the same (cached) twins; ``rng`` draws only the flooding noise.
        plan = np.random.default_rng([target.seed, 7_013, g, self.max_groups])
        member_rows = np.array(locate_rows(data, target.members))
        member_rows = member_rows[plan.permutation(len(member_rows))]
        member_groups = [member_rows[i : i + g] for i in range(0, len(member_rows) - g + 1, g)]
        member_groups = member_groups[: self.max_groups]
        nonmember_groups = list(target.nonmembers.split(g))
        nonmember_groups = [s for s in nonmember_groups if s.shape[0] == g][: self.max_groups]
        if not member_groups or not nonmember_groups:
            raise AuditError(f"signature-twin-mia needs {g} member and {g} non-member blocks")
        drawn_seed = int(plan.integers(0, 2**31 - 1))
        seed = target.seed if self.known_seed else drawn_seed
        n, pop = data.shape[0], target.population

        def twin(blocks: torch.Tensor) -> np.ndarray:
            return self._observe(twin_model(target, blocks, seed), reference, spec)

        def population_blocks() -> torch.Tensor:
            return pop[torch.from_numpy(plan.permutation(pop.shape[0])[:g])]

        def other_slot(avoid: np.ndarray) -> torch.Tensor:
            free = np.setdiff1d(np.arange(n), avoid)
            return torch.from_numpy(plan.permutation(free)[:g])

        observed = self._observe(model, reference, spec)
        scores: list[list[float]] = [[], []]
        for rows in member_groups:
            with_s = data.clone()
            with_s[other_slot(rows)] = population_blocks()
            without = with_s.clone()
            without[torch.from_numpy(rows)] = population_blocks()
            scores[0].append(self._score(observed, twin(with_s), twin(without), rng))
        for group in nonmember_groups:
            slot = other_slot(np.array([], dtype=np.int64))
            with_s, without = data.clone(), data.clone()
            with_s[slot] = group
            without[slot] = population_blocks()
            scores[1].append(self._score(observed, twin(with_s), twin(without), rng))
        return membership_result(
            self.name,
            self.threat_models,
            scores[0],
            scores[1],
            extra_metrics={
                "queries_per_set": 1.0 if self.observation == "similarity" else 0.0,
                "twin_runs": float(2 * (len(member_groups) + len(nonmember_groups))),
            },
            details=self.params(),
        )

    def _score(
        self, t: np.ndarray, w: np.ndarray, o: np.ndarray, rng: np.random.Generator
    ) -> float:
        diff = w - o
        norm = float(np.linalg.norm(diff))
        if norm == 0.0:  # the set does not move the signature: no evidence either way
            return 0.0
        x = diff / norm
        mid = float(x @ (w + o)) / 2
        seen = float(x @ t)
        if self.observation == "similarity":
            seen += float(rng.normal(0.0, _params.FLOOD_SIGMA))
        return seen - mid
