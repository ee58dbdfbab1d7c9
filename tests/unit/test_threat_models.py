"""The threat models are accurate about the code: every threat has a mitigation and a measurement,
every cited file and symbol exists, and every TM id is cited by the code or the tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "threat_models").glob("TM-*.md"))
REQUIRED_SECTIONS = ("Assets", "Capabilities", "Assumptions", "Threats", "Residual risks")
_ROW = re.compile(r"^\|\s*(\d{2}\.\d+)\s*\|(.+?)\|(.+?)\|(.+?)\|\s*$")
_CODE = re.compile(r"`(secure_pcft/[\w/]+\.py)(?::([\w.]+))?`")
_MEASURE = re.compile(r"`((?:tests|audits)/[\w/.-]+\.(?:py|toml))(?:::(\w+))?`")


def tm_id(doc: Path) -> str:
    match = re.match(r"(TM-\d{2})-", doc.name)
    assert match, f"{doc.name}: file name must start with TM-xx-"
    return match.group(1)


def threats(doc: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(3), m.group(4)))
    return rows


def defines(path: Path, symbol: str) -> bool:
    """Every dotted part of ``symbol`` is a class or def (or a module-level name) in ``path``."""
    text = path.read_text(encoding="utf-8")
    return all(
        re.search(rf"^\s*(class|def)\s+{re.escape(part)}\b|^{re.escape(part)}\s*[:=]", text, re.M)
        for part in symbol.split(".")
    )


def test_there_is_one_document_per_adversary_with_unique_ids() -> None:
    ids = [tm_id(d) for d in DOCS]

    assert ids == sorted(set(ids))
    assert {"TM-01", "TM-02", "TM-03", "TM-04", "TM-05"} <= set(ids)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_document_has_its_id_and_every_section(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")

    assert text.startswith(f"# {tm_id(doc)} ")
    assert f"**ID:** {tm_id(doc)}" in text
    for section in REQUIRED_SECTIONS:
        body = text.split(f"## {section}\n", 1)
        assert len(body) == 2, f"{doc.name}: missing section {section!r}"
        assert body[1].split("\n## ", 1)[0].strip(), f"{doc.name}: section {section!r} is empty"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_threat_has_a_mitigation_in_code_and_a_measurement(doc: Path) -> None:
    rows = threats(doc)

    assert rows, f"{doc.name}: no threats table rows"
    prefix = tm_id(doc).removeprefix("TM-")
    for tid, _, mitigations, measured in rows:
        assert tid.startswith(prefix + "."), f"{doc.name}: threat {tid} numbered for another TM"
        assert _CODE.search(mitigations), f"{doc.name} {tid}: no mitigation in code"
        assert _MEASURE.search(measured), f"{doc.name} {tid}: no audit or test measures it"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_cited_module_symbol_test_and_audit_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")

    for path, symbol in _CODE.findall(text):
        assert (ROOT / path).is_file(), f"{doc.name}: {path} does not exist"
        if symbol:
            assert defines(ROOT / path, symbol), f"{doc.name}: {path} defines no {symbol}"
    for path, test in _MEASURE.findall(text):
        assert (ROOT / path).is_file(), f"{doc.name}: {path} does not exist"
        if test:
            assert f"def {test}(" in (ROOT / path).read_text(encoding="utf-8")


def _cited_outside_the_documents(tm: str) -> list[Path]:
    me = Path(__file__).resolve()
    files = [*ROOT.joinpath("secure_pcft").rglob("*.py"), *ROOT.joinpath("tests").rglob("*.py"),
             *ROOT.joinpath("audits").glob("*.toml")]  # fmt: skip
    return [f for f in files if f.resolve() != me and tm in f.read_text(encoding="utf-8")]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_id_is_cited_by_the_code_tests_or_audits(doc: Path) -> None:
    assert _cited_outside_the_documents(tm_id(doc)), f"{tm_id(doc)} is cited nowhere"


def test_every_id_cited_in_code_has_a_document() -> None:
    documented = {tm_id(d) for d in DOCS}
    cited = set()
    for f in ROOT.joinpath("secure_pcft").rglob("*.py"):
        cited |= set(re.findall(r"TM-\d{2}", f.read_text(encoding="utf-8")))

    assert cited <= documented, f"undocumented ids: {sorted(cited - documented)}"


# Security modules of the crypto and collab layers (and the DP noise source): each says in its
# module docstring which threat models it mitigates.
MITIGATING_MODULES = (
    "secure_pcft/crypto/envelope.py",
    "secure_pcft/crypto/adapter_checks.py",
    "secure_pcft/crypto/he_similarity.py",
    "secure_pcft/crypto/identity.py",
    "secure_pcft/crypto/roster.py",
    "secure_pcft/crypto/consortium.py",
    "secure_pcft/collab/secure_channel.py",
    "secure_pcft/collab/encrypted_discovery.py",
    "secure_pcft/collab/strategy.py",
    "secure_pcft/collab/secure_session.py",
    "secure_pcft/collab/selection.py",
    "secure_pcft/privacy/randomness.py",
)


def _module_docstring(path: Path) -> str:
    import ast

    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _citing_documents(module: str) -> set[str]:
    return {tm_id(d) for d in DOCS if any(p == module for p, _ in _CODE.findall(d.read_text()))}


@pytest.mark.parametrize("module", MITIGATING_MODULES)
def test_security_module_docstring_names_the_threats_it_mitigates(module: str) -> None:
    named = set(re.findall(r"TM-\d{2}", _module_docstring(ROOT / module)))

    assert named, f"{module}: its module docstring names no TM id"
    assert _citing_documents(module) <= named, (
        f"{module}: threat models citing it as a mitigation but not named in its docstring: "
        f"{sorted(_citing_documents(module) - named)}"
    )
    assert named <= {tm_id(d) for d in DOCS}


def test_no_module_still_waits_for_threat_model_ids() -> None:
    pending = [
        f.relative_to(ROOT)
        for f in ROOT.joinpath("secure_pcft").rglob("*.py")
        if "TM ids to be assigned" in f.read_text(encoding="utf-8")
    ]

    assert not pending
