"""``l2i train-classifier`` and ``l2i evaluate-classifier``.

Training (:func:`train_classifier`): clips are decoded once into a cache
(``output_folder/cache``); each batch of waveforms is augmented on the device (time shift,
gain, optional noise, mixup), turned into a magnitude STFT there, passed through the model's
frontend, SpecAugment-ed, then through the network. One step function serves train, valid and
test. The best epoch on validation accuracy is kept; ``--trainer.resume`` continues from
``checkpoints/last.ckpt``; with ``trainer.patience`` training stops once validation accuracy
has not improved for that many epochs. Outputs in ``output_folder``:

- ``classifier.ckpt``: the best weights, self-describing (:mod:`l2i.models`);
- ``metrics.json``: valid/test accuracy, per-class accuracy, epochs, seconds/epoch, peak memory;
- ``confusion.png``: the test (or valid) confusion matrix; ``config.yaml``; ``logs/`` (CSV).

Augmentations are plain functions on batched tensors, usable elsewhere (the interpreter).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from l2i.config import (
    AugmentConfig,
    ClassifierRecipe,
    DataConfig,
    EvaluateClassifierRecipe,
    FeaturesConfig,
    save_config,
)
from l2i.device import resolve_device
from l2i.errors import ConfigError, DataError, L2IError
from l2i.features import stft
from l2i.fileio import save_figure, write_json
from l2i.models import AudioClassifier, build_classifier, load_classifier, save_classifier
from l2i.training.common import peak_rss_mb

FINAL = "classifier.ckpt"
MONITOR = "valid_acc"


def magnitude(spec: Tensor) -> Tensor:
    """``|X|`` of a complex ``(B, T, F)`` spectrogram (``hypot``: 2x faster than ``abs`` on CPU)."""
    return torch.hypot(spec.real, spec.imag)


# --------------------------------------------------------------------------- augmentation
def time_shift(wav: Tensor, max_frac: float) -> Tensor:
    """Circular shift of each clip by a random offset in ``+-max_frac * S``. ``(B, S)``."""
    if max_frac <= 0:
        return wav
    b, s = wav.shape
    max_shift = int(max_frac * s)
    if max_shift < 1:
        return wav
    shift = torch.randint(-max_shift, max_shift + 1, (b, 1), device=wav.device)  # (B, 1)
    idx = (torch.arange(s, device=wav.device)[None] - shift) % s  # (B, S)
    return torch.gather(wav, 1, idx)


def random_gain(wav: Tensor, gain_db: float) -> Tensor:
    """Scale each clip by a random gain, uniform in ``+-gain_db`` dB. ``(B, S)``."""
    if gain_db <= 0:
        return wav
    db = (torch.rand(wav.shape[0], 1, device=wav.device) * 2 - 1) * gain_db  # (B, 1)
    return wav * 10.0 ** (db / 20.0)


def mixup(wav: Tensor, target: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Mix each clip with another of the batch (Zhang et al. 2018).

    ``wav (B, S)``, ``target (B, C)`` probabilities; ``lam ~ Beta(alpha, alpha)`` per clip,
    folded to ``>= 0.5`` so the first clip dominates. Returns the mixed clips and targets.
    """
    if alpha <= 0 or wav.shape[0] < 2:
        return wav, target
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    lam = beta.sample((wav.shape[0],)).to(wav.device)  # (B,)
    lam = torch.maximum(lam, 1 - lam)
    perm = torch.randperm(wav.shape[0], device=wav.device)
    mixed = lam[:, None] * wav + (1 - lam[:, None]) * wav[perm]  # (B, S)
    return mixed, lam[:, None] * target + (1 - lam[:, None]) * target[perm]


def spec_augment(x: Tensor, n_freq: int, freq_width: int, n_time: int, time_width: int) -> Tensor:
    """Zero ``n_freq`` frequency bands and ``n_time`` time bands of ``x (B, T, F)``.

    Each band has a random width in ``[0, width]`` and a random start; every clip gets its own
    bands. Zero is silence for log1p features.
    """
    b, t, f = x.shape
    keep = torch.ones(b, t, f, dtype=torch.bool, device=x.device)
    for n, width, size, axis in ((n_freq, freq_width, f, 2), (n_time, time_width, t, 1)):
        for _ in range(n):
            w = torch.randint(0, min(width, size) + 1, (b, 1), device=x.device)  # (B, 1)
            start = (torch.rand(b, 1, device=x.device) * (size - w + 1)).long()  # (B, 1)
            pos = torch.arange(size, device=x.device)[None]  # (1, size)
            band = (pos >= start) & (pos < start + w)  # (B, size)
            keep &= ~(band[:, None, :] if axis == 2 else band[:, :, None])
    return x * keep


