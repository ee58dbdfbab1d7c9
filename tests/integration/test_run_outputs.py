"""What a run leaves for others: portable adapter folders (no path of the training machine, a base
named and pinned by SHA-256, a filled model card; plain peft loads them from another folder) and
the per-peer document manifests an auditor forms member sets from."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from secure_pcft.cli import main
from secure_pcft.errors import ModelError
from secure_pcft.model.export import BASE_RECORD, resolve_adapter_base
from tests.integration.test_cli import _config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_base_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("export")
    assert main(["run", str(_config(root, tiny_base_dir, "fedavg"))]) == 0
    return root / "out"


def test_adapter_folder_names_its_base_not_a_path(run_dir: Path, tiny_base_dir: Path) -> None:
    adapter = run_dir / "adapters" / "site-1"
    config = json.loads((adapter / "adapter_config.json").read_text())
    record = json.loads((adapter / BASE_RECORD).read_text())

    assert config["base_model_name_or_path"] == tiny_base_dir.name
    assert str(tiny_base_dir) not in (adapter / "adapter_config.json").read_text()
    assert record["name"] == tiny_base_dir.name
    assert "model.safetensors" in record["files_sha256"]
    assert all(len(h) == 64 for h in record["files_sha256"].values())


def test_model_card_is_filled(run_dir: Path) -> None:
    card = (run_dir / "adapters" / "site-1" / "README.md").read_text()

    assert "peer `site-1`" in card and "strategy: `fedavg`" in card
    assert "r 4" in card and "c_attn" in card
    assert "no differential privacy" in card  # this run has DP off
    assert "test perplexity" in card
    assert "[More Information Needed]" not in card  # peft's empty template is gone


def test_adapter_moved_elsewhere_loads_against_a_moved_base(
    run_dir: Path, tiny_base_dir: Path, tmp_path: Path
) -> None:
    adapter = shutil.copytree(run_dir / "adapters" / "site-1", tmp_path / "elsewhere" / "site-1")
    base_copy = shutil.copytree(tiny_base_dir, tmp_path / "other-machine" / tiny_base_dir.name)

    base_dir = resolve_adapter_base(adapter, base_copy)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter)

    ids = torch.tensor([[1, 2, 3]])
    assert model(input_ids=ids).logits.shape[-1] == model.config.vocab_size


def test_a_different_base_is_refused(run_dir: Path, tiny_base_dir: Path, tmp_path: Path) -> None:
    changed = shutil.copytree(tiny_base_dir, tmp_path / tiny_base_dir.name)
    config = json.loads((changed / "config.json").read_text())
    config["n_layer"] = 1
    (changed / "config.json").write_text(json.dumps(config))

    with pytest.raises(ModelError, match="not the one this adapter was trained on"):
        resolve_adapter_base(run_dir / "adapters" / "site-1", changed)
    with pytest.raises(ModelError, match="not found"):
        resolve_adapter_base(run_dir / "adapters" / "site-1", tmp_path / "nowhere")


def test_model_card_of_a_dp_adapter_states_its_epsilon() -> None:
    from secure_pcft.model.export import model_card

    privacy = {
        "epsilon_spent": 7.9962,
        "delta": 1e-3,
        "accountant": "rdp",
        "budget_epsilon": 8.0,
        "ledger": "/abs/path/ledgers/site-0.ledger.jsonl",
        "stopped_sharing_round": None,
    }
    card = model_card({"name": "small-x"}, {"peer": "site-0", "privacy": privacy})

    assert "ε = 7.9962 spent at δ = 0.001 (rdp accountant), budget 8.0" in card
    assert "`site-0.ledger.jsonl`" in card and "/abs/path" not in card
    assert "no differential privacy" not in card


def test_manifests_name_every_training_document_by_hash(run_dir: Path) -> None:
    import hashlib
    import stat

    manifest_path = run_dir / "manifests" / "site-1.json"
    manifest = json.loads(manifest_path.read_text())
    train_file = run_dir.parent / "site-1.txt"
    lines = [ln for ln in train_file.read_text().splitlines() if ln.strip()]

    assert stat.S_IMODE(manifest_path.stat().st_mode) == 0o600
    assert manifest["peer_id"] == "site-1" and set(manifest["splits"]) == {"train", "val", "test"}
    every = [h for split in manifest["splits"].values() for h in split]
    assert len(every) == len(set(every)) > 0
    assert all(len(h) == 64 for h in every)
    hashes = {hashlib.sha256(ln.encode()).hexdigest() for ln in lines}
    assert set(manifest["splits"]["train"]) <= hashes  # each document is one of the peer's lines
    assert "plant" not in manifest_path.read_text()  # hashes only, no text


def _example(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(__file__).resolve().parents[2] / "examples" / args[0]
    return subprocess.run(
        [sys.executable, str(script), *args[1:]], capture_output=True, text=True, timeout=300
    )


def test_generate_example_loads_a_moved_adapter_and_prints_no_special_tokens(
    run_dir: Path, tiny_base_dir: Path
) -> None:
    done = _example(
        # the prompt holds the EOS token itself, so the old decode would have printed it
        "generate_with_adapter.py", str(run_dir / "adapters" / "site-1"), "alpha<|endoftext|>",
        "--base", str(tiny_base_dir), "--tokens", "12",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() and "<|endoftext|>" not in done.stdout


def test_attack_example_writes_json_with_per_example_scores(
    run_dir: Path, tiny_base_dir: Path
) -> None:
    lines = (run_dir.parent / "site-1.txt").read_text().splitlines()
    members, nonmembers = run_dir.parent / "m.txt", run_dir.parent / "n.txt"
    members.write_text("\n".join(lines[:20]) + "\n")
    nonmembers.write_text((run_dir.parent / "site-2.txt").read_text())
    out = run_dir.parent / "attack.json"

    done = _example(
        "attack_saved_adapter.py", "--base", str(tiny_base_dir),
        "--adapter", str(run_dir / "adapters" / "site-1"),
        "--members", str(members), "--nonmembers", str(nonmembers),
        "--block-size", "16", "--json", str(out),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["members"] > 0 and record["attacks"]
    first = record["attacks"][0]
    assert len(first["member_scores"]) == record["members"]
    assert len(first["nonmember_scores"]) == record["nonmembers"]
    assert "roc_auc" in first["metrics"]


def test_a_llama_adapter_loads_with_plain_peft_and_generates(tmp_path: Path) -> None:
    # SmolLM2 is a Llama; a tiny Llama built here stands in for it (same LoRA targets, same code).
    from transformers import AutoTokenizer

    from tests.conftest import build_tiny_base

    base_dir = build_tiny_base(tmp_path / "tiny-llama", arch="llama")
    cfg = _config(tmp_path, base_dir, "predictions")
    assert main(["run", str(cfg)]) == 0
    adapter = tmp_path / "out" / "adapters" / "site-0"

    config = json.loads((adapter / "adapter_config.json").read_text())
    assert {"q_proj", "v_proj", "down_proj"} <= set(config["target_modules"])
    base = AutoModelForCausalLM.from_pretrained(resolve_adapter_base(adapter, base_dir))
    model = PeftModel.from_pretrained(base, adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    ids = tokenizer("alpha beta", return_tensors="pt").input_ids
    out = model.generate(
        ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id
    )

    assert out.shape[1] > ids.shape[1]
    assert isinstance(tokenizer.decode(out[0], skip_special_tokens=True), str)
