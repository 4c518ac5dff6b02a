"""l2i.nmf: the sparse NMF solver, the fixed decoder and dictionary files."""

from __future__ import annotations

import warnings
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from l2i.config import FeaturesConfig, NMFConfig
from l2i.errors import ConfigError, L2IError
from l2i.nmf import (
    fit_nmf,
    load_dictionary,
    nmf_transform,
    reconstruct,
    relative_error,
    save_dictionary,
)


def planted(F: int = 40, K: int = 5, N: int = 300, seed: int = 0, noise: float = 0.0):
    """``V (N, F) = (W H)^T`` with sparse non-negative unit-norm ``W (F, K)``, sparse ``H``."""
    g = torch.Generator().manual_seed(seed)
    W = torch.rand(F, K, generator=g) * (torch.rand(F, K, generator=g) < 0.5)
    W = W / W.norm(dim=0)
    H = torch.rand(K, N, generator=g) * (torch.rand(K, N, generator=g) < 0.5)
    V = (W @ H).T.contiguous()
    if noise:
        V = V + noise * torch.rand(V.shape, generator=g)
    return V, W, H


def cfg(**kw) -> NMFConfig:
    base = dict(n_components=5, n_iter=400, tol=1e-7, seed=0, device="cpu")
    return NMFConfig(**{**base, **kw})


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_planted_factorisation(seed):
    V, W, _ = planted(seed=seed)
    res = fit_nmf(V, cfg(), progress=False)
    assert res.rel_error < 1e-3
    assert res.W.shape == (40, 5) and res.H.shape == (5, 300)
    # every true atom is found (cosine similarity with its best match)
    cos = (W.T @ res.W).max(dim=1).values  # (K,)
    assert float(cos.min()) > 0.99
    # the reported error is the true one
    direct = float((V.T - res.W @ res.H).norm() / V.norm())
    assert res.rel_error == pytest.approx(direct, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("solver,sparsity", [("mu", 0.0), ("hals", 0.0), ("hals", 0.5)])
def test_objective_never_increases(solver, sparsity):
    V, _, _ = planted(F=30, K=6, N=200, seed=3, noise=0.05)
    res = fit_nmf(V, cfg(n_components=4, solver=solver, sparsity=sparsity, n_iter=60, tol=0,
                         extrapolate=False), progress=False)
    h = np.array(res.history)
    assert len(h) >= 20  # tol=0 stops only when rounding makes f tick up (by < 1e-6)
    assert np.all(np.diff(h) <= 1e-6 * h[:-1])
    assert h[-1] < h[0]


def test_extrapolation_reaches_lower_error_in_as_many_iterations():
    V, _, _ = planted(F=60, K=12, N=600, seed=8, noise=0.2)
    kw = dict(n_components=8, n_iter=25, tol=0, sparsity=0.1)
    plain = fit_nmf(V, cfg(**kw, extrapolate=False), progress=False)
    fast = fit_nmf(V, cfg(**kw, extrapolate=True), progress=False)
    assert len(fast.history) == 25
    assert fast.history[-1] < plain.history[-1]
    assert fast.rel_error <= plain.rel_error
    best = np.minimum.accumulate(fast.history)
    assert fast.history[-1] <= best[-1] * (1 + 1e-6)  # ends at its best
    torch.testing.assert_close(fast.W.norm(dim=0), torch.ones(8), atol=1e-5, rtol=0)


def test_objective_matches_definition():
    V, _, _ = planted(F=30, K=6, N=200, seed=3, noise=0.05)
    lam = 0.3
    res = fit_nmf(V, cfg(n_components=4, sparsity=lam, n_iter=20, tol=0), progress=False)
    # history[-1] is measured after the last H update, before the last W update, so refit H
    H = nmf_transform(V, res.W, lam, n_iter=500)
    f = float((V.T - res.W @ H).square().sum() + lam * H.sum()) / float(V.square().sum())
    assert f <= res.history[-1] * (1 + 1e-4)
    assert f == pytest.approx(res.history[-1], rel=0.02)


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_atoms_non_negative_unit_norm(solver):
    V, _, _ = planted(seed=2, noise=0.1)
    res = fit_nmf(V, cfg(n_components=7, solver=solver, n_iter=30, sparsity=0.2),
                  progress=False)
    assert res.W.dtype == torch.float32 and res.W.device.type == "cpu"
    assert float(res.W.min()) >= 0.0 and float(res.H.min()) >= 0.0
    torch.testing.assert_close(res.W.norm(dim=0), torch.ones(7), atol=1e-5, rtol=0)


def test_deterministic_for_a_seed():
    V, _, _ = planted(seed=4, noise=0.1)
    a = fit_nmf(V, cfg(n_iter=20, seed=7), progress=False)
    b = fit_nmf(V, cfg(n_iter=20, seed=7), progress=False)
    c = fit_nmf(V, cfg(n_iter=20, seed=8, batch_frames=64), progress=False)
    d = fit_nmf(V, cfg(n_iter=20, seed=8, batch_frames=64), progress=False)
    assert torch.equal(a.W, b.W) and a.history == b.history
    assert torch.equal(c.W, d.W)


def test_minibatch_converges_close_to_full_batch():
    V, _, _ = planted(F=40, K=5, N=1200, seed=5, noise=0.02)
    full = fit_nmf(V, cfg(n_iter=200, tol=1e-6), progress=False)
    mb = fit_nmf(V, cfg(n_iter=40, tol=1e-6, batch_frames=300), progress=False)
    assert mb.H is None and len(mb.history) >= 2
    assert mb.history[-1] < mb.history[0]
    assert mb.rel_error < full.rel_error * 1.1 + 1e-3
    torch.testing.assert_close(mb.W.norm(dim=0), torch.ones(5), atol=1e-5, rtol=0)


def test_sparsity_increases_zeros_in_h():
    V, _, _ = planted(F=40, K=8, N=400, seed=6, noise=0.05)
    dense = fit_nmf(V, cfg(n_components=8, n_iter=80, sparsity=0.0), progress=False)
    sparse = fit_nmf(V, cfg(n_components=8, n_iter=80, sparsity=0.5), progress=False)
    zeros = lambda H: float((H <= 0).float().mean())  # noqa: E731
    assert zeros(sparse.H) > zeros(dense.H) + 0.1
    assert sparse.H.sum() < dense.H.sum()
    assert sparse.rel_error > dense.rel_error  # sparsity trades reconstruction for it


def test_transform_with_fixed_dictionary():
    V, W, H = planted(seed=1)
    Hhat = nmf_transform(V, W, n_iter=500, tol=1e-9)
    assert Hhat.shape == H.shape and float(Hhat.min()) >= 0
    torch.testing.assert_close(Hhat, H, atol=2e-3, rtol=0)
    # a scaled (not unit-norm) dictionary gives scaled activations, same reconstruction
    H2 = nmf_transform(V, 2.0 * W, n_iter=500, tol=1e-9)
    torch.testing.assert_close(H2, H / 2, atol=2e-3, rtol=0)
    assert relative_error(V, W, n_iter=500) < 1e-3
    # sparsity shrinks the activations
    Hs = nmf_transform(V, W, sparsity=0.5, n_iter=200)
    assert float(Hs.sum()) < float(Hhat.sum())


def test_transform_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="does not match"):
        nmf_transform(torch.rand(10, 30), torch.rand(20, 4))


