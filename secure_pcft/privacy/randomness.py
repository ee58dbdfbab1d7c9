"""Where the randomness of the DP mechanisms comes from (Poisson sampling and Gaussian noise).

Two sources behind one small protocol:

- :class:`SeededSource` — a ``torch.Generator``. Reproducible, for tests and experiments. It gives
  **no privacy against anyone who knows or can guess the seed**: with the seed, the noise can be
  regenerated and subtracted. (Note also that torch's CPU generator keeps only the low 32 bits of
  ``manual_seed``, so even a "random" seed has at most 2^32 values.)
- :class:`OsUrandomSource` — every bit comes from ``os.urandom`` (the kernel CSPRNG), drawn afresh
  for every call; nothing is seeded, so there is no seed to leak or brute-force. Uniforms are
  53-bit; normals come from Box–Muller in float64, and each noise coordinate is the sum of four
  normals divided by two (same distribution), the mitigation Opacus's ``secure_mode`` uses against
  floating-point attacks that invert a single sample (Holohan & Braghin 2021). This is **not** a
  proof against floating-point attacks on the Gaussian mechanism in general (Mironov 2012,
  "On significance of the least significant bits"): the noise is cast to float32 and added to
  float32 gradients, whose rounding is not analysed. Box–Muller from 53-bit uniforms truncates
  the normal at about 8.6 standard deviations (a probability mass below 1e-17 per draw).

Opacus's own ``secure_mode`` needs ``torchcsprng``, which is not built for this torch; this module
replaces it.

Threats mitigated (threat_models/): DP noise regenerated from a known or guessed seed on a
compromised site (TM-06), with ``[privacy] secure_rng = true``.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np
import torch

_TWO_POW_MINUS_53 = 2.0**-53


@runtime_checkable
class RandomSource(Protocol):
    """Uniforms for Poisson sampling and Gaussian noise for the mechanisms."""

    secure: bool

    def uniform(self, n: int) -> torch.Tensor:
        """``n`` independent uniforms in [0, 1), float64, shape (n,), on the CPU."""
        ...

    def gaussian(
        self,
        shape: torch.Size | tuple[int, ...],
        std: float,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """Independent N(0, std²) noise of ``shape``."""
        ...


class SeededSource:
    """Randomness from a ``torch.Generator`` (reproducible; not private against the seed holder).

    Args:
        generator: a CPU generator owned by the caller (its state advances).
    """

    secure = False

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def uniform(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator, dtype=torch.float64)

    def gaussian(
        self,
        shape: torch.Size | tuple[int, ...],
        std: float,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        noise = torch.normal(0.0, std, size=tuple(shape), generator=self.generator, dtype=dtype)
        return noise.to(device)


class OsUrandomSource:
    """Randomness drawn from ``os.urandom`` on every call (see the module docstring for limits)."""

    secure = True

    @staticmethod
    def _u53(n: int) -> np.ndarray:
        # Integers in [0, 2^53) from 8 random bytes each: the only place that reads the kernel.
        return np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)

    @classmethod
    def _unit(cls, n: int) -> np.ndarray:
        # Uniforms in [0, 1), float64, 53 random bits each (every value exactly k / 2^53).
        return cls._u53(n) * _TWO_POW_MINUS_53

    def uniform(self, n: int) -> torch.Tensor:
        return torch.from_numpy(self._unit(n))

    def standard_normal(self, n: int) -> np.ndarray:
        """``n`` standard normals (float64) by Box–Muller."""
        pairs = (n + 1) // 2
        u1 = (self._u53(pairs) + 1.0) * _TWO_POW_MINUS_53  # (0, 1]: log is finite
        u2 = self._unit(pairs)
        radius = np.sqrt(-2.0 * np.log(u1))
        angle = 2.0 * np.pi * u2
        return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]

    def gaussian(
        self,
        shape: torch.Size | tuple[int, ...],
        std: float,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        n = int(np.prod(tuple(shape), dtype=np.int64))
        z = self.standard_normal(4 * n).reshape(4, n).sum(axis=0) / 2.0  # still N(0, 1)
        return torch.from_numpy(z * std).reshape(tuple(shape)).to(device=device, dtype=dtype)
