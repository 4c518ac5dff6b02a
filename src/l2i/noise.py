"""Background noise: a corpus of noise files (e.g. WHAM!'s ``tr/``) and mixing at an SNR.

L2I_SPEC §1: each training clip may be mixed with a random noise clip at 0 dB SNR (equal
energy over the whole clip), cropped at a random offset or looped to the clip length, then
peak-normalised. Unlike the reference, the peak is ``max|x|`` (not the signed max, which can be
negative or tiny) and the noise offset is random (the reference always takes the first 5 s).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from l2i.audio import PEAK_EPS, load_audio
from l2i.errors import DataError

NOISE_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class NoiseBank:
    """Random noise excerpts from every audio file under ``folder`` (recursive).

    Files are decoded, mixed to mono and resampled to ``sample_rate`` on first use and kept in
    a bounded in-memory cache (``max_cached`` files). ``sample`` returns excerpts of
    ``n_samples`` samples: a random offset in a longer file, a shorter file looped from a random
    start. Draws are reproducible from ``seed`` (or from the generator passed to ``sample``).
    """

    def __init__(self, folder: str | os.PathLike, sample_rate: int, n_samples: int,
                 seed: int = 0, max_cached: int = 256) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"noise folder {folder} not found: give a folder of noise audio "
                            f"files ({', '.join(NOISE_EXTENSIONS)})")
        self.files = sorted(p for p in folder.rglob("*")
                            if p.suffix.lower() in NOISE_EXTENSIONS and p.is_file()
                            and not p.name.startswith("."))
        if not self.files:
            raise DataError(f"noise folder {folder} holds no audio files "
                            f"({', '.join(NOISE_EXTENSIONS)}), searched recursively: point "
                            "the noise folder at a corpus such as WHAM!'s tr/")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.folder = folder
        self.sample_rate = int(sample_rate)
        self.n_samples = int(n_samples)
        self.max_cached = max_cached
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._gen = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return len(self.files)

    def clip(self, i: int) -> np.ndarray:
        """File ``i`` decoded at ``sample_rate``, mono, un-normalised, ``(S_i,)``."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        x = load_audio(self.files[i], self.sample_rate, None, normalize="none")
        self._cache[i] = x
        if len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return x

    def sample(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """``batch`` noise excerpts, ``(B, n_samples)`` float32 (CPU)."""
        gen = generator if generator is not None else self._gen
        picks = torch.randint(len(self.files), (batch,), generator=gen).tolist()
        u = torch.rand(batch, generator=gen).tolist()
        out = np.empty((batch, self.n_samples), np.float32)  # (B, N)
        for b, (i, r) in enumerate(zip(picks, u)):
            out[b] = excerpt(self.clip(i), self.n_samples, r)
        return torch.from_numpy(out)


def excerpt(x: np.ndarray, n: int, u: float) -> np.ndarray:
    """``n`` samples of ``x (S,)`` starting at fraction ``u`` in [0, 1) of the possible offsets.

    ``S >= n``: ``x[o : o + n]`` with ``o = floor(u * (S - n + 1))``. ``S < n``: ``x`` looped
    (tiled) and read from offset ``floor(u * S)``.
    """
    s = x.shape[0]
    if s == 0:
        return np.zeros(n, np.float32)
    if s >= n:
        o = min(int(u * (s - n + 1)), s - n)
        return x[o:o + n]
    o = min(int(u * s), s - 1)
    reps = -(-(o + n) // s)  # ceil
    return np.tile(x, reps)[o:o + n]


def mix_at_snr(clean: Tensor, noise: Tensor, snr_db: Tensor | float,
               eps: float = PEAK_EPS) -> Tensor:
    """Mix ``clean (B, N)`` with ``noise (B, N)`` at ``snr_db`` (scalar or ``(B,)``) dB.

    The noise is scaled per example so that ``sum(clean^2) / sum((g * noise)^2) = 10^(snr/10)``
    over the whole clip (0 dB = equal energy), then the mix is peak-normalised,
    ``x / (max|x| + eps)``. A silent noise adds nothing; a silent clean clip gets no noise.
    """
    clean, noise = clean.float(), noise.to(clean.device).float()
    snr = torch.as_tensor(snr_db, dtype=clean.dtype, device=clean.device)
    snr = snr.expand(clean.shape[0]) if snr.dim() == 0 else snr  # (B,)
    e_clean = clean.pow(2).sum(-1)  # (B,)
    e_noise = noise.pow(2).sum(-1)  # (B,)
    gain = torch.sqrt(e_clean / (e_noise * 10.0 ** (snr / 10.0)).clamp_min(1e-20))  # (B,)
    gain = torch.where(e_noise > 0, gain, torch.zeros_like(gain))
    mix = clean + gain[:, None] * noise  # (B, N)
    return mix / (mix.abs().amax(dim=-1, keepdim=True) + eps)


def mix_within_batch(wav: Tensor, prob: float, snr_db: list[float],
                     generator: torch.Generator | None = None) -> Tensor:
    """A ``prob`` share of the clips ``(B, S)`` mixed with another clip of the same batch.

    The partner of clip ``i`` is clip ``(i - shift) mod B``, one random ``shift`` in ``1..B-1``
    per batch (never the clip itself); each mix has its own SNR drawn uniformly in
    ``[snr_db[0], snr_db[-1]]`` dB and is peak-normalised (:func:`mix_at_snr`), as ``l2i
    evaluate``'s mixtures are. Clips not drawn, and a batch of one clip, are returned as they
    are. Returns ``(B, S)``.
    """
    B = wav.shape[0]
    if B < 2 or prob <= 0:
        return wav
    shift = int(torch.randint(1, B, (1,), generator=generator))
    return mix_share(wav, wav.roll(shift, dims=0), prob, snr_db, generator)


def mix_share(clean: Tensor, other: Tensor, prob: float, snr_db: list[float],
              generator: torch.Generator | None = None) -> Tensor:
    """A ``prob`` share of ``clean (B, S)`` mixed with ``other (B, S)`` (:func:`mix_at_snr`), each
    at an SNR drawn uniformly in ``[snr_db[0], snr_db[-1]]`` dB; the rest returned as is.
    Draws the ``B`` SNRs, then the ``B`` keep-or-not draws, from ``generator``."""
    B = clean.shape[0]
    lo, hi = float(snr_db[0]), float(snr_db[-1])
    snr = lo + (hi - lo) * torch.rand(B, generator=generator)  # (B,)
    mixed = mix_at_snr(clean, other, snr.to(clean))  # (B, S)
    keep = torch.rand(B, generator=generator) < prob  # (B,)
    return torch.where(keep.to(clean.device)[:, None], mixed, clean)


def white_noise_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise with the shape, dtype and device of ``x``."""
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    return noise.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)

