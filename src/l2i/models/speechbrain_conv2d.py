"""SpeechBrain's conv2d ESC-50 classifier (``l2i_conv2d.yaml``), as published, in l2i's interface.

``model.arch: sb_conv2d`` with ``model.pretrained`` = a folder holding ``embedding_modelft.ckpt``
(or ``embedding_model.ckpt``), ``classifier.ckpt`` and ``label_encoder.txt`` of
``speechbrain/PIQ-ESC50`` (keys mapped in :mod:`l2i.models.pretrained`). Layout (REFERENCE_RECIPE
§3.2; shapes for 5 s at 16 kHz, hop 186 -> T = 431, n_fft 1024 -> F = 513, ``d = embed_dim``)::

    mag (B, T, F) -> log1p -> x (B, T, 513) -> (B, 1, T, 513)
    encoder  = PIQ.Conv2dEncoder_v2(dim=d)
      conv{1..4} Conv2d(k=4, s=2, p=1, bias) -> bn{k} BatchNorm2d -> ReLU
                 1 -> d, (d, 215, 256) -> (d, 107, 128) -> (d, 53, 64) -> (d, 26, 32)
      resblock   x + [Conv3x3(p1) -> BN -> ReLU -> Conv1x1 -> BN](x)   (no ReLU after it)
                 -> hcat (B, d, 26, 32)                                  map "hcat"
    embedding    mean over (time, freq) -> (B, d)
    classifier = ECAPA_TDNN.Classifier(input_size=d, lin_blocks=1, lin_neurons=192)
      blocks.0.norm  BatchNorm1d(d);  blocks.1.w  Linear(d, 192)  (no activation)
      logits = cos(x, weight_c) = normalize(x) @ normalize(weight (C, 192)).T   in [-1, 1]

The logits are cosines, so their softmax is near-uniform: the reference trains L2I against
``softmax(logits / 0.01)`` (``classifier_temp: 0.01``, also in :attr:`SBConv2dClassifier.
temperature`); set ``loss.classifier_temp: 0.01`` in an L2I recipe on this model. The input is
the reference's ``log1p(|X|)`` (SpeechBrain adds 1e-14 under the square root of the magnitude:
below 1e-7 absolute, ignored). Imports only torch and typed configs.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from l2i.config import FeaturesConfig
from l2i.models import AudioClassifier, make_frontend

LIN_NEURONS = 192
TEMPERATURE = 0.01


class ResBlockAudio(nn.Module):
    """``x + [Conv3x3 -> BN -> ReLU -> Conv1x1 -> BN](x)``, ``(B, d, T, F)`` -> same shape."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1), nn.BatchNorm2d(dim),
                                   nn.ReLU(True), nn.Conv2d(dim, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Conv2dEncoderV2(nn.Module):
    """``PIQ.Conv2dEncoder_v2``: ``x (B, T, F)`` -> ``hcat (B, d, T/16, F/16)`` (floor-ish)."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", nn.Conv2d(1 if k == 1 else dim, dim, 4, 2, 1))
            setattr(self, f"bn{k}", nn.BatchNorm2d(dim))
        self.resblock = ResBlockAudio(dim)

    def forward(self, x: Tensor) -> Tensor:
        h = x.unsqueeze(1)  # (B, 1, T, F)
        for k in range(1, 5):
            h = F.relu(getattr(self, f"bn{k}")(getattr(self, f"conv{k}")(h)))  # (B, d, ., .)
        return self.resblock(h)


class _Norm(nn.Module):
    """SpeechBrain ``BatchNorm1d`` wrapper (its parameters live under ``norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


class _Lin(nn.Module):
    """SpeechBrain ``Linear`` wrapper (its parameters live under ``w``)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.w = nn.Linear(n_in, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.w(x)


class CosineClassifier(nn.Module):
    """``ECAPA_TDNN.Classifier(lin_blocks=1)``: ``emb (B, d)`` -> cosines ``(B, C)``."""

    def __init__(self, dim: int, n_classes: int, lin_neurons: int = LIN_NEURONS) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Norm(dim), _Lin(dim, lin_neurons)])
        self.weight = nn.Parameter(nn.init.xavier_uniform_(
            self.blocks[1].w.weight.new_empty(n_classes, lin_neurons)))

    def forward(self, emb: Tensor) -> Tensor:
        x = emb
        for layer in self.blocks:
            x = layer(x)  # (B, d) -> (B, lin_neurons)
        return F.linear(F.normalize(x), F.normalize(self.weight))  # (B, C)


class SBConv2dClassifier(AudioClassifier):
    """See the module docstring. ``forward(mag (B,T,F)) -> (cosine logits (B,C), maps)``."""

    map_names = ("hcat",)
    temperature = TEMPERATURE

    def __init__(self, features: FeaturesConfig, n_classes: int, dim: int = 256,
                 lin_neurons: int = LIN_NEURONS) -> None:
        super().__init__()
        self.frontend = make_frontend(features, "log1p_mag")
        self.n_classes = n_classes
        self.encoder = Conv2dEncoderV2(dim)
        self.classifier = CosineClassifier(dim, n_classes, lin_neurons)
        self.map_channels = {"hcat": dim}

    def embed(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``x (B, T, F)`` log1p magnitude -> (embedding (B, d), {"hcat": (B, d, T', F')})."""
        hcat = self.encoder(x)  # (B, d, T', F')
        return hcat.mean(dim=(-1, -2)), {"hcat": hcat}

    def forward_features(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        emb, maps = self.embed(x)
        return self.classifier(emb), maps