def test_reconstruct_is_w_times_h_transposed():
    W = torch.rand(9, 4)
    H = torch.rand(2, 4, 7, requires_grad=True)
    out = reconstruct(W, H)
    assert out.shape == (2, 7, 9)
    torch.testing.assert_close(out[1, 3], W @ H[1, :, 3].detach())
    out.sum().backward()
    assert H.grad is not None and H.grad.shape == H.shape
    with pytest.raises(ValueError, match="H \\(B, K, T\\)"):
        reconstruct(W, torch.rand(4, 7))


def test_bad_config_and_frames():
    V, _, _ = planted()
    with pytest.raises(ConfigError, match="nmf.solver"):
        fit_nmf(V, cfg(solver="als"), progress=False)
    with pytest.raises(ConfigError, match="nmf.sparsity"):
        fit_nmf(V, cfg(sparsity=-1.0), progress=False)
    with pytest.raises(L2IError, match="non-negative"):
        fit_nmf(V - 1.0, cfg(), progress=False)
    with pytest.raises(L2IError, match="NaN"):
        fit_nmf(torch.full((10, 40), float("nan")), cfg(), progress=False)
    with pytest.raises(L2IError, match="no training frames"):
        fit_nmf(torch.zeros(0, 40), cfg(), progress=False)


