"""Unit tests of the Flower runtime's pieces that need no processes: records, hello, mailbox,
site state (safetensors + JSON, digests, torn writes), the state codec, the step order, and the
relay's start against a fake grid."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, RecordDict

from secure_pcft.collab.keep_best import Seen
from secure_pcft.config import RunConfig, SecurityConfig, StrategyConfig
from secure_pcft.crypto.identity import Identity
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import UnknownPeerError
from secure_pcft.runtime.flower import site_state
from secure_pcft.runtime.flower.deployment import Processes, child_env
from secure_pcft.runtime.flower.errors import HelloError, RelayRecordError, StateError
from secure_pcft.runtime.flower.hello import new_challenge, sign_hello, verify_hello
from secure_pcft.runtime.flower.mailbox import RelayMailbox
from secure_pcft.runtime.flower.records import StepReply, StepRequest
from secure_pcft.runtime.flower.relay import Relay, RelaySettings
from secure_pcft.runtime.flower.site_state import _FILES, SavedState, SiteStore
from secure_pcft.runtime.flower.state_codec import decode_state, encode_state
from secure_pcft.runtime.flower.steps import round_steps


# ---- records ------------------------------------------------------------------------------------
def test_step_request_round_trip_keeps_envelope_bytes() -> None:
    req = StepRequest("select", 3, ("a", "b"), (b"\x00\x01", b"sealed"), {"restarted": ["c"]})
    back = StepRequest.from_record(req.to_record())
    assert back == req


def test_empty_reply_round_trips() -> None:
    rep = StepReply("answer", 1)
    assert StepReply.from_record(rep.to_record()) == rep


@pytest.mark.parametrize(
    "body",
    [
        {"step": "x", "round": "1", "n": 0, "info": "{}"},
        {"step": "x", "round": 1, "n": 2, "info": "{}", "peers": ["a"], "wires": [b"1", b"2"]},
        {"step": "x", "round": 1, "n": 1, "info": "{}", "peers": ["a"], "wires": ["not bytes"]},
        {"step": "x", "round": 1, "n": 0, "info": "[1, 2]"},
        {"step": "x", "round": 1, "n": 0, "info": "{not json"},
    ],
)
def test_malformed_records_raise_typed_error(body: dict[str, object]) -> None:
    with pytest.raises(RelayRecordError):
        StepReply.from_record(RecordDict({"spcft": ConfigRecord(body)}))  # type: ignore[arg-type]


def test_record_without_our_section_is_refused() -> None:
    with pytest.raises(RelayRecordError):
        StepRequest.from_record(RecordDict({"other": ConfigRecord({"a": 1})}))


# ---- hello --------------------------------------------------------------------------------------
def test_hello_verifies_only_for_the_signed_node_and_config() -> None:
    alice, mallory = Identity.generate("alice"), Identity.generate("mallory")
    roster = Roster([alice.public()])
    challenge = new_challenge()
    sig = sign_hello(alice, challenge, node_id=7, config_digest="cfg")
    verify_hello(roster, "alice", sig, challenge, 7, "cfg")
    with pytest.raises(HelloError):
        verify_hello(roster, "alice", sig, challenge, 8, "cfg")  # replayed to another node id
    with pytest.raises(HelloError):
        verify_hello(roster, "alice", sig, new_challenge(), 7, "cfg")  # old challenge
    with pytest.raises(HelloError):
        verify_hello(roster, "alice", sig, challenge, 7, "other-config")
    forged = sign_hello(mallory, challenge, 7, "cfg")
    with pytest.raises(HelloError):
        verify_hello(roster, "alice", forged, challenge, 7, "cfg")
    with pytest.raises(HelloError):
        verify_hello(roster, "mallory", forged, challenge, 7, "cfg")  # not on the roster
    with pytest.raises(HelloError):
        verify_hello(roster, "alice", "zz", challenge, 7, "cfg")


# ---- mailbox ------------------------------------------------------------------------------------
def test_mailbox_queues_in_order_and_refuses_strangers() -> None:
    box = RelayMailbox("a", ("a", "b", "c"))
    box.send("a", "b", b"12345")
    box.send("a", "c", b"1")
    assert box.take_outbox() == [("b", b"12345"), ("c", b"1")]
    assert box.take_outbox() == []
    box.deliver([("b", b"x")])
    assert box.receive("a") == [("b", b"x")] and box.receive("a") == []
    for bad in (lambda: box.send("a", "z", b""), lambda: box.send("b", "c", b""),
                lambda: box.send("a", "a", b""), lambda: box.receive("b")):  # fmt: skip
        with pytest.raises(UnknownPeerError):
            bad()


def test_mailbox_broadcast_is_one_upload_for_the_relay_to_fan_out() -> None:
    box = RelayMailbox("a", ("a", "b", "c"))
    box.broadcast("a", b"public")
    assert box.take_outbox() == [("*", b"public")]
    with pytest.raises(UnknownPeerError):
        box.broadcast("b", b"x")


# ---- state codec and site store -----------------------------------------------------------------
def test_state_codec_round_trips_optimizer_state() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "generator": torch.Generator().get_state(), "n": 3}
    skeleton, tensors = encode_state(state)
    json.dumps(skeleton)  # the skeleton is plain JSON
    back = decode_state(json.loads(json.dumps(skeleton)), tensors)
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1.0)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.9, 0.999)
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )
    assert back["n"] == 3 and torch.equal(back["generator"], state["generator"])


def test_state_codec_refuses_objects_and_missing_tensors() -> None:
    with pytest.raises(StateError):
        encode_state({"x": object()})
    with pytest.raises(StateError):
        decode_state({"x": {"__tensor__": "t9"}}, {})


def _saved(rnd: int) -> SavedState:
    return SavedState(
        rnd, {"w": torch.full((2, 2), float(rnd))}, {"steps_done": rnd, "m": torch.ones(3)},
        torch.Generator().manual_seed(rnd).get_state(),
    )  # fmt: skip


def test_site_store_round_trip_and_atomic_generations(tmp_path: Path) -> None:
    store = SiteStore(tmp_path, "a", "cfg1")
    assert store.load() is None and store.started_round() == 0
    store.save(_saved(1))
    store.mark_started(2)
    store.save(_saved(2))
    got = store.load()
    assert got is not None and got.completed_round == 2 and got.trainer["steps_done"] == 2
    assert torch.equal(got.adapter["w"], torch.full((2, 2), 2.0))
    assert store.started_round() == 2
    assert len(list((tmp_path / "state").glob("gen-*"))) == 1  # old generation removed


def test_site_store_keeps_the_kept_model_across_a_restart(tmp_path: Path) -> None:
    saved = _saved(3)
    base = Seen({"w": torch.zeros(2, 2)}, torch.tensor([2.0, 2.1]), "base", 0)
    warm = Seen({"w": torch.ones(2, 2)}, torch.tensor([1.0, 1.1]), "warm-up", 0)
    saved.kept.begin(base, warm)  # start and best are one object: saved as two copies
    saved.kept.offer(
        Seen({"w": torch.full((2, 2), 3.0)}, torch.tensor([0.5, 0.6]), "round 2: uniform", 2)
    )
    store = SiteStore(tmp_path, "a", "cfg1")
    store.save(saved)

    got = store.load()

    assert got is not None and got.kept.start is not None and got.kept.base is not None
    assert (got.kept.base.origin, got.kept.start.origin) == ("base", "warm-up")
    assert got.kept.kept.origin == "round 2: uniform" and got.kept.kept.round == 2
    assert torch.equal(got.kept.kept.state["w"], torch.full((2, 2), 3.0))
    assert torch.equal(got.kept.start.losses, torch.tensor([1.0, 1.1]))


def test_site_store_refuses_torn_or_foreign_state(tmp_path: Path) -> None:
    SiteStore(tmp_path, "a", "cfg1").save(_saved(1))
    with pytest.raises(StateError):
        SiteStore(tmp_path, "a", "another-config").load()
    with pytest.raises(StateError):
        SiteStore(tmp_path, "b", "cfg1").load()
    gen = next((tmp_path / "state").glob("gen-*"))
    (gen / "adapter.safetensors").write_bytes(b"torn")
    with pytest.raises(StateError):
        SiteStore(tmp_path, "a", "cfg1").load()


def test_site_store_leaves_only_its_files(tmp_path: Path) -> None:
    store = SiteStore(tmp_path, "a", "cfg1")
    store.save(_saved(0))
    store.mark_started(1)
    store.save(_saved(1))
    names = {p.name for p in (tmp_path / "state").iterdir()}
    gens = names - {"current.json", "started.json"}
    assert len(names) == 3 and len(gens) == 1  # no temp files, one generation
    gen = tmp_path / "state" / gens.pop()
    assert sorted(p.name for p in gen.iterdir()) == sorted(_FILES)


def test_crash_before_current_json_keeps_the_previous_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SiteStore(tmp_path, "a", "cfg1")
    store.save(_saved(1))

    def crash(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(site_state, "write_json_atomic", crash)
    with pytest.raises(OSError):
        store.save(_saved(2))  # generation 2 written, current.json not switched
    got = SiteStore(tmp_path, "a", "cfg1").load()
    assert got is not None and got.completed_round == 1
    assert torch.equal(got.adapter["w"], torch.full((2, 2), 1.0))


# ---- schedule -----------------------------------------------------------------------------------
def test_round_steps_follow_security_and_strategy() -> None:
    full = SecurityConfig(mode="full")
    plain = RunConfig(strategy=StrategyConfig(name="weights"))
    assert round_steps(plain) == ("discover", "select", "answer", "aggregate")
    secure = RunConfig(strategy=StrategyConfig(name="weights"), security=full)
    assert round_steps(secure) == ("discover", "respond", "select", "answer", "aggregate")
    fedavg = RunConfig(strategy=StrategyConfig(name="fedavg"), security=full)
    assert round_steps(fedavg) == ("discover", "select", "answer", "aggregate")


def test_site_reads_only_its_own_file_with_the_runs_split(tmp_path: Path) -> None:
    from secure_pcft.config import DataConfig, RunConfig
    from secure_pcft.data.settings import load_federation
    from secure_pcft.errors import ConfigError
    from secure_pcft.runtime.flower.site import _own_data

    paths = []
    for name in ("plant-a", "plant-b"):
        f = tmp_path / f"{name}.txt"
        f.write_text("\n".join(f"{name} line {i} with some words" for i in range(30)) + "\n")
        paths.append(str(f))
    data = DataConfig(source="files", paths=tuple(paths), docs_per_peer=10, seed=3)
    cfg = RunConfig(data=data)
    corpus, fed = _own_data(cfg, tmp_path / "unused.toml", "plant-b")
    assert fed.peer_ids == ("plant-b",)
    # the same split this peer gets when the whole run is loaded in one process
    whole = load_federation(data)
    assert corpus.train == whole.peers[whole.peer_ids.index("plant-b")].train
    with pytest.raises(ConfigError):
        _own_data(cfg, tmp_path / "unused.toml", "plant-c")


# ---- deployment: children's environment ---------------------------------------------------------
def test_child_env_puts_this_interpreters_bin_first_on_path() -> None:
    """flwr starts flower-superexec & co. by bare name: they must resolve to this environment's."""
    bin_dir = str(Path(sys.executable).parent)
    env = child_env({"PATH": "/usr/bin:/bin", "FLWR_HOME": "/x"})
    assert env["PATH"].split(os.pathsep)[0] == bin_dir
    assert env["FLWR_HOME"] == "/x"  # the rest of the environment is kept
    assert child_env(env) == env  # not prepended twice
    assert child_env({})["PATH"].split(os.pathsep)[0] == bin_dir
    assert child_env()["PATH"].split(os.pathsep)[0] == bin_dir  # default: os.environ


