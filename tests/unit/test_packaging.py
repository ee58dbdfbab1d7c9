"""The project declares one license and ships its text."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_license_file_matches_the_declared_license() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    text = (REPO / "LICENSE").read_text()

    assert declared == {"text": "Apache-2.0"}
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


def test_a_deprecation_our_own_code_raises_fails_the_tests_and_a_dependencys_does_not() -> None:
    """pyproject's filterwarnings: DeprecationWarning / FutureWarning attributed to a secure_pcft
    module is an error under pytest; the same from a third-party module stays ignored."""
    import warnings

    import pytest

    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module="secure_pcft.x")
    with pytest.raises(FutureWarning):
        warnings.warn_explicit("will change", FutureWarning, "x.py", 1, module="secure_pcft.y")
    warnings.warn_explicit("theirs", DeprecationWarning, "t.py", 1, module="transformers.t")
