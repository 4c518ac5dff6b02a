"""The map cache: shards read back equal, size estimate, refusal past the limit, auto mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from l2i import cli
from l2i.config import ClassifierModelConfig, L2IRecipe, PsiConfig, ThetaConfig, load_config
from l2i.errors import ConfigError
from l2i.interpreter import Interpreter
from l2i.models import build_classifier, save_classifier
from l2i.models.psi import Psi
from l2i.models.theta import Theta
from l2i.nmf import save_dictionary
from l2i.training.interpreter import classify_wave, train_interpreter
from l2i.training.map_cache import (
    CachedSplit,
    build_cache,
    cache_plan,
    clip_layout,
    estimate_bytes,
    folder_size,
)

N_CLASSES = 8  # tiny_dataset
RECIPE = """\
data: {format: esc50, train_folds: [1, 2], valid_folds: [3], test_folds: [4], duration_s: 1.0}
trainer: {epochs: 2, batch_size: 8, lr: 0.01, optimizer: adam, scheduler: none,
          device: cpu, progress: false, seed: 0}
psi: {hidden: 16, n_layers: 1, dropout: 0.0}
theta: {hidden: 8}
"""


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tiny_features) -> dict:
    """A tiny conv2d classifier (file and model), a K=5 dictionary (file and W), a recipe."""
    root = tmp_path_factory.mktemp("map_cache")
    torch.manual_seed(0)
    model_cfg = ClassifierModelConfig(arch="conv2d", width=2, embed_dim=8, dropout=0.0)
    clf = build_classifier(model_cfg, tiny_features, N_CLASSES).eval()
    save_classifier(root / "classifier.ckpt", clf, model_cfg, tiny_features,
                    [f"class{i}" for i in range(N_CLASSES)])
    W = torch.rand(tiny_features.n_freq, 5, generator=torch.Generator().manual_seed(0))
    save_dictionary(root / "nmf.pt", W, tiny_features)
    (root / "l2i.yaml").write_text(RECIPE)
    return {"root": root, "clf": clf, "W": W}


def _interp(parts, features) -> Interpreter:
    clf, W = parts["clf"], parts["W"]
    psi = Psi(clf.map_channels, W.shape[1], PsiConfig(hidden=8, n_layers=1))
    theta = Theta(W.shape[1], N_CLASSES, ThetaConfig(hidden=4))
    return Interpreter(clf, psi, theta, W, features, [str(i) for i in range(N_CLASSES)]).eval()


def _cfg(parts, data, out, **over) -> L2IRecipe:
    root = parts["root"]
    return load_config(L2IRecipe, root / "l2i.yaml", {
        "data_folder": str(data), "classifier_ckpt": str(root / "classifier.ckpt"),
        "nmf": str(root / "nmf.pt"), "output_folder": str(out), **over})


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-6), ("float16", 2e-3)])
def test_shards_read_back_what_the_classifier_computes(parts, tiny_features, tmp_path, dtype,
                                                       rtol):
    interp = _interp(parts, tiny_features)
    wavs = np.random.default_rng(0).uniform(-1, 1, (10, 4000)).astype(np.float32)
    labels = np.arange(10) % N_CLASSES
    # batches of 3 across shards of 4: the shard boundaries fall inside batches
    folder = build_cache(interp, wavs, labels, tmp_path / "c", "k", 3, torch.device("cpu"),
                         dtype=dtype, shard_clips=4)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["shards"] == 3 and sorted(p.name for p in folder.glob("logits-*.npy")) == [
        "logits-00000.npy", "logits-00001.npy", "logits-00002.npy"]
    with torch.no_grad():
        logits, maps, target = classify_wave(interp, torch.from_numpy(wavs))
        reduced = interp.psi.reduce(maps)
    cached = CachedSplit(folder, wavs, tiny_features)
    idx = [9, 0, 4, 3, 7]  # unsorted, every shard
    batch = cached.__getitems__(idx)
    assert torch.allclose(batch["logits"], logits[idx], rtol=1e-6, atol=1e-6)
    for name, r in reduced.items():
        got = batch["reduced"][name]
        assert got.dtype == getattr(torch, dtype) and got.shape == r[idx].shape
        assert torch.allclose(got.float(), r[idx], rtol=rtol, atol=rtol * float(r.abs().max()))
    assert torch.allclose(batch["target"], target[idx], atol=1e-5)  # recomputed from the audio
    assert torch.equal(batch["audio"], torch.from_numpy(wavs[idx]))
    assert batch["label"].tolist() == (labels[idx]).tolist()


def test_size_estimate_matches_the_written_cache(parts, tiny_features, tmp_path):
    interp = _interp(parts, tiny_features)
    wavs = np.random.default_rng(1).uniform(-1, 1, (37, 8000)).astype(np.float32)
    layout = clip_layout(interp, wavs[0], "float16")
    est = estimate_bytes(layout, len(wavs), 8)
    folder = build_cache(interp, wavs, np.zeros(37, dtype=np.int64), tmp_path / "c", "k", 8,
                         torch.device("cpu"), shard_clips=8)
    written = folder_size(folder)
    assert abs(est - written) / written < 0.03, (est, written)


def test_auto_caches_below_the_threshold_and_asks_past_the_limit():
    gb = 10**9
    assert cache_plan("auto", 1 * gb, auto_gb=2, limit_gb=10) is True
    assert cache_plan("auto", 3 * gb, auto_gb=2, limit_gb=10) is False
    assert cache_plan(True, 30 * gb, auto_gb=2, limit_gb=10) is True  # explicit: no limit
    assert cache_plan(False, 1, auto_gb=2, limit_gb=10) is False
    with pytest.raises(ConfigError, match="trainer.cache_limit_gb"):
        cache_plan("auto", 30 * gb, auto_gb=2, limit_gb=10)


def test_past_the_limit_the_command_exits_2_naming_the_key(parts, tiny_dataset, tmp_path,
                                                            capsys):
    root = parts["root"]
    out = tmp_path / "run"
    code = cli.main(["train", str(root / "l2i.yaml"), "--threads", "1", "--data_folder",
                     str(tiny_dataset), "--classifier_ckpt", str(root / "classifier.ckpt"),
                     "--nmf", str(root / "nmf.pt"), "--output_folder", str(out),
                     "--trainer.cache_limit_gb", "1e-6"])
    err = capsys.readouterr().err
    assert code == 2
    assert "trainer.cache_limit_gb" in err and "--cache_maps true" in err
    assert "Traceback" not in err and not list((out / "cache").glob("train*"))


def test_auto_recomputes_above_the_threshold_and_trains_the_same(parts, tiny_dataset,
                                                                 tmp_path, capsys):
    cached_out, recomputed_out = tmp_path / "cached", tmp_path / "recomputed"
    train_interpreter(_cfg(parts, tiny_dataset, cached_out, cache_maps="true",
                           **{"trainer.cache_dtype": "float32"}))
    train_interpreter(_cfg(parts, tiny_dataset, recomputed_out,
                           **{"trainer.cache_auto_gb": 1e-6}))
    said = capsys.readouterr().out
    assert "over trainer.cache_auto_gb" in said and "recomputing" in said
    a = json.loads((cached_out / "metrics.json").read_text())
    b = json.loads((recomputed_out / "metrics.json").read_text())
    assert a["cache"] and a["cache_mb"] > 0
    assert not b["cache"] and b["cache_splits"] == []
    assert not (recomputed_out / "cache" / "train").exists()
    for k in ("valid/loss", "valid/rec_mse", "test/loss"):
        assert b[k] == pytest.approx(a[k], rel=1e-3), k
    for k in ("valid/fid_top1", "test/fid_top1"):
        assert b[k] == a[k], k
    wa = torch.load(cached_out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    wb = torch.load(recomputed_out / "checkpoints" / "last.ckpt",
                    weights_only=False)["state_dict"]
    for name in wa:
        if name.startswith(("interp.psi", "interp.theta")):
            assert torch.allclose(wa[name], wb[name], rtol=1e-3, atol=1e-5), name
