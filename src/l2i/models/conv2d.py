"""A compact 2-D conv classifier on log1p mel (fast enough to train on a laptop CPU).

Layout (``w = model.width``; shapes for 5 s at 16 kHz, hop 186 -> T = 431, 80 mels)::

    mag (B, T, F_stft) -> frontend -> x (B, T, 80) -> (B, 1, T, 80)
    norm0     BatchNorm over the 80 input bins (per-bin standardisation)
    block1    conv3x3 stride 2 -> BN -> ReLU -> conv3x3 -> BN -> ReLU
              1 -> w,             -> (B, w,  216, 40)
    block2-4  conv3x3 -> BN -> ReLU -> avg-pool -> conv3x3 -> BN -> ReLU
    block2    w -> 2w,  pool 2x2 -> (B, 2w, 108, 20)
    block3    2w -> 4w, pool 2x2 -> (B, 4w, 54, 10)
    block4    4w -> 8w, pool 1x2 -> (B, 8w, 54, 5)
    head      mean over frequency, max + mean over time -> (B, 8w)
              Linear(8w, embed_dim) -> ReLU -> dropout -> Linear(embed_dim, C)

Maps exposed to the interpreter: ``block1`` (B, w, ~T/2, F/2), ``block2`` (B, 2w, ~T/4, F/4),
``block3`` (B, 4w, ~T/8, F/8) and ``block4`` (B, 8w, ~T/8, F/16); psi and L-MAC read
``default_maps`` = ``block3``, ``block4`` (~93 ms time resolution) unless a recipe names others
(``psi.maps``: the early blocks keep finer time and frequency detail, issue 14). Pooling inside
each block (between its two convs) keeps the cost low: ~0.1 GMAC per 5 s clip for ``w = 12``.
"""

from __future__ import annotations

from torch import Tensor, nn

from l2i.config import FeaturesConfig
from l2i.models import AudioClassifier, input_batchnorm, make_frontend


class ConvBlock(nn.Module):
    """Two ``conv3x3 -> BN -> ReLU`` with average pooling ``pool`` (time, freq).

    ``pool_first``: pool between the two convs instead of after them, so the second (wider) conv
    runs at the pooled resolution: ~2x cheaper. ``stride_first``: no pooling, the first conv is
    strided by ``pool`` instead (no full-resolution activations at all, for the first block).
    ``(B, Ci, T, F) -> (B, Co, T', F')``.
    """

    def __init__(self, c_in: int, c_out: int, pool: tuple[int, int],
                 pool_first: bool = False, stride_first: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False,
                               stride=pool if stride_first else 1)
        if stride_first:
            pool, pool_first = (1, 1), True
        self.norm1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.pool = nn.AvgPool2d(pool) if pool != (1, 1) else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.pool_first = pool_first

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        if self.pool_first:
            x = self.pool(x)
        x = self.act(self.norm2(self.conv2(x)))
        return x if self.pool_first else self.pool(x)


class Conv2dClassifier(AudioClassifier):
    """See the module docstring. ``forward(mag (B,T,F_stft)) -> (logits (B,C), maps)``."""

    map_names = ("block1", "block2", "block3", "block4")
    default_maps = ("block3", "block4")  # what psi / L-MAC read when the recipe names none
    # channels-last on the CPU: 7.7 -> 6.2 ms per 5 s clip (w = 32, 1 thread, torch 2.13;
    # logits equal to 1e-7); CNN14 gains nothing measurable, so it keeps the default
    cpu_channels_last = True

    def __init__(self, features: FeaturesConfig, n_classes: int, input: str = "log1p_mel",
                 width: int = 32, embed_dim: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        if width < 1 or embed_dim < 1:
            raise ValueError(f"width and embed_dim must be positive, got {width}, {embed_dim}")
        self.frontend = make_frontend(features, input)
        n_in = features.n_freq if input == "log1p_mag" else features.n_mels
        self.n_classes = n_classes
        self.norm0 = nn.BatchNorm2d(n_in)
        w = width
        self.block1 = ConvBlock(1, w, (2, 2), stride_first=True)
        self.block2 = ConvBlock(w, 2 * w, (2, 2), pool_first=True)
        self.block3 = ConvBlock(2 * w, 4 * w, (2, 2), pool_first=True)
        self.block4 = ConvBlock(4 * w, 8 * w, (1, 2), pool_first=True)
        self.map_channels = {"block1": w, "block2": 2 * w, "block3": 4 * w, "block4": 8 * w}
        self.fc = nn.Linear(8 * w, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, n_classes)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Input ``x (B, T, F_in)`` -> (embedding (B, embed_dim), maps)."""
        x = input_batchnorm(x.unsqueeze(1), self.norm0)  # (B, 1, T, F)
        b1 = self.block1(x)  # (B, w, T/2, F/2)
        b2 = self.block2(b1)  # (B, 2w, T/4, F/4)
        b3 = self.block3(b2)  # (B, 4w, T/8, F/8)
        b4 = self.block4(b3)  # (B, 8w, T/8, F/16)
        h = b4.mean(dim=3)  # (B, 8w, T/8)
        h = h.amax(dim=2) + h.mean(dim=2)  # (B, 8w)
        emb = self.dropout(nn.functional.relu(self.fc(h)))  # (B, embed_dim)
        return emb, {"block1": b1, "block2": b2, "block3": b3, "block4": b4}

    def forward_features(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        emb, maps = self.embed(x)
        return self.head(emb), maps
