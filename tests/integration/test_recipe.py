"""`secure-pcft tune`: the recipe is chosen on validation splits (never test), on private data only
without DP, on the public reference set at 0 ε with or without DP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secure_pcft.cli import main
from secure_pcft.config import DataConfig, config_from_dict, load_config
from secure_pcft.errors import ConfigError
from secure_pcft.recipe import public_federation, search_recipe
from tests.conftest import tiny_federation


def _config(tmp: Path, base: Path, *, dp: bool = False) -> Path:
    fed = tiny_federation()
    paths = []
    for p in fed.peers:
        f = tmp / f"{p.peer_id}.txt"
        f.write_text("\n".join(p.train + p.val + p.test) + "\n")
        paths.append(str(f))
    (tmp / "reference.txt").write_text("\n".join(fed.reference) + "\n")
    privacy = "[privacy]\nenabled = true\ntarget_epsilon = 8.0\n" if dp else ""
    run = tmp / "run.toml"
    run.write_text(
        f"""[model]
base = "{base}"
[data]
source = "files"
paths = {json.dumps(paths)}
reference_path = "{tmp / "reference.txt"}"
reference_docs = 16
block_size = 16
[train]
batch_size = 4
warmup_steps = 2
total_steps = 6
{privacy}[output]
dir = "{tmp / "out"}"
"""
    )
    return run


def test_the_chosen_recipe_is_the_lowest_mean_validation_perplexity(
    tmp_path: Path, tiny_base_dir: Path
) -> None:
    cfg = config_from_dict({"model": {"base": str(tiny_base_dir)}})
    cfg = cfg.replace(data=DataConfig(source="embedded", block_size=16, docs_per_peer=8))
    search = search_recipe(cfg, [1e-3, 5e-2], [2, 4], data="public")

    assert [(t.lr, t.steps) for t in search.trials] == [(1e-3, 2), (1e-3, 4), (5e-2, 2), (5e-2, 4)]
    best = min(search.trials, key=lambda t: t.mean_val_ppl)
    assert search.chosen == best
    assert set(best.val_ppl) == {"public"}  # one pseudo-site on the public reference set
    doc = search.to_json()
    assert doc["epsilon_cost"] == 0.0 and doc["chosen"]["lr"] == best.lr


def test_the_cli_writes_the_trials_and_refuses_private_data_under_dp(
    tmp_path: Path, tiny_base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _config(tmp_path, tiny_base_dir)
    out = tmp_path / "recipe.json"

    assert main(["tune", str(run), "--lr", "1e-3", "1e-2", "--steps", "2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["trials"]) == 2 and doc["data"] == "private"
    assert all(set(t["val_ppl"]) == {"peer-0", "peer-1", "peer-2"} for t in doc["trials"])
    assert "chosen on validation" in capsys.readouterr().out

    (tmp_path / "dp").mkdir()
    dp_run = _config(tmp_path / "dp", tiny_base_dir, dp=True)
    with pytest.raises(ConfigError, match="--data public"):
        search_recipe(load_config(dp_run), [1e-3], [2])
    assert main(["tune", str(dp_run), "--lr", "1e-3", "--steps", "2"]) == 3
    public = ["--data", "public", "--out", str(tmp_path / "dp.json")]
    assert main(["tune", str(dp_run), "--lr", "1e-3", "--steps", "2", *public]) == 0


def test_public_tuning_never_reads_private_splits() -> None:
    fed = tiny_federation()

    pub = public_federation(fed)

    private = {d for p in fed.peers for d in (*p.train, *p.val, *p.test)}
    site = pub.peers[0]
    assert not (set(site.train) | set(site.val)) & private
    assert set(site.train) | set(site.val) <= set(fed.reference)
    assert not set(site.train) & set(site.val)
