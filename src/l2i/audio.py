"""Audio in and out: decode, mix to mono, resample (soxr), crop/pad, normalise, write.

Audio is float32 in [-1, 1], one channel, ``(samples,)``. Anything soundfile (libsndfile) reads
is accepted: wav, flac, ogg, mp3, aiff... Bad files raise :class:`l2i.errors.DataError` naming
the file and what to do; an all-zero (silent) clip only warns.

:func:`as_clips` is the one place where in-memory audio (numpy or torch, any layout a decoder
returns) becomes ``(clips, samples)`` float32 mono: the Python API (``Explainer.explain``) and
the file reader (:func:`read_audio`, hence every command) both go through it. Its rule:

- ``(S,)`` is one clip;
- a 2-D array with one dimension of at most ``MAX_CHANNELS`` (8) and the other longer is one
  multi-channel clip, ``(S, channels)`` (soundfile) or ``(channels, S)`` (torchaudio), mixed
  to mono by averaging the channels (what the commands do with stereo files);
- ``(B, S)`` batches are never guessed: pass ``batch=True`` (then ``(B, S)``, or
  ``(B, S, channels)`` / ``(B, channels, S)``, or a list of equally long clips);
- anything else (both dimensions small, both long, 3-D without ``batch``) is ambiguous and
  raises :class:`~l2i.errors.DataError` naming the shape;
- integer PCM is scaled to [-1, 1] (int16 / 32768, int32 / 2**31, int8 / 128, uint8 as
  ``(x - 128) / 128``); float input is taken as is (float32).
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
MAX_CHANNELS = 8  # a 2-D input with a dimension this small (or smaller) is read as channels
_PCM_SCALE = {np.dtype(np.int8): 2.0 ** 7, np.dtype(np.int16): 2.0 ** 15,
              np.dtype(np.int32): 2.0 ** 31}
_LAYOUTS = ("(samples,) for one clip, (samples, channels) or (channels, samples) with at most "
            f"{MAX_CHANNELS} channels for one multi-channel clip, or (clips, samples) with "
            "batch=True for a batch")


def to_float32(x: np.ndarray, what: str = "waveform") -> np.ndarray:
    """Samples as float32 in [-1, 1]: integer PCM scaled by its full range, floats cast.

    Raises DataError for dtypes without a known audio scale (int64, bool, complex, object).
    """
    if x.dtype in _PCM_SCALE:
        return (x.astype(np.float32) / np.float32(_PCM_SCALE[x.dtype])).astype(np.float32)
    if x.dtype == np.uint8:  # 8-bit wav is unsigned, centred on 128
        return (x.astype(np.float32) - 128.0) / 128.0
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    raise DataError(f"{what}: samples of dtype {x.dtype} have no known audio scale: pass float "
                    "samples in [-1, 1] or int8/int16/int32 PCM")


def _downmix(x: np.ndarray, what: str, channel_axis: int | None) -> np.ndarray:
    """One clip ``(S,)`` or ``(S, C)`` / ``(C, S)`` -> ``(S,)``, channels averaged."""
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise DataError(f"{what}: a clip of shape {x.shape} is not audio: expected {_LAYOUTS}")
    if channel_axis is None:
        small = [n <= MAX_CHANNELS for n in x.shape]
        if small[0] == small[1]:
            raise DataError(f"{what}: shape {x.shape} is ambiguous (which axis holds the "
                            f"channels?): pass {_LAYOUTS}")
        channel_axis = 0 if small[0] else 1
    return x.mean(axis=channel_axis) if x.shape[channel_axis] > 1 else x.take(0, channel_axis)


def as_clips(x, batch: bool = False, what: str = "waveform",
             channel_axis: int | None = None) -> np.ndarray:
    """Audio in any usual in-memory layout -> ``(clips, samples)`` float32 mono (module rule).

    Args:
        x: numpy array, torch tensor or (with ``batch``) a list of clips.
        batch: the first axis (or the list) holds clips; otherwise ``x`` is ONE clip.
        what: names the input in error messages (a file name, ``"explain"``).
        channel_axis: the channel axis of one clip when the layout is known (``read_audio``
            passes 1 for soundfile's ``(frames, channels)``); None infers it by the rule.
    Returns:
        ``(B, S)`` float32 (``B = 1`` without ``batch``). Raises DataError on an ambiguous or
        empty shape, an unknown dtype or non-finite samples.
    """
    if batch and isinstance(x, (list, tuple)):
        clips = [as_clips(c, what=f"{what} (clip {i})", channel_axis=channel_axis)[0]
                 for i, c in enumerate(x)]
        if not clips or len({c.shape[0] for c in clips}) != 1:
            raise DataError(f"{what}: a batch needs one or more clips of one length, got "
                            f"lengths {[c.shape[0] for c in clips]}: explain clips of "
                            "different lengths one at a time")
        return np.stack(clips)  # (B, S)
    if hasattr(x, "detach"):  # torch: float16/bfloat16 via float32 (numpy has no bfloat16)
        x = x.detach().cpu()
        x = (x.float() if x.is_floating_point() else x).numpy()
    x = to_float32(np.asarray(x), what)
    if batch:
        if x.ndim not in (2, 3):
            raise DataError(f"{what}: batch=True expects (clips, samples) or (clips, samples, "
                            f"channels) / (clips, channels, samples), got shape {x.shape}")
        out = (np.stack([_downmix(c, what, channel_axis) for c in x]) if x.ndim == 3
               else x)  # (B, S)
    else:
        if x.ndim not in (1, 2):
            raise DataError(f"{what}: shape {x.shape} is not one clip: pass {_LAYOUTS}")
        out = _downmix(x, what, channel_axis)[None]  # (1, S)
    if out.shape[1] == 0:
        raise DataError(f"{what}: no samples (shape {x.shape})")
    if not np.isfinite(out).all():
        raise DataError(f"{what}: the waveform contains NaN or infinite samples")
    return np.ascontiguousarray(out, dtype=np.float32)


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
    """``x / (max|x| + eps)`` over the last axis (each clip of a ``(B, S)`` batch on its own):
    peak at (just under) 1, a silent clip stays silent."""
    peak = np.abs(x).max(axis=-1, keepdims=True, initial=0.0)
    return (x / (peak + eps)).astype(np.float32, copy=False)


def normalize_audio(x: np.ndarray, normalize: str) -> np.ndarray:
    """Apply ``data.normalize`` (``peak`` | ``none``) to ``(S,)`` or ``(B, S)`` (per clip)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    return peak_normalize(x) if normalize == "peak" else x


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
    x = normalize_audio(fit_length(x, n, crop, rng), normalize)
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
