"""End to end through the CLI: a 3-peer run on user files with the tiny base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM

from secure_pcft.cli import main
from tests.conftest import _sentences


def _write_peer_files(root: Path) -> list[Path]:
    paths = []
    for i, domain in enumerate("abc"):
        p = root / f"site-{i}.txt"
        p.write_text("\n".join(_sentences(domain, 60, seed=10 + i)) + "\n")
        paths.append(p)
    ref = root / "public.txt"
    ref.write_text("\n".join(s for d in "abc" for s in _sentences(d, 10, seed=77)) + "\n")
    return paths


def _config(root: Path, base_dir: Path, strategy: str) -> Path:
    paths = _write_peer_files(root)
    cfg = root / "run.toml"
    cfg.write_text(
        f"""
[model]
base = "{base_dir}"
[data]
source = "files"
paths = [{", ".join(f'"{p}"' for p in paths)}]
reference_path = "{root / "public.txt"}"
reference_docs = 20
block_size = 16
[train]
batch_size = 4
warmup_steps = 2
local_steps = 2
total_steps = 6
[strategy]
name = "{strategy}"
{"reference_batches = 1" if strategy == "predictions" else ""}
[output]
dir = "{root / "out"}"
"""
    )
    return cfg


def test_cli_run_writes_results_and_loadable_adapters(
    tmp_path: Path, tiny_base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, tiny_base_dir, "predictions")
    assert main(["run", str(cfg)]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["strategy"] == "predictions-ref1"  # the label names the options set
    assert result["peer_ids"] == ["site-0", "site-1", "site-2"]
    assert len(result["rounds"]) == 3  # round 0 (after warm-up) + 2 aggregation rounds
    assert len(result["rounds"][-1]["trust"]) == 3
    assert result["summary"]["total_bytes_sent"] > 0
    assert "test ppl" in capsys.readouterr().out
    # a personalised adapter loads with plain peft
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    model = PeftModel.from_pretrained(base, tmp_path / "out" / "adapters" / "site-1")
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_cli_reports_config_errors_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlr = -1\n")
    assert main(["run", str(bad)]) == 3
    err = capsys.readouterr().err
    assert "ConfigError" in err and "[train] lr" in err


def test_cli_unknown_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rate = 0.1\n")
    assert main(["run", str(bad)]) == 3
    assert "unknown key" in capsys.readouterr().err


def test_exit_codes_have_one_meaning_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import secure_pcft.cli as cli
    from secure_pcft.errors import BudgetInfeasibleError, ConfigError, LedgerError

    assert cli.exit_code(ConfigError("x")) == cli.EXIT_BAD_INPUT == 3
    assert cli.exit_code(LedgerError("x")) == cli.EXIT_INTEGRITY == 4
    assert cli.exit_code(BudgetInfeasibleError("x")) == cli.EXIT_BUDGET == 5  # also a ConfigError
    with pytest.raises(SystemExit) as usage:
        main(["run"])  # missing argument
    assert usage.value.code == cli.EXIT_USAGE == 2

    def crash(_args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "cmd_run", crash)
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    assert main(["run", str(cfg)]) == cli.EXIT_INTERNAL == 70  # a bug is not "bad input"
    assert "internal error" in capsys.readouterr().err


def test_eval_every_scores_only_the_scheduled_and_last_rounds(
    tmp_path: Path, tiny_base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, tiny_base_dir, "fedavg")
    text = cfg.read_text().replace("total_steps = 6", "total_steps = 8\neval_every = 2")
    cfg.write_text(text)

    assert main(["run", str(cfg)]) == 0
    rounds = json.loads((tmp_path / "out" / "results.json").read_text())["rounds"]

    assert [len(r["test_ppl"]) for r in rounds] == [3, 0, 3, 3]  # warm-up, 1 skipped, 2, last (3)
    err = capsys.readouterr().err
    assert "test scores (round 2)" in err and "test scores (round 1)" not in err


def test_a_second_run_into_the_same_folder_is_refused_unless_overwriting(
    tmp_path: Path, tiny_base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, tiny_base_dir, "local")
    assert main(["run", str(cfg)]) == 0
    before = (tmp_path / "out" / "results.json").read_bytes()

    assert main(["run", str(cfg)]) == 3
    assert "already holds the results" in capsys.readouterr().err
    assert (tmp_path / "out" / "results.json").read_bytes() == before  # nothing lost
    assert main(["run", str(cfg), "--overwrite"]) == 0


def test_frozen_a_keeps_a_frozen_after_base_reference_logits(
    tmp_path: Path, tiny_base_dir: Path
) -> None:
    # peft's disable_adapter() marked every LoRA tensor trainable on exit: A unfroze, the adapter's
    # tensor set changed, and every peer rejected every other peer's adapter (trust = identity).
    cfg = _config(tmp_path, tiny_base_dir, "predictions")
    text = cfg.read_text().replace(
        'name = "predictions"', 'name = "predictions"\nsignature = "logprob-shift"\ntop_k = 2'
    )
    cfg.write_text('[lora]\nmode = "frozen-a"\n' + text)

    assert main(["run", str(cfg)]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())

    assert all(not r for r in result["rejections"].values())
    trust = result["rounds"][-1]["trust"]
    assert any(w > 0 for i, row in enumerate(trust) for j, w in enumerate(row) if i != j)


def test_a_refused_config_or_missing_data_never_loads_the_model_libraries(tmp_path: Path) -> None:
    """What can refuse a run is checked before torch loads (seconds of CPU on a small machine)."""
    import subprocess
    import sys

    typo = tmp_path / "typo.toml"
    typo.write_text("[train]\nlocal_step = 3\n")
    missing = tmp_path / "missing.toml"
    missing.write_text(f'[data]\nsource = "files"\npaths = ["{tmp_path / "nope.txt"}"]\n')
    option = tmp_path / "option.toml"
    option.write_text('[strategy]\nname = "validation"\ncandidate = 3\n')
    probe = (
        "import sys; from secure_pcft.cli import main; rc = main(['run', sys.argv[1]]); "
        "print(rc, 'torch' in sys.modules, 'peft' in sys.modules or 'opacus' in sys.modules)"
    )
    for path, message, torch_loaded in (
        (typo, "did you mean local_steps", "False"),
        (missing, "data path not found", "False"),
        # a strategy's own keys are checked by the strategy's class (torch, no model library)
        (option, "'validation' has no key(s) candidate (did you mean candidates?)", "True"),
    ):
        out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                             text=True, timeout=120, check=False)  # fmt: skip
        assert out.stdout.split() == ["3", torch_loaded, "False"], out.stderr
        assert message in out.stderr


def test_ctrl_c_says_in_one_line_what_was_kept_and_exits_130(
    tmp_path: Path, tiny_base_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import secure_pcft.run

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(secure_pcft.run, "execute_run", interrupted)
    cfg = _config(tmp_path, tiny_base_dir, "fedavg")

    code = main(["run", str(cfg), "--output", str(tmp_path / "out")])

    err = capsys.readouterr().err
    assert code == 130
    assert [line for line in err.splitlines() if line.strip()] == [
        "interrupted: no results were written "
        f"({tmp_path / 'out'} holds only the run's configuration, if anything)"
    ]
    assert "Traceback" not in err


def test_a_finished_dp_runs_folder_is_refused_even_when_overwriting_and_no_way_around_is_offered(
    tmp_path: Path, tiny_base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, tiny_base_dir, "local")
    cfg.write_text(cfg.read_text() + "[privacy]\nenabled = true\nnoise_multiplier = 1.0\n")
    out = tmp_path / "out"
    (out / "ledgers").mkdir(parents=True)
    (out / "results.json").write_text("{}")
    (out / "ledgers" / "peer-0.ledger.jsonl").write_text("{}\n")

    for extra in ([], ["--overwrite"]):
        assert main(["run", str(cfg), *extra]) == 3
        err = capsys.readouterr().err
        assert "holds an earlier run's ledgers" in err and "--output" not in err
    assert (out / "ledgers" / "peer-0.ledger.jsonl").read_text() == "{}\n"


PLUGIN = '''
from dataclasses import dataclass

import torch
from secure_pcft.collab.strategy import StrategyOptions, TrustStrategy, option, register_strategy
from secure_pcft.validation import require_range


@dataclass(frozen=True)
class SelfShareOptions(StrategyOptions):
    self_weight: float = option(0.5, label="self")

    def __post_init__(self):
        require_range(self.self_weight, "strategy", "self_weight", 0, 1, "weight", low_open=True)


@register_strategy
class SelfShare(TrustStrategy):
    """A fixed share of the weight on itself, the rest spread equally (a user's own rule)."""

    name = "self-share"
    Options = SelfShareOptions

    def row(self, ctx):
        n, mine = ctx.num_peers, self.options.self_weight
        row = torch.full((n,), (1 - mine) / (n - 1), dtype=torch.float64)
        row[ctx.self_index] = mine
        return row
'''


def test_a_users_own_strategy_and_its_option_reach_secure_pcft_run_through_a_plugin(
    tmp_path: Path, tiny_base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, tiny_base_dir, "self-share")
    cfg.write_text(
        cfg.read_text().replace('name = "self-share"', 'name = "self-share"\nself_weight = 0.6')
    )
    plugin = tmp_path / "my_rule.py"
    plugin.write_text(PLUGIN)

    assert main(["run", str(cfg)]) == 3  # without the plugin the name is unknown
    assert "unknown strategy 'self-share'" in capsys.readouterr().err
    assert main(["run", str(cfg), "--plugin", str(plugin)]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["strategy"] == "self-share-self0.6"  # the option names the run
    assert results["config"]["strategy"]["self_weight"] == 0.6
    trust = results["rounds"][-1]["trust"]
    assert all(abs(row[i] - 0.6) < 1e-9 for i, row in enumerate(trust))

    # the strategy's own keys are checked by its Options: a typo names the closest key, a value
    # out of its range is refused, both before any model loads (exit 3)
    for bad, message in (("self_wieght = 0.6", "did you mean self_weight?"),
                         ("self_weight = 0", "self_weight")):  # fmt: skip
        cfg.write_text(cfg.read_text().replace("self_weight = 0.6", bad))
        assert main(["run", str(cfg), "--plugin", str(plugin), "--overwrite"]) == 3
        assert message in capsys.readouterr().err
        cfg.write_text(cfg.read_text().replace(bad, "self_weight = 0.6"))


def test_installed_plugins_load_from_their_entry_points_and_a_broken_one_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import EntryPoint

    import secure_pcft.plugins as cli
    from secure_pcft.collab.strategy import available_strategies
    from secure_pcft.errors import ConfigError

    (tmp_path / "site_rule.py").write_text(PLUGIN.replace("self-share", "site-rule"))
    monkeypatch.syspath_prepend(str(tmp_path))
    good = EntryPoint(name="site", value="site_rule", group=cli.PLUGIN_GROUP)
    broken = EntryPoint(name="broken", value="no_such_module_here", group=cli.PLUGIN_GROUP)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [good])
    assert cli.load_plugins([]) == ["site"] and "site-rule" in available_strategies()
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [broken])
    with pytest.raises(ConfigError, match=r"plugin 'broken'.*fails to load"):
        cli.load_plugins([])


def test_strategies_lists_each_strategy_with_its_own_keys_plugins_included(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = tmp_path / "listed_rule.py"
    plugin.write_text(PLUGIN.replace("self-share", "listed-rule"))

    assert main(["strategies", "--plugin", str(plugin)]) == 0
    out = capsys.readouterr().out
    validation = out[out.index("validation (") :].splitlines()
    assert validation[1:4] == [
        "    calibrated = false    (bool)",
        "    relative = false    (bool)",
        "    candidates = 0    (int)",
    ]
    assert '    signature = "top-logits"    ("top-logits" | "logprob-shift")' in out
    assert "listed-rule: " in out and "    self_weight = 0.5    (float)" in out
    assert out.rstrip().endswith("every strategy: name, temperature, top_k, threshold, accept "
                                 "(README, 'Using it')")  # fmt: skip


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_reader_that_closes_the_pipe_early_is_not_an_internal_error(unbuffered: str) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    proc = subprocess.Popen(
        [sys.executable, "-c", "from secure_pcft.cli import main; raise SystemExit(main())",
         "strategies"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before anything is written
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141
    assert b"Traceback" not in err and b"Exception ignored" not in err
