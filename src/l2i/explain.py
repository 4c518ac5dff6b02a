"""Listenable explanations (L2I_SPEC §6): relevance, component selection, ratio mask, audio.

For a clip and a target class ``c`` (default: the classifier's prediction):

1. ``z (B, K)``: theta's time-pooled activations of the K NMF components;
   relevance ``r_k = w_ck z_k / max_j |w_cj z_j|`` in [-1, 1] (:func:`relevance`);
2. keep the components with ``r_k > relevance_th`` or the ``top_k`` most relevant positive ones
   (:func:`select_components`);
3. ``M = (W_L H_L) / (W H + eps)`` over (time, freq), in [0, 1] (:func:`ratio_mask`);
4. the explanation spectrogram is ``M * |X|`` (:func:`explanation_magnitude`), turned into
   audio with the input's phase (:func:`to_audio`).

Masking domain (L2I_SPEC §6.4, REFERENCE_RECIPE §10.7): we mask the linear magnitude,
``M * |X|``, a Wiener-like soft mask: a mask value of 0.5 halves the amplitude of that bin, and
the explanation plus the masked-out remainder ``(1 - M) * |X|`` add up to the input exactly. The
reference masks the log1p magnitude, ``expm1(M * log1p|X|) = (1 + |X|)^M - 1``, which is not
proportional (0.5 turns |X| = 3 into 1) and whose complement does not sum back to the input.
The metrics feed the classifier ``M * |X|`` (masked-in) and ``(1 - M) * |X|`` (masked-out)
through its own frontend, the same for every classifier.

The math is in pure batched functions; :class:`Explainer` wraps a trained interpreter
(``l2i.interpreter``) for waveforms of any length and sample rate, and :func:`interpret_files`
is the ``l2i interpret`` command.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from l2i import features as feats
from l2i.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from l2i.config import DataConfig, FeaturesConfig, InterpretRecipe, save_config
from l2i.errors import ConfigError, DataError, L2IError

DEFAULT_RELEVANCE_TH = 0.2
MASK_EPS = 1e-10
MIN_DURATION_S = 1.0  # shorter inputs are zero-padded to this for the analysis (see explain)
DEFAULT_MAX_MEMORY_MB = 4096.0  # Explainer.explain refuses inputs that would need more
# Working bytes per (clip, frame, STFT bin) of one explain call: peak RSS growth measured for
# the esc50 recipes' models (random weights, 10-40 s clips): conv2d 61-67, cnn14 185; rounded up.
BYTES_PER_BIN = 256


# --------------------------------------------------------------------------- pure math
def relevance(theta_weight: Tensor, z: Tensor, target: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-component relevance for the target class, ``r_k = w_ck z_k / max_j |w_cj z_j|``.

    Args:
        theta_weight: ``(C, K)`` theta's linear weights (``theta.linear.weight``).
        z: ``(B, K)`` theta's time-pooled activations.
        target: ``(B,)`` int class per clip.
        eps: when every ``w_cj z_j`` is 0 (silent clip) the relevance is 0, not NaN.
    Returns:
        ``(B, K)`` in [-1, 1]; the most relevant component of each clip has ``r = 1`` (when its
        contribution is positive).
    """
    target = torch.as_tensor(target, device=z.device).long().reshape(-1)
    if z.dim() != 2 or theta_weight.dim() != 2 or theta_weight.shape[1] != z.shape[1]:
        raise ValueError(f"relevance: expected theta_weight (C, K) and z (B, K), got "
                         f"{tuple(theta_weight.shape)} and {tuple(z.shape)}")
    if target.shape[0] != z.shape[0]:
        raise ValueError(f"relevance: {target.shape[0]} targets for a batch of {z.shape[0]}")
    contrib = theta_weight.to(z.dtype)[target] * z  # (B, K)
    scale = contrib.abs().amax(dim=1, keepdim=True)  # (B, 1)
    return contrib / scale.clamp_min(eps)


