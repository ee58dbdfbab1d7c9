"""A site's durable peer state: what a restarted ClientApp resumes from.

Saved at every round boundary (after the warm-up and after each aggregation), under the site's
directory, never sent anywhere::

    <site>/state/gen-<n>/adapter.safetensors    the peer's LoRA tensors
    <site>/state/gen-<n>/trainer.safetensors    optimiser moments, sampler and dropout RNG states
    <site>/state/gen-<n>/trainer.json           the rest of the trainer state (counters, groups)
    <site>/state/gen-<n>/kept.safetensors       the kept model, its starting point and the base,
    <site>/state/gen-<n>/kept.json              with their validation losses (collab/keep_best.py)
    <site>/state/current.json                   which generation is current, its round and digests
    <site>/state/started.json                   the last round this peer started (for resuming)

A generation is written completely (files and directory fsync'd) before ``current.json`` points to
it (atomic rename, :mod:`secure_pcft.fileio`), so a crash mid-save leaves the previous generation
current. Files are read only with safetensors and JSON, and their SHA-256 digests must match
``current.json``. The privacy ledger lives next to it (``<site>/ledgers``) and is durable on its
own (fsync'd, hash-chained). A restart resumes without re-running a round or re-counting a release
(TM-07).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from secure_pcft import bounded_json
from secure_pcft.collab.keep_best import KeptModel, Seen
from secure_pcft.fileio import fsync_path, write_json_atomic, write_text_atomic
from secure_pcft.runtime.flower.errors import StateError
from secure_pcft.runtime.flower.state_codec import decode_state, encode_state

# The trainer skeleton (optimizer/scheduler state minus tensors) is the largest of these files.
_STATE_LIMITS = bounded_json.JsonLimits(max_bytes=64 * 1024 * 1024, max_depth=64)
_FILES = ("adapter.safetensors", "trainer.safetensors", "trainer.json", "kept.safetensors",
          "kept.json")  # fmt: skip
_KEPT_ROLES = ("base", "start", "best")


@dataclass
class SavedState:
    """A peer's state at the end of ``completed_round`` (0 = after the warm-up)."""

    completed_round: int
    adapter: dict[str, torch.Tensor]
    trainer: dict[str, Any]
    rng: torch.Tensor  # torch's CPU RNG state for this peer's dropout masks, uint8 (5056,)
    kept: KeptModel = field(default_factory=KeptModel)


