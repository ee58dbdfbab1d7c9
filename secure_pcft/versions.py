"""Versions of the toolkit and of the libraries its guarantees rest on (one list for every record).

Run results, audit results and compliance reports each record these, so a reviewer can compare the
machine that trained with the one that audited and the one that reported.
"""

from __future__ import annotations

import platform
from importlib import metadata

VERSIONED = ("secure-pcft", "torch", "transformers", "peft", "opacus", "tenseal", "pynacl",
             "safetensors", "tokenizers", "numpy", "scipy")  # fmt: skip


def library_versions() -> dict[str, str]:
    """``{"python": ..., "<distribution>": version or "not installed"}`` for :data:`VERSIONED`."""
    out = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
