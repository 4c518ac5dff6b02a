"""A procedural sound-event dataset with ground truth, in the ESC-50 layout.

Each clip holds ONE event of its class (duration 0.4-1.5 s, random onset) over coloured
background noise (between pink, 1/f, and brown, 1/f^2) at a random SNR. A class is a
time-frequency pattern (chirps, harmonic tones, a modulated noise band, click train, vowel,
FM warble, siren, tone pips, hiss) with class-consistent random jitter of its parameters, so a
small CNN separates the classes while the event stays localised in time AND frequency.

Written to ``OUT``::

    audio/{fold}-{src}-{take}-{target}.wav      PCM_16, mono, ``sample_rate`` Hz, ``duration_s``
    meta/esc50.csv   filename,fold,target,category,esc10,src_file,take
    meta/events.csv  filename,onset_s,offset_s,f_low_hz,f_high_hz
    events/{same filename}.wav                   the event alone (mix - event = background)
    config.yaml      the resolved SynthRecipe

SNR is the power of the event over its own span divided by the power of the background over
the whole clip (0 dB = equal mean power while the event sounds). The band ``[f_low_hz,
f_high_hz]`` holds the event's energy (> 95 % of it on the STFT grid, a unit test checks it).
Two ground truths: :func:`event_mask` (the time x band rectangle, any STFT grid) and
:func:`ideal_mask` (the ideal binary mask: cells where the event outweighs the background,
inside the rectangle), the tighter one for scoring localisation of thin patterns (chirps).
Frequencies are designed for 16 kHz and scaled by ``min(sample_rate, 16000) / 16000`` below.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2i.audio import write_wav
from l2i.config import FeaturesConfig, SynthRecipe, save_config
from l2i.errors import ConfigError, DataError
from l2i.fileio import write_csv

EVENT_MIN_S = 0.4
EVENT_MAX_S = 1.5
FADE_S = 0.01
BAND_PAD_HZ = 100.0  # > the main-lobe half-width of a 23 ms window (86 Hz)
SRC_BASE = 100000


@dataclass(frozen=True)
class Event:
    """Ground truth of one clip's event: time span (s) and frequency band (Hz)."""

    filename: str
    onset_s: float
    offset_s: float
    f_low_hz: float
    f_high_hz: float


# --------------------------------------------------------------------------- class generators
# Each generator: (t (n,) seconds, rng, s = frequency scale, sr) -> (signal (n,), f_lo, f_hi)
Gen = Callable[[np.ndarray, np.random.Generator, float, int], tuple[np.ndarray, float, float]]


def _sweep(t: np.ndarray, f0: float, f1: float) -> np.ndarray:
    """Exponential sweep f0 -> f1 over the span of ``t`` (phase-continuous)."""
    dur = max(float(t[-1]), 1e-6)
    k = math.log(f1 / f0) / dur
    return np.sin(2 * np.pi * f0 * (np.expm1(k * t)) / k)


def _phase_from_freq(f: np.ndarray, sr: int) -> np.ndarray:
    """Sinusoid whose instantaneous frequency is ``f (n,)`` Hz."""
    return np.sin(2 * np.pi * np.cumsum(f) / sr)


