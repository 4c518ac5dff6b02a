"""l2i.noise: the noise corpus, excerpts, mixing at an SNR."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from l2i.config import AugmentConfig
from l2i.errors import ConfigError, DataError
from l2i.noise import NoiseBank, excerpt, mix_at_snr, mix_within_batch, white_noise_like


def _corpus(root):
    (root / "a" / "b").mkdir(parents=True)
    sf.write(root / "long.wav", np.linspace(-0.5, 0.5, 2000, dtype=np.float32), 8000,
             subtype="FLOAT")
    sf.write(root / "a" / "b" / "short.flac", np.full(150, 0.25, np.float32), 8000)
    (root / "readme.txt").write_text("not audio")
    return root


def test_excerpt_crop_and_loop():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(excerpt(x, 4, 0.0), [0, 1, 2, 3])
    np.testing.assert_array_equal(excerpt(x, 4, 0.999), [6, 7, 8, 9])
    np.testing.assert_array_equal(excerpt(x, 4, 0.5), [3, 4, 5, 6])  # floor(0.5 * 7) = 3
    np.testing.assert_array_equal(excerpt(x[:3], 7, 0.0), [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(excerpt(x[:3], 5, 0.5), [1, 2, 0, 1, 2])  # loop from 1


def test_noise_bank_recursive_resampled_seeded(tmp_path):
    bank = NoiseBank(_corpus(tmp_path), sample_rate=8000, n_samples=500, seed=3)
    assert len(bank) == 2 and [p.suffix for p in bank.files] == [".flac", ".wav"]
    assert bank.clip(0).shape == (150,)
    a = bank.sample(6)
    assert a.shape == (6, 500) and a.dtype == torch.float32
    b = NoiseBank(tmp_path, 8000, 500, seed=3).sample(6)
    torch.testing.assert_close(a, b)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    torch.testing.assert_close(bank.sample(4, g1), bank.sample(4, g2))
    for row in a:  # looped constant file, or a contiguous ramp excerpt of the long file
        r = row.numpy()
        if not np.allclose(r, 0.25, atol=1e-4):
            assert np.allclose(np.diff(r), 1.0 / 1999, atol=1e-6)
    assert any(np.allclose(r.numpy(), 0.25, atol=1e-4) for r in a)


def test_noise_bank_resamples(tmp_path):
    sf.write(tmp_path / "n.ogg", np.random.default_rng(0).uniform(-.5, .5, 16000), 16000)
    bank = NoiseBank(tmp_path, sample_rate=8000, n_samples=100)
    assert bank.clip(0).shape == (8000,)


def test_noise_bank_errors(tmp_path):
    with pytest.raises(DataError, match="noise folder .*not found"):
        NoiseBank(tmp_path / "nope", 8000, 100)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="holds no audio files"):
        NoiseBank(tmp_path, 8000, 100)


def test_mix_at_snr_hand_checked():
    clean = torch.tensor([[1.0, -1.0, 1.0, -1.0]])  # energy 4
    noise = torch.tensor([[0.5, 0.5, 0.5, 0.5]])  # energy 1
    # 0 dB: noise gain 2 -> [1, 1, 1, 1] energy 4; mix [2, 0, 2, 0] / 2
    out = mix_at_snr(clean, noise, 0.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)
    # 20 dB: noise energy 4 / 100 -> gain 0.2, noise [0.1]*4; mix [1.1, -0.9, ...] / 1.1
    out = mix_at_snr(clean, noise, torch.tensor([20.0]))
    torch.testing.assert_close(out, torch.tensor([[1.0, -0.9 / 1.1, 1.0, -0.9 / 1.1]]),
                               atol=1e-6, rtol=0)


def test_mix_at_snr_per_example_and_peak_uses_abs():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(3, 4000, generator=g) * torch.tensor([[0.1], [1.0], [3.0]])
    noise = torch.randn(3, 4000, generator=g)
    snr = torch.tensor([-5.0, 0.0, 10.0])
    mix = mix_at_snr(clean, noise, snr)
    assert mix.abs().amax(-1).sub(1).abs().max() < 1e-6  # |x| peak, not the signed max
    # recover the SNR: the clean part of the (rescaled) mix vs the rest
    scale = (mix * clean).sum(-1) / (clean * clean).sum(-1)  # noise ~ orthogonal to clean
    resid = mix - scale[:, None] * clean
    est = 10 * torch.log10((scale[:, None] * clean).pow(2).sum(-1) / resid.pow(2).sum(-1))
    torch.testing.assert_close(est, snr, atol=0.3, rtol=0)
    negative = torch.tensor([[-2.0, 0.5, 0.1]])
    assert mix_at_snr(negative, torch.zeros(1, 3), 0.0)[0, 0] == pytest.approx(-1.0, abs=1e-6)


def test_mix_silent_inputs_stay_finite():
    out = mix_at_snr(torch.zeros(1, 5), torch.ones(1, 5), 0.0)
    assert torch.equal(out, torch.zeros(1, 5))  # silent clean clip gets no noise
    out = mix_at_snr(torch.ones(1, 5), torch.zeros(1, 5), 0.0)
    assert torch.isfinite(out).all() and out.max() == pytest.approx(1.0, abs=1e-6)


def test_white_noise_like():
    x = torch.zeros(2, 20000, dtype=torch.float64)
    n = white_noise_like(x, torch.Generator().manual_seed(1))
    assert n.shape == x.shape and n.dtype == torch.float64
    assert n.std().item() == pytest.approx(1.0, abs=0.02)
    torch.testing.assert_close(n, white_noise_like(x, torch.Generator().manual_seed(1)))


def test_mix_within_batch_pairs_each_clip_with_another_at_the_snr():
    """Four orthogonal one-hot clips: each mix is clip i plus 10^(-snr/20) times ONE other clip
    (equal energies), peak-normalised; the partners form one rotation of the batch."""
    wav = torch.eye(4, 8)  # (B, S): clip i is a single 1 at sample i
    out = mix_within_batch(wav, 1.0, [12.0], torch.Generator().manual_seed(0))  # (B, S)
    g = 10 ** (-12 / 20)
    partners = []
    for i in range(4):
        assert out[i, i] == pytest.approx(1 / (1 + 1e-8), abs=1e-6)  # the clip itself: the peak
        others = [j for j in range(8) if j != i and out[i, j] != 0]
        assert len(others) == 1 and others[0] < 4  # one partner, from the batch
        assert out[i, others[0]] == pytest.approx(g, rel=1e-5)
        partners.append(others[0])
    shift = (partners[0] - 0) % 4
    assert shift != 0 and all((p - i) % 4 == shift for i, p in enumerate(partners))


def test_mix_within_batch_off_share_and_seed():
    wav = torch.randn(64, 50, generator=torch.Generator().manual_seed(1))
    assert mix_within_batch(wav, 0.0, [0.0, 6.0]) is wav
    one = wav[:1]
    assert mix_within_batch(one, 1.0, [0.0, 6.0]) is one  # a batch of one: nothing to mix
    half = mix_within_batch(wav, 0.5, [0.0, 6.0], torch.Generator().manual_seed(2))
    same = (half == wav).all(dim=1)  # (B,) clips left as they were
    assert 16 <= int(same.sum()) <= 48
    torch.testing.assert_close(half, mix_within_batch(wav, 0.5, [0.0, 6.0],
                                                      torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("over, key", [({"mix_prob": 1.5}, "mix_prob"),
                                       ({"mix_prob": -0.1}, "mix_prob"),
                                       ({"mix_snr_db": [18.0, 6.0]}, "mix_snr_db"),
                                       ({"mix_snr_db": [float("nan")]}, "mix_snr_db"),
                                       ({"mix_snr_db": []}, "mix_snr_db")])
def test_mix_options_are_checked(over, key):
    with pytest.raises(ConfigError, match=f"augment.{key}"):
        AugmentConfig(**over)
