"""Trivial baselines, in every comparison table: what an explainer must beat.

- ``ones``: the all-ones mask (the input itself: AD 0 and Fid-In 1 by construction, FF 0);
- ``energy``: the input's normalised energy ``|X| / max|X|`` per clip (no model at all; on the
  synthetic set it localises events well, so a localisation number means little without it);
- ``random``: a random mask with, per clip, the same mean as a reference explainer's mask
  (``mean=`` in :meth:`RandomMask.attribute`; 0.5 without one). Values are ``u ** a`` with
  ``u ~ U(0, 1)`` per bin and ``a = 1 / m - 1``, so ``E[M] = 1 / (a + 1) = m`` exactly and
  every value stays in [0, 1]; seeded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from l2i.explainers.base import MaskExplainer, SpecBatch, per_clip_max_normalise

DEFAULT_RANDOM_MEAN = 0.5


class OnesMask(MaskExplainer):
    """``M = 1`` everywhere."""

    name = "ones"

    def explain_spec(self, spec: SpecBatch, target: Tensor,
                     **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        return torch.ones_like(spec.mag), {}


class EnergyMask(MaskExplainer):
    """``M = |X| / max|X|`` per clip."""

    name = "energy"

    def explain_spec(self, spec: SpecBatch, target: Tensor,
                     **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        return per_clip_max_normalise(spec.mag), {}


class RandomMask(MaskExplainer):
    """A seeded random mask whose per-clip mean matches ``mean`` (see the module docstring).

    Args:
        seed: seeds the generator once; successive calls continue the stream.
    """

    name = "random"
    needs_reference = True

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generator = torch.Generator().manual_seed(int(seed))

    def explain_spec(self, spec: SpecBatch, target: Tensor, mean: Tensor | float | None = None,
                     **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        b = spec.mag.shape[0]
        m = torch.as_tensor(DEFAULT_RANDOM_MEAN if mean is None else mean, dtype=torch.float64)
        m = m.reshape(-1).expand(b) if m.numel() == 1 else m.reshape(-1)  # (B,)
        m = m.clamp(1e-6, 1.0)
        a = (1.0 / m - 1.0).to(torch.float32).reshape(-1, 1, 1)  # (B, 1, 1) exponents
        u = torch.rand(spec.mag.shape, generator=self.generator)  # (B, T, F) on the CPU
        return u.pow(a).to(spec.mag.device), {}


__all__ = ["OnesMask", "EnergyMask", "RandomMask"]
