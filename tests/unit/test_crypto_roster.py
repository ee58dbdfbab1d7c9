"""Roster: pinned public keys, lookups, tamper detection."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from secure_pcft.crypto.identity import Identity, PublicIdentity
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import AuthenticationError, ConfigError, CorruptFileError, UnknownPeerError


@pytest.fixture(scope="module")
def peers() -> list[Identity]:
    return [Identity.generate(n) for n in ("alice", "bob", "carol")]


def test_save_load_round_trip(tmp_path: Path, peers: list[Identity]) -> None:
    roster = Roster(p.public() for p in peers)

    roster.save(tmp_path / "roster.json")
    loaded = Roster.load(tmp_path / "roster.json")

    assert loaded.names == ("alice", "bob", "carol")
    assert [p.fingerprint for p in loaded] == [p.fingerprint for p in roster]
    assert loaded.get("bob") == peers[1].public()
    assert loaded.by_key_id(peers[2].public().key_id).name == "carol"


def test_unknown_name_raises_unknown_peer_error(peers: list[Identity]) -> None:
    roster = Roster(p.public() for p in peers)

    with pytest.raises(UnknownPeerError, match="mallory"):
        roster.get("mallory")
    with pytest.raises(KeyError):  # UnknownPeerError is also a KeyError for dict-like callers
        roster.get("mallory")
    assert "mallory" not in roster


def test_unknown_key_id_raises_unknown_peer_error(peers: list[Identity]) -> None:
    roster = Roster(p.public() for p in peers[:2])

    with pytest.raises(UnknownPeerError):
        roster.by_key_id(peers[2].public().key_id)


def test_verify_rejects_same_name_with_other_keys(peers: list[Identity]) -> None:
    roster = Roster(p.public() for p in peers)
    impostor = Identity.generate("alice").public()

    assert roster.verify(peers[0].public()) == peers[0].public()
    with pytest.raises(AuthenticationError, match="pinned"):
        roster.verify(impostor)


@pytest.mark.parametrize("field", ["sign_pk", "box_pk", "fingerprint"])
def test_file_with_mismatching_fingerprint_raises_authentication_error(
    tmp_path: Path, peers: list[Identity], field: str
) -> None:
    path = tmp_path / "roster.json"
    Roster(p.public() for p in peers).save(path)
    obj = json.loads(path.read_text())
    other = Identity.generate("x").public()
    obj["peers"][1][field] = (
        other.fingerprint
        if field == "fingerprint"
        else base64.b64encode(getattr(other, field)).decode()
    )
    path.write_text(json.dumps(obj))

    with pytest.raises(AuthenticationError):
        Roster.load(path)


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"format": "secure-pcft-roster", "version": 1, "peers": {}}',
        b"{}",
        b"[" * 5000 + b"]" * 5000,  # RecursionError from plain json.loads
        # a duplicated key: plain json.loads keeps the last "peers" silently
        b'{"format": "secure-pcft-roster", "version": 1, "peers": [], "peers": []}',
        b'{"format": "secure-pcft-roster", "version": NaN, "peers": []}',
    ],
    ids=["text", "list", "peers-object", "empty", "deep", "duplicate-key", "nan"],
)
def test_malformed_roster_file_is_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "roster.json"
    path.write_bytes(content)

    with pytest.raises(CorruptFileError):
        Roster.load(path)


def test_duplicate_names_or_keys_are_refused(peers: list[Identity]) -> None:
    a = peers[0].public()
    same_keys_other_name = PublicIdentity.from_keys("alias", a.sign_pk, a.box_pk)

    with pytest.raises(ConfigError, match="duplicate"):
        Roster([a, Identity.generate("alice").public()])
    with pytest.raises(ConfigError, match="reuses"):
        Roster([a, same_keys_other_name])
