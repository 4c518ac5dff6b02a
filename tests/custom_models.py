"""Small classifiers "given as code" for the tests, each with another shape of interface.

Every builder seeds its own initialisation (the same weights every time it is called: the
checkpoint records their sha256) and takes waveforms ``(B, S)``. Referenced by the tests as
``tests/custom_models.py:build_<name>`` (``classifier.module``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

N_CLASSES = 8  # the tiny synthetic dataset of conftest.py


def _seeded(make):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return make().eval()


class LogMel(nn.Module):
    """A log-mel front end written in torch: STFT 256/64, 24 linear-spaced triangular bands."""

    def __init__(self, n_fft: int = 256, hop: int = 64, n_bands: int = 24) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        n_freq = n_fft // 2 + 1
        centers = torch.linspace(0, n_freq - 1, n_bands + 2)
        f = torch.arange(n_freq, dtype=torch.float32)[:, None]  # (F, 1)
        lo, mid, hi = centers[:-2], centers[1:-1], centers[2:]
        fb = torch.clamp(torch.minimum((f - lo) / (mid - lo), (hi - f) / (hi - mid)), min=0)
        self.register_buffer("fb", fb)  # (F, n_bands)
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, return_complex=True)
        power = spec.abs().pow(2).transpose(1, 2)  # (B, T, F)
        return torch.log(power @ self.fb + 1e-6)  # (B, T, n_bands)


class LogMelCNN(nn.Module):
    """2-D CNN over a log-mel front end: maps ``encoder.block1/2`` are ``(B, C, T', F')``."""

    def __init__(self) -> None:
        super().__init__()
        self.frontend = LogMel()
        self.encoder = nn.Module()
        self.encoder.block1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                            nn.MaxPool2d(2))
        self.encoder.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                            nn.MaxPool2d(2))
        self.head = nn.Linear(16, N_CLASSES)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.frontend(wav)[:, None]  # (B, 1, T, F)
        x = self.encoder.block2(self.encoder.block1(x))  # (B, 16, T/4, F/4)
        return self.head(x.mean(dim=(2, 3)))  # (B, C)


class WaveConv1d(nn.Module):
    """1-D conv net on the raw waveform: maps ``convs.1``, ``convs.3`` are ``(B, C, T')``."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv1d(1, 8, 64, stride=32), nn.ReLU(),
                                   nn.Conv1d(8, 16, 5, stride=2), nn.ReLU())
        self.head = nn.Linear(16, N_CLASSES)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.convs(wav[:, None])  # (B, 16, T')
        return self.head(x.amax(dim=-1))


class EmbedThenLogits(LogMelCNN):
    """Returns ``(embedding (B, 16), logits (B, C))``: ``classifier.output: 1``."""

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder.block2(self.encoder.block1(self.frontend(wav)[:, None]))
        emb = x.mean(dim=(2, 3))  # (B, 16)
        return emb, self.head(emb)


class TinyTransformer(nn.Module):
    """Waveform patches -> a transformer layer: ``encoder.layers.0`` returns tokens (B, T', D)."""

    def __init__(self, patch: int = 128, dim: int = 16) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(dim, N_CLASSES)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        n = wav.shape[1] // self.patch
        tokens = self.embed(wav[:, :n * self.patch].reshape(wav.shape[0], n, self.patch))
        return self.head(self.encoder(tokens).mean(dim=1))  # (B, C)


class MultiLabel(LogMelCNN):
    """A multi-label tagger: ``{"clipwise": logits (B, C)}`` read with sigmoids."""

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"clipwise": super().forward(wav), "note": "not a tensor"}


class PatchFolding(nn.Module):
    """Folds 4 chunks of the clip into the batch: ``conv`` sees a batch of 4 B (an error)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 16, stride=8)
        self.head = nn.Linear(4, N_CLASSES)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        B, S = wav.shape
        chunks = wav[:, :S - S % 4].reshape(B * 4, 1, -1)  # (4B, 1, S/4)
        h = F.relu(self.conv(chunks)).mean(dim=-1)  # (4B, 4)
        return self.head(h.reshape(B, 4, -1).mean(dim=1))


def build_logmel_cnn() -> nn.Module:
    return _seeded(LogMelCNN)


def build_wave_conv1d() -> nn.Module:
    return _seeded(WaveConv1d)


def build_embed_logits() -> tuple[nn.Module, list[str]]:
    return _seeded(EmbedThenLogits), [f"c{i}" for i in range(N_CLASSES)]


def build_transformer() -> nn.Module:
    return _seeded(TinyTransformer)


def build_multilabel(scale: float = 1.0) -> nn.Module:
    model = _seeded(MultiLabel)
    with torch.no_grad():
        model.head.weight.mul_(scale)
    return model


def build_scripted() -> nn.Module:
    return torch.jit.script(_seeded(WaveConv1d))


def build_patch_folding() -> nn.Module:
    return _seeded(PatchFolding)


