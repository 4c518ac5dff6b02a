"""Classifiers given as code, for recipes/custom/l2i_custom.yaml and docs/custom_classifier.md.

l2i imports this file and calls a builder (``classifier.module: recipes/custom/my_classifier.py:
build``); the builder returns a ``torch.nn.Module`` (or ``(module, class_names)``) whose forward
takes waveforms ``(batch, samples)`` float32 in [-1, 1] at ``classifier.sample_rate`` Hz.

- :func:`build`: a self-contained log-mel CNN as you might have written it in your own code base
  (loads your trained weights from ``checkpoint``, a ``state_dict`` file);
- :func:`build_l2i_classifier`: a classifier trained by ``l2i train-classifier`` wrapped as a
  waveform model (its own STFT and front end inside), which makes the recipe runnable here.
"""

from __future__ import annotations

import torch
from torch import nn


class LogMelCNN(nn.Module):
    """Waveform (B, S) at 16 kHz -> log-mel (B, 1, T, 64) -> 3 conv blocks -> logits (B, C)."""

    def __init__(self, n_classes: int = 10, n_fft: int = 512, hop: int = 160,
                 n_mels: int = 64) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft))
        n_freq = n_fft // 2 + 1
        edges = torch.linspace(0, n_freq - 1, n_mels + 2)  # triangular bands (linear spacing)
        f = torch.arange(n_freq, dtype=torch.float32)[:, None]
        fb = torch.minimum((f - edges[:-2]) / (edges[1:-1] - edges[:-2]),
                           (edges[2:] - f) / (edges[2:] - edges[1:-1])).clamp(min=0)
        self.register_buffer("fb", fb)  # (F, n_mels)

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                                 nn.ReLU(), nn.MaxPool2d(2))

        self.encoder = nn.Sequential(block(1, 16), block(16, 32), block(32, 64))
        self.head = nn.Linear(64, n_classes)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, return_complex=True)
        logmel = torch.log(spec.abs().pow(2).transpose(1, 2) @ self.fb + 1e-6)  # (B, T, 64)
        x = self.encoder(logmel[:, None])  # (B, 64, T/8, 8)
        return self.head(x.mean(dim=(2, 3)))  # (B, C)


def build(checkpoint: str | None = None, n_classes: int = 10) -> nn.Module:
    """Your model with your weights (``checkpoint``: a ``torch.save(model.state_dict())`` file)."""
    model = LogMelCNN(n_classes)
    if checkpoint:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model


class WaveformWrapper(nn.Module):
    """An l2i ``classifier.ckpt`` as a waveform model: STFT (its own settings), then the net."""

    def __init__(self, checkpoint: str) -> None:
        super().__init__()
        from l2i.models import load_classifier

        self.net, info = load_classifier(checkpoint)
        self.features = info.features
        self.class_names = info.class_names

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        from l2i.features import magnitude, stft

        return self.net(magnitude(stft(wav, self.features)))[0]  # logits (B, C)


def build_l2i_classifier(checkpoint: str) -> tuple[nn.Module, list[str]]:
    """``l2i train-classifier``'s checkpoint as code (hook ``net.block3``, ``net.block4``)."""
    model = WaveformWrapper(checkpoint)
    return model, model.class_names
