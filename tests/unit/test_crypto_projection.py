"""Seeded sparse JL projection: determinism, unit norm, cosine preservation (measured), speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from secure_pcft.crypto.projection import ProjectionSpec, project, sketch
from secure_pcft.errors import ConfigError, CryptoError


def tensors_from(vec: np.ndarray) -> dict[str, torch.Tensor]:
    """Split a flat vector over three tensors (sorted-name order = concatenation order)."""
    a, b = vec.size // 3, 2 * vec.size // 3
    return {
        "a.lora_A": torch.from_numpy(vec[:a].copy()),
        "b.lora_B": torch.from_numpy(vec[a:b].copy()),
        "c.lora_A": torch.from_numpy(vec[b:].copy()),
    }


def pair_with_cosine(rng: np.random.Generator, d: int, cos: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal(d)
    x /= np.linalg.norm(x)
    z = rng.standard_normal(d)
    z -= (z @ x) * x
    z /= np.linalg.norm(z)
    return x, cos * x + np.sqrt(1 - cos**2) * z


def test_projection_is_deterministic_from_the_public_seed() -> None:
    state = tensors_from(np.random.default_rng(0).standard_normal(30_000))
    reordered = dict(reversed(list(state.items())))

    first = project(state, ProjectionSpec(seed=7, dim=256))
    again = project(reordered, ProjectionSpec(seed=7, dim=256))
    other = project(state, ProjectionSpec(seed=8, dim=256))

    assert first.shape == (256,) and first.dtype == np.float64
    np.testing.assert_array_equal(first, again)
    assert abs(float(first @ other)) < 0.5


def test_known_answer_pins_the_public_map() -> None:
    """Every peer must compute the same map: any change to it (hashing, chunking, RNG) is a
    protocol change and must fail here."""
    state = {
        "a": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "b": torch.linspace(-1, 1, 7),
    }

    y = project(state, ProjectionSpec(seed=42, dim=16, sparsity=4))

    expected = [
        -0.03239742590807527, 0.32397427211525337, 0.00809935629598409, 0.12149035168115055,
        -0.14578842201738065, 0.0161987133161071, -0.6560478990782129, -0.42926590830788003,
        0.08099356730467441, 0.01619871259196817, -0.02429807033623011, 0.00809935702012301,
        0.413067194267634, -0.01619871404024602, 0.12958970942541248, 0.2186826337502099,
    ]  # fmt: skip
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)


def test_output_is_unit_norm_and_scale_invariant() -> None:
    vec = np.random.default_rng(1).standard_normal(10_000)
    spec = ProjectionSpec(seed=1, dim=512)

    y = project(tensors_from(vec), spec)
    y_scaled = project(tensors_from(3.0 * vec), spec)

    assert np.linalg.norm(y) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(y, y_scaled, atol=1e-12)


def test_sketch_is_linear() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal(5000), rng.standard_normal(5000)
    spec = ProjectionSpec(seed=3, dim=128, sparsity=2)

    combined = sketch(tensors_from(2 * x - y), spec)

    np.testing.assert_allclose(
        combined, 2 * sketch(tensors_from(x), spec) - sketch(tensors_from(y), spec), atol=1e-9
    )


@pytest.mark.parametrize(("dim", "tolerance"), [(1024, 0.15), (4096, 0.08)])
def test_cosine_is_preserved_within_jl_error(dim: int, tolerance: float) -> None:
    rng = np.random.default_rng(dim)
    spec = ProjectionSpec(seed=20240401, dim=dim)
    errors = []
    for cos in (-0.5, 0.0, 0.3, 0.6, 0.9, 0.99):
        x, y = pair_with_cosine(rng, 60_000, cos)
        errors.append(float(project(tensors_from(x), spec) @ project(tensors_from(y), spec)) - cos)

    rms = float(np.sqrt(np.mean(np.square(errors))))
    # JL: standard deviation ≈ sqrt((1 + cos²) / dim) → ≈0.04 at 1024, ≈0.02 at 4096.
    assert max(abs(e) for e in errors) < tolerance
    assert rms < 2.5 * np.sqrt(2 / dim)


def test_one_million_parameters_project_fast() -> None:
    state = tensors_from(np.random.default_rng(3).standard_normal(1_000_000).astype(np.float32))

    start = time.perf_counter()
    y = project(state, ProjectionSpec(seed=1, dim=4096))
    elapsed = time.perf_counter() - start

    assert y.shape == (4096,)
    assert elapsed < 3.0  # ~0.1-0.2 s measured on a 2-core CPU; loose for shared machines


@pytest.mark.parametrize(
    "kwargs",
    [{"dim": 0}, {"dim": 4097}, {"dim": 1022, "sparsity": 4}, {"sparsity": 3}, {"seed": -1}],
)
def test_invalid_spec_is_a_config_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        ProjectionSpec(**{"seed": 1, **kwargs})


def test_zero_or_non_finite_input_is_refused() -> None:
    spec = ProjectionSpec(seed=1, dim=64)

    with pytest.raises(CryptoError, match="zero"):
        project({"b": torch.zeros(10, 10)}, spec)
    with pytest.raises(CryptoError, match="NaN"):
        project({"b": torch.tensor([1.0, float("nan")])}, spec)
    with pytest.raises(CryptoError):
        project({}, spec)
