"""``l2i train``: fit psi and theta on a frozen classifier and a fixed NMF dictionary (L2I_SPEC §5).

loss = alpha * MSE(W H, log1p|X|) + beta * mean|H| + fid_weight * CE(theta, softmax(f / temp))

For a multi-label classifier (``activation: sigmoid``) the fidelity term is the binary
cross-entropy between theta's sigmoids and the classifier's (the paper's SONYC-UST setup), and
validation also reports the paper's multi-label fidelity: macro AUPRC of theta's sigmoids
against the classifier's thresholded decisions, and per-class agreement (``fid_auprc``,
``fid_agreement``); the best epoch then follows the agreement instead of top-1.

The classifier is l2i's own (``--classifier_ckpt``) or given as code (``classifier.module``,
:mod:`l2i.models.hooked`): then l2i's STFT settings come from the NMF dictionary, and the
shapes and time axes of the hooked layers are printed when training starts.

The loss terms are plain functions below; :class:`L2IModule` only wires them. The classifier and
W never change (no gradients, eval mode, W a buffer). Validation measures top-1/3/5 fidelity
(theta's ranking vs the classifier's *prediction*) and the reconstruction error; the best
checkpoint and the LR schedule follow ``valid/selection`` = top-1 fidelity minus
``SELECTION_REC_WEIGHT`` x relative reconstruction error: fidelity first, and among epochs of equal
fidelity (it saturates early) the one that reconstructs best, whose masks are sharper.

Speed: without augmentation the classifier runs once per clip, batched and without gradients,
and its logits, frequency-pooled maps (:meth:`l2i.models.psi.Psi.reduce`) and the targets
``log1p|X|`` are cached in ``output_folder/cache`` (:mod:`l2i.training.map_cache`); epochs
then only run psi and theta. With noise augmentation (``--noise_folder``) each training batch is
mixed, transformed and classified on the fly, still batched. No per-clip Python loop anywhere.

Scale-out: ``--trainer.devices 2`` (DDP, gloo on CPU) or the same command under
``torchrun --nproc_per_node 2 -m l2i.cli train ...``. Rank 0 builds the cache; the others wait for
it. ``--trainer.resume true`` continues from ``output_folder/checkpoints/last.ckpt`` (refused
when the config changed, see :func:`l2i.training.common.resume_checkpoint`); with
``trainer.patience`` training stops once ``valid/selection`` has not improved for that many
epochs.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from l2i.config import (
    AugmentConfig,
    FeaturesConfig,
    L2ILossConfig,
    L2IRecipe,
    save_config,
    to_dict,
)
from l2i.device import resolve_device
from l2i.errors import ConfigError, L2IError
from l2i.features import features_match, stft
from l2i.fileio import write_json
from l2i.interpreter import (
    Interpreter,
    InterpreterOutput,
    classifier_threshold,
    save_interpreter,
)
from l2i.metrics import multilabel_fidelity
from l2i.models import default_maps
from l2i.models.psi import Psi, probe_map_bins
from l2i.models.theta import Theta
from l2i.training.common import peak_rss_mb
from l2i.training.map_cache import (
    SPLITS,
    CachedSplit,
    build_cache,
    folder_size,
    split_key,
    split_keys,
    wait_for,
)

MONITOR = "valid/selection"
SELECTION_REC_WEIGHT = 0.01  # a 0.1 gain in rec_rel is worth less than one clip in 80 of fidelity
FINAL = "l2i.ckpt"
TOPK = (1, 3, 5)


# ============================================================================ losses
def reconstruction_mse(recon: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over ``(B, T, F)`` between ``W H`` and ``log1p|X|`` (scalar)."""
    return F.mse_loss(recon.float(), target.float())


def sparsity_l1(H: Tensor) -> Tensor:
    """Mean absolute activation ``mean |H|`` over ``(B, K, T)`` (scalar)."""
    return H.abs().mean()


def soft_cross_entropy(theta_logits: Tensor, classifier_logits: Tensor,
                       temp: float = 1.0) -> Tensor:
    """Cross-entropy of theta against the classifier's softmax at temperature ``temp``.

    ``-(1/B) sum_b sum_c softmax(f_b / temp)_c * log_softmax(theta_b)_c``; both ``(B, C)``.
    ``log_softmax`` keeps it finite (the reference takes ``-log`` of a softmax, which can be
    ``-log 0``); the targets carry no gradient. The reference also divides by C; we do not.
    """
    if temp <= 0:
        raise ValueError(f"classifier_temp must be > 0, got {temp}")
    target = torch.softmax(classifier_logits.detach().float() / temp, dim=-1)  # (B, C)
    return -(target * torch.log_softmax(theta_logits.float(), dim=-1)).sum(dim=-1).mean()


def binary_fidelity(theta_logits: Tensor, classifier_logits: Tensor,
                    temp: float = 1.0) -> Tensor:
    """Multi-label fidelity loss: BCE of theta's sigmoids against ``sigmoid(f / temp)``.

    Both ``(B, C)``; mean over clips and classes; the targets carry no gradient.
    """
    if temp <= 0:
        raise ValueError(f"classifier_temp must be > 0, got {temp}")
    target = torch.sigmoid(classifier_logits.detach().float() / temp)  # (B, C)
    return F.binary_cross_entropy_with_logits(theta_logits.float(), target)


def topk_hits(theta_logits: Tensor, classifier_logits: Tensor, k: int) -> Tensor:
    """Per clip, 1.0 when the classifier's predicted class is in theta's top ``k`` ``(B,)``."""
    pred = classifier_logits.argmax(dim=-1)  # (B,)
    k = min(int(k), theta_logits.shape[-1])
    top = theta_logits.topk(k, dim=-1).indices  # (B, k)
    return (top == pred[:, None]).any(dim=-1).float()


