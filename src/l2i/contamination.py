"""Contaminated copies of the test clips for ``l2i evaluate`` (seeded; the input is never
modified). Every contaminated clip is then peak-normalised with ``x / (max|x| + eps)``:

- ``white_noise``: ``s + n`` with white Gaussian noise ``n`` at 0 dB SNR (equal power);
- ``mixtures``: ``0.8 s/||s|| + 0.2 n/||n||`` with ``n`` another TEST clip of a different class
  (the reference's OOD set, REFERENCE_RECIPE §7.3, built there from the validation fold);
- ``noise_folder``: ``s + n`` with ``n`` a clip of the noise corpus ``noise_folder`` at 0 dB.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from l2i.errors import ConfigError, DataError

CONTAMINATIONS = ("none", "white_noise", "mixtures", "noise_folder")
PEAK_EPS = 1e-8
MIX_WEIGHTS = (0.8, 0.2)  # reference OOD mixtures: 0.8 s/|s| + 0.2 n/|n|


def contaminate(wavs: np.ndarray, labels: np.ndarray, kind: str, seed: int,
                noise_folder: str | None = None,
                sample_rate: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A contaminated copy of the test clips (the input is never modified).

    Every contaminated clip is peak-normalised, ``x / (max|x| + eps)`` (the reference divided
    by the signed max, REFERENCE_RECIPE §10.12).

    Args:
        wavs: ``(N, S)`` float32 test clips.
        labels: ``(N,)`` int labels (``mixtures`` draws a partner of another class).
        kind: one of :data:`CONTAMINATIONS`.
        seed: seeds every random draw (same seed -> same set).
        noise_folder: the noise corpus for ``noise_folder``.
        sample_rate: Hz, needed by ``noise_folder``.
    Returns:
        ``(wavs (N, S) float32, partner (N,) int64 or None)``: ``partner[i]`` is the index of
        the clip mixed into clip ``i`` (``mixtures`` only).
    """
    from l2i.noise import NoiseBank, mix_at_snr, white_noise_like

    if kind not in CONTAMINATIONS:
        raise ConfigError(f"contamination must be one of {', '.join(CONTAMINATIONS)}, "
                          f"got {kind!r}")
    x = np.asarray(wavs, dtype=np.float32)
    if kind == "none":
        return x, None
    gen = torch.Generator().manual_seed(int(seed))
    clean = torch.from_numpy(np.ascontiguousarray(x))  # (N, S)
    partner = None
    if kind == "white_noise":
        out = mix_at_snr(clean, white_noise_like(clean, gen), 0.0)  # (N, S)
    elif kind == "mixtures":
        partner = draw_partners(np.asarray(labels), np.random.default_rng(seed))  # (N,)
        w_s, w_n = MIX_WEIGHTS
        mix = w_s * _unit_norm(clean) + w_n * _unit_norm(clean[partner])  # (N, S)
        out = mix / (mix.abs().amax(dim=1, keepdim=True) + PEAK_EPS)
    else:  # noise_folder
        if not noise_folder:
            raise ConfigError("contamination 'noise_folder' needs --noise_folder P (a folder of "
                              "audio files, e.g. WHAM! tr/)")
        bank = NoiseBank(noise_folder, int(sample_rate or 0), x.shape[1], seed)
        out = mix_at_snr(clean, bank.sample(x.shape[0], gen), 0.0)  # (N, S)
    return np.ascontiguousarray(out.numpy(), dtype=np.float32), partner


def draw_partners(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each clip, a random other clip of a different class. ``(N,)`` -> ``(N,)`` indices."""
    labels = np.asarray(labels)
    if np.unique(labels).size < 2:
        raise DataError("contamination 'mixtures' needs test clips of at least two classes "
                        "(each clip is mixed with a clip of another class)")
    u = rng.random(labels.shape[0])  # (N,) one uniform draw per clip
    out = np.empty(labels.shape[0], dtype=np.int64)
    for i, lab in enumerate(labels):  # index bookkeeping only, no signal math
        cands = np.flatnonzero(labels != lab)
        out[i] = cands[int(u[i] * cands.size)]
    return out


def _unit_norm(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Each row divided by its L2 norm. ``(N, S)``."""
    return x / (x.norm(dim=1, keepdim=True) + eps)


__all__ = ["contaminate", "draw_partners", "CONTAMINATIONS", "MIX_WEIGHTS"]