class SiteStore:
    """Reads and writes one peer's state under ``<site>/state``.

    Args:
        site_dir: the site's private directory.
        peer_id: the peer this site runs.
        config_digest: SHA-256 of the run configuration; state of another configuration is
            refused (resuming it would mix two runs).
    """

    def __init__(self, site_dir: Path, peer_id: str, config_digest: str) -> None:
        self.dir = Path(site_dir) / "state"
        self.peer_id = peer_id
        self.config_digest = config_digest

    # ---- reading ---------------------------------------------------------------------------
    def load(self) -> SavedState | None:
        """The current saved state, or None when the site has none yet.

        Raises:
            StateError: torn or tampered files, or state of another peer or configuration.
        """
        meta = self._read_json(self.dir / "current.json")
        if meta is None:
            return None
        if meta.get("peer_id") != self.peer_id or meta.get("config") != self.config_digest:
            raise StateError(
                f"{self.dir}: saved state belongs to another peer or run configuration; "
                "move it away to start afresh"
            )
        gen = self.dir / str(meta.get("generation", ""))
        digests = meta.get("sha256")
        if not isinstance(digests, dict) or not gen.is_dir() or gen.parent != self.dir:
            raise StateError(f"{self.dir}: current.json is malformed")
        for name in _FILES:
            if _sha256(gen / name) != digests.get(name):
                raise StateError(f"{gen / name}: digest differs from current.json (torn write?)")
        try:
            adapter = load_file(gen / "adapter.safetensors")
            tensors = load_file(gen / "trainer.safetensors")
        except (SafetensorError, OSError) as exc:
            raise StateError(f"{gen}: unreadable tensors ({type(exc).__name__})") from exc
        skeleton = self._read_json(gen / "trainer.json")
        rng = tensors.pop("__rng__", None)
        rnd = meta.get("completed_round")
        if skeleton is None or rng is None or type(rnd) is not int:
            raise StateError(f"{gen}: incomplete state")
        kept = _decode_kept(gen)
        return SavedState(rnd, adapter, decode_state(skeleton, tensors), rng, kept)

    def started_round(self) -> int:
        """The last round this peer started (0 if none); resuming runs start after it."""
        meta = self._read_json(self.dir / "started.json")
        value = 0 if meta is None else meta.get("round", 0)
        if type(value) is not int or value < 0:
            raise StateError(f"{self.dir / 'started.json'}: malformed")
        return value

    # ---- writing ---------------------------------------------------------------------------
    def save(self, state: SavedState) -> None:
        """Write a new generation, then point ``current.json`` at it (atomically)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        skeleton, tensors = encode_state(state.trainer)
        if "__rng__" in tensors:
            raise StateError("trainer state uses the reserved tensor name __rng__")
        tensors["__rng__"] = state.rng.detach().clone()
        name = f"gen-{state.completed_round:06d}-{os.getpid()}"
        gen = self.dir / name
        shutil.rmtree(gen, ignore_errors=True)
        gen.mkdir(mode=0o700)
        save_file(
            {k: v.contiguous() for k, v in state.adapter.items()}, gen / "adapter.safetensors"
        )
        save_file(tensors, gen / "trainer.safetensors")
        write_text_atomic(gen / "trainer.json", json.dumps(skeleton, allow_nan=False))
        kept_tensors, kept_meta = _encode_kept(state.kept)
        save_file(kept_tensors, gen / "kept.safetensors")
        write_text_atomic(gen / "kept.json", json.dumps(kept_meta, allow_nan=False))
        for f in ("adapter.safetensors", "trainer.safetensors", "kept.safetensors"):
            fsync_path(gen / f)  # the .json files are fsync'd by write_text_atomic
        fsync_path(gen)  # the generation's entries ...
        fsync_path(self.dir)  # ... and the generation itself are durable before current.json
        meta = {
            "peer_id": self.peer_id,
            "config": self.config_digest,
            "completed_round": state.completed_round,
            "generation": name,
            "sha256": {f: _sha256(gen / f) for f in _FILES},
        }
        self._write_meta("current.json", meta)
        for old in self.dir.glob("gen-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def mark_started(self, rnd: int) -> None:
        """Record (durably) that this peer started round ``rnd`` — before anything is released."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write_meta("started.json", {"round": rnd})

    def _write_meta(self, name: str, value: dict[str, Any]) -> None:
        """``<state>/<name>`` replaced atomically; the rename is made durable (directory fsync)."""
        write_json_atomic(self.dir / name, value, indent=1)  # fsyncs self.dir after the rename

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StateError(f"{path}: not readable ({exc.strerror})") from None
        value = bounded_json.loads(raw, _STATE_LIMITS, StateError, str(path))
        if not isinstance(value, dict):
            raise StateError(f"{path}: malformed (not a JSON object)")
        return value


def _encode_kept(kept: KeptModel) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for role in _KEPT_ROLES:
        seen: Seen | None = getattr(kept, role)
        if seen is None:
            continue
        for name, t in seen.state.items():  # roles may share one Seen: copies, not views
            tensors[f"{role}/{name}"] = t.detach().cpu().clone().contiguous()
        tensors[f"{role}/__losses__"] = seen.losses.detach().cpu().clone().contiguous()
        meta[role] = {"origin": seen.origin, "round": seen.round}
    return tensors, meta


def _decode_kept(gen: Path) -> KeptModel:
    try:
        tensors = load_file(gen / "kept.safetensors")
    except (SafetensorError, OSError) as exc:
        raise StateError(f"{gen}: unreadable kept model ({type(exc).__name__})") from exc
    meta = SiteStore._read_json(gen / "kept.json") or {}
    kept = KeptModel()
    for role in _KEPT_ROLES:
        info = meta.get(role)
        if info is None:
            continue
        losses = tensors.get(f"{role}/__losses__")
        origin, rnd = (info.get("origin"), info.get("round")) if isinstance(info, dict) else (0, 0)
        if losses is None or not isinstance(origin, str) or type(rnd) is not int:
            raise StateError(f"{gen}: malformed kept model ({role})")
        prefix = f"{role}/"
        state = {k[len(prefix) :]: v for k, v in tensors.items()
                 if k.startswith(prefix) and k != f"{role}/__losses__"}  # fmt: skip
        setattr(kept, role, Seen(state, losses, origin, rnd))
    return kept


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise StateError(f"{path}: missing or unreadable") from exc
