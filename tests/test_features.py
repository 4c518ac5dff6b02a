"""l2i.features: STFT/ISTFT round trip, shapes, magnitude/phase, log1p, mel filterbank."""

from __future__ import annotations

import math

import pytest
import torch

from l2i.config import FeaturesConfig
from l2i.features import (
    Frontend,
    features_match,
    hz_to_mel,
    istft,
    log1p_magnitude,
    magnitude,
    mel_filterbank,
    mel_to_hz,
    n_frames,
    phase,
    stft,
    window,
    with_phase,
)


@pytest.mark.parametrize("cfg", [FeaturesConfig(),  # reference: 1024 / 372 / 186 @ 16 kHz
                                 FeaturesConfig(sample_rate=8000, n_fft=256, window="hann"),
                                 FeaturesConfig(sample_rate=44100, n_fft=2048)])
def test_istft_inverts_stft(cfg):
    x = torch.rand(2, cfg.sample_rate, generator=torch.Generator().manual_seed(0)) * 2 - 1
    spec = stft(x, cfg)
    assert spec.shape == (2, n_frames(x.shape[1], cfg), cfg.n_freq) and spec.is_complex()
    y = istft(spec, cfg, length=x.shape[1])
    assert y.shape == x.shape
    assert (y - x).abs().max() < 1e-4


def _torch_istft(spec, cfg, length=None):
    return torch.istft(spec.transpose(1, 2), n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                       win_length=cfg.win_length, window=window(cfg), center=True,
                       normalized=False, onesided=True, length=length)


@pytest.mark.parametrize("cfg", [FeaturesConfig(),
                                 FeaturesConfig(sample_rate=8000, n_fft=256, window="hann"),
                                 FeaturesConfig(n_fft=512, win_ms=32, hop_ms=8),  # win = n_fft
                                 FeaturesConfig(n_fft=1024, win_ms=40, hop_ms=10)])  # hop < win/2
@pytest.mark.parametrize("n", [700, 16001])
def test_istft_equals_torch_istft_on_any_spectrogram(cfg, n):
    """The hand-written overlap-add gives torch.istft's result for masked (inconsistent)
    spectrograms, every requested length, and a length the frames do not cover is refused."""
    g = torch.Generator().manual_seed(n)
    spec = stft(torch.randn(2, n, generator=g), cfg)
    spec = spec * torch.rand(spec.shape, generator=g)  # not the STFT of any signal
    for length in (None, n, n - 7, 10, n + 4 * cfg.n_fft):
        try:
            ref = _torch_istft(spec, cfg, length=length)
        except RuntimeError:  # the window sums to 0 past the frames (a window shorter
            assert cfg.win_length < cfg.n_fft  # than n_fft): refused by both
            with pytest.raises(ValueError, match="sums to zero"):
                istft(spec, cfg, length=length)
            continue
        ours = istft(spec, cfg, length=length)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, atol=2e-6, rtol=1e-4)


def test_istft_is_differentiable():
    """A classifier given as code is re-synthesised through istft: gradients must flow, and
    equal torch.istft's."""
    cfg = FeaturesConfig(sample_rate=8000, n_fft=256)
    spec = stft(torch.randn(1, 2000, generator=torch.Generator().manual_seed(1)), cfg)
    a = spec.clone().requires_grad_(True)
    b = spec.clone().requires_grad_(True)
    (istft(a, cfg, length=2000) ** 2).sum().backward()
    (_torch_istft(b, cfg, length=2000) ** 2).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_stft_shapes_and_unbatched():
    cfg = FeaturesConfig()
    x = torch.zeros(80000)  # 5 s at 16 kHz -> 431 frames as in the reference
    assert n_frames(80000, cfg) == 431
    assert stft(x, cfg).shape == (431, 513)
    assert istft(stft(x, cfg), cfg, length=80000).shape == (80000,)


