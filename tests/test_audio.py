"""l2i.audio: decoding, mono mixdown, resampling, crop/pad, normalisation, bad inputs, writing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from l2i.audio import (
    MAX_CHANNELS,
    as_clips,
    fit_length,
    load_audio,
    peak_normalize,
    probe_audio,
    read_audio,
    resample,
    write_wav,
)
from l2i.errors import DataError


def _tone(freq: float, sr: int, secs: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * secs)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,ext,atol", [("WAV", "wav", 1e-4), ("FLAC", "flac", 1e-4),
                                          ("OGG", "ogg", 0.1), ("MP3", "mp3", 0.1)])
def test_read_formats(tmp_path, fmt, ext, atol):
    x = _tone(440, 16000, 0.5)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, 16000, format=fmt)
    y, sr = read_audio(path)
    assert sr == 16000 and y.dtype == np.float32 and y.ndim == 1
    if fmt in ("WAV", "FLAC"):
        np.testing.assert_allclose(y, x, atol=atol)
    else:  # lossy codecs: same length within a frame, same energy within 10 %
        assert abs(y.size - x.size) < 2000
        assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=0.1)


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = np.full(100, 0.5, np.float32), np.full(100, -0.1, np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 8000, subtype="FLOAT")
    y, _ = read_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(y, 0.2, atol=1e-7)


def test_resample_keeps_frequency_and_length():
    x = _tone(1000, 44100, 1.0)
    y = resample(x, 44100, 16000)
    assert y.shape == (16000,) and y.dtype == np.float32
    spec = np.abs(np.fft.rfft(y))
    assert np.argmax(spec) == 1000  # 1 Hz bins for a 1 s clip
    assert np.sqrt(np.mean(y[100:-100] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_fit_length_policies():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(x, 4, "start"), [0, 1, 2, 3])
    np.testing.assert_array_equal(fit_length(x, 4, "center"), [3, 4, 5, 6])
    r = fit_length(x, 4, "random", np.random.default_rng(0))
    assert r.size == 4 and np.all(np.diff(r) == 1) and 0 <= r[0] <= 6
    np.testing.assert_array_equal(fit_length(x, 12, "center"), list(range(10)) + [0, 0])
    assert fit_length(x, None) is x
    with pytest.raises(ValueError, match="crop"):
        fit_length(x, 4, "middle")


def test_random_crop_is_seeded():
    x = np.arange(1000, dtype=np.float32)
    a = fit_length(x, 10, "random", np.random.default_rng(3))
    b = fit_length(x, 10, "random", np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_peak_normalize_uses_abs_max():
    y = peak_normalize(np.array([0.1, -0.5, 0.25], np.float32))
    np.testing.assert_allclose(y, [0.2, -1.0, 0.5], atol=1e-6)
    assert not np.any(peak_normalize(np.zeros(5, np.float32)))


def test_load_audio_pipeline(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(500, 22050, 2.0, amp=0.25), 22050)
    y = load_audio(tmp_path / "a.wav", 16000, duration_s=1.5, crop="start")
    assert y.shape == (24000,) and y.dtype == np.float32
    assert np.abs(y).max() == pytest.approx(1.0, abs=1e-3)
    y = load_audio(tmp_path / "a.wav", 8000, duration_s=3.0, normalize="none")
    assert y.shape == (24000,) and np.all(y[16100:] == 0)  # zero-padded past 2 s
    assert np.abs(y).max() == pytest.approx(0.25, abs=0.01)
    assert load_audio(tmp_path / "a.wav", 8000).shape == (16000,)  # duration None keeps 2 s


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"e\.wav is empty"):
        read_audio(tmp_path / "e.wav")


def test_zero_frames(tmp_path):
    sf.write(tmp_path / "z.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match=r"z\.wav holds no samples"):
        read_audio(tmp_path / "z.wav")


def test_undecodable_file(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(DataError, match=r"cannot decode audio file .*bad\.wav.*re-encode"):
        read_audio(tmp_path / "bad.wav")


def test_nan_and_inf(tmp_path):
    x = np.zeros(100, np.float32)
    x[10] = np.nan
    sf.write(tmp_path / "n.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"n\.wav contains NaN or infinite"):
        read_audio(tmp_path / "n.wav")
    x[10] = np.inf
    sf.write(tmp_path / "i.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"i\.wav contains NaN or infinite"):
        read_audio(tmp_path / "i.wav")


@pytest.mark.parametrize("sr", [500, 1_000_000])
def test_absurd_sample_rate(tmp_path, sr):
    sf.write(tmp_path / "r.wav", np.zeros(100, np.float32) + 0.1, sr)
    with pytest.raises(DataError, match=rf"implausible sample rate of {sr} Hz"):
        read_audio(tmp_path / "r.wav")


def test_silent_clip_warns(tmp_path):
    sf.write(tmp_path / "quiet.wav", np.zeros(800, np.float32), 8000)
    with pytest.warns(UserWarning, match=r"quiet\.wav is silent"):
        y = load_audio(tmp_path / "quiet.wav", 8000)
    assert y.shape == (800,) and not np.any(y)


def test_write_wav_roundtrip_clip_and_float(tmp_path):
    x = np.array([0.0, 0.5, -0.5, 2.0, -3.0], np.float32)
    path = write_wav(tmp_path / "sub" / "o.wav", x, 16000)
    y, sr = sf.read(path, dtype="float32")
    assert sr == 16000 and sf.info(path).subtype == "PCM_16"
    np.testing.assert_allclose(y, [0, 0.5, -0.5, 1.0, -1.0], atol=1e-4)
    write_wav(tmp_path / "f.wav", x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(sf.read(tmp_path / "f.wav", dtype="float32")[0], x)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["o.wav"]  # no temp left


def test_write_wav_accepts_torch(tmp_path):
    import torch
    write_wav(tmp_path / "t.wav", torch.full((10,), 0.25), 8000)
    np.testing.assert_allclose(sf.read(tmp_path / "t.wav")[0], 0.25, atol=1e-4)


# --------------------------------------------------------------------------- as_clips (one rule)
def test_as_clips_layouts_are_one_clip_mixed_to_mono():
    import torch

    left, right = _tone(440, 8000, 0.5), _tone(660, 8000, 0.5)
    mono = (left + right) / 2
    for x in (np.stack([left, right], 1),            # soundfile (S, channels)
              np.stack([left, right], 0),            # torchaudio (channels, S)
              torch.from_numpy(np.stack([left, right], 0))):
        out = as_clips(x)
        assert out.shape == (1, left.size) and out.dtype == np.float32
        np.testing.assert_allclose(out[0], mono, atol=1e-7)
    for x in (left, left[None], left[:, None], left.astype(np.float64)):
        np.testing.assert_allclose(as_clips(x)[0], left, atol=1e-7)
    eight = np.tile(left[:, None], (1, MAX_CHANNELS))  # (S, 8): still channels
    np.testing.assert_allclose(as_clips(eight)[0], left, atol=1e-7)


def test_as_clips_scales_integer_pcm():
    pcm16 = np.array([-32768, 0, 16384, 32767], np.int16)
    np.testing.assert_allclose(as_clips(pcm16)[0], [-1.0, 0.0, 0.5, 32767 / 32768])
    pcm32 = (pcm16.astype(np.int32) << 16)
    np.testing.assert_allclose(as_clips(pcm32)[0], as_clips(pcm16)[0])
    import torch

    np.testing.assert_allclose(as_clips(torch.from_numpy(pcm16))[0], as_clips(pcm16)[0])
    half = torch.tensor([0.5, -0.25], dtype=torch.bfloat16)
    np.testing.assert_allclose(as_clips(half)[0], [0.5, -0.25])
    np.testing.assert_allclose(as_clips(np.array([0, 128, 255], np.uint8))[0],
                               [-1.0, 0.0, 127 / 128])
    with pytest.raises(DataError, match="int64"):
        as_clips(np.arange(10))


def test_as_clips_batches_only_when_asked():
    a, b = _tone(440, 8000, 0.25), _tone(880, 8000, 0.25)
    batch = np.stack([a, b])  # (2, S)
    assert as_clips(batch, batch=True).shape == (2, a.size)
    assert as_clips([a, b], batch=True).shape == (2, a.size)
    stereo_batch = np.stack([np.stack([a, a], 1), np.stack([b, b], 1)])  # (B, S, 2)
    np.testing.assert_allclose(as_clips(stereo_batch, batch=True), batch, atol=1e-7)
    # without batch=True, (2, S) is ONE stereo clip (torchaudio layout), never 2 clips
    assert as_clips(batch).shape == (1, a.size)
    with pytest.raises(DataError, match=r"ambiguous"):
        as_clips(np.zeros((100, 200), np.float32))  # a batch of 100? channels? refused
    with pytest.raises(DataError, match=r"\(4, 4\) is ambiguous"):
        as_clips(np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match=r"\(2, 3, 100\)"):
        as_clips(np.zeros((2, 3, 100), np.float32))
    with pytest.raises(DataError, match="one length"):
        as_clips([a, b[:100]], batch=True)
    with pytest.raises(DataError, match="batch=True expects"):
        as_clips(a, batch=True)
    with pytest.raises(DataError, match="no samples"):
        as_clips(np.zeros(0, np.float32))
    with pytest.raises(DataError, match="NaN"):
        as_clips(np.array([0.0, np.inf], np.float32))


def test_peak_normalize_is_per_clip():
    x = np.stack([_tone(440, 8000, 0.1, amp=0.01), _tone(440, 8000, 0.1, amp=0.5)])
    out = peak_normalize(x)
    np.testing.assert_allclose(np.abs(out).max(axis=1), [1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(out[0], peak_normalize(x[0]))


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_truncated_wav_found_by_its_header(tmp_path):
    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    sf.write(tmp_path / "t.wav", x, 16000, subtype="PCM_16")
    probe_audio(tmp_path / "t.wav")  # complete: fine
    _truncate(tmp_path / "t.wav")  # libsndfile would read the first half without a word
    for check in (probe_audio, read_audio):
        with pytest.raises(DataError, match=r"t\.wav is truncated: its header declares 32000 "
                                            r"bytes .*replace it with a complete copy"):
            check(tmp_path / "t.wav")


def test_truncated_flac_found_by_decoding(tmp_path):
    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    sf.write(tmp_path / "t.flac", x, 16000)
    _truncate(tmp_path / "t.flac")
    assert probe_audio(tmp_path / "t.flac").frames == 16000  # the header alone looks fine
    with pytest.raises(DataError, match=r"t\.flac breaks off while decoding .*truncated"):
        read_audio(tmp_path / "t.flac")


def test_probe_refuses_what_read_refuses(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    (tmp_path / "g.wav").write_bytes(b"not audio" * 50)
    sf.write(tmp_path / "z.wav", np.zeros(0, np.float32), 16000)
    for name, msg in (("e.wav", "is empty"), ("g.wav", "cannot decode"),
                      ("z.wav", "holds no samples"), ("nope.wav", "not found")):
        with pytest.raises(DataError, match=msg):
            probe_audio(tmp_path / name)
