"""Run results: per round and per peer, as plain dataclasses that serialise to JSON."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from secure_pcft.config import RunConfig
from secure_pcft.errors import PrivacyError
from secure_pcft.fileio import write_json_atomic
from secure_pcft.versions import library_versions


@dataclass
class RoundRecord:
    """State after one round (round 0 = end of the warm-up, before any aggregation).

    Attributes:
        round: aggregation round (0 = after warm-up).
        step: local steps each peer has taken so far.
        test_ppl, test_acc: per peer, on its own private test split.
        trust: the applied trust matrix, rows = receiving peer (empty for round 0).
        bytes_sent: bytes each peer put on the wire this round.
        messages_sent: messages each peer sent this round.
    """

    round: int
    step: int
    test_ppl: list[float]
    test_acc: list[float]
    trust: list[list[float]] = field(default_factory=list)
    bytes_sent: list[int] = field(default_factory=list)
    messages_sent: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """Everything a run reports; ``to_json`` is the machine-readable result file."""

    strategy: str
    peer_ids: list[str]
    config: dict[str, Any]
    config_hash: str
    base_model: str
    data: str
    rounds: list[RoundRecord] = field(default_factory=list)
    rejections: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""  # ISO 8601 UTC: the run (its warm-up) started
    finished_at: str = ""  # ISO 8601 UTC: this strategy's last round ended
    versions: dict[str, str] = field(default_factory=dict)  # libraries of the machine that ran it
    # per peer, the model it keeps (best seen on its validation split) against its starting point
    kept: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def assemble(
        cls,
        cfg: RunConfig,
        *,
        label: str,
        peer_ids: Sequence[str],
        base_model: str,
        data: str,
        rounds: Sequence[RoundRecord],
        rejections: Mapping[str, list[dict[str, str]]],
        kept: Sequence[dict[str, Any]],
        seconds: float,
        started_at: str,
        privacy: Mapping[str, dict[str, Any]] | None = None,
        receipts: Mapping[str, list[Any]] | None = None,
        security: dict[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Self:
        """The results of a run, as both runtimes write them: the config and its hash, the
        strategy's label, when it ran and on which libraries, and — what the compliance report
        reads — every peer's privacy summary and release receipts when DP is on and the security
        log when secure mode is on.

        Raises:
            PrivacyError: a DP run given no privacy summaries or receipts (its results would not
                show what the peers spent).
        """
        more: dict[str, Any] = dict(extra or {})
        if cfg.security.mode == "full" and security is not None:
            more["security"] = security
        if cfg.privacy.enabled:
            if privacy is None or receipts is None:
                raise PrivacyError(
                    "a DP run's results need its peers' privacy summaries and receipts"
                )
            # a Flower site that never reported has no summary: the report flags the gap
            more["privacy"] = {p: privacy[p] for p in peer_ids if p in privacy}
            more["receipts"] = {p: list(receipts.get(p, [])) for p in peer_ids}
        return cls(
            strategy=label,
            peer_ids=list(peer_ids),
            config=cfg.to_dict(),
            config_hash=cfg.digest(),
            base_model=base_model,
            data=data,
            rounds=list(rounds),
            rejections={p: list(rejections.get(p, [])) for p in peer_ids},
            seconds=seconds,
            extra=more,
            started_at=started_at,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            versions=library_versions(),
            kept=list(kept),
        )

    @property
    def final(self) -> RoundRecord:
        return self.rounds[-1]

    def summary(self) -> dict[str, Any]:
        f = self.final
        return {
            "strategy": self.strategy,
            "mean_test_ppl": statistics.fmean(f.test_ppl),
            "mean_test_acc": statistics.fmean(f.test_acc),
            "mean_test_ppl_after_warmup": statistics.fmean(self.rounds[0].test_ppl),
            "total_bytes_sent": sum(sum(r.bytes_sent) for r in self.rounds),
            "rounds": len(self.rounds) - 1,
            "seconds": self.seconds,
            **kept_summary(self.kept),
            **outcome_summary(self.rounds),
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = self.summary()
        return d

    def write_json(self, path: Path) -> Path:
        """Write atomically (temp file + rename) so a killed run never leaves half a result."""
        return write_json_atomic(path, self.to_dict())


def kept_summary(kept: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over peers of the kept models' and starting points' test perplexity, and the worst
    ratio of a peer's kept test perplexity to its starting point's (empty without kept figures)."""
    usable = [k for k in kept if isinstance(k, dict) and "test_ppl" in k]
    if not usable:
        return {}
    return {
        "mean_kept_test_ppl": statistics.fmean(k["test_ppl"] for k in usable),
        "mean_start_test_ppl": statistics.fmean(k["start"]["test_ppl"] for k in usable),
        "mean_base_test_ppl": statistics.fmean(k["base_test_ppl"] for k in usable),
        "worst_kept_vs_start": max(k["test_ppl"] / k["start"]["test_ppl"] for k in usable),
    }


def outcome_lists(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """A round record's ``extra`` from each peer's :meth:`PeerRound.outcome` (peer order)."""
    return {
        "adopted": [str(o.get("adopted", "")) for o in outcomes],
        "alone": [bool(o.get("alone", False)) for o in outcomes],
    }


def outcome_summary(rounds: list[RoundRecord]) -> dict[str, Any]:
    """Peer-rounds spent alone (asked, received nothing) and what was adopted, over the run."""
    alone = sum(sum(1 for a in r.extra.get("alone", []) if a) for r in rounds)
    adopted: dict[str, int] = {}
    for r in rounds:
        for a in r.extra.get("adopted", []):
            if a:
                adopted[a] = adopted.get(a, 0) + 1
    if not adopted and not alone:
        return {}
    return {"peer_rounds_alone": alone, "adopted": dict(sorted(adopted.items()))}