def test_more_components_than_bins_works():
    V, _, _ = planted(F=6, K=3, N=100, seed=2, noise=0.05)
    res = fit_nmf(V, cfg(n_components=8, n_iter=20), progress=False)
    assert res.W.shape == (6, 8) and torch.isfinite(res.W).all()


# --------------------------------------------------------------------------- files
FEATS = FeaturesConfig()  # 16 kHz, n_fft 1024 -> 513 bins


def test_save_load_round_trip(tmp_path):
    W = torch.rand(513, 12)
    path = save_dictionary(tmp_path / "nmf.pt", W, FEATS, {"rel_error_train": 0.1})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "l2i-nmf" and raw["version"] == 2
    assert raw["features"] == asdict(FEATS) and raw["stats"]["rel_error_train"] == 0.1
    W2, feats = load_dictionary(path, FEATS)
    assert torch.equal(W2, W) and feats == asdict(FEATS)
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_import_numpy(tmp_path):
    W = np.random.default_rng(0).random((513, 20)).astype(np.float64)
    np.save(tmp_path / "W.npy", W)
    W2, feats = load_dictionary(tmp_path / "W.npy", FEATS, sample_rate=16000, n_fft=1024)
    assert feats is None and W2.dtype == torch.float32 and W2.shape == (513, 20)
    np.testing.assert_allclose(W2.numpy(), W, rtol=1e-6)


def test_import_speechbrain_state_dict_applies_relu(tmp_path):
    W = torch.randn(513, 100)
    torch.save({"W": W}, tmp_path / "nmf_decoder.ckpt")
    with pytest.warns(UserWarning, match="ReLU"):
        W2, feats = load_dictionary(tmp_path / "nmf_decoder.ckpt", FEATS, sample_rate=16000)
    assert feats is None
    torch.testing.assert_close(W2, W.clamp(min=0))
    torch.save(W.abs(), tmp_path / "raw.pt")  # a raw tensor
    W3, _ = load_dictionary(tmp_path / "raw.pt")
    torch.testing.assert_close(W3, W.abs())


def test_numpy_dictionary_stated_at_another_sample_rate_is_refused(tmp_path):
    # 44.1 kHz, n_fft 1024: 513 bins over 0-22 kHz, the same count as 16 kHz features (§8.4)
    np.save(tmp_path / "W44.npy", np.random.default_rng(0).random((513, 8)).astype(np.float32))
    with pytest.raises(L2IError) as err:
        load_dictionary(tmp_path / "W44.npy", FEATS, sample_rate=44100, n_fft=1024)
    msg = str(err.value)
    assert "W44.npy" in msg and "sample_rate 44100 vs 16000" in msg and "--init_sample_rate" in msg
    assert "22050 Hz" in msg and "8000 Hz" in msg and "train-nmf" in msg
    assert "--features.sample_rate 44100" in msg
    torch.save({"W": torch.rand(513, 8)}, tmp_path / "nmf_decoder.ckpt")  # SpeechBrain: same
    with pytest.raises(L2IError, match="--nmf_sample_rate / --nmf_n_fft"):
        load_dictionary(tmp_path / "nmf_decoder.ckpt", FEATS, sample_rate=44100, option="nmf")


