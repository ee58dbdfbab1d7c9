"""Identities and key files: 0600 creation, permission refusal, no secrets in repr, fingerprints."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import pickle
import stat
from pathlib import Path

import pytest
from nacl.signing import SigningKey, VerifyKey

from secure_pcft.crypto.identity import Identity, PublicIdentity, fingerprint_of
from secure_pcft.errors import (
    AuthenticationError,
    ConfigError,
    CorruptFileError,
    CryptoError,
    InsecureKeyFileError,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def _secret_b64(identity: Identity, path: Path) -> tuple[str, str]:
    identity.save(path)
    obj = json.loads(path.read_text())
    return obj["sign_sk"], obj["box_sk"]


def test_save_load_round_trip_keeps_keys(tmp_path: Path) -> None:
    alice = Identity.generate("alice")
    path = tmp_path / "alice.key"

    alice.save(path)
    loaded = Identity.load(path)

    assert loaded.public() == alice.public()
    message = b"round 3 adapter digest"
    VerifyKey(alice.public().sign_pk).verify(message, loaded.sign(message))


@posix_only
def test_key_file_is_created_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        Identity.generate("alice").save(tmp_path / "k")
    finally:
        os.umask(old)

    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("precious")

    with pytest.raises(CryptoError, match="already exists"):
        Identity.generate("alice").save(path)
    assert path.read_text() == "precious"


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660, 0o644])
def test_load_refuses_group_or_world_accessible_key_file(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    Identity.generate("alice").save(path)
    os.chmod(path, mode)

    with pytest.raises(InsecureKeyFileError, match="chmod 600"):
        Identity.load(path)


@posix_only
def test_load_refuses_symlinked_key_file(tmp_path: Path) -> None:
    real = tmp_path / "real"
    Identity.generate("alice").save(real)
    link = tmp_path / "link"
    link.symlink_to(real)

    with pytest.raises(InsecureKeyFileError):
        Identity.load(link)


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InsecureKeyFileError, match="regular file"):
        Identity.load(tmp_path)


def test_missing_key_file_is_a_crypto_error(tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match="not found"):
        Identity.load(tmp_path / "nope")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.update(fingerprint="00" * 16),
        lambda o: o.update(sign_sk=base64.b64encode(b"x" * 31).decode()),
        lambda o: o.update(box_sk="***not base64***"),
        lambda o: o.update(version=2),
        lambda o: o.update(extra=1),
        lambda o: o.update(name="no spaces allowed"),
    ],
    ids=["fingerprint", "short-key", "bad-b64", "version", "extra-field", "bad-name"],
)
def test_load_rejects_tampered_key_file(tmp_path: Path, mutate: object) -> None:
    path = tmp_path / "k"
    Identity.generate("alice").save(path)
    obj = json.loads(path.read_text())
    mutate(obj)  # type: ignore[operator]
    path.write_text(json.dumps(obj))  # keeps the 0600 mode

    with pytest.raises(CorruptFileError):
        Identity.load(path)


def test_load_rejects_non_json(tmp_path: Path) -> None:
    path = tmp_path / "k"
    Identity.generate("alice").save(path)
    path.write_bytes(b"\xff\xfe not json")

    with pytest.raises(CorruptFileError):
        Identity.load(path)


def test_secrets_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    alice = Identity.generate("alice")
    sign_sk, box_sk = _secret_b64(alice, tmp_path / "k")

    shown = repr(alice) + str(alice) + repr(alice.public())

    assert "alice" in shown and alice.fingerprint in shown
    for secret in (sign_sk, box_sk):
        assert secret not in shown
        assert base64.b64decode(secret).hex() not in shown


def test_identity_cannot_be_pickled_or_copied() -> None:
    alice = Identity.generate("alice")

    with pytest.raises(TypeError):
        pickle.dumps(alice)
    with pytest.raises(TypeError):
        copy.deepcopy(alice)


def test_fingerprint_is_truncated_sha256_over_both_public_keys() -> None:
    sign_pk = bytes(SigningKey(bytes(range(32))).verify_key)
    box_pk = bytes(range(32, 64))

    expected = hashlib.sha256(b"secure-pcft/fingerprint/v1\x00" + sign_pk + box_pk).hexdigest()[:32]

    assert fingerprint_of(sign_pk, box_pk) == expected
    assert fingerprint_of(box_pk, sign_pk) != expected  # order matters: keys are not swappable


def test_public_identity_with_wrong_fingerprint_is_an_authentication_error() -> None:
    pub = Identity.generate("alice").public()

    with pytest.raises(AuthenticationError):
        PublicIdentity(pub.name, pub.sign_pk, pub.box_pk, "ab" * 16)
    with pytest.raises(AuthenticationError):
        PublicIdentity(pub.name, pub.sign_pk, bytes(32), pub.fingerprint)


def test_invalid_names_and_key_lengths_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        Identity.generate("")
    with pytest.raises(ConfigError):
        Identity.generate("a/b")
    with pytest.raises(ConfigError):
        PublicIdentity.from_keys("alice", b"short", bytes(32))
