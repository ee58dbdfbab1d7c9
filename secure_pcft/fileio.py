"""Crash-safe file writes shared by results, reports, audit summaries and site state.

A reader never sees half a file: the text goes to a temporary file beside the target, is fsync'd, and
is renamed over the target (atomic on POSIX); the folder is then fsync'd so the rename survives a power
loss too. Modules with stricter needs (the ledger's append-only
log, key files written with restricted permissions) keep their own writers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON values: every non-finite float as the string the toolkit writes
    (``"inf"``, ``"-inf"``, ``"nan"``), numpy scalars as Python numbers, paths as strings, mappings
    with string keys, tuples as lists. The one place that decides how results spell non-finite
    numbers (results, reports, audit summaries)."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (for a directory: make a rename inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically; creates the parent folder. Returns ``path``.

    ``mode``: permissions of the new file, set at creation (``0o600`` for files private to the
    site), before any byte is written; the umask still applies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; creates the parent folder. Returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(
    path: Path, obj: Any, *, indent: int = 2, default: Any = None, mode: int = 0o644
) -> Path:
    """``obj`` as standard JSON (through :func:`json_safe`: NaN/inf become strings) written
    atomically, with a final newline."""
    text = json.dumps(json_safe(obj), indent=indent, default=default, allow_nan=False) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode)
