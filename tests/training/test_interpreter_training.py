"""L2I training: losses, frozen parts, cache, end to end, kill -9 + resume, DDP, input checks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from l2i.config import (
    ClassifierModelConfig,
    FeaturesConfig,
    L2ILossConfig,
    L2IRecipe,
    PsiConfig,
    ThetaConfig,
    TrainerConfig,
    load_config,
)
from l2i.errors import L2IError
from l2i.interpreter import Interpreter, load_interpreter
from l2i.models import build_classifier, save_classifier
from l2i.models.psi import Psi
from l2i.models.theta import Theta
from l2i.nmf import save_dictionary
from l2i.training.interpreter import (
    CachedSplit,
    L2IModule,
    WaveSplit,
    build_cache,
    l2i_loss,
    make_loader,
    reconstruction_mse,
    soft_cross_entropy,
    sparsity_l1,
    topk_hits,
    train_interpreter,
)

K = 6
N_CLASSES = 8  # tiny_dataset
RECIPE = """\
data: {format: esc50, train_folds: [1, 2], valid_folds: [3], test_folds: [4], duration_s: 1.0}
trainer: {epochs: 3, batch_size: 8, lr: 0.01, optimizer: adam, scheduler: plateau,
          device: cpu, progress: false, seed: 0}
psi: {hidden: 16, n_layers: 1, dropout: 0.0}
theta: {hidden: 8}
"""


# ---------------------------------------------------------------------------- loss functions
def test_reconstruction_and_sparsity_terms_by_hand():
    recon = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[1.0, 0.0], [3.0, 2.0]]])
    assert reconstruction_mse(recon, target).item() == pytest.approx((0 + 4 + 0 + 4) / 4)
    H = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]]])
    assert sparsity_l1(H).item() == pytest.approx(1.0)


def test_soft_cross_entropy_by_hand():
    theta = torch.tensor([[0.0, math.log(3.0)]])  # softmax [1/4, 3/4]
    clf = torch.tensor([[0.0, 0.0]])  # softmax [1/2, 1/2]
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert soft_cross_entropy(theta, clf, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # a low temperature makes the target one-hot on the classifier's prediction
    clf2 = torch.tensor([[0.0, 0.1]])
    assert soft_cross_entropy(theta, clf2, 1e-3).item() == pytest.approx(-math.log(0.75),
                                                                        rel=1e-5)
    # temperature 2 halves the classifier's logits: target softmax([0, ln 3] / 2)
    clf3 = torch.tensor([[0.0, 2 * math.log(3.0)]])  # target [1/4, 3/4]
    assert soft_cross_entropy(theta, clf3, 2.0).item() == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-5)


def test_soft_cross_entropy_is_finite_when_theta_is_certain_and_wrong():
    theta = torch.tensor([[1e4, -1e4]])
    clf = torch.tensor([[-50.0, 50.0]])
    value = soft_cross_entropy(theta, clf, 1.0)
    assert torch.isfinite(value) and value.item() == pytest.approx(2e4, rel=1e-3)
    with pytest.raises(ValueError):
        soft_cross_entropy(theta, clf, 0.0)


def test_total_loss_weights_the_terms():
    g = torch.Generator().manual_seed(0)
    recon, target = torch.rand(2, 5, 3, generator=g), torch.rand(2, 5, 3, generator=g)
    H, th, cl = torch.rand(2, 4, 5, generator=g), torch.randn(2, 3), torch.randn(2, 3)
    cfg = L2ILossConfig(alpha=2.0, beta=0.5, fid_weight=3.0, classifier_temp=1.0)
    t = l2i_loss(recon, target, H, th, cl, cfg)
    assert t["loss"].item() == pytest.approx(
        2 * t["rec_mse"].item() + 0.5 * t["sparsity"].item() + 3 * t["fidelity"].item(),
        rel=1e-6)


def test_topk_hits_compare_with_the_prediction_not_the_label():
    theta = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    clf = torch.tensor([[0.0, 9.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]])  # predictions 1 and 3
    assert topk_hits(theta, clf, 1).tolist() == [0.0, 1.0]
    assert topk_hits(theta, clf, 2).tolist() == [1.0, 1.0]
    assert topk_hits(theta, clf, 10).tolist() == [1.0, 1.0]  # k > C is clipped


# ---------------------------------------------------------------------------- frozen parts
class ToyClassifier(nn.Module):
    """The classifier interface in miniature, with BatchNorm and dropout (train-mode sensitive)."""

    map_names = ("conv",)
    map_channels = {"conv": 4}

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, n_classes)

    def forward(self, mag):
        m = torch.relu(self.bn(self.conv(torch.log1p(mag).unsqueeze(1))))  # (B, 4, T', F')
        return self.head(self.drop(m.mean(dim=(2, 3)))), {"conv": m}


def _toy(features: FeaturesConfig, n_classes: int = 3) -> Interpreter:
    psi = Psi(ToyClassifier.map_channels, K, PsiConfig(hidden=8, n_layers=1))
    theta = Theta(K, n_classes, ThetaConfig(hidden=4))
    return Interpreter(ToyClassifier(n_classes), psi, theta,
                       torch.rand(features.n_freq, K), features,
                       [str(i) for i in range(n_classes)])


def _fit(module: L.LightningModule, train, valid, epochs: int = 2) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train, valid)


def test_classifier_and_W_do_not_change_during_training(tiny_features):
    torch.manual_seed(0)
    interp = _toy(tiny_features)
    before = {k: v.clone() for k, v in interp.classifier.state_dict().items()}
    W0, psi0 = interp.W.clone(), [p.clone() for p in interp.psi.parameters()]
    wavs = np.random.default_rng(0).uniform(-1, 1, (12, 4000)).astype(np.float32)
    labels = np.arange(12) % 3
    ds = WaveSplit(wavs, labels)  # on the fly: the classifier runs in every step
    module = L2IModule(interp, L2ILossConfig(), TrainerConfig(optimizer="adam", lr=0.01,
                                                              scheduler="none"))
    _fit(module, make_loader(ds, 4, True, 0), make_loader(ds, 4, False, 0))
    after = interp.classifier.state_dict()
    for k, v in before.items():  # weights and BatchNorm running statistics
        assert torch.equal(v, after[k]), k
    assert torch.equal(W0, interp.W)
    assert any(not torch.equal(a, b) for a, b in zip(psi0, interp.psi.parameters()))
    assert not interp.classifier.training


def test_cached_batches_give_the_same_loss_as_on_the_fly(tiny_features, tmp_path):
    torch.manual_seed(0)
    interp = _toy(tiny_features).eval()
    wavs = np.random.default_rng(1).uniform(-1, 1, (6, 4000)).astype(np.float32)
    labels = np.arange(6) % 3
    folder = build_cache(interp, wavs, labels, tmp_path / "train", "k1", 4, torch.device("cpu"))
    stamp = (folder / "meta.json").stat().st_mtime_ns
    assert build_cache(interp, wavs, labels, folder, "k1", 4, torch.device("cpu")) == folder
    assert (folder / "meta.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    cached = CachedSplit(folder, wavs, interp.features)
    assert cached.rows("map_conv", np.arange(6)).dtype == np.float16 and len(cached) == 6
    module = L2IModule(interp, L2ILossConfig(), TrainerConfig()).eval()
    idx = [5, 0, 3]
    with torch.no_grad():
        a, _ = module.shared_step(cached.__getitems__(idx), train=False)
        b, _ = module.shared_step(WaveSplit(wavs, labels).__getitems__(idx), train=False)
    for key in ("loss", "rec_mse", "fidelity", "sparsity"):
        assert a[key].item() == pytest.approx(b[key].item(), rel=2e-2, abs=1e-3), key


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, tiny_features) -> dict[str, Path]:
    """A tiny conv2d classifier checkpoint, a random K=6 dictionary and a recipe."""
    root = tmp_path_factory.mktemp("l2i_artefacts")
    torch.manual_seed(0)
    model_cfg = ClassifierModelConfig(arch="conv2d", width=2, embed_dim=8, dropout=0.0)
    clf = build_classifier(model_cfg, tiny_features, N_CLASSES)
    names = [f"class{i}" for i in range(N_CLASSES)]
    save_classifier(root / "classifier.ckpt", clf, model_cfg, tiny_features, names)
    W = torch.rand(tiny_features.n_freq, K, generator=torch.Generator().manual_seed(0))
    save_dictionary(root / "nmf.pt", W, tiny_features)
    (root / "l2i.yaml").write_text(RECIPE)
    return {"root": root, "clf": root / "classifier.ckpt", "nmf": root / "nmf.pt",
            "recipe": root / "l2i.yaml"}


def _cfg(art, data, out, **over) -> L2IRecipe:
    return load_config(L2IRecipe, art["recipe"], {
        "data_folder": str(data), "classifier_ckpt": str(art["clf"]), "nmf": str(art["nmf"]),
        "output_folder": str(out), **over})


def test_train_end_to_end_writes_a_loadable_bundle(artefacts, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    path = train_interpreter(_cfg(artefacts, tiny_dataset, out, **{"trainer.epochs": 3,
                                                                   "trainer.patience": 5}))
    assert Path(path) == out / "l2i.ckpt"
    assert (out / "config.yaml").is_file()
    m = json.loads((out / "metrics.json").read_text())
    for split in ("valid", "test"):
        for k in (1, 3, 5):
            assert 0.0 <= m[f"{split}/fid_top{k}"] <= 1.0
        assert m[f"{split}/fid_top1"] <= m[f"{split}/fid_top3"] <= m[f"{split}/fid_top5"]
        assert m[f"{split}/rec_mse"] > 0
    assert m["epochs"] == 3 and m["n_train"] == 16 and m["n_test"] == 8
    assert m["cache"] and m["cache_mb"] > 0 and m["peak_rss_mb"] > 0
    assert m["time_to_best_s"] is not None and m["time_to_best_s"] <= m["seconds"]
    callbacks = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    assert any("EarlyStopping" in k and "valid/selection" in k for k in callbacks)
    assert m["patience"] == 5 and m["stopped_early"] is False
    # the logged training loss went down
    import csv
    rows = list(csv.DictReader(open(next((out / "logs").rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 3 and losses[-1] < losses[0]
    interp = load_interpreter(path, "cpu")
    assert interp.class_names == [f"class{i}" for i in range(N_CLASSES)]
    assert interp.metrics["test/fid_top1"] == m["test/fid_top1"]
    o = interp(torch.rand(2, 87, interp.W.shape[0]))
    assert o.H.shape == (2, K, 87) and o.theta_logits.shape == (2, N_CLASSES)
    assert interp.psi.map_names == ["block3", "block4"]  # psi.maps [] = the default maps


def test_psi_reads_the_early_maps_when_the_recipe_names_them(artefacts, tiny_dataset, tmp_path):
    maps = ["block1", "block2", "block3", "block4"]
    path = train_interpreter(_cfg(artefacts, tiny_dataset, tmp_path / "run", **{
        "trainer.epochs": 1, "psi.maps": maps}))
    interp = load_interpreter(path, "cpu")
    assert interp.psi.map_names == maps
    assert interp(torch.rand(1, 40, interp.W.shape[0])).H.shape == (1, K, 40)


def test_psi_input_map_trains_cached_and_explains(artefacts, tiny_dataset, tmp_path):
    """psi.input_map: trained from the cache (its target is the input's log1p|X|), saved,
    loaded, and the loaded interpreter reads log1p(mag) itself: H follows the input."""
    path = train_interpreter(_cfg(artefacts, tiny_dataset, tmp_path / "run", **{
        "trainer.epochs": 1, "psi.input_map": True}))
    interp = load_interpreter(path, "cpu")
    assert interp.psi.input_map and "input_proj.weight" in interp.psi.state_dict()
    mag = torch.rand(1, 40, interp.W.shape[0])
    out = interp(mag)
    assert out.H.shape == (1, K, 40)
    with torch.no_grad():
        direct = interp.psi(interp.classify(mag)[1], 40, torch.log1p(mag))
    assert torch.allclose(out.H, direct)


def test_noise_augmentation_runs_on_the_fly(artefacts, tiny_dataset, tmp_path):
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(noise / f"n{i}.wav", rng.normal(0, 0.1, 3000).astype(np.float32), 8000)
    out = tmp_path / "run"
    train_interpreter(_cfg(artefacts, tiny_dataset, out, **{
        "trainer.epochs": 1, "noise_folder": str(noise), "augment.snr_db": [0, 10]}))
    m = json.loads((out / "metrics.json").read_text())
    assert m["noise_augmentation"] and m["cache_splits"] == ["valid", "test"]
    assert not (out / "cache" / "train").exists()


def test_clip_mixing_runs_on_the_fly(artefacts, tiny_dataset, tmp_path, monkeypatch):
    """augment.mix_prob: the training batches the classifier hears are mixtures of two clips
    (so the train split is never cached); validation and test stay clean and cached."""
    heard = []
    orig = L2IModule._mix_clips

    def spy(self, wav):
        out = orig(self, wav)
        heard.append((wav.clone(), out.clone()))
        return out

    monkeypatch.setattr(L2IModule, "_mix_clips", spy)
    out = tmp_path / "run"
    train_interpreter(_cfg(artefacts, tiny_dataset, out, **{
        "trainer.epochs": 1, "augment.mix_prob": 1.0, "augment.mix_snr_db": [6, 6]}))
    m = json.loads((out / "metrics.json").read_text())
    assert m["noise_augmentation"] and m["cache_splits"] == ["valid", "test"]
    assert m["clip_mixing"] == 1.0
    assert heard and all(not torch.equal(a, b) for a, b in heard if a.shape[0] > 1)


def test_map_cache_follows_the_classifier_bytes_not_its_size_and_mtime(artefacts, tiny_dataset,
                                                                       tiny_features, tmp_path):
    """A classifier retrained into the same file (same size, time stamp put back, as `cp -p`
    or a coarse file system leave it) must not reuse maps cached from the old weights."""
    import shutil

    clf = tmp_path / "classifier.ckpt"
    shutil.copy2(artefacts["clf"], clf)
    out = tmp_path / "run"
    over = {"classifier_ckpt": str(clf), "trainer.epochs": 1}
    train_interpreter(_cfg(artefacts, tiny_dataset, out, **over))
    cached = np.load(out / "cache" / "valid" / "logits-00000.npy")
    st = clf.stat()
    torch.manual_seed(1)
    model_cfg = ClassifierModelConfig(arch="conv2d", width=2, embed_dim=8, dropout=0.0)
    save_classifier(clf, build_classifier(model_cfg, tiny_features, N_CLASSES), model_cfg,
                    tiny_features, [f"class{i}" for i in range(N_CLASSES)])
    assert clf.stat().st_size == st.st_size
    os.utime(clf, ns=(st.st_atime_ns, st.st_mtime_ns))
    train_interpreter(_cfg(artefacts, tiny_dataset, out, **over, **{"trainer.restart": True}))
    assert not np.allclose(np.load(out / "cache" / "valid" / "logits-00000.npy"), cached)


# ---------------------------------------------------------------------------- input checks
def test_mismatched_or_missing_inputs_fail_fast(artefacts, tiny_dataset, tiny_features,
                                                tmp_path):
    out = tmp_path / "run"
    root = tmp_path

    def fails(match: str, **over) -> None:
        t0 = time.time()
        with pytest.raises(L2IError, match=match):
            train_interpreter(_cfg(artefacts, tiny_dataset, out, **over))
        assert time.time() - t0 < 10 and not (out / "cache").exists()

    fails("classifier checkpoint .* not found", classifier_ckpt=str(root / "none.ckpt"))
    fails("NMF dictionary .* not found", nmf=str(root / "none.pt"))
    other = FeaturesConfig(sample_rate=16000, n_fft=256, n_mels=32)
    save_dictionary(root / "nmf16k.pt", torch.rand(other.n_freq, K), other)
    fails("different STFT settings.*sample_rate", nmf=str(root / "nmf16k.pt"))
    np.save(root / "w.npy", np.random.rand(100, K).astype(np.float32))
    fails("100 frequency bins", nmf=str(root / "w.npy"))
    # a .npy with the classifier's bin count, stated to be learnt at 44.1 kHz (L2I_SPEC 8.4)
    np.save(root / "w44.npy", np.random.rand(tiny_features.n_freq, K).astype(np.float32))
    fails("w44.npy was learnt with other STFT.*--nmf_sample_rate.*sample_rate 44100 vs 8000",
          nmf=str(root / "w44.npy"), nmf_sample_rate=44100)
    model_cfg = ClassifierModelConfig(arch="conv2d", width=2, embed_dim=8)
    save_classifier(root / "c5.ckpt", build_classifier(model_cfg, tiny_features, 5), model_cfg,
                    tiny_features, list("abcde"))
    fails("8 classes .* trained on 5", classifier_ckpt=str(root / "c5.ckpt"))
    with pytest.warns(UserWarning, match="ASSUMING"):  # no statement: said loudly
        fails("8 classes .* trained on 5", nmf=str(root / "w44.npy"),
              classifier_ckpt=str(root / "c5.ckpt"))
    fails("noise folder", noise_folder=str(root / "no_noise"))
    with pytest.raises(L2IError, match=r"psi.maps names \['block9'\]"):
        train_interpreter(_cfg(artefacts, tiny_dataset, out, **{"psi.maps": ["block9"]}))
    assert not (out / "config.yaml").exists()  # refused before anything of the run is written


# ---------------------------------------------------------------------------- subprocesses
def _cli(art, data, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "l2i.cli", "train", str(art["recipe"]), "--data_folder",
            str(data), "--classifier_ckpt", str(art["clf"]), "--nmf", str(art["nmf"]),
            "--output_folder", str(out), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def test_resume_after_kill_9(artefacts, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    epochs = 12
    proc = subprocess.Popen(_cli(artefacts, tiny_dataset, out, "--trainer.epochs", str(epochs)),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180  # a loaded machine can take a minute to the first epoch
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.exists(), proc.stderr.read().decode()[-2000:]
    assert not (out / "l2i.ckpt").exists()  # killed mid-training
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert killed_at < epochs - 1
    with pytest.raises(L2IError, match="resume"):  # an interrupted run is never overwritten
        train_interpreter(_cfg(artefacts, tiny_dataset, out))
    r = subprocess.run(_cli(artefacts, tiny_dataset, out, "--trainer.epochs", str(epochs),
                            "--trainer.resume", "true"), env=_env(), capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == epochs
    assert load_interpreter(out / "l2i.ckpt").metrics["epochs"] == epochs


def test_ddp_two_cpu_processes(artefacts, tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run(_cli(artefacts, tiny_dataset, out, "--trainer.devices", "2",
                            "--trainer.strategy", "ddp", "--trainer.epochs", "2"),
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["epochs"] == 2
    interp = load_interpreter(out / "l2i.ckpt")
    assert 0.0 <= interp.metrics["test/fid_top1"] <= 1.0
    o = interp(torch.rand(1, 87, interp.W.shape[0]))
    assert torch.isfinite(o.theta_logits).all()