def select_components(r: Tensor, relevance_th: float = DEFAULT_RELEVANCE_TH,
                      top_k: int | None = None) -> Tensor:
    """Which components form the explanation.

    ``top_k=None``: ``r_k > relevance_th`` (the reference's rule; relative to the clip's most
    relevant component). ``top_k=k``: the ``k`` components of largest ``r``, among those with
    ``r > 0`` only (a component with negative relevance argues against the class, so an
    explanation may hold fewer than ``k``).

    Args:
        r: ``(B, K)`` relevance from :func:`relevance`.
    Returns:
        ``(B, K)`` bool.
    """
    if top_k is None:
        return r > relevance_th
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    k = min(int(top_k), r.shape[1])
    idx = r.topk(k, dim=1).indices  # (B, k)
    chosen = torch.zeros_like(r, dtype=torch.bool).scatter(1, idx, True)
    return chosen & (r > 0)


def ratio_mask(W: Tensor, H: Tensor, selected: Tensor, eps: float = MASK_EPS) -> Tensor:
    """Soft mask ``M = (W_L H_L) / (W H + eps)``: the share of each bin the selected explain.

    ``W`` and ``H`` should be non-negative (NMF); negative entries are clamped to 0 so the mask
    stays in [0, 1]. An empty selection gives an all-zero mask; selecting every component gives
    ``W H / (W H + eps)`` (1 wherever ``W H >> eps``).

    Args:
        W: ``(F, K)`` dictionary.
        H: ``(B, K, T)`` activations.
        selected: ``(B, K)`` bool (or 0/1 weights).
    Returns:
        ``(B, T, F)`` float in [0, 1].
    """
    if W.dim() != 2 or H.dim() != 3 or H.shape[1] != W.shape[1]:
        raise ValueError(f"ratio_mask: expected W (F, K) and H (B, K, T), got {tuple(W.shape)} "
                         f"and {tuple(H.shape)}")
    W = W.to(H.dtype).clamp_min(0.0)
    H = H.clamp_min(0.0)
    sel = torch.as_tensor(selected, device=H.device).to(H.dtype)  # (B, K)
    full = torch.einsum("fk,bkt->btf", W, H)  # (B, T, F)
    part = torch.einsum("fk,bkt->btf", W, H * sel[:, :, None])  # (B, T, F)
    return (part / (full + eps)).clamp(0.0, 1.0)


def explanation_magnitude(mask: Tensor, mag: Tensor) -> Tensor:
    """The explanation spectrogram ``M * |X|`` (linear-magnitude masking, see module doc).

    Args:
        mask: ``(B, T, F)`` in [0, 1]; mag: ``(B, T, F)`` input magnitude ``|X|``.
    Returns:
        ``(B, T, F)``; ``explanation_magnitude(1 - M, mag)`` is the masked-out remainder.
    """
    if mask.shape != mag.shape:
        raise ValueError(f"explanation_magnitude: mask {tuple(mask.shape)} and magnitude "
                         f"{tuple(mag.shape)} differ")
    return mask * mag


def to_audio(mag_explained: Tensor, phase: Tensor, features_cfg: FeaturesConfig,
             length: int | None = None) -> Tensor:
    """Inverse STFT of a magnitude with the input's phase.

    Args:
        mag_explained: ``(B, T, F)`` magnitude; phase: ``(B, T, F)`` radians.
        length: samples of the output (the input's length).
    Returns:
        ``(B, N)`` waveform (float32).
    """
    spec = feats.with_phase(mag_explained, phase)  # (B, T, F) complex
    return feats.istft(spec, features_cfg, length=length)