def test_numpy_dictionary_without_a_statement_warns_loudly(tmp_path):
    np.save(tmp_path / "W.npy", np.random.default_rng(0).random((513, 8)).astype(np.float32))
    with pytest.warns(UserWarning, match="no STFT settings; ASSUMING .*16000 Hz.*44.1 kHz"
                                         ".*--init_sample_rate / --init_n_fft"):
        load_dictionary(tmp_path / "W.npy", FEATS)
    with warnings.catch_warnings():  # a matching statement: accepted in silence
        warnings.simplefilter("error")
        W, feats = load_dictionary(tmp_path / "W.npy", FEATS, sample_rate=16000, n_fft=1024)
        assert W.shape == (513, 8) and feats is None
        load_dictionary(tmp_path / "W.npy")  # no features to check against: nothing to say


def test_stated_features_must_agree_with_the_bins_and_the_file(tmp_path):
    np.save(tmp_path / "W.npy", np.ones((513, 4), np.float32))
    with pytest.raises(L2IError, match="513 frequency bins but the stated n_fft 2048.*1025"):
        load_dictionary(tmp_path / "W.npy", FEATS, sample_rate=16000, n_fft=2048)
    path = save_dictionary(tmp_path / "nmf.pt", torch.rand(513, 4), FEATS, {})
    with pytest.raises(L2IError, match="records its own STFT.*44100 stated vs 16000 recorded"):
        load_dictionary(path, FEATS, sample_rate=44100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dictionary(path, FEATS, sample_rate=16000)  # agrees with the record


def test_wrong_number_of_bins(tmp_path):
    np.save(tmp_path / "W.npy", np.ones((257, 10), np.float32))
    with pytest.raises(L2IError) as err:
        load_dictionary(tmp_path / "W.npy", FEATS)
    msg = str(err.value)
    assert "W.npy" in msg and "257" in msg and "513" in msg and "train-nmf" in msg
    np.save(tmp_path / "T.npy", np.ones((10, 513), np.float32))
    with pytest.raises(L2IError, match="transposed"):
        load_dictionary(tmp_path / "T.npy", FEATS)


def test_features_mismatch(tmp_path):
    path = save_dictionary(tmp_path / "nmf.pt", torch.rand(513, 4), FEATS, {})
    other = replace(FEATS, sample_rate=22050)
    with pytest.raises(L2IError) as err:
        load_dictionary(path, other)
    msg = str(err.value)
    assert "nmf.pt" in msg and "sample_rate" in msg and "16000" in msg and "22050" in msg
    assert "--features.sample_rate 22050" in msg
    W, _ = load_dictionary(path, replace(FEATS, n_mels=40))  # mels do not matter to W


def test_unreadable_files(tmp_path):
    with pytest.raises(L2IError, match="not found"):
        load_dictionary(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(L2IError, match="cannot read"):
        load_dictionary(tmp_path / "junk.pt")
    torch.save({"format": "l2i-classifier", "state_dict": {}}, tmp_path / "clf.ckpt")
    with pytest.raises(L2IError, match="not an NMF dictionary"):
        load_dictionary(tmp_path / "clf.ckpt")
    np.save(tmp_path / "v.npy", np.ones(5))
    with pytest.raises(L2IError, match="2-D"):
        load_dictionary(tmp_path / "v.npy")


def test_minibatch_streams_a_read_only_memmap(tmp_path):
    V, _, _ = planted(F=30, K=4, N=800, seed=9, noise=0.02)
    np.save(tmp_path / "frames.npy", V.numpy())
    mm = np.load(tmp_path / "frames.npy", mmap_mode="r")
    res = fit_nmf(mm, cfg(n_components=4, n_iter=15, batch_frames=200), progress=False)
    assert res.W.shape == (30, 4) and res.rel_error < 0.1
    assert res.objective == pytest.approx(res.rel_error ** 2, rel=1e-3)  # no sparsity
