"""Where a run computes: ``[model] device``, the base on that device, and CPU-side messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from secure_pcft.config import DataConfig, LoraSettings, ModelConfig, RunConfig, TrainConfig
from secure_pcft.errors import ConfigError, ModelError
from secure_pcft.model.loading import load_base, resolve_device
from secure_pcft.runtime.loopback import Simulation
from tests.conftest import load_script, tiny_federation

TRAIN = TrainConfig(batch_size=4, lr=5e-3, warmup_steps=2, local_steps=2, total_steps=4)
COMMON = Path(__file__).resolve().parents[2] / "benchmarks" / "_common.py"


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "CPU", "cuda:x", ""])
def test_an_unknown_device_is_refused_with_the_field_named(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"\[model\] device"):
        ModelConfig(device=bad)


def test_auto_is_cuda_only_when_torch_sees_one() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_cuda_device_that_does_not_exist_is_a_model_error() -> None:
    with pytest.raises(ModelError, match=r"cuda:99.*CUDA device"):
        resolve_device("cuda:99")


def test_the_base_is_loaded_onto_the_device_asked_for(tiny_base_dir: Path) -> None:
    base = load_base(tiny_base_dir, device="cpu")
    assert base.device == torch.device("cpu")


def _run_two_steps(base_dir: Path, device: str) -> tuple[Simulation, dict[str, torch.Tensor]]:
    cfg = RunConfig(
        model=ModelConfig(device=device),
        lora=LoraSettings(mode="shared-init", dropout=0.0),
        data=DataConfig(block_size=16),
        train=TRAIN,
    )
    sim = Simulation(cfg, tiny_federation(num_peers=2), load_base(base_dir, device=device))
    sim.peers[0].train(2)
    return sim, sim.peers[0].adapter()


def test_what_leaves_a_peer_is_on_the_cpu_and_its_data_is_with_the_model(
    tiny_base_dir: Path,
) -> None:
    sim, adapter = _run_two_steps(tiny_base_dir, "cpu")
    peer = sim.peers[0]
    assert all(t.device.type == "cpu" for t in adapter.values())
    assert peer.blocks.train.device == peer.device == sim.base.device
    logits = peer.reference_logits(sim.reference[:2])
    assert logits.device.type == "cpu" and logits.shape[0] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_two_steps_on_cuda_match_the_cpu(tiny_base_dir: Path) -> None:
    _, on_cpu = _run_two_steps(tiny_base_dir, "cpu")
    sim, on_gpu = _run_two_steps(tiny_base_dir, "cuda")

    assert sim.peers[0].blocks.train.device.type == "cuda"
    assert set(on_gpu) == set(on_cpu)
    for name, tensor in on_gpu.items():
        assert tensor.device.type == "cpu"
        torch.testing.assert_close(tensor, on_cpu[name], rtol=1e-3, atol=1e-5)


def _common() -> object:
    return load_script(COMMON, "bench_common")


def test_the_benchmark_schedules_include_the_papers() -> None:
    common = _common()
    paper = common.train_schedule("paper")  # type: ignore[attr-defined]
    assert (paper.warmup_steps, paper.local_steps, paper.total_steps) == (100, 25, 500)
    assert paper.num_rounds == 16  # 400 steps after the warm-up, in rounds of 25
    assert common.train_schedule("quick").total_steps == 30  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown schedule"):
        common.train_schedule("long")  # type: ignore[attr-defined]
