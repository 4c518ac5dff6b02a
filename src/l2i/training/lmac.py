"""``l2i train RECIPE`` with ``method: lmac``: train an L-MAC decoder on a frozen classifier.

L-MAC (Paissan et al., ICML 2024; SpeechBrain's ``train_lmac.py``). The decoder
(:class:`l2i.models.lmac.LMACDecoder`) reads the classifier's hidden maps of the input and
outputs mask logits; ``M = sigmoid(logits)`` masks the LINEAR STFT magnitude. With ``y`` the
classifier's prediction on the input::

    loss = l_in * CE(f(M |X|), y) - l_out * CE(f((1 - M) |X|), y) + l_l1 * mean|M|

(SpeechBrain: 4 / 0.2 / 0.4). The classifier is frozen (no gradients into its weights, eval
mode) but differentiated through for the two masked inputs. SpeechBrain masks the log1p
magnitude; l2i masks the linear magnitude, like every other explainer it scores, so the
explanation and its complement add up to the input.

Speed: the classifier's maps and prediction on the clean inputs do not change during training,
so they are computed once per clip, batched, and kept in memory as float16; each step then runs
the decoder and the two masked classifications. ``cache_maps: auto`` (the recipes' default)
keeps them only while a split's maps fit in ``trainer.cache_auto_gb`` of memory (measured on
one clip, printed) and recomputes them each step above it; ``true`` always keeps them,
``false`` never.
Resumable (``--trainer.resume true``: ``output_folder/checkpoints/last.ckpt``); the best epoch
(lowest validation loss, SpeechBrain's ``min_key="loss"``) is written as the self-describing
``lmac.ckpt`` (:mod:`l2i.explainers.lmac`) with ``metrics.json`` and ``config.yaml``.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from l2i.config import L2IRecipe, LMACConfig, save_config, to_dict
from l2i.device import resolve_device
from l2i.errors import ConfigError, L2IError
from l2i.explainers.base import reclassify
from l2i.explainers.lmac import FINAL, lmac_record, save_lmac
from l2i.features import magnitude, phase, stft
from l2i.fileio import write_json
from l2i.models import default_maps
from l2i.models.lmac import LMACDecoder
from l2i.models.psi import probe_map_bins

MONITOR = "valid/loss"


# ============================================================================ loss
def lmac_loss(logits_in: Tensor, logits_out: Tensor, mask: Tensor, target: Tensor,
              cfg: LMACConfig) -> dict[str, Tensor]:
    """The L-MAC objective and its parts.

    Args:
        logits_in: ``(B, C)`` classifier on ``M |X|``; logits_out: ``(B, C)`` on
            ``(1 - M) |X|``; mask: ``(B, T, F)`` in [0, 1]; target: ``(B,)`` the classifier's
            prediction on ``|X|``.
    Returns:
        ``loss``, ``ce_in``, ``ce_out``, ``l1`` (scalars).
    """
    ce_in = F.cross_entropy(logits_in.float(), target)
    ce_out = F.cross_entropy(logits_out.float(), target)
    l1 = mask.abs().mean()
    loss = cfg.l_in * ce_in - cfg.l_out * ce_out + cfg.l_l1 * l1
    return {"loss": loss, "ce_in": ce_in, "ce_out": ce_out, "l1": l1}


# ============================================================================ data
class MapSplit(Dataset):
    """Waveforms ``(N, S)`` with, when cached, the classifier's maps ``{name: (N, C, T, F)}``
    (float16) and predictions ``(N,)``. A batch is ``{"wav", "label"[, "maps", "pred"]}``."""

    def __init__(self, wavs: np.ndarray, labels: np.ndarray,
                 maps: dict[str, Tensor] | None = None, pred: Tensor | None = None) -> None:
        self.wavs, self.labels, self.maps, self.pred = wavs, labels, maps, pred

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        i = np.asarray(idx, dtype=np.int64)
        out: dict[str, Any] = {
            "wav": torch.from_numpy(np.ascontiguousarray(self.wavs[i], dtype=np.float32)),
            "label": torch.from_numpy(np.asarray(self.labels)[i])}
        if self.maps is not None and self.pred is not None:
            t = torch.from_numpy(i)
            out["maps"] = {k: v[t] for k, v in self.maps.items()}
            out["pred"] = self.pred[t]
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])


@torch.no_grad()
def cache_maps(classifier: Any, wavs: np.ndarray, features: Any, names: list[str],
               batch_size: int, device: torch.device) -> tuple[dict[str, Tensor], Tensor]:
    """The classifier's maps (float16, CPU) and predictions of every clip, batched."""
    maps: dict[str, list[Tensor]] = {k: [] for k in names}
    preds = []
    classifier.to(device)
    for s in range(0, wavs.shape[0], batch_size):
        wav = torch.from_numpy(np.array(wavs[s:s + batch_size], dtype=np.float32)).to(device)
        z = stft(wav, features)  # (B, T, F) complex
        logits, m = reclassify(classifier, magnitude(z), phase(z), wav.shape[1])
        for k in names:
            maps[k].append(m[k].to("cpu", torch.float16))
        preds.append(logits.argmax(dim=1).cpu())
    classifier.to("cpu")
    return {k: torch.cat(v) for k, v in maps.items()}, torch.cat(preds)


