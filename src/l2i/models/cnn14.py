"""CNN14 (PANNs, Kong et al. 2020), as in SpeechBrain's ``lobes/models/Cnn14.py``.

Layout (shapes for T = 431 frames, 80 mels)::

    mag (B, T, F_stft) -> frontend (log1p mel) -> x (B, T, 80) -> (B, 1, T, 80)
    norm0        BatchNorm2d(80) over the mel bins
    conv_block1  [conv3x3 (no bias) -> BN -> ReLU] x 2, 1 -> 64,      avg-pool 2x2 -> (64, 215, 40)
    conv_block2  64 -> 128,    2x2 -> (128, 107, 20)
    conv_block3  128 -> 256,   2x2 -> (256, 53, 10)     map "block3"
    conv_block4  256 -> 512,   2x2 -> (512, 26, 5)      map "block4"
    conv_block5  512 -> 1024,  2x2 -> (1024, 13, 2)     map "block5"
    conv_block6  1024 -> 2048, 1x1 -> (2048, 13, 2)     map "block6"
                 dropout p=0.2 after every block (training only)
    head         mean over frequency, max + mean over time -> (B, 2048)
                 [fc1 Linear(2048, embed_dim) -> ReLU -> dropout]  only when embed_dim != 2048
                 Linear(., C) -> logits

``embed_dim == 2048`` (the default for this arch in the recipes) gives exactly the SpeechBrain
``Cnn14`` embedding followed by ``Linear(2048, C)`` -- the L2I-CNN14 classifier; the maps are the
reference's ``x4_out, x3_out, x2_out, x1_out`` (block3..block6). Parameter names follow
SpeechBrain (``norm0``, ``conv_block{k}.conv{1,2}``, ``conv_block{k}.norm{1,2}``) so its
checkpoints load directly (:mod:`l2i.models.pretrained`). ``channels`` (not in the config) makes
narrower copies of the same layout, for tests.
"""

from __future__ import annotations

from torch import Tensor, nn

from l2i.config import FeaturesConfig
from l2i.models import AudioClassifier, input_batchnorm, make_frontend

CHANNELS = (64, 128, 256, 512, 1024, 2048)
EMBED = 2048


class Cnn14ConvBlock(nn.Module):
    """``[conv3x3 -> BN -> ReLU] x 2`` then average pooling ``pool`` (time, freq).

    ``norm``: the BatchNorms' attribute prefix, ``norm`` (SpeechBrain: ``norm1``, ``norm2``) or
    ``bn`` (PANNs: ``bn1``, ``bn2``), so either's state dict loads with its own key names.
    """

    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int], norm: str = "norm") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        setattr(self, f"{norm}1", nn.BatchNorm2d(c_out))
        setattr(self, f"{norm}2", nn.BatchNorm2d(c_out))
        self._norm = norm
        self.pool_size = pool
        nn.init.xavier_uniform_(self.conv1.weight)
        nn.init.xavier_uniform_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        norm1, norm2 = getattr(self, f"{self._norm}1"), getattr(self, f"{self._norm}2")
        x = nn.functional.relu_(norm1(self.conv1(x)))
        x = nn.functional.relu_(norm2(self.conv2(x)))
        if self.pool_size != (1, 1):
            x = nn.functional.avg_pool2d(x, self.pool_size)
        return x


class CNN14(AudioClassifier):
    """See the module docstring. ``forward(mag (B,T,F_stft)) -> (logits (B,C), maps)``."""

    map_names = ("block3", "block4", "block5", "block6")

    def __init__(self, features: FeaturesConfig, n_classes: int, input: str = "log1p_mel",
                 embed_dim: int = EMBED, dropout: float = 0.2,
                 channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        if len(channels) != 6:
            raise ValueError(f"CNN14 has 6 blocks, got channels {channels}")
        self.channels = tuple(channels)
        top = self.channels[-1]
        self.frontend = make_frontend(features, input)
        n_in = features.n_freq if input == "log1p_mag" else features.n_mels
        self.n_classes = n_classes
        self.norm0 = nn.BatchNorm2d(n_in)
        c_in = 1
        for k, c_out in enumerate(self.channels, start=1):
            pool = (1, 1) if k == 6 else (2, 2)
            setattr(self, f"conv_block{k}", Cnn14ConvBlock(c_in, c_out, pool))
            c_in = c_out
        self.map_channels = {f"block{k}": self.channels[k - 1] for k in range(3, 7)}
        self.drop = nn.Dropout(dropout)
        if embed_dim != top:
            self.fc1: nn.Module = nn.Sequential(nn.Linear(top, embed_dim), nn.ReLU(),
                                                nn.Dropout(dropout))
        else:
            self.fc1 = nn.Identity()
        self.classifier = nn.Linear(embed_dim, n_classes)

    def embed(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Input ``x (B, T, F_in)`` -> (embedding (B, 2048), maps block3..block6)."""
        x = input_batchnorm(x.unsqueeze(1), self.norm0)  # (B, 1, T, F)
        maps: dict[str, Tensor] = {}
        for k in range(1, 7):
            x = getattr(self, f"conv_block{k}")(x)  # (B, C_k, T_k, F_k)
            if k >= 3:
                maps[f"block{k}"] = x
            x = self.drop(x)
        h = x.mean(dim=3)  # (B, 2048, T/16)
        emb = h.amax(dim=2) + h.mean(dim=2)  # (B, 2048)
        return emb, maps

    def forward_features(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        emb, maps = self.embed(x)
        return self.classifier(self.fc1(self.drop(emb))), maps