def _band_noise(n: int, lo: float, hi: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """White noise brick-wall filtered to [lo, hi] Hz in the frequency domain, ``(n,)``."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec[(freqs < lo) | (freqs > hi)] = 0.0
    return np.fft.irfft(spec, n)


def _up_chirp(t, rng, s, sr):
    f0, f1 = rng.uniform(300, 500) * s, rng.uniform(2000, 3000) * s
    return _sweep(t, f0, f1), f0, f1


def _down_chirp(t, rng, s, sr):
    f0, f1 = rng.uniform(2000, 3000) * s, rng.uniform(300, 500) * s
    return _sweep(t, f0, f1), f1, f0


def _harmonic(t, rng, s, sr):
    f0 = rng.uniform(200, 300) * s
    k = np.arange(1, 6)[:, None]  # (5, 1)
    x = (np.sin(2 * np.pi * f0 * k * t[None] + rng.uniform(0, 2 * np.pi, (5, 1))) / k).sum(0)
    return x, f0, 5 * f0


def _am_noise(t, rng, s, sr):
    fc, bw = rng.uniform(3500, 4500) * s, 400 * s
    rate = rng.uniform(6, 10)
    x = _band_noise(t.size, fc - bw, fc + bw, sr, rng) * (1 - 0.9 * np.cos(2 * np.pi * rate * t))
    return x, fc - bw, fc + bw


def _clicks(t, rng, s, sr):
    fc, rate, sigma = rng.uniform(5500, 6500) * s, rng.uniform(18, 26), 0.001
    half = int(5 * sigma * sr)
    d = np.arange(-half, half + 1) / sr  # (2 half + 1,) seconds around a click centre
    burst = np.exp(-0.5 * (d / sigma) ** 2) * np.cos(2 * np.pi * fc * d)
    x = np.zeros(t.size + 2 * half)
    for c in np.round(np.arange(0.02, t[-1] - 0.01, 1.0 / rate) * sr).astype(int):
        x[c:c + burst.size] += burst  # centred at sample c (x is offset by half)
    return x[half:half + t.size], fc - 560, fc + 560  # 3.5 spectral sigmas (159 Hz)


def _vowel(t, rng, s, sr):
    f0 = rng.uniform(110, 150) * s
    formants = np.array([rng.uniform(600, 800), rng.uniform(1000, 1300),
                         rng.uniform(2300, 2600)]) * s  # (3,)
    k = np.arange(1, int(3000 * s // f0) + 1)  # harmonics up to 3 kHz * s
    fk = k * f0  # (H,)
    amp = np.exp(-0.5 * ((fk[:, None] - formants[None]) / (100 * s)) ** 2).sum(1)  # (H,)
    amp += 0.05
    x = (amp[:, None] * np.sin(2 * np.pi * fk[:, None] * t[None]
                               + rng.uniform(0, 2 * np.pi, (k.size, 1)))).sum(0)
    return x, f0, fk[-1]


def _warble(t, rng, s, sr):
    fc, dev, rate = rng.uniform(1400, 1800) * s, rng.uniform(150, 250) * s, rng.uniform(5, 8)
    return _phase_from_freq(fc + dev * np.sin(2 * np.pi * rate * t), sr), fc - dev, fc + dev


def _siren(t, rng, s, sr):
    fa = rng.uniform(900, 1000) * s
    fb = fa * rng.uniform(1.3, 1.4)
    period = rng.uniform(0.15, 0.25)
    f = np.where((t // period) % 2 == 0, fa, fb)
    return _phase_from_freq(f, sr), fa, fb


def _pips(t, rng, s, sr):
    f, on = rng.uniform(2800, 3200) * s, rng.uniform(0.03, 0.04)
    ramp = np.clip(np.minimum(t % (2 * on), on - t % (2 * on)) / 0.005, 0, 1)
    gate = np.where(t % (2 * on) < on, np.sin(0.5 * np.pi * ramp) ** 2, 0.0)
    return gate * np.sin(2 * np.pi * f * t), f - 150 * s, f + 150 * s


def _hiss(t, rng, s, sr):
    lo = rng.uniform(6200, 6600) * s
    hi = lo + 800 * s
    return _band_noise(t.size, lo, hi, sr, rng), lo, hi


CLASSES: dict[str, Gen] = {
    "up_chirp": _up_chirp,
    "down_chirp": _down_chirp,
    "harmonic_tone": _harmonic,
    "am_noise_band": _am_noise,
    "click_train": _clicks,
    "vowel": _vowel,
    "fm_warble": _warble,
    "two_tone_siren": _siren,
    "tone_pips": _pips,
    "hiss": _hiss,
}
CLASS_NAMES = list(CLASSES)


# --------------------------------------------------------------------------- one clip
def coloured_noise(n: int, exponent: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (1 pink, 2 brown), unit RMS, ``(n,)``."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec *= 1.0 / np.maximum(freqs, 20.0) ** (exponent / 2)
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def make_clip(target: int, sr: int, duration_s: float, snr_db: tuple[float, float],
              rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, float, float, float, float]:
    """One clip of class ``target``.

    Returns ``(x (N,), event (N,), onset_s, offset_s, f_lo, f_hi)``: the mix (peak 0.9) and the
    event alone at the same scale (``x - event`` is the background), both float32.
    """
    n = int(round(duration_s * sr))
    s = min(sr, 16000) / 16000.0
    dur = rng.uniform(EVENT_MIN_S, min(EVENT_MAX_S, 0.8 * duration_s))
    n_e = max(int(round(dur * sr)), 8)
    start = int(rng.integers(0, n - n_e + 1))
    t = np.arange(n_e) / sr  # (n_e,)
    event, f_lo, f_hi = CLASSES[CLASS_NAMES[target]](t, rng, s, sr)
    fade = np.clip(np.minimum(t, t[-1] - t) / FADE_S, 0, 1)
    event = event * np.sin(0.5 * np.pi * fade) ** 2
    event /= np.sqrt(np.mean(event ** 2)) + 1e-12  # unit power over the event span
    snr = rng.uniform(*snr_db)
    x = coloured_noise(n, rng.uniform(1.0, 2.0), sr, rng) * 10 ** (-snr / 20)
    clean = np.zeros(n)
    clean[start:start + n_e] = event
    x += clean
    gain = 0.9 / (np.abs(x).max() + 1e-12)
    f_lo = max(0.0, f_lo * 0.98 - BAND_PAD_HZ)
    f_hi = min(sr / 2, f_hi * 1.02 + BAND_PAD_HZ)
    return ((gain * x).astype(np.float32), (gain * clean).astype(np.float32), start / sr,
            (start + n_e) / sr, float(f_lo), float(f_hi))


# --------------------------------------------------------------------------- dataset
def synthesize_dataset(cfg: SynthRecipe) -> str:
    """Write the dataset described by ``cfg`` (see module docstring); return a summary line."""
    n_classes = cfg.n_classes
    _check(cfg, n_classes)
    t0 = time.perf_counter()
    out = Path(cfg.output_folder)
    audio_dir, meta_dir, event_dir = out / "audio", out / "meta", out / "events"
    for d in (audio_dir, meta_dir, event_dir):
        d.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([cfg.seed, 0xF01D])
    meta_rows, event_rows = [], []
    idx = 0
    for target in range(n_classes):
        folds = order.permutation(cfg.n_per_class) % cfg.n_folds + 1  # balanced folds
        for j in range(cfg.n_per_class):
            rng = np.random.default_rng([cfg.seed, target, j])
            x, clean, on, off, lo, hi = make_clip(target, cfg.sample_rate, cfg.duration_s,
                                                  (cfg.snr_db[0], cfg.snr_db[-1]), rng)
            fold, src = int(folds[j]), SRC_BASE + idx
            name = f"{fold}-{src}-A-{target}.wav"
            write_wav(audio_dir / name, x, cfg.sample_rate)
            write_wav(event_dir / name, clean, cfg.sample_rate)
            meta_rows.append([name, fold, target, CLASS_NAMES[target], True, src, "A"])
            event_rows.append([name, f"{on:.6f}", f"{off:.6f}", f"{lo:.2f}", f"{hi:.2f}"])
            idx += 1
    keep = {r[0] for r in meta_rows}
    if (meta_dir / "events.csv").exists():  # clips of an earlier, larger run
        for stale in [*audio_dir.glob("*-A-*.wav"), *event_dir.glob("*-A-*.wav")]:
            if stale.name not in keep:
                stale.unlink()
    _write_csv(meta_dir / "esc50.csv",
               ["filename", "fold", "target", "category", "esc10", "src_file", "take"], meta_rows)
    _write_csv(meta_dir / "events.csv",
               ["filename", "onset_s", "offset_s", "f_low_hz", "f_high_hz"], event_rows)
    save_config(cfg, out / "config.yaml")
    secs = time.perf_counter() - t0
    return (f"synth: wrote {idx} clips ({n_classes} classes x {cfg.n_per_class}, "
            f"{cfg.n_folds} folds, {cfg.duration_s:g} s at {cfg.sample_rate} Hz, SNR "
            f"{cfg.snr_db[0]:g}..{cfg.snr_db[-1]:g} dB) to {out} in {secs:.1f} s\n"
            f"  classes: {', '.join(CLASS_NAMES[:n_classes])}\n"
            f"  meta/esc50.csv (ESC-50 layout), meta/events.csv (event time span + band)")


def _check(cfg: SynthRecipe, n_classes: int) -> None:
    problems = []
    if cfg.n_per_class < 1:
        problems.append(f"n_per_class must be >= 1, got {cfg.n_per_class}")
    if cfg.n_folds < 1:
        problems.append(f"n_folds must be >= 1, got {cfg.n_folds}")
    if not 1 <= n_classes <= len(CLASSES):
        problems.append(f"n_classes must be 1..{len(CLASSES)}, got {n_classes}")
    if not 4000 <= cfg.sample_rate <= 192000:
        problems.append(f"sample_rate must be 4000..192000 Hz, got {cfg.sample_rate}")
    if cfg.duration_s < EVENT_MIN_S / 0.8:
        problems.append(f"duration_s must be >= {EVENT_MIN_S / 0.8:g} s (events last >= "
                        f"{EVENT_MIN_S} s), "
                        f"got {cfg.duration_s}")
    if len(cfg.snr_db) not in (1, 2) or cfg.snr_db[0] > cfg.snr_db[-1]:
        problems.append(f"snr_db must be [low, high] with low <= high, got {cfg.snr_db}")
    if problems:
        raise ConfigError("synth: " + "; ".join(problems))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    write_csv(path, header, rows)


# --------------------------------------------------------------------------- ground truth
def load_events(data_folder: str | os.PathLike) -> dict[str, Event]:
    """``meta/events.csv`` of a synthetic dataset -> ``{filename: Event}``."""
    path = Path(data_folder) / "meta" / "events.csv"
    if not path.is_file():
        raise DataError(f"{path} not found: ground-truth events exist only for datasets made "
                        "by 'l2i synth'")
    events = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"filename", "onset_s", "offset_s", "f_low_hz", "f_high_hz"} - set(
            reader.fieldnames or [])
        if missing:
            raise DataError(f"{path} lacks column(s) {sorted(missing)}: regenerate it with "
                            "'l2i synth'")
        for row in reader:
            events[row["filename"]] = Event(row["filename"], float(row["onset_s"]),
                                            float(row["offset_s"]), float(row["f_low_hz"]),
                                            float(row["f_high_hz"]))
    return events


def event_mask(event: Event, features: FeaturesConfig, n_frames: int) -> np.ndarray:
    """The event's ground-truth mask on the STFT grid of :mod:`l2i.features`, ``(T, F)`` bool.

    Frame ``t`` is centred at ``t * hop_length`` samples; bin ``f`` is at
    ``f * sample_rate / n_fft`` Hz. A cell is True when its centre time lies in
    ``[onset_s, offset_s]`` and its frequency in ``[f_low_hz, f_high_hz]``.
    """
    times = np.arange(n_frames) * features.hop_length / features.sample_rate  # (T,)
    freqs = np.arange(features.n_freq) * features.sample_rate / features.n_fft  # (F,)
    in_t = (times >= event.onset_s) & (times <= event.offset_s)
    in_f = (freqs >= event.f_low_hz) & (freqs <= event.f_high_hz)
    return in_t[:, None] & in_f[None, :]  # (T, F)


def ideal_mask(data_folder: str | os.PathLike, filename: str, features: FeaturesConfig,
               n_frames: int | None = None, lc_db: float = 0.0,
               event: Event | None = None) -> np.ndarray:
    """Ideal binary mask of a synthetic clip on the STFT grid of :mod:`l2i.features`, ``(T, F)``.

    True where the event's STFT magnitude exceeds the background's by more than ``lc_db`` dB
    (local SNR criterion) and the cell lies in the event's rectangle (:func:`event_mask`). Reads
    ``audio/<filename>`` (the mix) and ``events/<filename>`` (the event alone), resampled to
    ``features.sample_rate``; ``n_frames`` crops/pads the time axis (default: the clip's frames).
    Pass ``event`` (from :func:`load_events`) to skip re-reading ``meta/events.csv``.
    """
    import torch

    from l2i.audio import load_audio
    from l2i.features import stft

    root = Path(data_folder)
    mix = load_audio(root / "audio" / filename, features.sample_rate, normalize="none")
    alone = load_audio(root / "events" / filename, features.sample_rate, normalize="none")
    n = min(mix.size, alone.size)
    wav = torch.from_numpy(np.stack([alone[:n], mix[:n] - alone[:n]]))  # (2, N)
    mag = stft(wav, features).abs().numpy()  # (2, T, F)
    ibm = 20 * np.log10(mag[0] + 1e-10) > 20 * np.log10(mag[1] + 1e-10) + lc_db  # (T, F)
    if event is None:
        events = load_events(root)
        if filename not in events:
            raise DataError(f"{root / 'meta' / 'events.csv'} has no row for {filename}")
        event = events[filename]
    T = ibm.shape[0] if n_frames is None else n_frames
    ibm = ibm[:T] if ibm.shape[0] >= T else np.pad(ibm, ((0, T - ibm.shape[0]), (0, 0)))
    return ibm & event_mask(event, features, T)