# ============================================================================ module
class LMACModule(L.LightningModule):
    """Trains ``decoder``; ``classifier`` stays frozen (eval mode, no weight gradients)."""

    def __init__(self, classifier: Any, decoder: LMACDecoder, features: Any, cfg: LMACConfig,
                 trainer_cfg: Any, steps_per_epoch: int = 1) -> None:
        super().__init__()
        self.classifier = classifier.requires_grad_(False).eval()
        self.decoder = decoder
        self.features = features
        self.cfg = cfg
        self.trainer_cfg = trainer_cfg
        self.steps_per_epoch = max(1, int(steps_per_epoch))

    def train(self, mode: bool = True) -> LMACModule:
        super().train(mode)
        self.classifier.eval()  # never leaves eval mode
        return self

    def shared_step(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        wav = batch["wav"].float()
        z = stft(wav, self.features)  # (B, T, F) complex
        mag, ph, n = magnitude(z), phase(z), wav.shape[1]
        if "maps" in batch:
            maps, pred = {k: v.float() for k, v in batch["maps"].items()}, batch["pred"].long()
        else:
            with torch.no_grad():
                logits, maps = reclassify(self.classifier, mag, ph, n)
            pred = logits.argmax(dim=1)
        mask = torch.sigmoid(self.decoder(maps, mag.shape[1]))  # (B, T, F)
        logits_in = reclassify(self.classifier, mask * mag, ph, n)[0]
        logits_out = reclassify(self.classifier, (1.0 - mask) * mag, ph, n)[0]
        terms = lmac_loss(logits_in, logits_out, mask, pred, self.cfg)
        return terms, {"logits_in": logits_in, "pred": pred, "mask": mask}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        terms, o = self.shared_step(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=False,
                      on_epoch=True, batch_size=o["pred"].shape[0])
        return terms["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        terms, o = self.shared_step(batch)
        values = {f"valid/{k}": v for k, v in terms.items()}
        values["valid/fid_in"] = (o["logits_in"].argmax(dim=1) == o["pred"]).float().mean()
        values["valid/mask_mean"] = o["mask"].mean()
        self.log_dict(values, on_step=False, on_epoch=True, batch_size=o["pred"].shape[0],
                      prog_bar=False)

    def configure_optimizers(self) -> Any:
        from l2i.training.common import configure_optimizers

        return configure_optimizers(self.decoder.parameters(), self.trainer_cfg,
                                    self.steps_per_epoch, monitor=MONITOR, mode="min")


# ============================================================================ command
def check_lmac_inputs(cfg: L2IRecipe) -> tuple[dict, Any, Any, Any]:
    """Fast checks; returns ``(classifier record, classifier, info, dataset index)``."""
    from l2i.data import load_dataset
    from l2i.models import load_classifier

    if not cfg.classifier_ckpt:
        raise ConfigError("classifier_ckpt is empty: pass --classifier_ckpt PATH/classifier.ckpt "
                          "(written by 'l2i train-classifier')")
    if not Path(cfg.classifier_ckpt).is_file():
        raise L2IError(f"classifier checkpoint {cfg.classifier_ckpt} not found: train one with "
                       "'l2i train-classifier' or fix --classifier_ckpt")
    if cfg.noise_folder or cfg.augment.noise_folder:
        raise ConfigError("method lmac does not mix noise into its training clips yet: leave "
                          "--noise_folder / augment.noise_folder empty")
    if cfg.augment.mix_prob > 0:
        raise ConfigError(f"augment.mix_prob = {cfg.augment.mix_prob}: method lmac does not "
                          "mix clips into its training clips yet; set it to 0")
    if cfg.data.duration_s is None:
        raise ConfigError("data.duration_s is null: L-MAC training batches clips of one "
                          "length; set --data.duration_s (e.g. 5.0)")
    from l2i.fileio import read_checkpoint
    from l2i.models import CKPT_FORMAT, CKPT_VERSION

    record = read_checkpoint(cfg.classifier_ckpt, CKPT_FORMAT, CKPT_VERSION,
                             "classifier checkpoint", "give the classifier.ckpt written by "
                             "'l2i train-classifier'", "l2i classifier")
    classifier, info = load_classifier(record, map_location="cpu")
    index = load_dataset(cfg.data_folder, cfg.data)
    if index.n_classes != info.n_classes:
        raise L2IError(f"dataset {cfg.data_folder} has {index.n_classes} classes but classifier "
                       f"{cfg.classifier_ckpt} was trained on {info.n_classes}: use the data "
                       "the classifier was trained on")
    return record, classifier, info, index


def build_decoder(classifier: Any, n_freq: int, cfg: LMACConfig) -> LMACDecoder:
    """A fresh decoder for the maps ``cfg.maps`` (default: the classifier's default maps,
    :func:`l2i.models.default_maps`) of ``classifier``."""
    channels = dict(classifier.map_channels)
    names = list(cfg.maps) or default_maps(classifier)
    unknown = [n for n in names if n not in channels]
    if unknown:
        raise ConfigError(f"lmac.maps: {', '.join(unknown)} not among the classifier's maps "
                          f"({', '.join(channels)})")
    bins = probe_map_bins(classifier, n_freq)
    try:
        return LMACDecoder({n: channels[n] for n in names}, bins, n_freq, cfg)
    except ValueError as err:
        raise ConfigError(f"lmac: {err}") from None


def _map_split(cfg: L2IRecipe, index: Any, split: str, classifier: Any, info: Any,
               decoder: LMACDecoder, device: torch.device, out: Path) -> MapSplit:
    """One split's clips (audio cache under ``out/cache/audio``) and, with ``cache_maps``, the
    classifier's maps and predictions on them."""
    from l2i.data import load_split

    arr = load_split(index, split, cfg.data, info.features.sample_rate,
                     cache_dir=out / "cache" / "audio", progress=cfg.trainer.progress)
    maps = pred = None
    if _keep_maps(cfg, split, classifier, arr.wavs, info.features, decoder.map_names):
        maps, pred = cache_maps(classifier.eval(), arr.wavs, info.features, decoder.map_names,
                                cfg.trainer.batch_size, device)
    return MapSplit(arr.wavs, arr.labels, maps, pred)


def _keep_maps(cfg: L2IRecipe, split: str, classifier: Any, wavs: Any, features: Any,
               names: list[str]) -> bool:
    """``cache_maps`` true / false as given; ``auto``: whether the split's float16 maps (the
    size of one clip's, times the clips) fit in ``trainer.cache_auto_gb`` of memory."""
    if cfg.cache_maps != "auto":
        return bool(cfg.cache_maps)
    if len(wavs) == 0:
        return True
    first, _ = cache_maps(classifier.eval(), wavs[:1], features, names, 1, torch.device("cpu"))
    per_clip = sum(m[0].numel() * 2 for m in first.values())  # bytes, float16
    total = per_clip * len(wavs)
    keep = total <= cfg.trainer.cache_auto_gb * 1e9
    what = ("kept in memory" if keep else
            f"over trainer.cache_auto_gb = {cfg.trainer.cache_auto_gb:g}: recomputed each step")
    print(f"l2i train (lmac): maps of {split}: {len(wavs)} clips x {per_clip / 1e3:.1f} KB = "
          f"{total / 1e6:.1f} MB (float16), {what}", file=sys.stderr)
    return keep


def train_lmac(cfg: L2IRecipe) -> str:
    """Train the decoder; write ``lmac.ckpt``, ``metrics.json``, ``config.yaml``.

    Returns the path of ``lmac.ckpt``.
    """
    from l2i.training.common import (
        best_checkpoint_path,
        build_trainer,
        clip_loader,
        resume_checkpoint,
    )
    from l2i.training.interpreter import _load_lightning_ckpt

    t0 = time.time()
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    out = Path(cfg.output_folder)
    record, classifier, info, index = check_lmac_inputs(cfg)
    ckpt_path = resume_checkpoint(out, cfg.trainer, final=FINAL)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    decoder = build_decoder(classifier, info.features.n_freq, cfg.lmac)
    device = resolve_device(cfg.trainer.device)
    bs = cfg.trainer.batch_size
    t_cache = time.time()
    splits = {split: _map_split(cfg, index, split, classifier, info, decoder, device, out)
              for split in ("train", "valid")}
    cache_seconds = time.time() - t_cache
    steps = math.ceil(len(splits["train"]) / bs)
    module = LMACModule(classifier, decoder, info.features, cfg.lmac, cfg.trainer, steps)
    trainer = build_trainer(cfg.trainer, out, monitor=MONITOR, mode="min",
                            distributed_sampler=False)
    nw, seed, buffer = cfg.trainer.num_workers, cfg.trainer.seed, cfg.data.shuffle_buffer
    t_fit = time.time()
    # clip_loader: the same (seed, epoch) order as l2i train's, shard-ordered when the clips
    # sit in shards (data.shuffle_buffer), split between DDP ranks by the sampler itself
    trainer.fit(module, clip_loader(splits["train"], bs, True, seed, nw, buffer=buffer),
                clip_loader(splits["valid"], bs, False, seed, nw), ckpt_path=ckpt_path)
    fit_seconds = time.time() - t_fit
    best = best_checkpoint_path(trainer) or str(out / "checkpoints" / "last.ckpt")
    state = _load_lightning_ckpt(best)
    module.load_state_dict(state["state_dict"])
    valid = {k: float(v) for k, v in trainer.validate(
        module, clip_loader(splits["valid"], bs, False, seed, 0, rank=0, world_size=1),
        verbose=False)[0].items()}
    metrics = {**valid, "epochs": int(trainer.current_epoch),
               "best_epoch": int(state.get("epoch", -1)), "best_checkpoint": str(best),
               "fit_seconds": round(fit_seconds, 2), "cache_seconds": round(cache_seconds, 2),
               "seconds": round(time.time() - t0, 2), "cache": splits["train"].maps is not None,
               "n_train": len(splits["train"]), "n_valid": len(splits["valid"]),
               "decoder_params": sum(p.numel() for p in decoder.parameters())}
    rec = lmac_record(record, decoder.cpu(), info.features, info.class_names, cfg.lmac,
                      recipe=to_dict(cfg), metrics=metrics)
    path = save_lmac(out / FINAL, rec)
    write_json(out / "metrics.json", metrics)
    return (f"l2i train (lmac): valid loss {metrics.get('valid/loss', math.nan):.3f}, "
            f"valid Fid-In {metrics.get('valid/fid_in', math.nan):.3f}, mask mean "
            f"{metrics.get('valid/mask_mean', math.nan):.3f}; wrote {path}")


__all__ = ["lmac_loss", "LMACModule", "MapSplit", "cache_maps", "build_decoder", "train_lmac",
           "check_lmac_inputs"]