def l2i_loss(recon: Tensor, target: Tensor, H: Tensor, theta_logits: Tensor,
             classifier_logits: Tensor, cfg: L2ILossConfig,
             activation: str = "softmax",
             faith: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The L2I objective and its parts: ``loss``, ``rec_mse``, ``sparsity``, ``fidelity``.

    ``activation``: the classifier's; ``sigmoid`` uses :func:`binary_fidelity`. ``faith``:
    the terms of :func:`faithfulness_terms` (added with weights ``cfg.faith_in``,
    ``cfg.faith_out``, ``cfg.mask_l1``, and reported); None leaves the paper's objective.
    """
    rec = reconstruction_mse(recon, target)
    spa = sparsity_l1(H)
    fidelity = binary_fidelity if activation == "sigmoid" else soft_cross_entropy
    fid = fidelity(theta_logits, classifier_logits, cfg.classifier_temp)
    loss = cfg.alpha * rec + cfg.beta * spa + cfg.fid_weight * fid
    out = {"rec_mse": rec, "sparsity": spa, "fidelity": fid}
    for k, v in (faith or {}).items():
        loss = loss + getattr(cfg, k) * v
        out[k] = v
    return {"loss": loss, **out}


# ============================================================================ faithfulness
def training_mask(interp_out: Any, W: Tensor, theta_weight: Tensor, target: Tensor) -> Tensor:
    """The differentiable mask of training: the ratio mask with soft weights ``relu(r)``.

    ``M = (W diag(relu(r)) H) / (W H + eps)`` with ``r`` the relevance of each component for
    ``target`` (:func:`l2i.explain.relevance`, ``w_ck z_k / max_j |w_cj z_j|``) and the ratio
    mask :func:`l2i.explain.ratio_mask`. Gradients reach psi (through ``H`` and ``z``) and theta
    (through ``z`` and its weights). The one place the training mask is defined (the final
    inference mask options route through it).

    Args:
        interp_out: anything with ``H (B, K, T)`` and ``z (B, K)`` (an
            :class:`l2i.interpreter.InterpreterOutput`).
        W: ``(F, K)`` the dictionary; theta_weight: ``(C, K)`` theta's linear weights.
        target: ``(B,)`` class per clip (the classifier's prediction in training).
    Returns:
        ``(B, T, F)`` in [0, 1].
    """
    from l2i.explain import ratio_mask, relevance

    weights = F.relu(relevance(theta_weight, interp_out.z, target))  # (B, K)
    return ratio_mask(W, interp_out.H, weights)


def _target_log_probs(logits: Tensor, target: Tensor, activation: str) -> tuple[Tensor, Tensor]:
    """``(log p_c, log(1 - p_c))`` per clip ``(B,)`` for class ``target (B,)``, computed stably
    (the same values as :func:`l2i.interpreter.class_probs`)."""
    logits = logits.float()
    lc = logits.gather(1, target[:, None])[:, 0]  # (B,)
    if activation == "sigmoid":
        return F.logsigmoid(lc), F.logsigmoid(-lc)
    total = torch.logsumexp(logits, dim=1)  # (B,)
    others = logits.scatter(1, target[:, None], float("-inf"))  # (B, C)
    return lc - total, torch.logsumexp(others, dim=1) - total


def faith_in_loss(logits_in: Tensor, target: Tensor, activation: str = "softmax") -> Tensor:
    """``mean_b -log p_c(f(M |X|))``: the masked-in input keeps the decision ``c``.

    ``logits_in (B, C)``: the classifier on ``M |X|``; ``target (B,)``. Softmax: the
    cross-entropy to ``c``; sigmoid: the BCE of class ``c`` being on.
    """
    return -_target_log_probs(logits_in, target, activation)[0].mean()


def faith_out_loss(logits_out: Tensor, target: Tensor, activation: str = "softmax") -> Tensor:
    """``mean_b -log(1 - p_c(f((1 - M) |X|)))``: the masked-out rest loses the decision.

    Zero when the rest gives ``c`` no probability; bounded below (L-MAC's ``-CE`` is not), so
    it cannot outweigh the other terms by growing without end.
    """
    return -_target_log_probs(logits_out, target, activation)[1].mean()


def faithfulness_terms(classifier: Any, mask: Tensor, mag: Tensor, target: Tensor,
                       activation: str, phase: Tensor | None = None,
                       length: int | None = None) -> dict[str, Tensor]:
    """``faith_in``, ``faith_out`` and ``mask_l1`` (scalars) of ``mask (B, T, F)`` on
    ``mag (B, T, F)`` (linear ``|X|``), re-classified by the frozen ``classifier`` through
    :func:`l2i.explainers.base.reclassify` (``phase``/``length`` for a classifier given as
    code). Two classifier forward and backward passes per call."""
    from l2i.explainers.base import reclassify

    logits_in = reclassify(classifier, mask * mag, phase, length)[0]  # (B, C)
    logits_out = reclassify(classifier, (1.0 - mask) * mag, phase, length)[0]  # (B, C)
    return {"faith_in": faith_in_loss(logits_in, target, activation),
            "faith_out": faith_out_loss(logits_out, target, activation),
            "mask_l1": mask.abs().mean()}


def uses_faithfulness(cfg: L2ILossConfig) -> bool:
    """Whether any faithfulness weight is on (each costs the classifier on every step)."""
    return any(getattr(cfg, k) != 0 for k in FAITH_TERMS)


FAITH_TERMS = ("faith_in", "faith_out", "mask_l1")


# ============================================================================ batches
def collate_batch(batch: Any) -> Any:
    """The datasets below build whole batches in ``__getitems__``; nothing left to collate."""
    return batch


class WaveSplit(Dataset):
    """Waveforms of a split, ``wavs (N, S)``; a batch is ``{"wav": (B, S), "label": (B,)}``."""

    def __init__(self, wavs: np.ndarray, labels: np.ndarray) -> None:
        self.wavs, self.labels = wavs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, idx: list[int]) -> dict[str, Tensor]:
        i = np.asarray(idx, dtype=np.int64)
        return {"wav": torch.from_numpy(np.ascontiguousarray(self.wavs[i], dtype=np.float32)),
                "label": torch.from_numpy(self.labels[i])}

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.__getitems__([i])


def spectra(wav: Tensor, features: FeaturesConfig) -> tuple[Tensor, Tensor]:
    """``wav (B, S)`` -> ``(mag (B, T, F), log1p(mag) (B, T, F))``."""
    mag = stft(wav, features).abs()  # (B, T, F)
    return mag, torch.log1p(mag)


def classify_wave(interp: Interpreter, wav: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """``wav (B, S)`` -> ``(logits (B, C), maps, log1p|X| (B, T, F))`` through l2i's STFT.

    The classifier gets the magnitude, the phase and the length (the shared call), so a
    classifier given as code re-synthesises exactly this waveform.
    """
    spec = stft(wav, interp.features)  # (B, T, F) complex
    mag = spec.abs()  # (B, T, F)
    logits, maps = interp.classify(mag, torch.angle(spec), wav.shape[-1])
    return logits, maps, torch.log1p(mag)


# ============================================================================ module
class L2IModule(L.LightningModule):
    """Trains ``interp.psi`` and ``interp.theta``; everything else in ``interp`` is frozen.

    Batches are either cached (``{"reduced", "logits", "target", "label"}``, see
    :class:`CachedSplit`) or raw (``{"wav", "label"}``): raw training batches are mixed with noise
    when ``noise`` (a :class:`l2i.noise.NoiseBank`) is given, then transformed and classified.
    """

    def __init__(self, interp: Interpreter, loss_cfg: L2ILossConfig, trainer_cfg: Any,
                 augment: AugmentConfig | None = None, noise: Any = None,
                 steps_per_epoch: int = 1) -> None:
        super().__init__()
        self.interp = interp
        self.loss_cfg = loss_cfg
        self.trainer_cfg = trainer_cfg
        self.augment = augment or AugmentConfig()
        self.noise = noise
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self._gen: torch.Generator | None = None
        bad = [f"loss.{k} = {getattr(loss_cfg, k)}" for k in (*FAITH_TERMS, "faith_clips")
               if getattr(loss_cfg, k) < 0]
        if bad:
            raise ConfigError(f"{', '.join(bad)}: faithfulness weights must be >= 0 (0 = off)")

    # ------------------------------------------------------------------ data -> tensors
    def _add_noise(self, wav: Tensor) -> Tensor:
        """Mix each clip with a random noise clip at an SNR drawn in ``augment.snr_db``."""
        from l2i.noise import mix_share

        gen = self._generator()
        noise = self.noise.sample(wav.shape[0], gen).to(wav)  # (B, S)
        return mix_share(wav, noise, self.augment.noise_prob, self.augment.snr_db, gen)

    def _mix_clips(self, wav: Tensor) -> Tensor:
        """``augment.mix_prob`` of the clips ``(B, S)`` mixed with another clip of the batch
        (:func:`l2i.noise.mix_within_batch`)."""
        from l2i.noise import mix_within_batch

        return mix_within_batch(wav, self.augment.mix_prob, self.augment.mix_snr_db,
                                self._generator())

    def _generator(self) -> torch.Generator:
        """The augmentation's generator, seeded per DDP rank on first use."""
        if self._gen is None:
            self._gen = torch.Generator().manual_seed(int(self.trainer_cfg.seed)
                                                      + 1000 * self.global_rank)
        return self._gen

    def inputs(self, batch: dict[str, Any], train: bool
               ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor | None]:
        """``(reduced maps, classifier logits (B, C), target log1p|X| (B, T, F), audio (B, S))``.

        ``audio`` is what the classifier heard (noise mixed in for training), or a cached
        batch's ``audio`` (None when the batch has none): the faithfulness terms of a
        classifier given as code re-synthesise with its phase.
        """
        if "wav" in batch:
            wav = batch["wav"].float()
            if train and self.noise is not None:
                wav = self._add_noise(wav)
            if train and self.augment.mix_prob > 0:
                wav = self._mix_clips(wav)
            logits, maps, target = classify_wave(self.interp, wav)
            return self.interp.psi.reduce(maps), logits.float(), target, wav
        reduced = {k: v.float() for k, v in batch["reduced"].items()}
        audio = batch.get("audio")  # (B, S): cached batches carry the clips' audio
        return (reduced, batch["logits"].float(), batch["target"].float(),
                None if audio is None else audio.float())

    @property
    def faithful(self) -> bool:
        """Whether the loss has faithfulness terms (:func:`uses_faithfulness`)."""
        return uses_faithfulness(self.loss_cfg)

    def shared_step(self, batch: dict[str, Any], train: bool
                    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Loss terms and the tensors behind them for one batch.

        The second dict holds ``theta_logits (B, C)``, ``logits (B, C)`` (classifier),
        ``target (B, T, F)``, ``H (B, K, T)`` and ``recon (B, T, F)``. With faithfulness terms
        the input magnitude is ``expm1(target)`` (the cache holds ``log1p|X|``), the mask is
        :func:`training_mask` for the classifier's prediction.
        """
        reduced, logits, target, audio = self.inputs(batch, train)
        H, z, theta_logits = self.interp.heads(reduced, target.shape[1], target)
        recon = self.interp.reconstruct(H)  # (B, T, F)
        faith = (self.faith_step(logits, H, z, theta_logits, target, audio) if self.faithful
                 else None)
        terms = l2i_loss(recon, target, H, theta_logits, logits, self.loss_cfg,
                         self.interp.activation, faith)
        return terms, {"theta_logits": theta_logits, "logits": logits, "target": target,
                       "H": H, "recon": recon}

    def faith_step(self, logits: Tensor, H: Tensor, z: Tensor, theta_logits: Tensor,
                   target: Tensor, audio: Tensor | None = None) -> dict[str, Tensor]:
        """:func:`faithfulness_terms` of :func:`training_mask` for the classifier's prediction.

        ``logits (B, C)`` the classifier's on ``|X|``; ``H (B, K, T)``, ``z (B, K)``,
        ``theta_logits (B, C)`` psi's and theta's; ``target (B, T, F)`` = ``log1p|X|`` (so
        ``|X| = expm1(target)``, also from the cache); ``audio (B, S)`` the input, whose phase a
        classifier given as code (``needs_phase``) re-synthesises with.
        ``loss.faith_clips = n`` keeps the first n clips of the (shuffled) batch.
        """
        n = self.loss_cfg.faith_clips or logits.shape[0]
        phase = length = None
        needs_phase = getattr(self.interp.classifier, "needs_phase", False)
        if needs_phase and audio is not None:
            phase, length = torch.angle(stft(audio[:n], self.interp.features)), audio.shape[-1]
        if needs_phase and phase is None:
            raise ConfigError("loss.faith_in/faith_out/mask_l1 with a classifier given as "
                              "code re-synthesise the masked audio, which needs the input's "
                              "phase: the map cache does not hold it, so train with "
                              "--cache_maps false")
        pred = logits[:n].argmax(dim=1)  # (n,)
        H, z = H[:n], z[:n]
        if not self.loss_cfg.faith_psi:  # the terms reach theta only (psi's H held fixed)
            H = H.detach()  # (n, K, T)
            z = self.interp.theta.pool(H)  # (n, K)
        out = InterpreterOutput(logits=logits[:n], H=H, theta_logits=theta_logits[:n], z=z)
        mask = training_mask(out, self.interp.W, self.interp.theta.linear.weight, pred)
        return faithfulness_terms(self.interp.classifier, mask, torch.expm1(target[:n]), pred,
                                  self.interp.activation, phase, length)

    # ------------------------------------------------------------------ lightning hooks
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        terms, o = self.shared_step(batch, train=True)
        theta_logits, logits = o["theta_logits"], o["logits"]
        B = logits.shape[0]
        values = {f"train/{k}": v.detach() for k, v in terms.items()}
        values["train/fid_top1"] = topk_hits(theta_logits, logits, 1).mean()
        self.log_dict(values, on_step=False, on_epoch=True, batch_size=B, sync_dist=True)
        return terms["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        terms, o = self.shared_step(batch, train=False)
        theta_logits, logits = o["theta_logits"], o["logits"]
        B = logits.shape[0]
        values = {f"valid/{k}": v for k, v in terms.items()}
        for k in TOPK:
            values[f"valid/fid_top{k}"] = topk_hits(theta_logits, logits, k).mean()
        rec_rel = torch.linalg.vector_norm(o["recon"] - o["target"]) / torch.linalg.vector_norm(
            o["target"]).clamp_min(1e-12)
        fid = values["valid/fid_top1"]
        if self.interp.activation == "sigmoid":  # multi-label: per-class agreement
            th = classifier_threshold(self.interp.classifier)
            fid = ((torch.sigmoid(theta_logits) > th) == (torch.sigmoid(logits) > th)).float() \
                .mean()
            values["valid/fid_agreement"] = fid
        selection = fid - SELECTION_REC_WEIGHT * rec_rel
        self.log(MONITOR, selection, on_step=False, on_epoch=True, batch_size=B,
                 sync_dist=True, prog_bar=True)
        self.log_dict(values, on_step=False, on_epoch=True, batch_size=B, sync_dist=True)

    def configure_optimizers(self) -> Any:
        from l2i.training.common import configure_optimizers

        params = [p for p in self.parameters() if p.requires_grad]
        return configure_optimizers(params, self.trainer_cfg, self.steps_per_epoch,
                                    monitor=MONITOR, mode="max")


@torch.no_grad()
def evaluate_split(module: L2IModule, loader: DataLoader, device: torch.device
                   ) -> dict[str, float]:
    """Fidelity top-1/3/5 (vs the classifier's prediction) and reconstruction error of a split.

    ``rec_mse``: mean squared error of ``W H`` vs ``log1p|X|``; ``rec_rel``:
    ``||W H - X||_F / ||X||_F`` over the whole split; ``classifier_acc``: the classifier's
    accuracy on the labels, for reference.
    """
    module.eval().to(device)
    hits = {k: 0.0 for k in TOPK}
    n, se, ss, cnt, correct, loss = 0, 0.0, 0.0, 0, 0.0, 0.0
    multilabel = module.interp.activation == "sigmoid"
    kept: list[tuple[Tensor, Tensor]] = []  # multi-label: (theta_logits, logits) per batch
    for batch in loader:
        batch = _to(batch, device)
        terms, o = module.shared_step(batch, train=False)
        theta_logits, logits, target, recon = o["theta_logits"], o["logits"], o["target"], \
            o["recon"]
        B = logits.shape[0]
        for k in TOPK:
            hits[k] += float(topk_hits(theta_logits, logits, k).sum())
        se += float(((recon - target) ** 2).sum())
        ss += float((target ** 2).sum())
        cnt += target.numel()
        correct += float((logits.argmax(-1) == batch["label"]).sum())
        loss += float(terms["loss"]) * B
        n += B
        if multilabel:
            kept.append((theta_logits.cpu(), logits.cpu()))
    out = {f"fid_top{k}": hits[k] / max(n, 1) for k in TOPK}
    out.update(rec_mse=se / max(cnt, 1), rec_rel=math.sqrt(se / max(ss, 1e-12)),
               loss=loss / max(n, 1), classifier_acc=correct / max(n, 1), n_clips=n)
    if multilabel and kept:
        th = classifier_threshold(module.interp.classifier)
        out.update(multilabel_fidelity(torch.cat([k[0] for k in kept]),
                                       torch.cat([k[1] for k in kept]), th))
    return out


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


# ============================================================================ callbacks
class BestTimer(Callback):
    """Wall time from the start of the command to the best ``valid/selection`` (survives resume)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.elapsed_before = 0.0
        self.best = -math.inf
        self.best_epoch = -1
        self.time_to_best: float | None = None

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or MONITOR not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[MONITOR])
        if value > self.best:
            self.best, self.best_epoch, self.time_to_best = value, trainer.current_epoch, \
                self.elapsed()

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed(), "best": self.best, "best_epoch": self.best_epoch,
                "time_to_best": self.time_to_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.best = float(state.get("best", -math.inf))
        self.best_epoch = int(state.get("best_epoch", -1))
        self.time_to_best = state.get("time_to_best")


# ============================================================================ command
def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def check_inputs(cfg: L2IRecipe) -> tuple[dict, Any, Any, dict, Any]:
    """The checks that must fail within seconds, then the dataset check (one DataError
    listing every problem; rank 0 decodes every clip into the audio cache for it).

    Returns ``(classifier checkpoint dict, classifier, W (F, K), classifier info, dataset
    index)``. With ``classifier.module`` set the classifier is built from code
    (:func:`_code_classifier`); otherwise it comes from ``classifier_ckpt``.
    """
    from l2i.models import load_classifier
    from l2i.nmf import check_stated_features, load_dictionary
    from l2i.shards import training_index

    code = bool(cfg.classifier.module)
    _check_paths(cfg, code)
    W, nmf_features = load_dictionary(cfg.nmf)
    if code:
        record, classifier, info = _code_classifier(cfg, nmf_features)
        index = training_index(cfg.data_folder, cfg.data, info.features.sample_rate,
                               Path(cfg.output_folder) / "cache" / "audio",
                               progress=cfg.trainer.progress)
        if classifier.class_names == [f"class_{i}" for i in range(classifier.n_classes)] \
                and index.n_classes == classifier.n_classes:  # unnamed: the dataset's names
            classifier.class_names = info.class_names = list(index.class_names)
            record["class_names"] = list(index.class_names)
        return record, classifier, W, info, index
    try:
        record = torch.load(cfg.classifier_ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling error means a bad file
        raise L2IError(f"classifier checkpoint {cfg.classifier_ckpt} could not be read "
                       f"({type(err).__name__}: {err})") from None
    classifier, info = load_classifier(record, map_location="cpu")
    if nmf_features is not None:
        diffs = features_match(info.features, nmf_features)
        if diffs:
            raise L2IError(f"classifier {cfg.classifier_ckpt} and NMF dictionary {cfg.nmf} use "
                           f"different STFT settings (classifier vs dictionary: "
                           f"{'; '.join(diffs)}): learn the dictionary with the classifier's "
                           "features (l2i train-nmf --features.* ...)")
    if W.shape[0] != info.features.n_freq:
        raise L2IError(f"NMF dictionary {cfg.nmf} has {W.shape[0]} frequency bins but the "
                       f"classifier's STFT (n_fft {info.features.n_fft}) has "
                       f"{info.features.n_freq}: learn the dictionary with the same n_fft")
    check_stated_features(cfg.nmf, W, nmf_features, info.features, cfg.nmf_sample_rate,
                          cfg.nmf_n_fft, option="nmf")
    index = training_index(cfg.data_folder, cfg.data, info.features.sample_rate,
                           Path(cfg.output_folder) / "cache" / "audio",
                           progress=cfg.trainer.progress, n_classes=info.n_classes)
    return record, classifier, W, info, index


def _check_paths(cfg: L2IRecipe, code: bool) -> None:
    """The checks of :func:`check_inputs` that need no file read: the classifier, the
    dictionary and the noise folder are given and exist, ``data.duration_s`` is set."""
    if not code and not cfg.classifier_ckpt:
        raise ConfigError("classifier_ckpt is empty: pass --classifier_ckpt PATH/classifier.ckpt "
                          "(written by 'l2i train-classifier') or a classifier given as code "
                          "(--classifier.module file.py:build, docs/custom_classifier.md)")
    if code and cfg.classifier_ckpt:
        raise ConfigError("give either classifier_ckpt or classifier.module, not both")
    if not code and not Path(cfg.classifier_ckpt).is_file():
        raise L2IError(f"classifier checkpoint {cfg.classifier_ckpt} not found: train one with "
                       "'l2i train-classifier' or fix --classifier_ckpt")
    if not cfg.nmf:
        raise ConfigError("nmf is empty: pass --nmf PATH/nmf.pt (written by 'l2i train-nmf')")
    if not Path(cfg.nmf).is_file():
        raise L2IError(f"NMF dictionary {cfg.nmf} not found: learn one with 'l2i train-nmf' or "
                       "fix --nmf")
    noise_folder = cfg.noise_folder or cfg.augment.noise_folder
    if noise_folder and not Path(noise_folder).is_dir():
        raise L2IError(f"noise folder {noise_folder} not found: give a folder of audio files "
                       "(e.g. WHAM!'s tr/) with --noise_folder, or leave it empty")
    if cfg.data.duration_s is None:
        raise ConfigError("data.duration_s is null: L2I training batches clips of one length; "
                          "set --data.duration_s (e.g. 5.0)")


def _code_classifier(cfg: L2IRecipe, nmf_features: dict | None) -> tuple[dict, Any, Any]:
    """Import, build and probe ``cfg.classifier`` (a classifier given as code).

    l2i's STFT settings come from the dictionary (``nmf.pt``); the layers' shapes and time axes
    are printed. Returns ``(record, classifier, info)``, ``info`` with ``features``,
    ``n_classes`` and ``class_names``.
    """
    from types import SimpleNamespace

    from l2i.config import FeaturesConfig, from_dict
    from l2i.models.hooked import build_hooked, code_record, describe_layers

    if nmf_features is None:
        raise L2IError(f"NMF dictionary {cfg.nmf} carries no STFT settings (a .npy or foreign "
                       "file): with a classifier given as code l2i takes its STFT from nmf.pt; "
                       "learn it with 'l2i train-nmf' (or import yours with --init there)")
    features = from_dict(FeaturesConfig, dict(nmf_features))
    short = max(0.5, min(1.0, float(cfg.data.duration_s or 1.0) / 2))
    clf = build_hooked(cfg.classifier, features, (short, 2 * short))
    if _rank() == 0:
        print(f"l2i train: classifier {cfg.classifier.module} at {cfg.classifier.sample_rate} "
              f"Hz, {clf.n_classes} classes ({clf.activation}); hooked layers for "
              f"{2 * short:g} s:\n{describe_layers(clf.layers)}", flush=True)
    info = SimpleNamespace(features=features, n_classes=clf.n_classes,
                           class_names=clf.class_names)
    return code_record(clf), clf, info


def build_model(cfg: L2IRecipe, record: dict, classifier: Any, W: Tensor,
                info: Any) -> Interpreter:
    """A fresh :class:`Interpreter` (untrained psi + theta) around the frozen classifier."""
    try:
        bins = getattr(classifier, "map_bins", None) or probe_map_bins(classifier, W.shape[0])
        psi_cfg = cfg.psi if cfg.psi.maps else replace(cfg.psi, maps=default_maps(classifier))
        psi = Psi(classifier.map_channels, W.shape[1], psi_cfg, map_bins=bins,
                  n_freq=W.shape[0])
        theta = Theta(W.shape[1], info.n_classes, cfg.theta)
    except ValueError as err:
        raise ConfigError(f"psi/theta config: {err}") from None
    return Interpreter(classifier, psi, theta, W, info.features, info.class_names,
                       relevance_th=cfg.loss.relevance_th, classifier_record=record)


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, num_workers: int) -> DataLoader:
    """Batches built by ``ds.__getitems__`` (one vectorised read per batch); shuffled by
    :class:`~l2i.training.common.EpochShuffleSampler` (same global batches under DDP)."""
    from l2i.training.common import EpochShuffleSampler

    sampler = EpochShuffleSampler(ds) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate_batch,
                      num_workers=num_workers, persistent_workers=num_workers > 0)


def train_interpreter(cfg: L2IRecipe) -> str:
    """``l2i train``: train psi + theta, write ``l2i.ckpt``, ``metrics.json``, ``config.yaml``.

    Returns the path of ``l2i.ckpt`` (on rank 0; other DDP ranks return an empty string).
    The steps: :func:`_setup` (recipe, DDP layout), :func:`check_inputs`, :func:`build_model`,
    :func:`_load_splits` (audio and map cache), :func:`_split_datasets`, :func:`_build_module`,
    the fit, :func:`_evaluate_best` and :func:`_write_bundle`.
    """
    from l2i.training.common import build_trainer, clip_loader, fit, resume_checkpoint

    t0 = time.time()
    cfg, trainer_cfg, augment = _setup(cfg)
    out = Path(cfg.output_folder)
    record, classifier, W, info, index = check_inputs(cfg)
    ckpt_path = resume_checkpoint(out, cfg.trainer, final=FINAL, config=cfg)
    L.seed_everything(trainer_cfg.seed, workers=True, verbose=False)
    interp = build_model(cfg, record, classifier, W, info)  # a bad psi/theta config stops here
    if _rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    noisy = (bool(augment.noise_folder) and augment.noise_prob > 0) or augment.mix_prob > 0
    t_cache, cpu_cache = time.time(), time.process_time()
    cached_splits, arrays, cache_bytes = _load_splits(cfg, trainer_cfg, interp, index, noisy)
    cache_seconds, cache_cpu = time.time() - t_cache, time.process_time() - cpu_cache
    interp.to("cpu")
    datasets = _split_datasets(cached_splits, out / "cache", arrays, interp.features)
    train_loader, valid_loader = (
        clip_loader(datasets[s], trainer_cfg.batch_size, s == "train", trainer_cfg.seed,
                    trainer_cfg.num_workers, buffer=cfg.data.shuffle_buffer)  # split by rank
        for s in ("train", "valid"))
    module = _build_module(cfg, trainer_cfg, interp, augment, datasets, noisy)

    timer = BestTimer(t0)
    trainer = build_trainer(trainer_cfg, out, monitor=MONITOR, mode="max",
                            extra_callbacks=[timer], distributed_sampler=False)
    t_fit, cpu_fit = time.time(), time.process_time()
    fit(trainer, module, train_loader, valid_loader, ckpt_path, out)
    fit_seconds, fit_cpu = time.time() - t_fit, time.process_time() - cpu_fit
    if trainer.global_rank != 0:
        return ""
    metrics = _evaluate_best(trainer, module, datasets, trainer_cfg, timer, out)
    metrics.update({
        "fit_seconds": round(fit_seconds, 2),
        "seconds": round(time.time() - t0, 2),
        "time_to_best_s": None if timer.time_to_best is None else round(timer.time_to_best, 2),
        "cache_seconds": round(cache_seconds, 2),
        "fit_cpu_seconds": round(fit_cpu, 2), "cache_cpu_seconds": round(cache_cpu, 2),
        "cache_estimate_mb": round(cache_bytes / 2**20, 2),
        "clip_mixing": augment.mix_prob,  # share of training clips mixed (augment.mix_prob)
        **_run_info(out / "cache", cached_splits, datasets, interp, noisy, trainer),
    })
    return _write_bundle(out, interp, cfg, metrics)


def _setup(cfg: L2IRecipe) -> tuple[L2IRecipe, Any, AugmentConfig]:
    """The recipe with an absolute data folder, the trainer settings under torchrun (one
    device per local process) and the augmentation (noise only; the rest warned as ignored)."""
    from l2i.data import with_absolute_data_folder

    cfg = with_absolute_data_folder(cfg)  # the recipe stored in l2i.ckpt names it from anywhere
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # the classifier
    augment = replace(cfg.augment, noise_folder=cfg.noise_folder or cfg.augment.noise_folder)
    unused = [k for k in ("time_shift", "gain_db", "mixup_alpha", "freq_masks", "time_masks")
              if getattr(augment, k) != getattr(AugmentConfig(), k)]
    if unused and _rank() == 0:
        warnings.warn(f"l2i train only applies noise mixing; augment.{', augment.'.join(unused)}"
                      " are ignored", stacklevel=3)
    trainer_cfg = cfg.trainer
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "0"))
    if local_world > 1 and trainer_cfg.devices == 1:  # started by torchrun
        trainer_cfg = replace(trainer_cfg, devices=local_world)
    return cfg, trainer_cfg, augment


def _load_splits(cfg: L2IRecipe, trainer_cfg: Any, interp: Interpreter, index: Any,
                 noisy: bool) -> tuple[list[str], dict[str, Any], int]:
    """Load every split's audio and build the map caches :func:`_cached_splits` chose: rank 0
    builds them; the other ranks wait for them, then load the audio.

    Returns ``(cached split names, {split: loaded split (wavs, labels)}, estimated bytes of
    the cache)``.
    """
    from l2i.data import load_split

    rank = _rank()
    cache_root = Path(cfg.output_folder) / "cache"
    sr = interp.features.sample_rate
    keys = split_keys(cfg, index, interp)
    cached_splits, est = _cached_splits(cfg, interp, index, keys, noisy)
    for split in cached_splits if rank != 0 else ():
        wait_for(cache_root / split, keys[split], rank)
    arrays = {s: load_split(index, s, cfg.data, sr, cache_dir=cache_root / "audio",
                            progress=trainer_cfg.progress and rank == 0) for s in SPLITS}
    for split in cached_splits if rank == 0 else ():
        build_cache(interp, arrays[split].wavs, arrays[split].labels, cache_root / split,
                    keys[split], trainer_cfg.batch_size, resolve_device(trainer_cfg.device),
                    progress=trainer_cfg.progress, dtype=trainer_cfg.cache_dtype,
                    shard_clips=trainer_cfg.cache_shard_clips)
    return cached_splits, arrays, est


def _cached_splits(cfg: L2IRecipe, interp: Interpreter, index: Any, keys: dict[str, str],
                   noisy: bool) -> tuple[list[str], int]:
    """The splits whose maps are cached (:func:`l2i.training.map_cache.cache_plan`) and the
    cache's estimated bytes, printed first (rank 0). A noisy train split is always recomputed.

    Every rank decides the same from the clip counts and the clip length (the layout comes
    from one silent clip of ``data.duration_s``), before any audio is read.
    """
    from l2i.training.map_cache import cache_plan, cache_ready, clip_layout, estimate_bytes

    candidates = [s for s in SPLITS if cfg.cache_maps is not False
                  and not (s == "train" and noisy)]
    if not candidates:
        return [], 0
    t = cfg.trainer
    cache_root = Path(cfg.output_folder) / "cache"
    n_samples = int(round(cfg.data.duration_s * interp.features.sample_rate))
    layout = clip_layout(interp, np.zeros(n_samples, dtype=np.float32), t.cache_dtype)
    n = {s: len(index.split(s)) for s in candidates}
    est = sum(estimate_bytes(layout, n[s], t.cache_shard_clips) for s in candidates)
    ready = all(cache_ready(cache_root / s, keys[s]) for s in candidates)
    use = ready or cache_plan(cfg.cache_maps, est, t.cache_auto_gb, t.cache_limit_gb)
    if _rank() == 0:
        what = ("reused" if ready else f"writing it to {cache_root}") if use else (
            f"over trainer.cache_auto_gb = {t.cache_auto_gb:g}: recomputing the classifier's "
            "maps each epoch (--cache_maps true caches them)")
        print(f"l2i train: map cache of {', '.join(candidates)}: {sum(n.values())} clips x "
              f"{est / max(1, sum(n.values())) / 2**10:.1f} KB = {est / 2**20:.1f} MB "
              f"({t.cache_dtype}); {what}", flush=True)
    return (candidates if use else []), est


def _split_datasets(cached_splits: list[str], cache_root: Path, arrays: dict[str, Any],
                    features: FeaturesConfig) -> dict[str, Dataset]:
    """Each split as a :class:`CachedSplit` (cached) or a :class:`WaveSplit` (audio)."""
    def dataset(split: str) -> Dataset:
        if split in cached_splits:
            return CachedSplit(cache_root / split, arrays[split].wavs, features)
        return WaveSplit(arrays[split].wavs, arrays[split].labels)

    return {s: dataset(s) for s in SPLITS}


def _build_module(cfg: L2IRecipe, trainer_cfg: Any, interp: Interpreter,
                  augment: AugmentConfig, datasets: dict[str, Dataset], noisy: bool
                  ) -> L2IModule:
    """The :class:`L2IModule`, with its noise bank when mixing noise and the per-epoch step
    count of the whole DDP world (the cosine schedule)."""
    from l2i.training.common import world_size

    noise = None
    if augment.noise_folder and augment.noise_prob > 0:
        from l2i.noise import NoiseBank

        sr = interp.features.sample_rate
        n_samples = int(round(cfg.data.duration_s * sr))
        noise = NoiseBank(augment.noise_folder, sr, n_samples, seed=trainer_cfg.seed + _rank())
    steps = math.ceil(len(datasets["train"]) / (trainer_cfg.batch_size
                                                * world_size(trainer_cfg)))
    return L2IModule(interp, cfg.loss, trainer_cfg, augment, noise, steps_per_epoch=steps)


def _evaluate_best(trainer: Any, module: L2IModule, datasets: dict[str, Dataset],
                   trainer_cfg: Any, timer: BestTimer, out: Path) -> dict[str, Any]:
    """Reload the best epoch into ``module`` and score valid and test (``valid/...``,
    ``test/...``), with the epoch counts and the best checkpoint's path."""
    from l2i.training.common import best_checkpoint_path, clip_loader, early_stop_info

    best = best_checkpoint_path(trainer) or str(out / "checkpoints" / "last.ckpt")
    state = _load_lightning_ckpt(best)
    module.load_state_dict(state["state_dict"])
    eval_device = resolve_device(trainer_cfg.device)
    metrics: dict[str, Any] = {}
    for split in ("valid", "test"):
        loader = clip_loader(datasets[split], trainer_cfg.batch_size, False, trainer_cfg.seed,
                             0, rank=0, world_size=1)  # the whole split on rank 0
        for k, v in evaluate_split(module, loader, eval_device).items():
            metrics[f"{split}/{k}"] = v
    module.to("cpu")
    metrics.update({
        "epochs": int(trainer.current_epoch), **early_stop_info(trainer),
        "best_epoch": int(state.get("epoch", timer.best_epoch)),
        "best_checkpoint": str(best),
    })
    return metrics


def _run_info(cache_root: Path, cached_splits: list[str], datasets: dict[str, Dataset],
              interp: Interpreter, noisy: bool, trainer: Any) -> dict[str, Any]:
    """The run's facts for ``metrics.json``: cache, memory, split sizes, parameter counts."""
    return {
        "cache": bool(cached_splits),
        "cache_splits": cached_splits,
        "cache_mb": round(sum(folder_size(cache_root / s) for s in cached_splits) / 2**20, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "n_train": len(datasets["train"]), "n_valid": len(datasets["valid"]),
        "n_test": len(datasets["test"]),
        "psi_params": sum(p.numel() for p in interp.psi.parameters()),
        "theta_params": sum(p.numel() for p in interp.theta.parameters()),
        "noise_augmentation": noisy, "world_size": int(trainer.world_size),
    }


def _write_bundle(out: Path, interp: Interpreter, cfg: L2IRecipe,
                  metrics: dict[str, Any]) -> str:
    """Write ``l2i.ckpt`` (the interpreter, its recipe and metrics) and ``metrics.json``."""
    interp.metrics = metrics
    path = save_interpreter(out / FINAL, interp, loss=cfg.loss, recipe=to_dict(cfg),
                            metrics=metrics, psi_cfg=cfg.psi, theta_cfg=cfg.theta)
    write_json(out / "metrics.json", metrics)
    print(f"l2i train: test fidelity top-1 {metrics['test/fid_top1']:.3f} top-3 "
          f"{metrics['test/fid_top3']:.3f} top-5 {metrics['test/fid_top5']:.3f}; "
          f"rec error {metrics['test/rec_rel']:.3f}; wrote {path}", flush=True)
    return str(path)


def _load_lightning_ckpt(path: str) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - our own file; Lightning may store non-tensor objects
        return torch.load(path, map_location="cpu", weights_only=False)


__all__ = ["reconstruction_mse", "sparsity_l1", "soft_cross_entropy", "topk_hits", "l2i_loss",
           "L2IModule", "build_cache", "evaluate_split", "train_interpreter", "check_inputs",
           "split_key"]
