"""What a compliance report reads: a run directory and audit result files, as untrusted JSON.

A run directory is what ``secure-pcft run`` writes (``results.json``, ``ledgers/``, ``adapters/``);
audit files are what ``secure-pcft audit`` writes (``<campaign>.json``). Everything is read with a
size cap, parsed as JSON only (never pickle) and checked field by field before it is used; anything
malformed raises :class:`~secure_pcft.errors.ReportError` naming the file and the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_pcft import bounded_json
from secure_pcft.config import RunConfig, config_from_dict
from secure_pcft.errors import ConfigError, ReportError

MAX_JSON_BYTES = 64 * 1024 * 1024
# Results files of runs and audits: strict (no NaN/Infinity, no duplicate keys), nesting bounded.
_JSON_LIMITS = bounded_json.JsonLimits(max_bytes=MAX_JSON_BYTES, max_depth=32)
RESULTS_FILE = "results.json"
RUN_RECORD_FILE = "run.json"  # written when a run starts (run.py): config and peers
RUN_RECORD_FORMAT = "secure-pcft-run/1"


def read_json(path: Path, what: str) -> tuple[dict[str, Any], str]:
    """Parse a JSON object from ``path``; returns it and the SHA-256 (hex) of the file's bytes.

    Raises:
        ReportError: missing, unreadable, oversize, not UTF-8 JSON, or not a JSON object.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise ReportError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise ReportError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_JSON_BYTES:
        raise ReportError(f"{what} {path}: larger than {MAX_JSON_BYTES} bytes")
    obj = bounded_json.loads(data, _JSON_LIMITS, ReportError, f"{what} {path}")
    if not isinstance(obj, dict):
        raise ReportError(f"{what} {path}: top level must be a JSON object")
    return obj, hashlib.sha256(data).hexdigest()


def require(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]`` if present and of type ``kind`` (bools are not numbers).

    Raises:
        ReportError: missing key or wrong type.
    """
    if key not in obj:
        raise ReportError(f"{where}: missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) and bool not in _as_tuple(kind):
        raise ReportError(f"{where}.{key}: expected {_names(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ReportError(f"{where}.{key}: expected {_names(kind)}, got {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


def real(value: Any, where: str) -> float:
    """A JSON number, or one of the strings ``"inf"``, ``"-inf"``, ``"nan"`` the toolkit writes.

    Raises:
        ReportError: anything else.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    raise ReportError(f"{where}: expected a number, got {type(value).__name__}")


def numbers(value: Any, n: int | None, where: str) -> list[float]:
    """A list of ``n`` reals (any length if ``n`` is None)."""
    if not isinstance(value, list) or (n is not None and len(value) != n):
        raise ReportError(f"{where}: expected a list of {n if n is not None else 'some'} numbers")
    return [real(v, f"{where}[{i}]") for i, v in enumerate(value)]


def counts(value: Any, n: int, where: str) -> list[int]:
    """A list of ``n`` non-negative integers (empty means "not recorded": zeros)."""
    if value == []:
        return [0] * n
    if not isinstance(value, list) or len(value) != n:
        raise ReportError(f"{where}: expected a list of {n} counts")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ReportError(f"{where}[{i}]: expected an integer >= 0")
        out.append(v)
    return out


@dataclass(frozen=True)
class RoundFacts:
    """One round of ``results.json`` (round 0 = after the warm-up), checked.

    Attributes:
        round: aggregation round.
        test_ppl, test_acc: per peer (order of ``peer_ids``).
        trust: applied trust matrix (rows = receiving peer); empty for round 0.
        bytes_sent, messages_sent: per sending peer, this round.
    """

    round: int
    test_ppl: list[float]
    test_acc: list[float]
    trust: list[list[float]]
    bytes_sent: list[int]
    messages_sent: list[int]


