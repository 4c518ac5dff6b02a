"""theta: pool the activations ``H (B, K, T)`` over time (any T), then ``Linear(K, C, bias=False)``.

Pooling (:class:`l2i.config.ThetaConfig.pooling`):

- ``attention`` (paper): per component k, weights ``a_{k,t} = softmax_t(s_k(H[:, :, t]))`` from a
  small scorer ``Conv1d(K, hidden, 1) -> tanh -> Conv1d(hidden, K, 1)`` that sees all
  components at frame t; ``z_k = sum_t a_{k,t} H_{k,t}``. Weights are non-negative and sum to 1,
  so ``z >= 0`` whenever ``H >= 0``, and z is on the scale of H for any clip length.
- ``mean`` / ``max``: parameter-free.

``normalize``: logits from ``z / mean_k(z)`` (see :meth:`Theta.classify`).

The linear layer's weight ``(C, K)`` gives the relevance of each component for each class
(``r_k = w_ck z_k / max_j |w_cj z_j|``, see :mod:`l2i.explain`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from l2i.config import ThetaConfig


class Theta(nn.Module):
    """``H (B, K, T)`` -> ``z (B, K)`` -> logits ``(B, C)``.

    Args:
        n_components: K.
        n_classes: C.
        cfg: its :class:`l2i.config.ThetaConfig` (``pooling``, ``hidden``, ``normalize``); the
            dataclass holds the only defaults.
    """

    def __init__(self, n_components: int, n_classes: int, cfg: ThetaConfig) -> None:
        super().__init__()
        if not isinstance(cfg, ThetaConfig):
            raise TypeError(f"Theta takes a ThetaConfig, got {type(cfg).__name__}")
        self.config = cfg
        self.n_components = int(n_components)
        self.n_classes = int(n_classes)
        self.pooling = cfg.pooling
        self.normalize = bool(cfg.normalize)
        self.scorer: nn.Module | None = None
        if self.pooling == "attention":
            self.scorer = nn.Sequential(
                nn.Conv1d(self.n_components, cfg.hidden, kernel_size=1), nn.Tanh(),
                nn.Conv1d(cfg.hidden, self.n_components, kernel_size=1))
        self.linear = nn.Linear(self.n_components, self.n_classes, bias=False)

    def attention(self, H: Tensor) -> Tensor:
        """Pooling weights ``(B, K, T)``, non-negative, summing to 1 over T."""
        if self.scorer is None:
            T = H.shape[-1]
            return torch.full_like(H, 1.0 / T)
        return torch.softmax(self.scorer(H), dim=-1)  # (B, K, T)

    def pool(self, H: Tensor) -> Tensor:
        """``H (B, K, T)`` -> ``z (B, K)`` (>= 0 when H >= 0)."""
        if H.dim() != 3 or H.shape[1] != self.n_components:
            raise ValueError(f"theta expects H of shape (B, {self.n_components}, T), "
                             f"got {tuple(H.shape)}")
        if self.pooling == "max":
            return H.amax(dim=-1)  # (B, K)
        if self.pooling == "mean":
            return H.mean(dim=-1)  # (B, K)
        return (self.attention(H) * H).sum(dim=-1)  # (B, K)

    def classify(self, z: Tensor) -> Tensor:
        """``z (B, K)`` -> logits ``(B, C)``.

        With ``normalize`` (``ThetaConfig``'s default), ``z`` is divided by its mean over
        components per clip before the linear layer: a positive per-clip factor, so the relevance
        ``w_ck z_k / max_j |w_cj z_j|`` is unchanged, while the logits no longer depend on the
        overall scale of H (which the sparsity term keeps small) and train much faster.
        """
        if self.normalize:
            z = z / (z.mean(dim=-1, keepdim=True) + 1e-6)  # (B, K)
        return self.linear(z)

    def forward(self, H: Tensor) -> Tensor:
        """``H (B, K, T)`` -> logits ``(B, C)``."""
        return self.classify(self.pool(H))