# --------------------------------------------------------------------------- results
@dataclass
class Explanation:
    """One clip's explanation, numpy arrays on the CPU (ready for figures, files, json).

    ``audio (N,)`` is the explanation waveform at ``sample_rate``; ``mask``,
    ``input_magnitude`` are ``(T, F)`` (frames ``hop_length`` samples apart, bins from 0 to
    ``sample_rate / 2``); ``relevance (K,)``; ``H (K, T)``; ``classifier_probs``,
    ``theta_probs`` ``(C,)``.
    """

    audio: np.ndarray
    sample_rate: int
    mask: np.ndarray
    relevance: np.ndarray
    selected: list[int]
    target: int
    target_name: str
    classifier_probs: np.ndarray
    theta_probs: np.ndarray
    H: np.ndarray
    input_magnitude: np.ndarray
    class_names: list[str] = field(default_factory=list)
    hop_length: int = 1
    relevance_th: float | None = None
    top_k: int | None = None

    @property
    def predicted(self) -> int:
        """The classifier's predicted class."""
        return int(np.argmax(self.classifier_probs))

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.sample_rate

    @property
    def explanation_magnitude(self) -> np.ndarray:
        """``(T, F)`` the masked magnitude ``M * |X|``."""
        return self.mask * self.input_magnitude

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts: target, top probabilities, relevance, selected components."""
        names = self.class_names or [str(i) for i in range(len(self.classifier_probs))]
        top = np.argsort(-self.classifier_probs)[:5]
        return {
            "target": self.target, "target_name": self.target_name,
            "predicted": self.predicted, "predicted_name": names[self.predicted],
            "classifier_prob_target": float(self.classifier_probs[self.target]),
            "theta_prob_target": float(self.theta_probs[self.target]),
            "top5": [{"class": names[i], "index": int(i),
                      "classifier_prob": float(self.classifier_probs[i]),
                      "theta_prob": float(self.theta_probs[i])} for i in top],
            "classifier_probs": {n: float(p) for n, p in zip(names, self.classifier_probs)},
            "theta_probs": {n: float(p) for n, p in zip(names, self.theta_probs)},
            "selected_components": list(self.selected),
            "relevance": [float(v) + 0.0 for v in self.relevance],  # no -0.0
            "relevance_th": self.relevance_th, "top_k": self.top_k,
            "mask_mean": float(self.mask.mean()) if self.mask.size else 0.0,
            "sample_rate": self.sample_rate, "duration_s": self.duration_s,
        }


@dataclass
class BatchExplanation:
    """Batched tensors of one forward pass (for evaluation code).

    Shapes: ``logits``, ``probs``, ``theta_logits``, ``theta_probs`` ``(B, C)``;
    ``H (B, K, T)``; ``z``, ``relevance``, ``selected`` ``(B, K)``; ``target (B,)``;
    ``mask (B, T, F)``.
    """

    logits: Tensor
    probs: Tensor
    theta_logits: Tensor
    theta_probs: Tensor
    H: Tensor
    z: Tensor
    target: Tensor
    relevance: Tensor
    selected: Tensor
    mask: Tensor


# --------------------------------------------------------------------------- explainer
def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not a valid torch device: use auto, cpu, "
                          "cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available: use "
                          "--device cpu (or auto)")
    return dev


class Explainer:
    """Explanations from a trained interpreter, captum-style.

    >>> explainer = Explainer.load("runs/l2i/l2i.ckpt")
    >>> e = explainer.explain(waveform, sample_rate=44100)  # -> Explanation
    >>> e.audio, e.mask, e.relevance, e.selected

    ``relevance_th`` / ``top_k`` default to the checkpoint's ``loss.relevance_th`` (0.2 in the
    reference) and None; ``normalize`` (``peak`` | ``none``) to the normalisation the classifier
    was trained with (:func:`checkpoint_normalize`). ``max_memory_mb`` (None: no limit) caps
    the working memory of one :meth:`explain` call.
    """

    def __init__(self, interpreter: Any, relevance_th: float | None = None,
                 top_k: int | None = None, min_duration_s: float = MIN_DURATION_S,
                 normalize: str | None = None,
                 max_memory_mb: float | None = DEFAULT_MAX_MEMORY_MB) -> None:
        from l2i.audio import NORMALIZATIONS

        self.interpreter = interpreter.eval()
        self.relevance_th = float(relevance_th if relevance_th is not None
                                  else _checkpoint_relevance_th(interpreter))
        self.top_k = top_k
        self.min_duration_s = float(min_duration_s)
        self.normalize = normalize if normalize is not None else checkpoint_normalize(interpreter)
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got "
                              f"{self.normalize!r}")
        self.max_memory_mb = max_memory_mb

    @classmethod
    def load(cls, ckpt: str | os.PathLike, device: str | torch.device = "cpu",
             relevance_th: float | None = None, top_k: int | None = None,
             max_memory_mb: float | None = DEFAULT_MAX_MEMORY_MB) -> Explainer:
        """Load an ``l2i.ckpt`` (``l2i.interpreter.load_interpreter``) onto ``device``."""
        from l2i.interpreter import load_interpreter

        interp = load_interpreter(ckpt, _resolve_device(device))
        return cls(interp, relevance_th=relevance_th, top_k=top_k, max_memory_mb=max_memory_mb)

    # ---- model facts
    @property
    def features(self) -> FeaturesConfig:
        f = self.interpreter.features
        return f if isinstance(f, FeaturesConfig) else FeaturesConfig(**f)

    @property
    def sample_rate(self) -> int:
        return int(self.features.sample_rate)

    @property
    def class_names(self) -> list[str]:
        return list(self.interpreter.class_names)

    @property
    def device(self) -> torch.device:
        return self.interpreter.W.device

    def resolve_target(self, target: int | str | None) -> int | None:
        """A class index from an index, a class name (or its index as a string) or None."""
        if target is None:
            return None
        names = self.class_names
        if isinstance(target, str):
            if target in names:
                return names.index(target)
            if target.strip().lstrip("-").isdigit():
                target = int(target)
            else:
                import difflib
                close = difflib.get_close_matches(target, names, n=3)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise ConfigError(f"target class {target!r} is not one of the model's classes: "
                                  f"{hint}valid names: {', '.join(names)}")
        t = int(target)
        if not 0 <= t < len(names):
            raise ConfigError(f"target class index {t} out of range: the model has "
                              f"{len(names)} classes (0..{len(names) - 1})")
        return t

    # ---- batched core
    @torch.no_grad()
    def explain_batch(self, mag: Tensor, target: Tensor | int | None = None) -> BatchExplanation:
        """One forward pass on magnitudes ``mag (B, T, F)`` (already on any device).

        ``target``: ``(B,)`` class indices, one int for all, or None (the classifier's
        prediction per clip).
        """
        interp = self.interpreter
        mag = mag.to(self.device, torch.float32)
        out = interp(mag)
        logits, theta_logits, H, z = out.logits, out.theta_logits, out.H, out.z
        if H.shape[-1] != mag.shape[1]:
            raise L2IError(f"interpreter returned H with {H.shape[-1]} frames for an input of "
                           f"{mag.shape[1]} frames: the interpreter must emit one activation "
                           "per STFT frame")
        if target is None:
            tgt = logits.argmax(dim=1)
        else:
            tgt = torch.as_tensor(target, device=mag.device).long().reshape(-1)
            if tgt.numel() == 1:
                tgt = tgt.expand(mag.shape[0])
        r = relevance(interp.theta.linear.weight, z, tgt)  # (B, K)
        sel = select_components(r, self.relevance_th, self.top_k)  # (B, K)
        mask = ratio_mask(interp.W, H, sel)  # (B, T, F)
        return BatchExplanation(logits=logits, probs=logits.softmax(dim=1),
                                theta_logits=theta_logits, theta_probs=theta_logits.softmax(dim=1),
                                H=H, z=z, target=tgt, relevance=r, selected=sel, mask=mask)

    # ---- waveforms
    def memory_estimate_mb(self, n_clips: int, n_samples: int, sample_rate: int) -> float:
        """Working memory (MB) :meth:`explain` needs for ``n_clips`` clips of ``n_samples``
        samples at ``sample_rate`` Hz: ``BYTES_PER_BIN`` per (clip, frame, bin) of the model's
        STFT (spectrogram, magnitude, mask, activations, the classifier's maps; measured, see
        ``BYTES_PER_BIN``) plus the input and its resampled copy."""
        sr = self.sample_rate
        n = max(int(math.ceil(n_samples * sr / sample_rate)),
                int(math.ceil(self.min_duration_s * sr)))
        bins = n_clips * feats.n_frames(n, self.features) * self.features.n_freq
        return (bins * BYTES_PER_BIN + 8 * n_clips * (n_samples + n)) / 2**20

    def _check_size(self, n_clips: int, n_samples: int, sample_rate: int) -> None:
        """Refuse (L2IError) an input whose explanation would need more than max_memory_mb."""
        if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
            raise DataError(f"explain: sample_rate {sample_rate} Hz is implausible (expected "
                            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}): pass the rate of the audio")
        need = self.memory_estimate_mb(n_clips, n_samples, sample_rate)
        if self.max_memory_mb and need > self.max_memory_mb:
            raise L2IError(
                f"explain: {n_clips} clip(s) of {n_samples} samples ({n_samples / sample_rate:.1f}"
                f" s at {sample_rate} Hz) need about {need:.0f} MB, more than max_memory_mb="
                f"{self.max_memory_mb:g}: explain shorter excerpts or fewer clips at a time, or "
                "raise the limit (Explainer(..., max_memory_mb=...), l2i interpret "
                "--max_memory_mb)")

    @torch.no_grad()
    def explain(self, waveform: Any, sample_rate: int, target: Any = None,
                batch: bool = False) -> Explanation | list[Explanation]:
        """Explain one clip, or a batch of clips with ``batch=True``.

        ``waveform``: numpy or torch, in any layout :func:`l2i.audio.as_clips` accepts: one clip
        ``(S,)``; one multi-channel clip ``(S, channels)`` (``soundfile.read``) or
        ``(channels, S)`` (``torchaudio.load``), at most 8 channels, mixed to mono by averaging
        as ``l2i interpret`` does; with ``batch=True`` a batch ``(B, S)`` (or
        ``(B, S, channels)``, ``(B, channels, S)``, a list of equally long clips). A ``(B, S)``
        batch is never guessed: without ``batch`` it is refused as ambiguous (or, when B <= 8,
        read as channels). Float samples in [-1, 1] or int8/int16/int32 PCM (scaled).
        ``target``: None (the classifier's prediction), a class index or name for every clip,
        or a sequence of them, one per clip of a batch.

        The audio is resampled to the model's rate (soxr), then normalised the way the
        classifier's training clips were (``normalize``, from the checkpoint: ``peak`` divides
        each clip by its peak, so a quiet recording is explained like a loud one), exactly
        as ``l2i interpret`` does, analysed with the model's STFT and explained in one batched
        forward pass. The explanation (``audio``, ``input_magnitude``) is of that normalised
        clip, at the model's sample rate, as long as the resampled input. Inputs shorter
        than ``min_duration_s`` (1 s) are zero-padded at the end for the classifier (whose
        pooling needs a few frames; training clips are zero-padded the same way) and the
        mask, activations and audio are cropped back to the input's frames. An input whose
        explanation would need more than ``max_memory_mb`` is refused before anything large
        is allocated (:meth:`memory_estimate_mb`).

        Returns one :class:`Explanation`, or a list of them with ``batch=True``.
        """
        from l2i.audio import as_clips, normalize_audio, resample

        x2 = as_clips(waveform, batch=batch, what="explain")  # (B, S)
        sr_in, sr = int(sample_rate), self.sample_rate
        self._check_size(x2.shape[0], x2.shape[1], sr_in)
        if sr_in != sr:
            x2 = np.stack([resample(row, sr_in, sr) for row in x2])  # (B, N')
        x2 = normalize_audio(x2, self.normalize)  # (B, N), per clip
        n = x2.shape[1]
        n_min = int(math.ceil(self.min_duration_s * sr))
        if n < n_min:
            x2 = np.pad(x2, ((0, 0), (0, n_min - n)))  # (B, n_min)
        t_in = feats.n_frames(n, self.features)  # frames of the unpadded input
        tgt = self._targets(target, x2.shape[0])
        wav = torch.from_numpy(np.ascontiguousarray(x2)).to(self.device)  # (B, N)
        spec = feats.stft(wav, self.features)  # (B, T, F) complex
        mag = feats.magnitude(spec)  # (B, T, F)
        b = self.explain_batch(mag, tgt)
        # M |X| e^{i phase(X)} = M X: to_audio(explanation_magnitude(M, |X|), phase(X)) in one step
        audio = feats.istft(b.mask.to(spec.device) * spec, self.features, length=n)  # (B, N)
        out = [self._one(b, i, audio[i], mag[i], t_in) for i in range(mag.shape[0])]
        return out if batch else out[0]

    def _targets(self, target: Any, n_clips: int) -> Any:
        """``explain``'s target argument -> None, one class index, or a ``(B,)`` tensor."""
        if not isinstance(target, (list, tuple, np.ndarray, Tensor)):
            return self.resolve_target(target)
        seq = target.tolist() if isinstance(target, (np.ndarray, Tensor)) else list(target)
        if len(seq) != n_clips:
            raise ConfigError(f"explain: {len(seq)} targets for {n_clips} clips")
        if any(t is None for t in seq):
            raise ConfigError("explain: a per-clip target list cannot hold None")
        return torch.tensor([self.resolve_target(t) for t in seq])

    def _one(self, b: BatchExplanation, i: int, audio: Tensor, mag: Tensor,
             n_frames: int) -> Explanation:
        names = self.class_names
        t = int(b.target[i])
        sel = b.selected[i]
        order = b.relevance[i][sel].argsort(descending=True)
        return Explanation(
            audio=audio.float().cpu().numpy(), sample_rate=self.sample_rate,
            mask=b.mask[i, :n_frames].float().cpu().numpy(),
            relevance=b.relevance[i].float().cpu().numpy(),
            selected=[int(k) for k in torch.nonzero(sel).flatten()[order]],
            target=t, target_name=names[t] if t < len(names) else str(t),
            classifier_probs=b.probs[i].float().cpu().numpy(),
            theta_probs=b.theta_probs[i].float().cpu().numpy(),
            H=b.H[i, :, :n_frames].float().cpu().numpy(),
            input_magnitude=mag[:n_frames].float().cpu().numpy(),
            class_names=names, hop_length=self.features.hop_length,
            relevance_th=None if self.top_k else self.relevance_th, top_k=self.top_k)


