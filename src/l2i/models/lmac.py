"""The L-MAC decoder (Paissan et al., ICML 2024): classifier hidden maps -> mask logits.

L-MAC ("Listenable Maps for Audio Classifiers") learns a decoder on the frozen classifier's
hidden maps whose sigmoid is a mask ``M (B, T, F)`` on the linear STFT magnitude. Layout
(``h = hidden``; conv2d shapes for T = 431 frames, ``w`` its width)::

    maps {name: (B, C_i, T_i, F_i)}    e.g. block3 (4w, 54, 10), block4 (8w, 54, 5)
    lateral   1x1 conv C_i -> h per map, bilinear resize to the finest map (T0, F0), sum
    up x n_up [x2 nearest upsampling -> conv3x3 -> GroupNorm -> ReLU]  -> (B, h, 4 T0, 4 F0)
    out       1x1 conv h -> 1                                         -> (B, 4 T0, 4 F0)
    freq      Linear(4 F0, F_stft): the maps' (mel-ordered) bins -> the STFT bins (learnt)
    time      linear interpolation to the input's T frames            -> (B, T, F_stft) logits

SpeechBrain's CNN14 decoder (``CNN14PSI_stft``) uses transposed convolutions to the same end;
this lighter one fits any map set (conv2d, CNN14) and trains on a CPU.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from l2i.config import LMACConfig


class LMACDecoder(nn.Module):
    """``forward(maps, n_frames) -> mask logits (B, n_frames, n_freq)``; the mask is their
    sigmoid.

    Args:
        map_channels: ``{name: C_i}`` of the maps the decoder reads (in this order).
        map_bins: ``{name: F_i}`` frequency bins of each map.
        n_freq: STFT bins of the output (``n_fft // 2 + 1``).
        cfg: :class:`~l2i.config.LMACConfig` (``hidden``, ``n_up``).
    """

    def __init__(self, map_channels: dict[str, int], map_bins: dict[str, int], n_freq: int,
                 cfg: LMACConfig) -> None:
        super().__init__()
        if not map_channels:
            raise ValueError("the L-MAC decoder needs at least one hidden map")
        if cfg.hidden < 1 or cfg.n_up < 0:
            raise ValueError(f"lmac.hidden must be >= 1 and lmac.n_up >= 0, got {cfg.hidden}, "
                             f"{cfg.n_up}")
        self.map_names = list(map_channels)
        self.map_channels = dict(map_channels)
        self.map_bins = {k: int(map_bins[k]) for k in self.map_names}
        self.n_freq = int(n_freq)
        h = int(cfg.hidden)
        self.lateral = nn.ModuleDict({k: nn.Conv2d(c, h, 1) for k, c in map_channels.items()})
        self.up = nn.ModuleList(nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(h, h, 3, padding=1),
            nn.GroupNorm(min(8, h), h), nn.ReLU()) for _ in range(cfg.n_up))
        self.out = nn.Conv2d(h, 1, 1)
        f0 = max(self.map_bins.values()) * 2 ** cfg.n_up
        self.freq = nn.Linear(f0, self.n_freq)

    def forward(self, maps: dict[str, Tensor], n_frames: int) -> Tensor:
        """``maps {name: (B, C_i, T_i, F_i)}`` -> logits ``(B, n_frames, n_freq)``."""
        t0 = max(maps[k].shape[2] for k in self.map_names)
        f0 = max(self.map_bins.values())
        x = None
        for k in self.map_names:
            y = self.lateral[k](maps[k].float())  # (B, h, T_i, F_i)
            if y.shape[2:] != (t0, f0):
                y = F.interpolate(y, size=(t0, f0), mode="bilinear", align_corners=False)
            x = y if x is None else x + y  # (B, h, T0, F0)
        for block in self.up:
            x = block(x)  # (B, h, 2T, 2F)
        x = self.freq(self.out(x)[:, 0])  # (B, T', n_freq)
        x = F.interpolate(x.transpose(1, 2), size=int(n_frames), mode="linear",
                          align_corners=False)  # (B, n_freq, T)
        return x.transpose(1, 2)  # (B, T, n_freq)


__all__ = ["LMACDecoder"]
