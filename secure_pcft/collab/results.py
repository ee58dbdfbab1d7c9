"""Run results: per round and per peer, as plain dataclasses that serialise to JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from secure_pcft.fileio import write_json_atomic


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
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = self.summary()
        return d

    def write_json(self, path: Path) -> Path:
        """Write atomically (temp file + rename) so a killed run never leaves half a result."""
        return write_json_atomic(path, self.to_dict())
