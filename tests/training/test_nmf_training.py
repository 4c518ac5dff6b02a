"""l2i train-nmf end to end on the tiny synthetic dataset."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from l2i.config import NMFConfig, NMFRecipe, load_config
from l2i.errors import L2IError
from l2i.nmf import load_dictionary
from l2i.training.nmf import spectral_centroids, spectrogram_frames, subsample, train_nmf


@pytest.fixture
def recipe(tiny_dataset, tiny_features, tiny_data_config, tmp_path) -> NMFRecipe:
    return NMFRecipe(data_folder=str(tiny_dataset), output_folder=str(tmp_path / "nmf"),
                     features=tiny_features, data=tiny_data_config,
                     nmf=NMFConfig(n_components=8, n_iter=40, sparsity=0.1, device="cpu"))


def test_train_nmf_writes_dictionary_figure_and_metrics(recipe, tiny_features):
    path = train_nmf(recipe)
    out = torch.load(path, weights_only=True)
    assert out["format"] == "l2i-nmf" and out["W"].shape == (tiny_features.n_freq, 8)
    assert out["features"] == asdict(tiny_features)
    W, feats = load_dictionary(path, tiny_features)
    torch.testing.assert_close(W.norm(dim=0), torch.ones(8), atol=1e-5, rtol=0)
    folder = path.rsplit("/", 1)[0]
    stats = json.loads(open(f"{folder}/nmf.json").read())
    assert stats["n_components"] == 8
    assert stats["n_frames"] == 16 * (1 + 8000 // tiny_features.hop_length)  # 16 train clips
    assert 0 < stats["rel_error_train"] < 0.5 and 0 < stats["rel_error_valid"] < 0.6
    assert stats["rel_error_valid"] >= stats["rel_error_train"] * 0.8
    assert stats["objective"] < stats["history"][0]
    assert stats["objective"] == pytest.approx(min(stats["history"]), rel=0.02)
    assert out["stats"]["rel_error_valid"] == pytest.approx(stats["rel_error_valid"])
    png = open(f"{folder}/atoms.png", "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    cfg = load_config(NMFRecipe, f"{folder}/config.yaml")
    assert cfg == recipe


def test_refuses_to_overwrite_a_dictionary(recipe):
    train_nmf(replace(recipe, nmf=replace(recipe.nmf, n_iter=3)))
    with pytest.raises(L2IError, match="already exists"):
        train_nmf(recipe)


def test_import_existing_dictionary(recipe, tiny_features, tmp_path):
    W = np.random.default_rng(0).random((tiny_features.n_freq, 6)).astype(np.float32)
    np.save(tmp_path / "W.npy", W)
    path = train_nmf(replace(recipe, init=str(tmp_path / "W.npy"), init_sample_rate=8000,
                             init_n_fft=256))
    W2, feats = load_dictionary(path, tiny_features)
    np.testing.assert_allclose(W2.numpy(), W)
    assert feats == asdict(tiny_features)
    stats = json.loads(open(path.rsplit("/", 1)[0] + "/nmf.json").read())
    assert stats["n_components"] == 6 and stats["history"] == []
    assert stats["features_source"] == "stated"
    assert 0 < stats["rel_error_train"] < 1 and 0 < stats["rel_error_valid"] < 1


def test_import_stated_at_another_sample_rate_is_refused(recipe, tiny_features, tmp_path):
    # same bin count (n_fft 256: 129 bins), but learnt at 44.1 kHz: 0-22 kHz, not 0-4 kHz
    np.save(tmp_path / "W.npy", np.ones((tiny_features.n_freq, 6), np.float32))
    bad = replace(recipe, init=str(tmp_path / "W.npy"), init_sample_rate=44100, init_n_fft=256)
    with pytest.raises(L2IError, match="W.npy was learnt with other STFT.*sample_rate 44100 "
                                       "vs 8000"):
        train_nmf(bad)
    assert not (tmp_path / "nmf").exists()  # refused before any output or audio decoding


def test_import_without_a_statement_warns_and_records_it(recipe, tiny_features, tmp_path):
    np.save(tmp_path / "W.npy", np.ones((tiny_features.n_freq, 6), np.float32))
    with pytest.warns(UserWarning, match="ASSUMING"):
        path = train_nmf(replace(recipe, init=str(tmp_path / "W.npy")))
    assert torch.load(path, weights_only=True)["stats"]["features_source"] == "assumed"
    with pytest.warns(UserWarning, match="ASSUMED .*--init_sample_rate"):  # said again on use
        load_dictionary(path, tiny_features)


def test_import_with_wrong_bins_is_refused(recipe, tmp_path):
    np.save(tmp_path / "W.npy", np.ones((513, 6), np.float32))
    with pytest.raises(L2IError, match="513 frequency bins"):
        train_nmf(replace(recipe, init=str(tmp_path / "W.npy")))


def test_frames_and_helpers(tiny_features):
    wavs = np.random.default_rng(0).uniform(-1, 1, (3, 800)).astype(np.float32)
    f = spectrogram_frames(wavs, tiny_features, batch=2)
    T = 1 + 800 // tiny_features.hop_length
    assert f.shape == (3 * T, tiny_features.n_freq) and f.min() >= 0
    ragged = spectrogram_frames([wavs[0], wavs[1, :400]], tiny_features)
    assert ragged.shape == (T + 1 + 400 // tiny_features.hop_length, tiny_features.n_freq)
    np.testing.assert_allclose(ragged[:T], f[:T], atol=1e-6)
    s1, s2 = subsample(f, 5, seed=1), subsample(f, 5, seed=1)
    assert s1.shape == (5, f.shape[1]) and np.array_equal(s1, s2)
    assert subsample(f, None, 0) is f
    W = torch.zeros(tiny_features.n_freq, 2)
    W[10, 0], W[100, 1] = 1.0, 1.0
    c = spectral_centroids(W, tiny_features)
    hz = tiny_features.sample_rate / 2 / (tiny_features.n_freq - 1)
    np.testing.assert_allclose(c, [10 * hz, 100 * hz])


def test_minibatch_mode_streams_frames_from_disk(recipe, tiny_features):
    nmf = replace(recipe.nmf, batch_frames=256, n_iter=5)
    path = train_nmf(replace(recipe, nmf=nmf))
    folder = path.rsplit("/", 1)[0]
    mm = np.load(f"{folder}/cache/frames-train.npy", mmap_mode="r")
    assert mm.shape == (16 * (1 + 8000 // tiny_features.hop_length), tiny_features.n_freq)
    stats = json.loads(open(f"{folder}/nmf.json").read())
    assert stats["n_frames"] == mm.shape[0] and 0 < stats["rel_error_train"] < 0.6
    W, _ = load_dictionary(path, tiny_features)
    torch.testing.assert_close(W.norm(dim=0), torch.ones(8), atol=1e-5, rtol=0)
