"""Classifier training: augmentations, metrics, train/evaluate commands, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from l2i.config import (
    ClassifierModelConfig,
    ClassifierRecipe,
    EvaluateClassifierRecipe,
    TrainerConfig,
)
from l2i.errors import L2IError
from l2i.models import load_classifier
from l2i.training.classifier import (
    evaluate_classifier,
    evaluation_data_config,
    mixup,
    random_gain,
    spec_augment,
    split_metrics,
    time_shift,
    train_classifier,
)


def test_time_shift_is_a_per_clip_rotation():
    torch.manual_seed(0)
    wav = torch.arange(20.0).repeat(3, 1)  # (3, 20)
    out = time_shift(wav, 0.5)
    for row in out:
        k = int((row[0] - 0) % 20)  # where sample 0 went
        assert torch.equal(row, torch.roll(wav[0], -k))
    assert torch.equal(time_shift(wav, 0.0), wav)


def test_random_gain_stays_within_bounds():
    torch.manual_seed(0)
    wav = torch.ones(200, 4)
    ratio_db = 20 * torch.log10(random_gain(wav, 6.0)[:, 0])
    assert ratio_db.abs().max() <= 6.0 + 1e-4 and ratio_db.std() > 1.0
    out = random_gain(wav, 6.0)
    assert torch.allclose(out, out[:, :1].expand_as(out))


def test_mixup_targets():
    torch.manual_seed(0)
    wav = torch.eye(4)  # clip i is a unit impulse at i
    target = torch.eye(4)
    mixed, t = mixup(wav, target, alpha=0.4)
    torch.testing.assert_close(t.sum(-1), torch.ones(4))
    assert (t.max(-1).values >= 0.5).all()
    torch.testing.assert_close(mixed, t)  # the waveforms mix exactly like the targets
    same, same_t = mixup(wav, target, alpha=0.0)
    assert same is wav and same_t is target


def test_spec_augment_masks_bands():
    torch.manual_seed(0)
    x = torch.ones(8, 50, 20)
    out = spec_augment(x, n_freq=1, freq_width=5, n_time=1, time_width=10)
    zeros_f = (out == 0).all(dim=1).sum(-1)  # fully masked freq bins per clip
    zeros_t = (out == 0).all(dim=2).sum(-1)  # fully masked frames per clip
    assert (zeros_f <= 5).all() and (zeros_t <= 10).all() and zeros_t.sum() > 0
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(spec_augment(x, 0, 5, 0, 10), x)


def test_split_metrics_hand_checked():
    logits = np.array([[2, 1, 0], [0, 3, 1], [0, 2, 1], [0, 0, 1]], dtype=np.float32)
    labels = np.array([0, 1, 2, 2])
    m = split_metrics(logits, labels, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["per_class_accuracy"] == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_evaluation_data_config():
    from l2i.config import DataConfig
    d = evaluation_data_config(DataConfig(), [4])  # defaults 1,2,3 / 4 / 5
    assert (d.train_folds, d.valid_folds, d.test_folds) == ([1, 2], [3], [4])
    d = evaluation_data_config(DataConfig(), None)
    assert (d.train_folds, d.valid_folds, d.test_folds) == ([1, 2, 3], [4], [5])


def _recipe(data: Path, out: Path, tiny_features, **trainer) -> ClassifierRecipe:
    return ClassifierRecipe(
        data_folder=str(data), output_folder=str(out), features=tiny_features,
        data=ClassifierRecipe().data.__class__(train_folds=[1, 2], valid_folds=[3],
                                               test_folds=[4], duration_s=1.0),
        trainer=TrainerConfig(**{"epochs": 2, "batch_size": 8, "lr": 3e-3, "device": "cpu",
                                 "progress": False, "warmup_epochs": 0, **trainer}),
        model=ClassifierModelConfig(arch="conv2d", width=4, embed_dim=16))


def test_train_then_evaluate(tmp_path, tiny_dataset, tiny_features):
    cfg = _recipe(tiny_dataset, tmp_path / "clf", tiny_features, patience=4)
    cfg.augment.time_shift, cfg.augment.mixup_alpha, cfg.augment.freq_masks = 0.2, 0.2, 1
    cfg.augment.gain_db = 3.0
    summary = train_classifier(cfg)
    out = tmp_path / "clf"
    assert "valid accuracy" in summary
    for name in ("classifier.ckpt", "metrics.json", "confusion.png", "config.yaml"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == 2 and m["valid"]["n_clips"] == 8 and m["test"]["n_clips"] == 8
    assert 0 <= m["test_accuracy"] <= 1 and len(m["test"]["per_class_accuracy"]) == 8
    assert m["seconds_per_epoch"] > 0 and m["peak_rss_mb"] > 50
    # early stopping watches the classifier's own validation metric
    callbacks = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    assert any("EarlyStopping" in k and "valid_acc" in k for k in callbacks), list(callbacks)
    assert m["patience"] == 4 and m["stopped_early"] is False
    model, info = load_classifier(out / "classifier.ckpt")
    assert len(info.class_names) == 8 and info.features == tiny_features
    assert info.metrics["valid_accuracy"] == m["valid_accuracy"]
    # the calibration of l2i interpret's low_confidence warning (top probability, valid clips)
    assert 1 / 8 <= info.metrics["valid_max_prob_q05"] <= 1
    # the normalisation of its training clips, which l2i.explain applies to new audio
    assert torch.load(out / "classifier.ckpt", weights_only=True)["normalize"] == "peak"
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(L2IError, match="finished run"):
        train_classifier(cfg)  # never overwrite silently

    res = evaluate_classifier(EvaluateClassifierRecipe(
        ckpt=str(out / "classifier.ckpt"), data_folder=str(tiny_dataset), test_folds=[4],
        device="cpu"))
    ev = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert ev["accuracy"] == pytest.approx(m["test_accuracy"])  # same weights, same clips
    assert ev["test_folds"] == [4] and "accuracy" in res
    assert (out / "evaluation" / "confusion.png").is_file()


def test_ctrl_c_exits_130_with_a_resume_hint_then_resume(tmp_path, tiny_dataset, tiny_features):
    """SIGINT the CLI once its first checkpoint exists: exit 130, one line saying how to resume,
    no traceback; resuming (with fewer epochs than asked at first: allowed) finishes the run."""
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "features": {"sample_rate": tiny_features.sample_rate, "n_fft": tiny_features.n_fft,
                     "n_mels": tiny_features.n_mels},
        "data": {"train_folds": [1, 2], "valid_folds": [3], "test_folds": [4],
                 "duration_s": 1.0},
        "trainer": {"epochs": 200, "batch_size": 8, "device": "cpu", "progress": False},
        "model": {"arch": "conv2d", "width": 4, "embed_dim": 16}}))
    cmd = [sys.executable, "-m", "l2i.cli", "train-classifier", str(recipe),
           "--data_folder", str(tiny_dataset), "--output_folder", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300  # a loaded machine (xdist, other jobs) starts slowly
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert last.exists(), "no checkpoint within 300 s"
    proc.send_signal(signal.SIGINT)
    try:
        stderr = proc.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:  # say what the run was doing, then fail
        proc.kill()
        pytest.fail("no exit 120 s after SIGINT; stderr: " + proc.communicate()[1][-2000:])
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    hint = stderr.strip().splitlines()[-1]
    assert hint.startswith("l2i train-classifier: interrupted") and "--trainer.resume true" in hint
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    epochs = killed_at + 2
    from l2i.cli import main  # the same command, in this process (saves a second start-up)
    assert main(cmd[3:] + ["--trainer.resume", "true", "--trainer.epochs", str(epochs)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == epochs and m["epochs_this_run"] < epochs
    model, info = load_classifier(out / "classifier.ckpt")
    assert info.metrics["best_epoch"] is not None and len(info.class_names) == 8


def test_same_seed_same_weights(tmp_path, tiny_dataset, tiny_features):
    """Seed-deterministic on CPU, augmentation included; the same from the dataset's folder
    and from its (float32) shards, which hold the same clips in the same order."""
    from l2i.data import load_dataset
    from l2i.shards import write_shards

    data = _recipe(tiny_dataset, tmp_path, tiny_features).data
    shards = write_shards(load_dataset(tiny_dataset, data), data, tiny_features.sample_rate,
                          tmp_path / "shards", clips_per_shard=5, dtype="float32")
    states = []
    for name, folder in (("a", tiny_dataset), ("b", shards)):
        cfg = _recipe(folder, tmp_path / name, tiny_features, epochs=1)
        cfg.augment.time_shift, cfg.augment.mixup_alpha, cfg.augment.time_masks = 0.3, 0.4, 2
        train_classifier(cfg)
        states.append(torch.load(tmp_path / name / "classifier.ckpt", weights_only=True))
    for k, v in states[0]["state_dict"].items():
        torch.testing.assert_close(v, states[1]["state_dict"][k], rtol=0, atol=0, msg=k)


def test_clip_mixing_is_refused_by_the_classifier(tiny_dataset, tiny_features, tmp_path):
    """augment.mix_prob is an l2i train option: the classifier says so before writing a file."""
    from dataclasses import replace

    from l2i.config import AugmentConfig

    cfg = _recipe(tiny_dataset, tmp_path / "clf", tiny_features, epochs=1)
    cfg = replace(cfg, augment=AugmentConfig(mix_prob=0.5))
    with pytest.raises(L2IError, match="augment.mix_prob = 0.5: an l2i train option"):
        train_classifier(cfg)
    assert not (tmp_path / "clf").exists()
