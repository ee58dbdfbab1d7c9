"""Cached model directories: atomic creation and a build record that pins every file's SHA-256.

A cached base (the toolkit's small GPT-2, a converted GGUF) is an ordinary Hugging Face directory plus
``build_info.json``: what was built, from what, and the SHA-256 of every other file. A directory is
reused only when :func:`read_build_info` verifies all of it; otherwise the caller rebuilds it.

Directories appear atomically (:func:`atomic_directory`: built under a temporary name next to the
target, fsync'd, then renamed), so a build that is killed half way never leaves a directory that
later looks valid.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from secure_pcft import bounded_json
from secure_pcft.errors import CorruptFileError

BUILD_INFO = "build_info.json"
BUILD_INFO_VERSION = 1
HF_MODEL_FILES: tuple[str, ...] = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
"""Files a cached Hugging Face causal-LM directory must hold (besides ``build_info.json``)."""
_STALE_TMP_SECONDS = 6 * 3600.0

_BUILD_INFO_LIMITS = bounded_json.JsonLimits(max_bytes=1024 * 1024, max_depth=4)

PROGRESS = logging.getLogger("secure_pcft.progress")
"""Progress of long first-use work (building or converting a base): INFO records the CLI shows by
default as plain lines on stderr, not as warnings."""


def base_identity(path: str) -> str:
    """A base model's identity across machines: its folder's (or file's) name. The toolkit's cached
    bases are named by a hash of their spec and training text (``small-81bcca2cc90fdaa1``), so the
    name, unlike the cache path, is the same on every machine that built the same base."""
    return Path(path.rstrip("/")).name if path else ""


@contextlib.contextmanager
def cache_lock(final: Path) -> Iterator[None]:
    """Hold an exclusive lock on building ``final`` (``<parent>/.<name>.lock``, ``flock``).

    Two first runs at once would each build the same base from scratch (minutes of CPU each, the
    same bytes): the second waits here, then finds the first one's build and reuses it. The lock
    dies with its process, so a killed build never blocks the next one.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with (final.parent / f".{final.name}.lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            PROGRESS.info("waiting for another process that is building %s", final.name)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``final``; rename it to ``final`` on success.

    On any exception (``KeyboardInterrupt`` included) the temporary directory is removed and
    ``final`` is left as it was. An existing ``final`` is moved aside and deleted only after the
    new directory is in place. A process killed outright leaves only a ``.tmp-*`` directory, which
    never looks valid and is swept by a later build once it is stale.

    Raises:
        OSError: the parent is not writable or the rename fails.
    """
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_tmp(parent, final.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        old: Path | None = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _sweep_stale_tmp(parent: Path, name: str) -> None:
    now = time.time()
    for pattern in (f".tmp-{name}-*", f".old-{name}-*"):
        for leftover in parent.glob(pattern):
            with contextlib.suppress(OSError):
                if now - leftover.stat().st_mtime > _STALE_TMP_SECONDS:
                    shutil.rmtree(leftover, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` except ``build_info.json``, keyed by relative path."""
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != BUILD_INFO
    }


def read_build_info(directory: Path, required: Sequence[str] = HF_MODEL_FILES) -> dict[str, Any]:
    """Read and verify a cached model directory's ``build_info.json`` against its files.

    Raises:
        CorruptFileError: a file is missing, ``build_info.json`` is unreadable, or a file's SHA-256
            differs from the one recorded at build time.
    """
    missing = [name for name in (*required, BUILD_INFO) if not (directory / name).is_file()]
    if missing:
        raise CorruptFileError(f"{directory}: missing {', '.join(missing)}")
    try:
        raw = (directory / BUILD_INFO).read_bytes()
    except OSError as exc:
        raise CorruptFileError(f"{directory / BUILD_INFO}: unreadable ({exc.strerror})") from exc
    info = bounded_json.loads(
        raw, _BUILD_INFO_LIMITS, CorruptFileError, str(directory / BUILD_INFO)
    )
    if not isinstance(info, dict) or not isinstance(info.get("files"), dict):
        raise CorruptFileError(f"{directory / BUILD_INFO}: not a build record")
    if file_digests(directory) != info["files"]:
        raise CorruptFileError(f"{directory}: files differ from those recorded at build time")
    return info


def write_build_info(directory: Path, info: dict[str, Any]) -> None:
    """Write ``build_info.json`` with the SHA-256 of every other file in ``directory``."""
    record = {**info, "files": file_digests(directory)}
    (directory / BUILD_INFO).write_text(
        json.dumps(record, indent=2, sort_keys=True), encoding="utf-8"
    )


def save_model_dir(
    out_dir: Path, model: Any, tokenizer: Any, info: dict[str, Any], started: float
) -> None:
    """Save ``model`` and ``tokenizer`` (safetensors) with their build record, atomically.

    Adds ``build_seconds`` (since ``started``, a ``time.perf_counter()`` value) to ``info`` before
    writing it with :func:`write_build_info`.

    Raises:
        OSError: as :func:`atomic_directory`; ``out_dir`` is then left as it was.
    """
    with atomic_directory(Path(out_dir)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info["build_seconds"] = round(time.perf_counter() - started, 2)
        write_build_info(tmp, info)
