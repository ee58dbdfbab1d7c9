"""Secure channel, consortium keys, [security] config, selection and encrypted-scoring rules.

Everything runs through the real envelopes (PyNaCl), safetensors and the loopback transport.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from secure_pcft.collab.channel import PlainChannel
from secure_pcft.collab.messages import Message, MessageType, encode_message
from secure_pcft.collab.secure_channel import SecureChannel, norm_bounded_spec
from secure_pcft.collab.selection import (
    consented,
    first_choice,
    restrict,
    select_peers,
    willing_peers,
)
from secure_pcft.collab.strategies.weights import row_normalised, rowwise_cosine, weights_vector
from secure_pcft.collab.strategy import (
    Discovery,
    TrustContext,
    TrustStrategy,
    make_strategy,
    needs_encrypted_discovery,
)
from secure_pcft.config import SecurityConfig, StrategyConfig, config_from_dict
from secure_pcft.crypto.consortium import Consortium, new_identity, write_roster
from secure_pcft.crypto.envelope import Sealer
from secure_pcft.crypto.identity import Identity
from secure_pcft.crypto.projection import ProjectionSpec
from secure_pcft.errors import (
    AuthenticationError,
    ConfigError,
    CryptoError,
    InsecureKeyFileError,
    MessageError,
)
from secure_pcft.transport.loopback import LoopbackTransport
from secure_pcft.transport.meter import Traffic

NAMES = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def consortium() -> Consortium:
    return Consortium.generate(NAMES)


def channels(consortium: Consortium) -> tuple[LoopbackTransport, dict[str, SecureChannel]]:
    transport = LoopbackTransport(NAMES)
    return transport, {
        n: SecureChannel(consortium.identity(n), consortium.roster, transport) for n in NAMES
    }


def adapter(scale: float = 1.0, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "h.0.lora_A.weight": torch.randn(4, 16, generator=g) * scale,
        "h.0.lora_B.weight": torch.randn(24, 4, generator=g) * scale,
    }


def msg(
    kind: MessageType,
    sender: str = "alice",
    recipient: str = "bob",
    rnd: int = 0,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Message:
    return Message(kind, sender, recipient, rnd, {"k": 1}, dict(tensors or {}))


# ---- channel --------------------------------------------------------------------------------


def test_round_trip_through_sealed_envelopes(consortium: Consortium) -> None:
    transport, ch = channels(consortium)
    sig = {"values": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    ch["alice"].send(msg(MessageType.SIGNATURE, tensors=sig))
    (wire,) = [data for _, data in transport._boxes["bob"]]
    assert wire[:4] == b"SPCF"
    assert sig["values"].numpy().tobytes() not in wire  # the body is encrypted
    (got,) = ch["bob"].receive()
    assert (got.msg_type, got.sender, got.recipient, got.round) == (
        MessageType.SIGNATURE,
        "alice",
        "bob",
        0,
    )
    assert got.meta == {"k": 1} and torch.equal(got.tensors["values"], sig["values"])
    assert ch["bob"].rejections == []
    assert ch["alice"].meter.sent(0, "alice", "signature") == Traffic(messages=1, bytes=len(wire))


def test_tampered_bytes_are_rejected_and_the_next_message_still_arrives(
    consortium: Consortium,
) -> None:
    transport, ch = channels(consortium)
    ch["alice"].send(msg(MessageType.ADAPTER_REQUEST))
    ch["alice"].send(msg(MessageType.DECLINE))
    first, second = transport._boxes["bob"]
    tampered = bytearray(first[1])
    tampered[-100] ^= 0x01  # inside the ciphertext
    transport._boxes["bob"] = [(first[0], bytes(tampered)), second]
    got = ch["bob"].receive()
    assert [m.msg_type for m in got] == [MessageType.DECLINE]
    (rej,) = ch["bob"].rejections
    assert rej.claimed_sender == "alice" and rej.error == "BadSignatureError"


def test_replay_and_round_window_and_strangers_are_rejected(consortium: Consortium) -> None:
    transport, ch = channels(consortium)
    ch["alice"].send(msg(MessageType.ADAPTER_REQUEST))
    wire = transport._boxes["bob"][0][1]
    assert len(ch["bob"].receive()) == 1
    transport.send("alice", "bob", wire)  # replay
    # mallory is not on the roster: her envelope is well-formed but her key is not pinned
    forged = Sealer(Identity.generate("mallory")).seal(
        consortium.roster.get("bob"), "decline", 0, encode_message(msg(MessageType.DECLINE))
    )
    transport.send("mallory", "bob", forged)
    assert ch["bob"].receive() == []
    ch["bob"].begin_round(5)
    ch["alice"].send(msg(MessageType.ADAPTER_REQUEST, rnd=1))  # outside [4, 6]
    assert ch["bob"].receive() == []
    errors = [r.error for r in ch["bob"].rejections]
    assert errors == ["ReplayError", "UnknownSenderError", "RoundWindowError"]


def test_published_context_is_one_upload_that_every_peer_opens(consortium: Consortium) -> None:
    _, ch = channels(consortium)
    context = {"bytes": torch.arange(200, dtype=torch.uint8)}
    ch["alice"].publish(msg(MessageType.HE_CONTEXT, recipient="*", tensors=context))

    meter = ch["alice"].meter  # one upload, whatever the run's size
    assert meter.links(0) == {("alice", "*"): meter.sent(0, "alice", "he-context")}
    assert meter.sent(0, "alice").messages == 1
    for name in ("bob", "carol"):
        (got,) = ch[name].receive()
        assert got.recipient == "*" and torch.equal(got.tensors["bytes"], context["bytes"])
    assert ch["alice"].receive() == []  # not delivered back to its sender


def test_only_public_types_may_be_published_or_accepted_in_public(
    consortium: Consortium,
) -> None:
    transport, ch = channels(consortium)
    for bad in (msg(MessageType.ADAPTER, recipient="*", tensors=adapter()),
                msg(MessageType.HE_CONTEXT, recipient="bob")):  # fmt: skip
        with pytest.raises(MessageError):
            ch["alice"].publish(bad)
    assert ch["alice"].meter.sent().messages == 0 and transport.receive("bob") == []  # nothing left
    # A roster member that signs an adapter as a public envelope: every receiver refuses it.
    sealer = Sealer(consortium.identity("alice"))
    leaked = msg(MessageType.ADAPTER, recipient="*", tensors=adapter())
    transport.broadcast("alice", sealer.seal_public("adapter", 0, encode_message(leaked)))
    # ... and a public envelope whose message names one recipient (a binding mismatch).
    single = msg(MessageType.HE_CONTEXT, recipient="bob")
    transport.broadcast("alice", sealer.seal_public("he-context", 0, encode_message(single)))
    assert ch["bob"].receive() == []
    assert [r.error for r in ch["bob"].rejections] == ["MessageError", "MessageError"]


def test_plain_channel_publishes_public_types_only() -> None:
    transport = LoopbackTransport(NAMES)
    plain = {n: PlainChannel(n, transport) for n in NAMES}
    context = {"bytes": torch.arange(10, dtype=torch.uint8)}
    plain["alice"].publish(msg(MessageType.HE_CONTEXT, recipient="*", tensors=context))
    with pytest.raises(MessageError):
        plain["alice"].publish(msg(MessageType.SIGNATURE, recipient="*"))
    assert [m.msg_type for m in plain["carol"].receive()] == [MessageType.HE_CONTEXT]
    transport.broadcast("alice", encode_message(msg(MessageType.ADAPTER, recipient="*")))
    got = plain["bob"].receive()  # the context, not the adapter
    assert [m.msg_type for m in got] == [MessageType.HE_CONTEXT]
    assert [r.error for r in plain["bob"].rejections] == ["MessageError"]


def test_decoded_header_must_match_the_envelope(consortium: Consortium) -> None:
    transport, ch = channels(consortium)
    sealer = Sealer(consortium.identity("alice"))
    bob = consortium.roster.get("bob")
    # a signed envelope of type "decline" whose body claims to be an adapter request
    body = encode_message(msg(MessageType.ADAPTER_REQUEST))
    transport.send("alice", "bob", sealer.seal(bob, "decline", 0, body))
    # ... and one whose body claims another sender
    body = encode_message(msg(MessageType.DECLINE, sender="carol"))
    transport.send("alice", "bob", sealer.seal(bob, "decline", 0, body))
    assert ch["bob"].receive() == []
    reasons = [r.reason for r in ch["bob"].rejections]
    assert "type differs" in reasons[0] and "sender differs" in reasons[1]


def test_adapters_are_checked_against_spec_and_norm_bounds(consortium: Consortium) -> None:
    _, ch = channels(consortium)
    own = adapter(seed=1)
    ch["alice"].send(msg(MessageType.ADAPTER, tensors=adapter(seed=2)))
    assert ch["bob"].receive() == []  # no spec set yet: refused (fail closed)
    ch["bob"].expect_adapters(norm_bounded_spec(own, ratio=10.0))
    ch["alice"].send(msg(MessageType.ADAPTER, tensors=adapter(seed=2)))
    ch["alice"].send(msg(MessageType.ADAPTER, tensors=adapter(scale=100.0, seed=3)))
    ch["alice"].send(msg(MessageType.ADAPTER, tensors={"x": torch.zeros(2)}))
    got = ch["bob"].receive()
    assert len(got) == 1 and torch.equal(
        got[0].tensors["h.0.lora_A.weight"], adapter(seed=2)["h.0.lora_A.weight"]
    )
    reasons = [(r.error, r.reason) for r in ch["bob"].rejections]
    assert [e for e, _ in reasons] == ["AdapterRejectedError"] * 3
    assert "no adapter spec" in reasons[0][1] and "norm exceeds" in reasons[1][1]


def test_norm_bound_has_a_floor_for_an_untrained_adapter() -> None:
    spec = norm_bounded_spec({"b": torch.zeros(3, 2)}, ratio=10.0)
    assert spec.max_global_norm == pytest.approx(1e-3)
    assert spec.max_tensor_norm == pytest.approx(1e-3)


def test_send_only_in_own_name_and_new_session_resets_round(consortium: Consortium) -> None:
    _, ch = channels(consortium)
    with pytest.raises(MessageError):
        ch["alice"].send(msg(MessageType.DECLINE, sender="bob", recipient="carol"))
    ch["bob"].begin_round(3)
    with pytest.raises(ConfigError):
        ch["bob"].begin_round(1)
    ch["bob"].new_session()
    ch["bob"].begin_round(1)
    assert ch["bob"].current_round == 1


# ---- consortium keys ------------------------------------------------------------------------


def test_consortium_on_disk_round_trip(tmp_path: Path) -> None:
    created = Consortium.create(tmp_path, ["site-0", "site-1"])
    key = tmp_path / "site-0.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = Consortium.load(tmp_path, ["site-0", "site-1"])
    assert loaded.fingerprints() == created.fingerprints()
    pub = (tmp_path / "site-0.pub.json").read_text()
    assert set(json.loads(pub)) == {"name", "sign_pk", "box_pk", "fingerprint"}
    assert created.fingerprints()["site-0"] in pub
    with pytest.raises(CryptoError):
        new_identity("site-0", tmp_path)  # never overwrites
    with pytest.raises(ConfigError, match="no key file"):
        Consortium.load(tmp_path, ["site-0", "site-9"])
    key.chmod(0o644)
    with pytest.raises(InsecureKeyFileError):
        Consortium.load(tmp_path, ["site-0"])


def test_roster_pins_the_keys_in_the_directory(tmp_path: Path) -> None:
    new_identity("a1", tmp_path)
    new_identity("b2", tmp_path)
    roster = write_roster(tmp_path)
    assert roster.names == ("a1", "b2")
    other = tmp_path / "other"
    new_identity("a1", other)  # same name, different keys
    with pytest.raises(AuthenticationError, match="a1"):
        Consortium({"a1": Identity.load(other / "a1.key")}, roster)


# ---- config ---------------------------------------------------------------------------------


def test_security_section_loads_and_validates() -> None:
    cfg = config_from_dict({"security": {"mode": "full", "select_top_k": 2, "consent": "asker"}})
    assert cfg.security.mode == "full" and cfg.security.select_top_k == 2
    bad = [
        ({"mode": "on"}, "mode"),
        ({"mode": "full", "max_message_bytes": 1 << 20}, "max_message_bytes"),
        ({"projection_dim": 8192}, "projection_dim"),
        ({"select_threshold": 1.5}, "select_threshold"),
        ({"consent": "anyone"}, "consent"),
        ({"he_queries_per_round": 0}, "he_queries_per_round"),
        ({"max_adapter_norm_ratio": 1.0}, "max_adapter_norm_ratio"),
        ({"round_window": -1}, "round_window"),
        ({"max_clock_skew_s": 0}, "seconds"),
        ({"no_such_key": 1}, "unknown key"),
    ]
    for raw, needle in bad:
        with pytest.raises(ConfigError, match=needle):
            config_from_dict({"security": raw})


# ---- selection and encrypted-scoring rules --------------------------------------------------


def test_select_peers_top_k_threshold_and_support() -> None:
    row = torch.tensor([0.4, 0.3, 0.0, 0.2, 0.1], dtype=torch.float64)
    cos = torch.tensor([1.0, 0.5, 0.9, 0.7, float("nan")], dtype=torch.float64)
    assert select_peers(row, cos, 0, SecurityConfig(select_top_k=0)) == {1, 3}
    assert select_peers(row, cos, 0, SecurityConfig(select_top_k=1)) == {3}
    assert select_peers(row, cos, 0, SecurityConfig(select_top_k=0, select_threshold=0.6)) == {3}
    assert select_peers(row, None, 0, SecurityConfig(select_top_k=1)) == {1, 3, 4}
    kept = restrict(row, {3}, 0)
    assert torch.allclose(kept, torch.tensor([2 / 3, 0, 0, 1 / 3, 0], dtype=torch.float64))


def test_willing_peers_follow_the_encrypted_ranking_not_the_strategys_own_top_k() -> None:
    # The strategy asks only peer 3 (its top-k); consent covers the select_top_k best by
    # encrypted score, so peer 2 (ranked second, not asked) still gets an answer if it asks.
    row = torch.tensor([0.6, 0.0, 0.0, 0.4, 0.0], dtype=torch.float64)
    cos = torch.tensor([1.0, 0.5, 0.8, 0.9, float("nan")], dtype=torch.float64)
    cfg = SecurityConfig(select_top_k=2)
    assert select_peers(row, cos, 0, cfg) == {3}
    assert willing_peers(row, cos, 0, cfg) == {2, 3}
    assert willing_peers(row, cos, 0, SecurityConfig(select_top_k=0)) == {1, 2, 3}  # 4: no answer
    assert willing_peers(row, cos, 0, SecurityConfig(select_top_k=0, select_threshold=0.85)) == {3}
    assert willing_peers(row, None, 0, cfg) == {3}  # no discovery: the row's support
    assert consented(cfg, {3}, {2, 3}, 5) == {2, 3}
    assert consented(cfg, {1}, {2, 3}, 5) == {1, 2, 3}  # always to the peers it asked itself
    assert consented(SecurityConfig(consent="asker"), {3}, {3}, 5) == {0, 1, 2, 3, 4}
    reciprocal = SecurityConfig(select_top_k=1, consent="reciprocal")
    # median of the known others (0.5, 0.8, 0.9) is 0.8: peer 2 also qualifies, peer 1 does not
    assert consented(reciprocal, {3}, {3}, 5, cosines=cos, self_index=0) == {2, 3}
    assert consented(reciprocal, {3}, {3}, 5) == {3}  # no scores: as mutual
    strict = SecurityConfig(select_top_k=1, consent="reciprocal", select_threshold=0.85)
    assert consented(strict, {3}, {3}, 5, cosines=cos, self_index=0) == {3}


def _stranded(cos: torch.Tensor, consent: str, k: int) -> list[int]:
    """Peers that ask their k best and get no adapter back: the edges are (asker, owner) pairs
    where the owner consents to the asker."""
    n = cos.shape[0]
    cfg = SecurityConfig(select_top_k=k, consent=consent)  # type: ignore[arg-type]
    row = torch.full((n,), 1.0 / n, dtype=torch.float64)
    asks = {i: select_peers(row, cos[i], i, cfg) for i in range(n)}
    willing = {i: willing_peers(row, cos[i], i, cfg) for i in range(n)}
    first = {i: first_choice(cos[i], asks[i], i, cfg) for i in range(n)}
    allowed = {
        i: consented(
            cfg, asks[i], willing[i], n, cosines=cos[i], self_index=i,
            first_choice_of={j for j in range(n) if first[j] == i},
        )
        for i in range(n)
    }  # fmt: skip
    return [i for i in range(n) if not any(i in allowed[j] for j in asks[i])]


def test_reciprocal_consent_strands_nobody_where_mutual_top_k_does() -> None:
    # Hubness: peers 0-2 are close to everyone (hubs), 3-8 are spread out. Every peer's three
    # closest are the hubs, and each hub's own three closest are the other hubs and one more, so
    # under mutual top-3 most of the spread-out peers ask three hubs and are declined by all.
    g = torch.Generator().manual_seed(3)
    hub = torch.randn(16, generator=g, dtype=torch.float64)
    vectors = [hub + 0.3 * torch.randn(16, generator=g, dtype=torch.float64) for _ in range(3)]
    vectors += [hub + 1.5 * torch.randn(16, generator=g, dtype=torch.float64) for _ in range(6)]
    u = torch.nn.functional.normalize(torch.stack(vectors), dim=1)
    cos = u @ u.T  # (9, 9), symmetric, as both sides of a pair compute it

    assert len(_stranded(cos, "mutual", 3)) >= 3
    assert _stranded(cos, "reciprocal", 3) == []


@pytest.mark.parametrize("seed", range(20))
def test_reciprocal_consent_answers_every_asker_on_random_scores(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    spread = 0.3 + 1.5 * torch.rand(9, 1, generator=g, dtype=torch.float64)  # hubs and anti-hubs
    v = torch.randn(16, generator=g, dtype=torch.float64) + spread * torch.randn(
        9, 16, generator=g, dtype=torch.float64
    )
    u = torch.nn.functional.normalize(v, dim=1)

    assert _stranded(u @ u.T, "reciprocal", 3) == []


def test_weights_vector_estimates_the_rowwise_cosine() -> None:
    a, b = adapter(seed=4), adapter(seed=5)
    b = {k: 0.6 * a[k] + 0.4 * v for k, v in b.items()}  # correlated, cosine well above 0
    exact = rowwise_cosine(a, b)
    flat = [torch.cat([t.reshape(-1) for t in row_normalised(x).values()]) for x in (a, b)]
    assert float(flat[0] @ flat[1]) == pytest.approx(exact, abs=1e-9)  # identity, no sketch
    spec = ProjectionSpec(seed=7, dim=4096)
    est = float(np.dot(weights_vector(a, spec), weights_vector(b, spec)))
    assert exact > 0.5 and est == pytest.approx(exact, abs=0.05)


def test_strategy_with_discovery_but_no_encrypted_rule_is_refused() -> None:
    class Gossip(TrustStrategy):
        name = "gossip-test-only"
        discovery = Discovery.ADAPTERS

        def row(self, ctx: TrustContext) -> torch.Tensor:  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(ConfigError, match="no encrypted-discovery rule"):
        needs_encrypted_discovery(Gossip(StrategyConfig(name="gossip-test-only")))
    assert not needs_encrypted_discovery(make_strategy(StrategyConfig(name="fedavg")))
    for name in ("weights", "predictions", "validation"):
        assert needs_encrypted_discovery(make_strategy(StrategyConfig(name=name)))
