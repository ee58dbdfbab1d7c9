"""Seeded public Johnson–Lindenstrauss sketch of LoRA parameters, for encrypted similarity.

Every peer maps its adapter (a dict of tensors, D ≈ 1e5–1e6 numbers) to a short unit vector
(``dim`` ≤ 4096, one CKKS ciphertext) with the *same* public random map, so inner products of the
sketches approximate cosine similarities of the adapters.

The map is a sparse JL transform (block construction of Kane & Nelson, 2014; ``sparsity`` = 1 is
the CountSketch / feature-hashing map of Weinberger et al.): the ``dim`` outputs are split into
``sparsity`` blocks of ``dim / sparsity`` buckets; each input coordinate is hashed to one bucket per
block with a random sign. The inner product of two sketches is an unbiased estimate of the inner
product of the inputs with variance about (‖x‖²‖y‖² + ⟨x,y⟩²)/dim, as for a dense Gaussian JL
matrix, but costs O(sparsity·D) instead of O(dim·D): a dense 4096 × 1e6 Gaussian matrix would need
4e9 random draws per sketch.

Randomness comes chunk-wise (64 Ki coordinates at a time) from raw NumPy PCG64 output keyed by
(public seed, dim, sparsity, SHA-256 of the tensor name, chunk index): no matrix is ever
materialised, raw bit-generator output is stable across NumPy versions (so every peer computes the
same map), and adding or removing a tensor does not change the hashes of the others. The chunk size
is part of the map's definition. The seed is public: the sketch hides nothing by itself; it is
encrypted before it leaves the peer (:mod:`secure_pcft.crypto.he_similarity`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from secure_pcft.errors import ConfigError, CryptoError

MAX_DIM = 4096  # CKKS slot count at N = 8192: one ciphertext per vector
_CHUNK = 1 << 16


@dataclass(frozen=True)
class ProjectionSpec:
    """A public projection, identical for every peer of a consortium.

    Attributes:
        seed: consortium-wide public seed (e.g. ``LoraSettings.public_seed``).
        dim: output dimension (1..4096; a multiple of ``sparsity``). Default 4096: the CKKS cost
            is the same for any dim (vectors are padded to 4096 slots) and the JL error halves
            from 1024 to 4096.
        sparsity: non-zeros per input coordinate (1, 2, 4 or 8).
    """

    seed: int
    dim: int = 4096
    sparsity: int = 4

    def __post_init__(self) -> None:
        if type(self.seed) is not int or self.seed < 0:
            raise ConfigError("projection.seed: must be a non-negative integer")
        if self.sparsity not in (1, 2, 4, 8):
            raise ConfigError("projection.sparsity: must be 1, 2, 4 or 8 (non-zeros per column)")
        if type(self.dim) is not int or not 1 <= self.dim <= MAX_DIM:
            raise ConfigError(f"projection.dim: must be an integer in [1, {MAX_DIM}] (dimensions)")
        if self.dim % self.sparsity:
            raise ConfigError("projection.dim: must be a multiple of projection.sparsity")


def sketch(tensors: Mapping[str, torch.Tensor], spec: ProjectionSpec) -> npt.NDArray[np.float64]:
    """Un-normalised sketch ``S·x`` of the tensors flattened in sorted-name order.

    Returns:
        float64 array of shape ``(spec.dim,)``.

    Raises:
        CryptoError: no tensors, or non-finite values.
    """
    if not tensors:
        raise CryptoError("projection: no tensors to project")
    buckets = spec.dim // spec.sparsity
    out = np.zeros((spec.sparsity, buckets), dtype=np.float64)
    for name in sorted(tensors):
        flat = tensors[name].detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()
        if not np.isfinite(flat).all():
            raise CryptoError(f"projection: tensor {name!r} contains NaN or Inf")
        name_words = np.frombuffer(hashlib.sha256(name.encode()).digest(), dtype=np.uint32)
        for chunk_idx, start in enumerate(range(0, flat.size, _CHUNK)):
            x = flat[start : start + _CHUNK]
            key = [spec.seed, spec.dim, spec.sparsity, *name_words.tolist(), chunk_idx]
            bits = np.random.PCG64(np.random.SeedSequence(key))
            # Raw 64-bit outputs (stable across NumPy versions, unlike Generator methods), one per
            # (block, coordinate): low bit = sign, the rest mod buckets = bucket (bias < 2^-50).
            raw = bits.random_raw(spec.sparsity * x.size).reshape(spec.sparsity, x.size)
            signed = np.where(raw & np.uint64(1), -x, x)
            index = ((raw >> np.uint64(1)) % np.uint64(buckets)).astype(np.intp)
            for block in range(spec.sparsity):
                out[block] += np.bincount(index[block], weights=signed[block], minlength=buckets)
    return out.reshape(-1) / math.sqrt(spec.sparsity)


def project(tensors: Mapping[str, torch.Tensor], spec: ProjectionSpec) -> npt.NDArray[np.float64]:
    """L2-normalised sketch: the vector a peer encrypts for similarity queries.

    Returns:
        float64 unit vector of shape ``(spec.dim,)``.

    Raises:
        CryptoError: empty input, non-finite values, or a zero sketch (nothing to normalise).
    """
    y = sketch(tensors, spec)
    norm = float(np.linalg.norm(y))
    if not norm > 0.0:
        raise CryptoError("projection: the sketch is zero; cannot normalise")
    return y / norm