def checkpoint_normalize(interpreter: Any) -> str:
    """The ``data.normalize`` the classifier was trained with.

    Read from the classifier checkpoint (``normalize``, written by ``l2i train-classifier``),
    else from the recipe embedded in the L2I checkpoint (``recipe.data.normalize``, for
    classifier checkpoints written before the key existed), else the recipes' default
    (``DataConfig.normalize``, ``peak``).
    """
    record = getattr(interpreter, "classifier_record", None) or {}
    if record.get("normalize"):
        return str(record["normalize"])
    data = (getattr(interpreter, "recipe", None) or {}).get("data") or {}
    if data.get("normalize"):
        return str(data["normalize"])
    return DataConfig().normalize


def _checkpoint_relevance_th(interpreter: Any) -> float:
    """``loss.relevance_th`` stored with the interpreter, else the reference's 0.2."""
    for holder in (interpreter, getattr(interpreter, "info", None)):
        if holder is None:
            continue
        loss = getattr(holder, "loss", None) or getattr(holder, "loss_config", None)
        if isinstance(loss, dict) and "relevance_th" in loss:
            return float(loss["relevance_th"])
        if loss is not None and hasattr(loss, "relevance_th"):
            return float(loss.relevance_th)
        th = getattr(holder, "relevance_th", None)
        if isinstance(th, (int, float)):
            return float(th)
    return DEFAULT_RELEVANCE_TH