def test_child_env_keeps_the_existing_path_after_it() -> None:
    bin_dir = str(Path(sys.executable).parent)
    env = child_env({"PATH": os.pathsep.join(["/opt/tools/bin", "/usr/bin", "/bin"])})
    assert env["PATH"] == os.pathsep.join([bin_dir, "/opt/tools/bin", "/usr/bin", "/bin"])


def test_processes_start_children_with_this_environments_bin_first(tmp_path: Path) -> None:
    procs = Processes(tmp_path / "logs")
    procs.env["PATH"] = "/usr/bin:/bin"  # as when the venv is not activated
    argv = [sys.executable, "-c", "import os; print(os.environ['PATH'])"]
    assert procs.start("probe", argv).wait(timeout=60) == 0
    procs.procs.clear()
    path = procs.log("probe").strip()
    assert path == os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])


# ---- relay start: every peer bound before the first round ---------------------------------------
class _HelloGrid:
    """A grid whose nodes all count as online (as a restarted SuperLink lists the nodes of before)
    but whose node ``late`` ignores its first ``late_hellos`` hellos (its site is reconnecting)."""

    def __init__(self, cfg: RunConfig, late: int, late_hellos: int) -> None:
        self.nodes = {11: "peer-0", 12: "peer-1", 13: "peer-2"}
        self.cfg, self.late, self.late_hellos = cfg, late, late_hellos
        self.pushed: dict[str, tuple[int, RecordDict]] = {}
        self.hellos_seen = 0

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def push_messages(self, messages: object) -> list[str]:
        ids = []
        for msg in messages:  # type: ignore[attr-defined]
            node = msg.metadata.dst_node_id
            if node == self.late:
                self.hellos_seen += 1
                if self.hellos_seen <= self.late_hellos:
                    ids.append(f"lost-{self.hellos_seen}")
                    continue
            mid = f"m{len(self.pushed)}"
            self.pushed[mid] = (node, msg.content)
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: object) -> list[object]:
        from types import SimpleNamespace

        out: list[object] = []
        for mid in list(message_ids):  # type: ignore[call-overload]
            if mid not in self.pushed:
                continue
            node, content = self.pushed.pop(mid)
            StepRequest.from_record(content)  # what the relay sent is a valid request
            info = {"peer_id": self.nodes[node], "config": self.cfg.digest(),
                    "completed_round": 0, "started_round": 0, "epoch": "e"}  # fmt: skip
            out.append(SimpleNamespace(
                metadata=SimpleNamespace(reply_to_message_id=mid, src_node_id=node),
                has_error=lambda: False,
                content=StepReply("hello", 0, info=info).to_record(),
            ))  # fmt: skip
        return out