@dataclass(frozen=True)
class RunFiles:
    """A checked run directory.

    Attributes:
        run_dir: the directory.
        results: the parsed ``results.json`` (still JSON; the checked parts are below).
        results_sha256: SHA-256 of ``results.json`` as read.
        config: the run configuration, re-validated from ``results.json``.
        peer_ids: peers of the run.
        rounds: the checked per-round records (none for an incomplete run).
        complete: False when the run stopped before writing ``results.json`` (interrupted): the
            report then reads its config and peers from ``run.json`` and its ε from the ledgers.
    """

    run_dir: Path
    results: dict[str, Any]
    results_sha256: str
    config: RunConfig
    peer_ids: tuple[str, ...]
    rounds: tuple[RoundFacts, ...]
    complete: bool = True

    def ledger_candidates(self, file_name: str) -> list[Path]:
        """Where a peer's ledger file may be, in order: ``<run>/ledgers``, then ``[privacy]
        ledger_dir`` of the recorded config (as written, i.e. relative to the current directory).
        The path recorded in ``results.json`` is deliberately not followed: a report of a copied
        run directory must not silently read ledgers from somewhere else."""
        out = [self.run_dir / "ledgers" / file_name]
        if self.config.privacy.ledger_dir:
            out.append(Path(self.config.privacy.ledger_dir) / file_name)
        return out

    def extra(self, key: str) -> dict[str, Any]:
        """``results.json`` ``extra[key]`` (an empty dict when absent)."""
        extra = self.results.get("extra", {})
        value = extra.get(key, {}) if isinstance(extra, dict) else {}
        if not isinstance(value, dict):
            raise ReportError(f"results.json extra.{key}: expected an object")
        return value


def _round(obj: Any, n: int, index: int) -> RoundFacts:
    where = f"results.json rounds[{index}]"
    if not isinstance(obj, dict):
        raise ReportError(f"{where}: expected an object")
    rnd = require(obj, "round", int, where)
    trust_raw = require(obj, "trust", list, where)
    trust = [numbers(row, n, f"{where}.trust[{i}]") for i, row in enumerate(trust_raw)]
    if trust and len(trust) != n:
        raise ReportError(f"{where}.trust: expected {n} rows")
    return RoundFacts(
        round=rnd,
        test_ppl=numbers(require(obj, "test_ppl", list, where), n, f"{where}.test_ppl"),
        test_acc=numbers(require(obj, "test_acc", list, where), n, f"{where}.test_acc"),
        trust=trust,
        bytes_sent=counts(obj.get("bytes_sent", []), n, f"{where}.bytes_sent"),
        messages_sent=counts(obj.get("messages_sent", []), n, f"{where}.messages_sent"),
    )


def load_run(run_dir: str | Path) -> RunFiles:
    """Read and check ``<run_dir>/results.json`` (the ledgers are read later, per peer).

    Raises:
        ReportError: no run directory or results file, a malformed field, or a recorded
            configuration that no longer validates.
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise ReportError(f"run directory {d}: not a directory")
    if not (d / RESULTS_FILE).exists() and (d / RUN_RECORD_FILE).exists():
        return _incomplete_run(d)
    results, sha = read_json(d / RESULTS_FILE, "results file")
    where = "results.json"
    peer_ids = require(results, "peer_ids", list, where)
    if not peer_ids or not all(isinstance(p, str) and p for p in peer_ids):
        raise ReportError(f"{where}.peer_ids: expected a non-empty list of peer ids")
    if len(set(peer_ids)) != len(peer_ids):
        raise ReportError(f"{where}.peer_ids: duplicate peer ids")
    for key in ("strategy", "config_hash"):
        require(results, key, str, where)
    raw_config = require(results, "config", dict, where)
    try:
        config = config_from_dict(raw_config)
    except ConfigError as exc:
        raise ReportError(f"{where}.config: not a valid run configuration ({exc})") from exc
    rounds_raw = require(results, "rounds", list, where)
    if not rounds_raw:
        raise ReportError(f"{where}.rounds: no rounds recorded")
    rounds = tuple(_round(r, len(peer_ids), i) for i, r in enumerate(rounds_raw))
    return RunFiles(d, results, sha, config, tuple(peer_ids), rounds)


def _incomplete_run(d: Path) -> RunFiles:
    """A run that stopped before ``results.json``: its config and peers from ``run.json``."""
    record, sha = read_json(d / RUN_RECORD_FILE, "run record")
    where = RUN_RECORD_FILE
    if record.get("format") != RUN_RECORD_FORMAT:
        raise ReportError(f"{where}: not a {RUN_RECORD_FORMAT} record")
    peer_ids = require(record, "peer_ids", list, where)
    if not peer_ids or not all(isinstance(p, str) and p for p in peer_ids):
        raise ReportError(f"{where}.peer_ids: expected a non-empty list of peer ids")
    try:
        config = config_from_dict(require(record, "config", dict, where))
    except ConfigError as exc:
        raise ReportError(f"{where}.config: not a valid run configuration ({exc})") from exc
    results = {
        "strategy": str(record.get("strategy", "?")),
        "config_hash": str(require(record, "config_hash", str, where)),
        "config": record["config"],
        "peer_ids": peer_ids,
        "started_at": record.get("started_at"),
        "versions": record.get("versions", {}),
        "extra": {},
        "new_budget": record.get("new_budget"),
    }
    return RunFiles(d, results, sha, config, tuple(peer_ids), (), complete=False)