# --------------------------------------------------------------------------- the module
class ClassifierModule(L.LightningModule):
    """Classifier + augmentation + one shared step for train / valid / test."""

    def __init__(self, model: AudioClassifier, cfg: ClassifierRecipe, steps_per_epoch: int
                 ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.noise = None
        aug = cfg.augment
        if aug.noise_folder:
            from l2i.noise import NoiseBank
            n = int(round((cfg.data.duration_s or 5.0) * cfg.features.sample_rate))
            self.noise = NoiseBank(aug.noise_folder, cfg.features.sample_rate, n,
                                   seed=cfg.trainer.seed)
        self.epoch_seconds: list[float] = []
        self._t0 = 0.0

    def augment(self, wav: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Waveform augmentations for training: ``(B, S)``, targets ``(B, C)``."""
        aug: AugmentConfig = self.cfg.augment
        wav = time_shift(wav, aug.time_shift)
        if self.noise is not None:
            wav = _add_noise(wav, self.noise, aug)
        wav = random_gain(wav, aug.gain_db)
        return mixup(wav, target, aug.mixup_alpha)

    def _step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> Tensor:
        wav, label, _ = batch
        target = F.one_hot(label, self.model.n_classes).float()  # (B, C)
        if stage == "train":
            wav, target = self.augment(wav, target)
        mag = magnitude(stft(wav, self.cfg.features))  # (B, T, F)
        x = self.model.frontend(mag)  # (B, T, F_in)
        aug = self.cfg.augment
        if stage == "train" and (aug.freq_masks or aug.time_masks):
            x = spec_augment(x, aug.freq_masks, aug.freq_mask_width, aug.time_masks,
                             aug.time_mask_width)
        logits, _ = self.model.forward_features(x)  # (B, C)
        loss = -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        acc = (logits.argmax(-1) == label).float().mean()
        bs = wav.shape[0]
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=bs,
                 sync_dist=True, prog_bar=stage != "train")
        self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, batch_size=bs,
                 sync_dist=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):  # noqa: D102
        self._step(batch, "valid")

    def test_step(self, batch, batch_idx):  # noqa: D102
        self._step(batch, "test")

    def on_train_epoch_start(self) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        dt = time.perf_counter() - self._t0
        self.epoch_seconds.append(dt)
        self.log("epoch_seconds", dt, on_epoch=True, sync_dist=False)
        if not self.cfg.trainer.progress and self.trainer.is_global_zero:
            m = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
            print(f"epoch {self.current_epoch + 1}/{self.cfg.trainer.epochs}: train loss "
                  f"{m.get('train_loss', float('nan')):.3f} acc {m.get('train_acc', 0):.1%}, "
                  f"valid loss {m.get('valid_loss', float('nan')):.3f} acc "
                  f"{m.get('valid_acc', 0):.1%}, {dt:.1f} s", flush=True)

    def configure_optimizers(self):  # noqa: D102
        from l2i.training.common import configure_optimizers
        return configure_optimizers(self.model.parameters(), self.cfg.trainer,
                                    self.steps_per_epoch, monitor=MONITOR, mode="max")


def _add_noise(wav: Tensor, bank: Any, aug: AugmentConfig) -> Tensor:
    """Mix a random noise excerpt into a random ``noise_prob`` share of the clips."""
    from l2i.noise import mix_at_snr
    b = wav.shape[0]
    noise = bank.sample(b).to(wav.device)  # (B, S)
    if noise.shape[-1] != wav.shape[-1]:
        noise = F.pad(noise, (0, max(0, wav.shape[-1] - noise.shape[-1])))[:, :wav.shape[-1]]
    lo, hi = (list(aug.snr_db) + list(aug.snr_db))[:2]
    snr = lo + torch.rand(b, device=wav.device) * (hi - lo)  # (B,)
    mixed = mix_at_snr(wav, noise, snr)
    use = torch.rand(b, 1, device=wav.device) < aug.noise_prob  # (B, 1)
    return torch.where(use, mixed, wav)


# --------------------------------------------------------------------------- data
def collate(batch: list[tuple[Tensor, int, int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack ``(wav, label, idx)`` items, zero-padding clips to the longest: ``(B, S)``."""
    n = max(w.shape[0] for w, _, _ in batch)
    wavs = torch.stack([F.pad(w, (0, n - w.shape[0])) for w, _, _ in batch])  # (B, S)
    labels = torch.tensor([y for _, y, _ in batch], dtype=torch.long)
    idx = torch.tensor([i for _, _, i in batch], dtype=torch.long)
    return wavs, labels, idx


def _loader(arrays: Any, batch_size: int, shuffle: bool, workers: int, seed: int,
            buffer: int = 0, whole: bool = False) -> Any:
    """Batches of ``arrays`` (ClipArrays) by :func:`l2i.training.common.clip_loader`: order
    by ``(seed, epoch)`` (``buffer``: ``data.shuffle_buffer``), split between DDP ranks unless
    ``whole``; a training batch of a single clip is dropped (batch norm)."""
    from l2i.data import WaveDataset
    from l2i.training.common import clip_loader

    one = {"rank": 0, "world_size": 1} if whole else {}
    return clip_loader(WaveDataset(arrays), batch_size, shuffle, seed, workers, buffer,
                       collate=collate, drop_single=shuffle, **one)


@torch.no_grad()
def predict(model: AudioClassifier, arrays: Any, features: FeaturesConfig, batch_size: int,
            device: torch.device | str = "cpu") -> np.ndarray:
    """Logits of every clip of ``arrays`` (ClipArrays), ``(N, C)`` float32, model in eval."""
    model = model.to(device).eval()
    out = []
    for wav, _, _ in _loader(arrays, batch_size, False, 0, 0, whole=True):
        logits, _ = model(magnitude(stft(wav.to(device), features)))  # (B, C)
        out.append(logits.float().cpu())
    return torch.cat(out).numpy()


def split_metrics(logits: np.ndarray, labels: np.ndarray, class_names: list[str]
                  ) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall) and the confusion matrix (rows = true class)."""
    pred = logits.argmax(-1)
    c = len(class_names)
    conf = np.zeros((c, c), dtype=np.int64)
    np.add.at(conf, (labels, pred), 1)
    per_class = {name: (float(conf[i, i] / conf[i].sum()) if conf[i].sum() else None)
                 for i, name in enumerate(class_names)}
    return {"accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
            "n_clips": int(len(labels)), "per_class_accuracy": per_class,
            "confusion": conf.tolist()}


def confusion_figure(conf: np.ndarray | list, class_names: list[str], path: str | os.PathLike,
                     title: str) -> Path:
    """Confusion matrix PNG (rows true class, columns predicted; counts written in cells)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(conf)
    c = len(class_names)
    size = max(4.0, 0.45 * c + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(conf, cmap="Blues")
    ax.set_xticks(range(c), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(c), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    top = conf.max() if conf.size else 0
    if c <= 30:
        for i in range(c):
            for j in range(c):
                if conf[i, j]:
                    ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if conf[i, j] > top / 2 else "black")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- commands
def train_classifier(cfg: ClassifierRecipe) -> str:
    """``l2i train-classifier RECIPE --data_folder D --output_folder O``; returns a summary."""
    from l2i.data import load_split, with_absolute_data_folder
    from l2i.shards import training_index
    from l2i.training.common import (
        build_trainer,
        fit,
        resume_checkpoint,
        world_size,
    )

    if not cfg.data_folder:
        raise ConfigError("data_folder is empty: pass --data_folder DATA")
    if cfg.augment.mix_prob > 0:
        raise ConfigError(f"augment.mix_prob = {cfg.augment.mix_prob}: an l2i train option "
                          "(theta learns the classifier's decisions on mixtures); the classifier "
                          "mixes clips with augment.mixup_alpha. Set it to 0")
    cfg = with_absolute_data_folder(cfg)  # config.yaml and checkpoints name it from anywhere
    if cfg.model.arch == "cnn14" and cfg.model.input == "log1p_mag":
        print("note: cnn14 on log1p_mag input (513 bins) is slow; log1p_mel is the usual input",
              file=sys.stderr)
    out = Path(cfg.output_folder)
    ckpt_path = resume_checkpoint(out, cfg.trainer, final=FINAL, config=cfg)
    t_start = time.perf_counter()
    sr, cache = cfg.features.sample_rate, out / "cache"
    index = training_index(cfg.data_folder, cfg.data, sr, cache, random_crop=True,
                           progress=cfg.trainer.progress)  # all checks at once; shards
    if cfg.trainer.progress:
        print(index.summary(), flush=True)
    splits = {s: load_split(index, s, cfg.data, sr, cache, progress=cfg.trainer.progress,
                            random_crop=True)
              for s in ("train", "valid", "test") if index.split(s)}
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")

    tr = cfg.trainer
    L.seed_everything(tr.seed, workers=True, verbose=False)  # the initial weights too
    model = build_classifier(cfg.model, cfg.features, index.n_classes,
                             class_names=index.class_names)
    buffer = cfg.data.shuffle_buffer
    train_dl = _loader(splits["train"], tr.batch_size, True, tr.num_workers, tr.seed, buffer)
    valid_dl = _loader(splits["valid"], tr.batch_size, False, tr.num_workers, tr.seed)
    per_rank = math.ceil(len(splits["train"]) / world_size(tr))  # DDP: all nodes' processes
    steps = max(1, per_rank // tr.batch_size + (per_rank % tr.batch_size > 1))  # as the loader
    if tr.limit_batches is not None:
        steps = max(1, int(tr.limit_batches) if tr.limit_batches > 1
                    else int(steps * tr.limit_batches))
    module = ClassifierModule(model, cfg, steps)
    trainer = build_trainer(tr, out, MONITOR, "max", distributed_sampler=False)
    fit(trainer, module, train_dl, valid_dl, ckpt_path, out)
    if not trainer.is_global_zero:
        return ""

    return _finish(cfg, trainer, module, splits, list(index.class_names), out, t_start)


def _finish(cfg: ClassifierRecipe, trainer: Any, module: ClassifierModule, splits: dict,
            class_names: list[str], out: Path, t_start: float) -> str:
    """After fitting: the best weights scored on the valid/test splits, the valid calibration
    of the low-confidence warning; write ``classifier.ckpt``, ``metrics.json`` and
    ``confusion.png``; return the one-line summary."""
    from l2i.explain import CONFIDENCE_KEY, max_prob_quantile
    from l2i.training.common import best_checkpoint_path, early_stop_info

    model, tr = module.model, cfg.trainer
    best = best_checkpoint_path(trainer)
    best_epoch = None
    if best:
        state = torch.load(best, map_location="cpu", weights_only=False)
        module.load_state_dict(state["state_dict"])
        best_epoch = int(state.get("epoch", -1))
    device = resolve_device(tr.device) if tr.devices == 1 else torch.device("cpu")
    metrics: dict[str, Any] = {}
    calibration: dict[str, float] = {}
    for name, arrays in splits.items():
        if name == "train":
            continue
        logits = predict(model, arrays, cfg.features, tr.batch_size, device)
        metrics[name] = split_metrics(logits, np.asarray(arrays.labels), class_names)
        if name == "valid":  # calibrates l2i interpret's low_confidence warning
            calibration = {CONFIDENCE_KEY: max_prob_quantile(logits)}
    seconds = module.epoch_seconds
    summary = {
        "valid_accuracy": metrics["valid"]["accuracy"],
        "test_accuracy": metrics.get("test", {}).get("accuracy"),
        "best_epoch": best_epoch, "epochs": int(trainer.current_epoch),
        "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        "epochs_this_run": len(seconds), **early_stop_info(trainer),
        "wall_seconds_this_run": time.perf_counter() - t_start,
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20
                        if torch.cuda.is_available() else None),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "arch": cfg.model.arch, "class_names": class_names, **metrics,
    }
    save_classifier(out / FINAL, model.cpu(), cfg.model, cfg.features, class_names,
                    {**{k: summary[k] for k in ("valid_accuracy", "test_accuracy",
                                                "best_epoch", "epochs")}, **calibration},
                    normalize=cfg.data.normalize)
    write_json(out / "metrics.json", summary)
    shown = "test" if "test" in metrics else "valid"
    confusion_figure(metrics[shown]["confusion"], class_names, out / "confusion.png",
                     f"{cfg.model.arch} on {shown}: accuracy "
                     f"{metrics[shown]['accuracy']:.1%}")
    test_txt = (f", test accuracy {summary['test_accuracy']:.1%}"
                if summary["test_accuracy"] is not None else "")
    return (f"classifier: {out / FINAL} (best epoch {best_epoch}, valid accuracy "
            f"{summary['valid_accuracy']:.1%}{test_txt})")


def evaluation_data_config(data: DataConfig, test_folds: list[int] | None) -> DataConfig:
    """The data config for evaluating on ``test_folds``: train/valid folds moved off them.

    The dataset loader wants three disjoint, non-empty splits; evaluation only reads the test
    split, so overlapping train/valid folds are dropped (and the last train fold becomes the
    valid split when needed).
    """
    test = list(test_folds) if test_folds else list(data.test_folds)
    train = [f for f in data.train_folds if f not in test]
    valid = [f for f in data.valid_folds if f not in test]
    if not valid and len(train) > 1:
        valid = [train.pop()]
    if not train or not valid:
        raise ConfigError(f"evaluating on folds {test}: give disjoint --data.train_folds and "
                          "--data.valid_folds of the same dataset (only the test split is read)")
    return replace(data, train_folds=train, valid_folds=valid, test_folds=test)


def evaluate_classifier(cfg: EvaluateClassifierRecipe) -> str:
    """``l2i evaluate-classifier CKPT --data_folder D --test_folds 4``: accuracy + confusion."""
    from l2i.data import load_dataset, load_split

    if not cfg.ckpt:
        raise ConfigError("give the classifier checkpoint: l2i evaluate-classifier CKPT ...")
    if not cfg.data_folder:
        raise ConfigError("data_folder is empty: pass --data_folder DATA")
    device = resolve_device(cfg.device)
    model, info = load_classifier(cfg.ckpt, device)
    data_cfg = evaluation_data_config(cfg.data, cfg.test_folds)
    out = Path(cfg.output_folder) if cfg.output_folder else Path(cfg.ckpt).parent / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    index = load_dataset(cfg.data_folder, data_cfg, sample_rate=info.features.sample_rate,
                         cache_dir=out / "cache", splits=("test",),
                         known_classes=info.class_names)
    if list(index.class_names) != list(info.class_names):
        raise DataError(f"the classes of {cfg.data_folder} ({index.n_classes}) differ from the "
                        f"checkpoint's ({info.n_classes}: {info.class_names[:5]}...): evaluate on "
                        "the dataset (and data.esc10 setting) the classifier was trained on")
    arrays = load_split(index, "test", data_cfg, info.features.sample_rate, out / "cache")
    logits = predict(model, arrays, info.features, cfg.batch_size, device)
    metrics = split_metrics(logits, np.asarray(arrays.labels), info.class_names)
    result = {"ckpt": str(cfg.ckpt), "data_folder": str(cfg.data_folder),
              "test_folds": list(data_cfg.test_folds), "accuracy": metrics["accuracy"],
              "class_names": info.class_names, "test": metrics, "peak_rss_mb": peak_rss_mb()}
    write_json(out / "metrics.json", result)
    confusion_figure(metrics["confusion"], info.class_names, out / "confusion.png",
                     f"{info.model.arch}, folds {data_cfg.test_folds}: accuracy "
                     f"{metrics['accuracy']:.1%}")
    return (f"accuracy {metrics['accuracy']:.1%} on {metrics['n_clips']} clips of folds "
            f"{data_cfg.test_folds}; {out / 'metrics.json'}, {out / 'confusion.png'}")


__all__ = ["train_classifier", "evaluate_classifier", "ClassifierModule", "time_shift",
           "random_gain", "mixup", "spec_augment", "predict", "split_metrics",
           "confusion_figure", "evaluation_data_config", "collate", "L2IError"]