@pytest.fixture()
def in_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """flwr builds a Message only inside a run (the ServerApp process knows its run id)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _relay(grid: _HelloGrid, cfg: RunConfig) -> Relay:
    settings = RelaySettings(step_timeout_s=0.2, wait_for_peers_s=1.5, poll_s=0.01)
    return Relay(grid, cfg, ("peer-0", "peer-1", "peer-2"), None, settings)  # type: ignore[arg-type]


@pytest.mark.usefixtures("in_a_run")
def test_relay_start_waits_for_a_reconnecting_peer_to_answer_its_hello() -> None:
    cfg = RunConfig()
    grid = _HelloGrid(cfg, late=13, late_hellos=1)
    relay = _relay(grid, cfg)
    relay._bind_every_peer(relay.clock() + relay.settings.wait_for_peers_s)
    assert sorted(relay.peers) == ["peer-0", "peer-1", "peer-2"]  # bound at the second hello
    assert grid.hellos_seen == 2 and relay.log.hello_refused == []


@pytest.mark.usefixtures("in_a_run")
def test_relay_start_gives_up_on_a_peer_after_wait_for_peers() -> None:
    cfg = RunConfig()
    grid = _HelloGrid(cfg, late=13, late_hellos=10**6)
    relay = _relay(grid, cfg)
    relay._bind_every_peer(relay.clock() + relay.settings.wait_for_peers_s)
    assert sorted(relay.peers) == ["peer-0", "peer-1"]  # the run goes on without it
    assert grid.hellos_seen >= 2  # it was asked again while the wait lasted


@pytest.mark.parametrize("secure", [False, True])
def test_the_relay_fans_out_only_well_formed_public_messages_of_their_uploader(
    secure: bool,
) -> None:
    from secure_pcft.collab.messages import Message, MessageType, encode_message
    from secure_pcft.config import SecurityConfig
    from secure_pcft.crypto.envelope import Sealer
    from secure_pcft.crypto.identity import Identity
    from secure_pcft.crypto.roster import Roster

    ids = ("peer-0", "peer-1", "peer-2")
    keys = {p: Identity.generate(p) for p in ids}
    roster = Roster(k.public() for k in keys.values()) if secure else None
    cfg = RunConfig(security=SecurityConfig(mode="full" if secure else "off"))
    relay = Relay(None, cfg, ids, roster, RelaySettings())  # type: ignore[arg-type]

    def public(sender: str, kind: MessageType = MessageType.HE_CONTEXT) -> bytes:
        msg = encode_message(Message(kind, sender, "*", 1, {}, {"ctx": torch.ones(3)}))
        return Sealer(keys[sender]).seal_public(str(kind), 1, msg) if secure else msg

    assert relay._public_ok("peer-0", public("peer-0"))
    assert not relay._public_ok("peer-1", public("peer-0"))  # re-uploaded under another name
    assert not relay._public_ok("peer-0", b"\x00" * 65536)  # a random blob
    assert not relay._public_ok("peer-0", public("peer-0", MessageType.ADAPTER))  # not public
    assert relay.log.public_refused == 3
