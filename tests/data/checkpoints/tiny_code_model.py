"""A tiny classifier given as code, for the version-1 code-classifier record in this folder.

Seeded: the same weights every call (the record holds their sha256). Waveforms ``(B, S)`` at
8 kHz -> logits ``(B, 3)``; hooked layer ``conv`` gives ``(B, 2, T')``.
"""

from __future__ import annotations

import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, kernel_size=64, stride=32)
        self.head = nn.Linear(2, 3)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(wav[:, None]))  # (B, 2, T')
        return self.head(h.mean(dim=-1))  # (B, 3)


def build() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Tiny().eval()
