"""Where a published figure came from: the code's commit, the command, the machine.

Benchmarks (``benchmarks/_common.py``) and audit results (``secure-pcft audit``) record this next to
every figure, so that ``benchmarks/stale.py`` can tell which figures the code has moved away from.
The commit is read with ``git`` from the checkout the package is imported from; an installed
package outside a checkout records ``"unknown"``.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

CHECKOUT = Path(__file__).resolve().parent.parent
# result files are what benchmarks and audits write, not code: a run in progress is not "dirty"
RESULT_PATHS = ("benchmarks/results", "audits/results")


def _git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], cwd=CHECKOUT, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""


def git_state() -> dict[str, Any]:
    """The commit the code runs from and whether the tree had uncommitted changes (outside the
    result folders)."""
    excluded = [f":(exclude){p}" for p in RESULT_PATHS]
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    return {"commit": _git("rev-parse", "HEAD") or "unknown", "dirty": bool(status)}


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), for quoting the machine of a timing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stamp(command: str) -> dict[str, Any]:
    """Commit (and dirty flag), ``command``, the machine and the date, for a result file."""
    return {
        **git_state(),
        "command": command,
        "machine": {**machine(), "cpu": cpu_model()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
