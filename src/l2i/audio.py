"""Audio in and out: decode, mix to mono, resample (soxr), crop/pad, normalise, write.

Audio is float32 in [-1, 1], one channel, ``(samples,)``. Anything soundfile (libsndfile) reads
is accepted: wav, flac, ogg, mp3, aiff... Bad files raise :class:`l2i.errors.DataError` naming
the file and what to do; an all-zero (silent) clip only warns.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from l2i import fileio
from l2i.errors import DataError

MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000
CROPS = ("start", "center", "random")
NORMALIZATIONS = ("peak", "none")
PEAK_EPS = 1e-8
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64")


def probe_audio(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Check a file from its header only (no decoding): fast enough for every clip up front.

    Returns soundfile's info (``frames``, ``samplerate``, ``channels``, ``subtype``). Raises
    DataError for a missing, empty or unreadable file, an absurd sample rate, no samples, or a
    WAV/AIFF whose header declares more audio than the file holds (truncated).
    """
    path = _existing(path)
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile raises LibsndfileError/RuntimeError/TypeError
        raise _undecodable(path, err) from None
    _check_header(path, info.samplerate, info.frames, info.extra_info)
    return info


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file at its own rate, mixed to mono. Returns ``(x (N,) float32, sample_rate)``.

    Raises DataError for everything :func:`probe_audio` refuses, for a stream that fails to
    decode or decodes to fewer frames than its header declares (truncated), and for non-finite
    samples. The header is read from the same open file as the samples (one pass).
    """
    path = _existing(path)
    try:
        fh = sf.SoundFile(str(path))
    except Exception as err:  # libsndfile raises LibsndfileError/RuntimeError/TypeError
        raise _undecodable(path, err) from None
    with fh:
        _check_header(path, fh.samplerate, fh.frames, fh.extra_info)
        sr, declared = fh.samplerate, fh.frames
        try:
            x = fh.read(dtype="float32", always_2d=True)  # (N, C)
        except Exception as err:  # a stream that breaks off (e.g. truncated flac: lost sync)
            raise DataError(f"audio file {path} breaks off while decoding ({err}): it is "
                            "truncated or damaged: replace it with a complete copy or remove "
                            "it from the dataset") from None
    if x.shape[0] < declared:
        raise DataError(f"audio file {path} is truncated: its header declares {declared} frames "
                        f"but only {x.shape[0]} decode: replace it with a complete copy (an "
                        "interrupted download or copy?) or remove it from the dataset")
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]  # (N,)
    if not np.isfinite(x).all():
        raise DataError(f"audio file {path} contains NaN or infinite samples: re-export it "
                        "(float files must hold finite values) or remove it")
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)


# libsndfile's header log, e.g. "data : 64000 (should be 31978)": a WAV/AIFF whose audio chunk
# declares more bytes than the file holds. libsndfile then silently reads what is there.
_SHORT_CHUNK = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file {path} not found: check the path (and the data folder)")
    if path.stat().st_size == 0:
        raise DataError(f"audio file {path} is empty (0 bytes): remove it from the dataset or "
                        "replace it with a valid recording")
    return path


def _undecodable(path: Path, err: Exception) -> DataError:
    return DataError(f"cannot decode audio file {path} ({err}): re-encode it as wav/flac "
                     "(e.g. ffmpeg -i in.xyz out.wav) or remove it from the dataset")


def _check_header(path: Path, sr: int, frames: int, log: str) -> None:
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise DataError(f"audio file {path} has an implausible sample rate of {sr} Hz (expected "
                        f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}): the header is probably corrupt; "
                        "re-encode the file")
    short = _SHORT_CHUNK.search(log or "")
    if short and int(short.group(2)) > int(short.group(3)):
        raise DataError(f"audio file {path} is truncated: its header declares "
                        f"{short.group(2)} bytes of audio but the file holds {short.group(3)}: "
                        "replace it with a complete copy (an interrupted download or copy?) or "
                        "remove it from the dataset")
    if frames == 0:
        raise DataError(f"audio file {path} holds no samples: remove it from the dataset or "
                        "replace it with a valid recording")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``(N,)`` from ``sr_in`` to ``sr_out`` Hz with soxr (high quality), float32."""
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def fit_length(x: np.ndarray, n: int | None, crop: str = "start",
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Crop or zero-pad ``x (N,)`` to ``n`` samples; ``n=None`` keeps the length.

    A longer clip is cut at its start (``crop='start'``), its middle (``'center'``) or a uniform
    random offset (``'random'``, drawn from ``rng``). A shorter clip is zero-padded at its end
    (whatever the crop policy), so the sound always starts at sample 0.
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if n is None:
        return x
    n = int(n)
    if x.shape[0] > n:
        if crop == "start":
            start = 0
        elif crop == "center":
            start = (x.shape[0] - n) // 2
        else:
            rng = rng if rng is not None else np.random.default_rng()
            start = int(rng.integers(0, x.shape[0] - n + 1))
        return x[start:start + n]
    if x.shape[0] < n:
        return np.pad(x, (0, n - x.shape[0]))
    return x


def peak_normalize(x: np.ndarray, eps: float = PEAK_EPS) -> np.ndarray:
    """``x / (max|x| + eps)``: peak at (just under) 1, a silent clip stays silent."""
    return (x / (np.abs(x).max(initial=0.0) + eps)).astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike, sample_rate: int, duration_s: float | None = None,
               crop: str = "start", normalize: str = "peak",
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Decode, mono, resample to ``sample_rate``, crop/pad to ``duration_s``, normalise.

    Returns ``(S,)`` float32 with ``S = round(duration_s * sample_rate)`` (or the resampled file
    length when ``duration_s`` is None). Warns when the file is all zeros.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    x, sr = read_audio(path)
    if not np.any(x):
        warnings.warn(f"audio file {path} is silent (all samples are zero); it carries no "
                      "information for training", stacklevel=2)
    x = resample(x, sr, sample_rate)
    n = None if duration_s is None else int(round(duration_s * sample_rate))
    x = fit_length(x, n, crop, rng)
    if normalize == "peak":
        x = peak_normalize(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def write_wav(path: str | os.PathLike, x, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write ``x`` (``(N,)`` or ``(N, C)``, numpy or torch) as a wav file, atomically.

    ``subtype``: ``PCM_16`` (default; samples clipped to [-1, 1]), ``PCM_24``, ``FLOAT``.
    """
    path = Path(path)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if subtype.startswith("PCM"):
        x = np.clip(x, -1.0, 1.0)
    buf = io.BytesIO()  # encode in memory: libsndfile fsyncs real files on close (slow)
    sf.write(buf, x, int(sample_rate), subtype=subtype, format="WAV")
    return fileio.write_bytes(path, buf.getvalue())