def test_sine_peaks_at_its_bin():
    cfg = FeaturesConfig()
    t = torch.arange(16000) / 16000
    x = torch.sin(2 * math.pi * 1000.0 * t)  # bin 1000 * 1024 / 16000 = 64
    mag = magnitude(stft(x, cfg))  # (T, F)
    assert mag[40].argmax().item() == 64
    # periodic Hamming window of 372 samples: amplitude 1 -> peak |X| = sum(w) / 2
    assert mag[40, 64].item() == pytest.approx(window(cfg).sum().item() / 2, rel=0.01)


def test_magnitude_phase_log1p_with_phase():
    spec = torch.tensor([[3 + 4j, -1 + 0j]], dtype=torch.complex64)
    torch.testing.assert_close(magnitude(spec), torch.tensor([[5.0, 1.0]]))
    torch.testing.assert_close(phase(spec), torch.tensor([[math.atan2(4, 3), math.pi]]))
    torch.testing.assert_close(log1p_magnitude(spec), torch.log(torch.tensor([[6.0, 2.0]])))
    torch.testing.assert_close(with_phase(magnitude(spec), phase(spec)), spec)


def test_mel_scale_hand_checked():
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2))
    assert float(hz_to_mel(0.0)) == 0.0
    f = torch.tensor([0.0, 100.0, 1000.0, 8000.0])
    torch.testing.assert_close(mel_to_hz(hz_to_mel(f)).float(), f)


def test_mel_filterbank_properties():
    cfg = FeaturesConfig()  # 513 bins, 80 mels, 0..8000 Hz
    fb = mel_filterbank(cfg)
    assert fb.shape == (513, 80) and fb.dtype == torch.float32
    assert (fb >= 0).all() and fb.max() <= 1.0 + 1e-6
    assert (fb.sum(0) > 0).all()  # no empty filter
    peaks = fb.argmax(0)  # (80,)
    assert (peaks[1:] >= peaks[:-1]).all()  # centres increase
    # filter m peaks at the (m + 1)-th of 82 mel-spaced points: check m = 40 by hand
    pts = mel_to_hz(torch.linspace(0, float(hz_to_mel(8000.0)), 82))
    centre_bin = float(pts[41]) * 1024 / 16000
    assert abs(peaks[40].item() - centre_bin) <= 1
    # triangles overlap half-way: inside the covered band the weights of a bin sum to ~1
    bins = torch.arange(513) * 16000 / 1024
    inside = (bins > float(pts[1])) & (bins < float(pts[80]))
    torch.testing.assert_close(fb[inside].sum(1), torch.ones(int(inside.sum())), atol=1e-4,
                               rtol=0)
    assert fb[0].sum() == 0  # DC is below the first centre


def test_mel_filterbank_range_errors():
    with pytest.raises(ValueError, match="mel range"):
        mel_filterbank(FeaturesConfig(f_min=9000.0))
    with pytest.raises(ValueError, match="mel range"):
        mel_filterbank(FeaturesConfig(f_max=9000.0))


def test_frontend_kinds():
    cfg = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32)
    mag = torch.rand(2, 10, 129)
    mel = Frontend(cfg, "log1p_mel")
    assert mel(mag).shape == (2, 10, 32) and mel.n_out == 32
    torch.testing.assert_close(mel(mag), torch.log1p(mag @ mel_filterbank(cfg)))
    lin = Frontend(cfg, "log1p_mag")
    torch.testing.assert_close(lin(mag), torch.log1p(mag))
    with pytest.raises(ValueError, match="one of log1p_mel, log1p_mel_sb, log1p_mag"):
        Frontend(cfg, "mfcc")


def test_features_match_lists_differences():
    a = FeaturesConfig()
    assert features_match(a, FeaturesConfig()) == []
    assert features_match(a, FeaturesConfig(n_mels=40)) == []  # not an STFT setting
    diff = features_match(a, FeaturesConfig(sample_rate=8000, hop_ms=10.0))
    assert len(diff) == 2 and diff[0].startswith("sample_rate") and diff[1].startswith("hop_ms")
    assert features_match(a.__dict__, {**a.__dict__, "hop_ms": 11.6099 + 1e-9}) == []