# --------------------------------------------------------------------------- l2i interpret
def _atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, then rename (normal umask permissions)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _unique_stems(files: list[Path]) -> list[str]:
    """Output names per input: the file stem, with ``-2``, ``-3``... on collisions."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        stem = f.stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def write_explanation(expl: Explanation, out_dir: Path, name: str,
                      source: str | None = None) -> dict[str, Path]:
    """``NAME.explanation.wav``, ``NAME.png`` and ``NAME.json`` for one explanation."""
    from l2i.audio import write_wav
    from l2i.figures import explanation_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    wav = write_wav(out_dir / f"{name}.explanation.wav", expl.audio, expl.sample_rate)
    png = explanation_figure(expl, out_dir / f"{name}.png",
                             title=f"{name}: explaining '{expl.target_name}'")
    info = {"file": source, **expl.summary(), "explanation_wav": wav.name, "figure": png.name}
    js = out_dir / f"{name}.json"
    _atomic_write_text(js, json.dumps(info, indent=2, allow_nan=True) + "\n")
    return {"wav": wav, "png": png, "json": js}


def audio_files(paths: list[str | os.PathLike], skip: Path | None = None) -> list[Path]:
    """The files to explain: each file as given, each folder's audio files (recursive, sorted).

    A folder's files are those with an extension in ``l2i.audio.AUDIO_EXTENSIONS`` (hidden
    files and anything under ``skip``, the output folder, left out). Raises DataError for
    missing paths and for a folder that holds no audio file.
    """
    from l2i.audio import AUDIO_EXTENSIONS

    files, missing = [], []
    skip = skip.resolve() if skip is not None else None
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in AUDIO_EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts)
                           and not (skip and f.resolve().is_relative_to(skip)))
            if not found:
                raise DataError(f"folder {p} holds no audio file ({', '.join(AUDIO_EXTENSIONS)})"
                                ": give audio files or a folder that contains some")
            files += found
        else:
            missing.append(str(p))
    if missing:
        raise DataError(f"audio file(s) not found: {', '.join(missing)}")
    return files


def interpret_files(cfg: InterpretRecipe) -> str:
    """``l2i interpret CKPT FILE_OR_FOLDER... --output_folder O``: explain each file.

    A folder stands for the audio files inside it (recursively, see :func:`audio_files`).
    Writes ``O/NAME.explanation.wav``, ``O/NAME.png``, ``O/NAME.json`` per input and
    ``O/config.yaml``. Files of any length, sample rate and channel count are accepted: each
    is decoded (:func:`l2i.audio.read_audio`, channels averaged to mono) and handed to
    :meth:`Explainer.explain`, the same path as the Python API (resampled, normalised as the
    classifier was trained). Returns a summary line per file.
    """
    from l2i.audio import read_audio

    if not cfg.ckpt:
        raise ConfigError("l2i interpret needs a checkpoint: l2i interpret RUN/l2i.ckpt FILE...")
    if not Path(cfg.ckpt).is_file():
        raise ConfigError(f"checkpoint {cfg.ckpt} not found: give the l2i.ckpt written by "
                          "'l2i train'")
    if not cfg.files:
        raise ConfigError("l2i interpret needs at least one audio file or folder: "
                          "l2i interpret CKPT FILE_OR_FOLDER [...]")
    out = Path(cfg.output_folder)
    files = audio_files(cfg.files, skip=out)
    if cfg.top_k is not None and cfg.top_k < 1:
        raise ConfigError(f"top_k must be >= 1 (or unset), got {cfg.top_k}")
    explainer = Explainer.load(cfg.ckpt, cfg.device, relevance_th=cfg.relevance_th,
                               top_k=cfg.top_k, max_memory_mb=cfg.max_memory_mb or None)
    target = explainer.resolve_target(cfg.target)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    lines = []
    for f, name in zip(files, _unique_stems(files)):
        x, sr = read_audio(f)
        try:
            expl = explainer.explain(x, sr, target=target)
        except L2IError as err:
            raise type(err)(f"{f}: {err}") from None
        write_explanation(expl, out, name, source=str(f))
        lines.append(f"{f} -> {out / name}.explanation.wav  target={expl.target_name} "
                     f"p={expl.classifier_probs[expl.target]:.3f} "
                     f"components={expl.selected}")
    return "\n".join(lines)


__all__ = ["relevance", "select_components", "ratio_mask", "explanation_magnitude", "to_audio",
           "Explanation", "BatchExplanation", "Explainer", "interpret_files", "audio_files",
           "checkpoint_normalize",
           "write_explanation"]
