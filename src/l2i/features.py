"""Spectral features: STFT / inverse STFT, magnitude, phase, log1p, mel filterbank.

Conventions: audio is ``(batch, samples)``; spectrograms are ``(batch, time, freq)`` as in the
reference recipe. Window and hop come from :class:`l2i.config.FeaturesConfig` (milliseconds turned
into samples), the window is zero-padded and centred inside ``n_fft`` and frames are centred
(``center=True``, zero padding), so ``T = 1 + samples // hop``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from l2i.config import FeaturesConfig


def window(cfg: FeaturesConfig, device: torch.device | None = None) -> Tensor:
    """The analysis window, periodic, ``(win_length,)``."""
    if cfg.window == "hamming":
        return torch.hamming_window(cfg.win_length, periodic=True, device=device)
    return torch.hann_window(cfg.win_length, periodic=True, device=device)  # Literal: hann


def n_frames(n_samples: int, cfg: FeaturesConfig) -> int:
    """Number of STFT frames for a clip of ``n_samples`` samples."""
    return 1 + n_samples // cfg.hop_length


def stft(wav: Tensor, cfg: FeaturesConfig) -> Tensor:
    """Complex STFT. ``wav (B, N)`` -> ``(B, T, F)`` complex, F = n_fft // 2 + 1."""
    squeeze = wav.dim() == 1
    if squeeze:
        wav = wav[None]
    spec = torch.stft(
        wav.float(), n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window=window(cfg, wav.device), center=True, pad_mode="constant", normalized=False,
        onesided=True, return_complex=True,
    )  # (B, F, T)
    spec = spec.transpose(1, 2)  # (B, T, F)
    return spec[0] if squeeze else spec


def istft(spec: Tensor, cfg: FeaturesConfig, length: int | None = None) -> Tensor:
    """Inverse of :func:`stft`. ``(B, T, F)`` complex -> ``(B, N)``; ``length`` trims/pads N.

    The same result as ``torch.istft`` with :func:`stft`'s settings (window-sum normalised
    overlap-add; tested to float rounding), written out because torch's overlap-adds the whole
    ``n_fft`` frame twice (signal and window envelope): 2.9 ms for a 5 s clip where this takes
    ~0.9 ms (1 thread, torch 2.13; docs/benchmarks.md "Explain time"). Only the window's
    ``win_length`` samples of each frame are non-zero; they are cut into hops and summed with
    shifts. Differentiable (a classifier given as code is re-synthesised through it).
    """
    squeeze = spec.dim() == 2
    if squeeze:
        spec = spec[None]
    n_fft, hop, win = cfg.n_fft, cfg.hop_length, cfg.win_length
    n_frames_ = spec.shape[1]
    left = (n_fft - win) // 2  # torch centres a short window inside n_fft
    w = window(cfg, spec.device)  # (win,)
    frames = torch.fft.irfft(spec, n=n_fft, dim=-1)[..., left:left + win] * w  # (B, T, win)
    y = _overlap_add(frames, hop)  # (B, >= (T - 1) hop + win)
    env = _overlap_add((w * w).expand(1, n_frames_, win), hop)  # (1, same)
    expected = n_fft + hop * (n_frames_ - 1)  # torch.istft's full length
    start = n_fft // 2  # center=True
    end = start + length if length is not None else expected - n_fft // 2
    lo, hi = start - left, min(end, expected) - left  # positions in y (offset by left)
    y = _fit(y, lo, hi)
    env = _fit(env, lo, hi)
    if env.numel() and bool(env.abs().min() < 1e-11):
        raise ValueError(f"istft: the {cfg.window} window ({win} samples, hop {hop}) sums to "
                         f"zero somewhere in the {hi - lo} output samples: ask for a length "
                         "the frames cover, and use a hop shorter than the window")
    y = y / env
    if end > expected:
        y = torch.nn.functional.pad(y, (0, end - expected))
    return y[0] if squeeze else y


