"""The CNN14 convolution stack (PANNs / SpeechBrain) written out in plain torch, for the tests'
reference forwards: six blocks of two 3x3 conv + BatchNorm + ReLU, 2x2 average pooling (none
after the last), then mean over frequency and max + mean over time."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def cnn14_embedding(x: Tensor, sd: dict[str, Tensor], bn: Callable[[Tensor, str], Tensor],
                    norm1: str, norm2: str) -> Tensor:
    """``x (B, 1, T, M)`` -> ``(B, 2048)``; ``bn(x, prefix)`` applies the named BatchNorm and
    ``norm1``/``norm2`` name each block's two norms (``bn1``/``bn2`` in PANNs, ``norm1``/``norm2``
    in SpeechBrain)."""
    for k in range(1, 7):
        p = f"conv_block{k}"
        x = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"], padding=1), f"{p}.{norm1}"))
        x = F.relu(bn(F.conv2d(x, sd[p + ".conv2.weight"], padding=1), f"{p}.{norm2}"))
        x = F.avg_pool2d(x, (2, 2) if k < 6 else (1, 1))
    x = torch.mean(x, dim=3)  # (B, C, T')
    return torch.max(x, dim=2)[0] + torch.mean(x, dim=2)  # (B, C)