def _overlap_add(frames: Tensor, hop: int) -> Tensor:
    """Sum of ``frames (B, T, L)`` placed ``hop`` samples apart -> ``(B, (T - 1 + m) hop)``,
    ``m = ceil(L / hop)``: each frame cut into ``m`` hops, hop ``i`` of frame ``t`` added to
    output hop ``t + i``."""
    b, t, n = frames.shape
    m = -(-n // hop)
    pieces = torch.nn.functional.pad(frames, (0, m * hop - n)).reshape(b, t, m, hop)
    out = sum(torch.nn.functional.pad(pieces[:, :, i], (0, 0, i, m - 1 - i))
              for i in range(m))  # (B, T + m - 1, hop)
    return out.reshape(b, (t + m - 1) * hop)  # type: ignore[union-attr]


def _fit(y: Tensor, lo: int, hi: int) -> Tensor:
    """``y[:, lo:hi]`` with zeros where ``[lo, hi)`` runs past either end of ``y (B, N)``."""
    pad_lo, pad_hi = max(0, -lo), max(0, hi - y.shape[1])
    if pad_lo or pad_hi:
        y = torch.nn.functional.pad(y, (pad_lo, pad_hi))
    return y[:, lo + pad_lo:hi + pad_lo]


def magnitude(spec: Tensor) -> Tensor:
    """``|X|`` of a complex spectrogram, same shape, real (hypot: 2x faster than abs on CPU)."""
    return torch.hypot(spec.real, spec.imag)


def phase(spec: Tensor) -> Tensor:
    """Phase in radians of a complex spectrogram, same shape."""
    return torch.angle(spec)


def log1p_magnitude(spec: Tensor) -> Tensor:
    """``log(1 + |X|)``, the NMF target and interpreter domain, ``(B, T, F)``."""
    return torch.log1p(magnitude(spec))


def with_phase(mag: Tensor, phase_: Tensor) -> Tensor:
    """Complex spectrogram from a magnitude and a phase (radians), same shape."""
    return torch.polar(mag.float(), phase_.float())


def hz_to_mel(hz: Tensor | float) -> Tensor:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: Tensor | float) -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(cfg: FeaturesConfig) -> Tensor:
    """Triangular HTK-mel filterbank, ``(F, n_mels)``, applied as ``mag @ fb``.

    ``n_mels + 2`` points equally spaced in mel between ``f_min`` and ``f_max``; filter ``m``
    rises from point ``m`` to ``m + 1`` and falls to ``m + 2`` (peak 1, no area normalisation).
    """
    f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
    if not 0 <= cfg.f_min < f_max <= cfg.sample_rate / 2:
        raise ValueError(f"mel range must satisfy 0 <= f_min < f_max <= sample_rate/2, "
                         f"got {cfg.f_min}..{f_max} at {cfg.sample_rate} Hz")
    freqs = torch.linspace(0.0, cfg.sample_rate / 2, cfg.n_freq, dtype=torch.float64)  # (F,)
    pts = mel_to_hz(torch.linspace(float(hz_to_mel(cfg.f_min)), float(hz_to_mel(f_max)),
                                   cfg.n_mels + 2, dtype=torch.float64))  # (n_mels + 2,)
    lo, mid, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]  # (n_mels, 1) each
    rise = (freqs[None] - lo) / (mid - lo)  # (n_mels, F)
    fall = (hi - freqs[None]) / (hi - mid)
    fb = torch.clamp(torch.minimum(rise, fall), min=0.0)  # (n_mels, F)
    return fb.T.contiguous().float()  # (F, n_mels)


def speechbrain_mel_filterbank(cfg: FeaturesConfig) -> Tensor:
    """SpeechBrain's frozen triangular ``Filterbank`` (``log_mel=False``), ``(F, n_mels)``.

    Same HTK mel points as :func:`mel_filterbank`, but each triangle is symmetric around its
    centre ``hz[m + 1]`` with half-width ``hz[m + 1] - hz[m]`` (the distance to the *lower*
    point), over the grid ``linspace(0, sample_rate // 2, F)``, in float32 as SpeechBrain
    computes it: what SpeechBrain's CNN14 (``fpaissan/r``) was trained on (REFERENCE_RECIPE §2.2).
    """
    f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
    mel = torch.linspace(float(hz_to_mel(cfg.f_min)), float(hz_to_mel(f_max)), cfg.n_mels + 2)
    hz = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # (n_mels + 2,) float32
    band = (hz[1:] - hz[:-1])[:-1, None]  # (n_mels, 1)
    centre = hz[1:-1, None]
    freqs = torch.linspace(0, cfg.sample_rate // 2, cfg.n_freq)[None]  # (1, F)
    slope = (freqs - centre) / band  # (n_mels, F)
    fb = torch.clamp(torch.minimum(slope + 1.0, 1.0 - slope), min=0.0)
    return fb.T.contiguous()  # (F, n_mels)


MEL_KINDS = {"log1p_mel": mel_filterbank, "log1p_mel_sb": speechbrain_mel_filterbank}
KINDS = (*MEL_KINDS, "log1p_mag")


class Frontend(nn.Module):
    """Classifier input from a linear magnitude spectrogram.

    ``kind='log1p_mel'``: ``log1p(|X| @ mel_fb)`` -> ``(B, T, n_mels)``;
    ``kind='log1p_mel_sb'``: the same with SpeechBrain's filterbank
    (:func:`speechbrain_mel_filterbank`, for SpeechBrain's pretrained CNN14);
    ``kind='log1p_mag'``: ``log1p(|X|)`` -> ``(B, T, F)``. Input ``mag (B, T, F)``.
    Taking the magnitude (not the waveform) lets a mask on ``|X|`` feed the classifier directly.
    """

    def __init__(self, cfg: FeaturesConfig, kind: str = "log1p_mel") -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"classifier input must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        fb = MEL_KINDS[kind](cfg) if kind in MEL_KINDS else torch.empty(0)
        self.register_buffer("fb", fb, persistent=False)

    @property
    def n_out(self) -> int:
        return self.fb.shape[1] if self.kind in MEL_KINDS else -1

    def forward(self, mag: Tensor) -> Tensor:
        if self.kind in MEL_KINDS:
            return torch.log1p(mag @ self.fb.to(mag.dtype))  # (B, T, n_mels)
        return torch.log1p(mag)  # (B, T, F)


def features_match(a: FeaturesConfig | dict, b: FeaturesConfig | dict) -> list[str]:
    """Names of the STFT settings on which two features configs disagree (empty = compatible)."""
    da = a if isinstance(a, dict) else a.__dict__
    db = b if isinstance(b, dict) else b.__dict__
    keys = ("sample_rate", "n_fft", "win_ms", "hop_ms", "window")
    out = []
    for k in keys:
        va, vb = da.get(k), db.get(k)
        if isinstance(va, float) or isinstance(vb, float):
            if va is None or vb is None or not math.isclose(float(va), float(vb), rel_tol=1e-6):
                out.append(f"{k}: {va} vs {vb}")
        elif va != vb:
            out.append(f"{k}: {va} vs {vb}")
    return out
