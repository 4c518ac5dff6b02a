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
from l2i.config import FeaturesConfig, InterpretRecipe, save_config
from l2i.errors import ConfigError, DataError, L2IError

DEFAULT_RELEVANCE_TH = 0.2
MASK_EPS = 1e-10
MIN_DURATION_S = 1.0  # shorter inputs are zero-padded to this for the analysis (see explain)


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
    from l2i.metrics import removal_mask  # the one implementation of the ratio mask

    return removal_mask(W, H, selected, eps=eps)


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
    reference) and None.
    """

    def __init__(self, interpreter: Any, relevance_th: float | None = None,
                 top_k: int | None = None, min_duration_s: float = MIN_DURATION_S) -> None:
        self.interpreter = interpreter.eval()
        self.relevance_th = float(relevance_th if relevance_th is not None
                                  else _checkpoint_relevance_th(interpreter))
        self.top_k = top_k
        self.min_duration_s = float(min_duration_s)

    @classmethod
    def load(cls, ckpt: str | os.PathLike, device: str | torch.device = "cpu",
             relevance_th: float | None = None, top_k: int | None = None) -> Explainer:
        """Load an ``l2i.ckpt`` (``l2i.interpreter.load_interpreter``) onto ``device``."""
        from l2i.interpreter import load_interpreter

        interp = load_interpreter(ckpt, _resolve_device(device))
        return cls(interp, relevance_th=relevance_th, top_k=top_k)

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
    @torch.no_grad()
    def explain(self, waveform: Any, sample_rate: int,
                target: Any = None) -> Explanation | list[Explanation]:
        """Explain ``waveform`` ``(N,)`` or ``(B, N)`` (numpy or torch, float in [-1, 1]).

        ``target``: None (the classifier's prediction), a class index or name for every clip,
        or a sequence of them, one per clip of a batch.

        The audio is resampled to the model's rate (soxr), analysed with the model's STFT and
        explained in one batched forward pass. It is not normalised: pass audio as the
        classifier saw it in training (``l2i.audio.load_audio`` peak-normalises by default).
        Returns one :class:`Explanation` for ``(N,)``, a list for ``(B, N)``; the explanation
        audio is at the model's sample rate, as long as the resampled input. Inputs shorter
        than ``min_duration_s`` (1 s) are zero-padded at the end for the classifier (whose
        pooling needs a few frames; training clips are zero-padded the same way) and the
        mask, activations and audio are cropped back to the input's frames.
        """
        from l2i.audio import resample

        x = waveform.detach().cpu().numpy() if isinstance(waveform, Tensor) else waveform
        x = np.asarray(x, dtype=np.float32)
        single = x.ndim == 1
        if x.ndim not in (1, 2) or x.shape[-1] == 0:
            raise DataError(f"explain: expected a waveform (N,) or a batch (B, N) with N > 0, "
                            f"got shape {x.shape}")
        if not np.isfinite(x).all():
            raise DataError("explain: the waveform contains NaN or infinite samples")
        x2 = x[None] if single else x  # (B, N)
        sr = self.sample_rate
        if int(sample_rate) != sr:
            x2 = np.stack([resample(row, int(sample_rate), sr) for row in x2])  # (B, N')
        n = x2.shape[1]
        n_min = int(math.ceil(self.min_duration_s * sr))
        if n < n_min:
            x2 = np.pad(x2, ((0, 0), (0, n_min - n)))  # (B, n_min)
        t_in = feats.n_frames(n, self.features)  # frames of the unpadded input
        if isinstance(target, (list, tuple, np.ndarray, Tensor)):
            seq = target.tolist() if isinstance(target, (np.ndarray, Tensor)) else list(target)
            if len(seq) != x2.shape[0]:
                raise ConfigError(f"explain: {len(seq)} targets for {x2.shape[0]} clips")
            if any(t is None for t in seq):
                raise ConfigError("explain: a per-clip target list cannot hold None")
            tgt: Any = torch.tensor([self.resolve_target(t) for t in seq])
        else:
            tgt = self.resolve_target(target)
        wav = torch.from_numpy(np.ascontiguousarray(x2)).to(self.device)  # (B, N)
        spec = feats.stft(wav, self.features)  # (B, T, F) complex
        mag = feats.magnitude(spec)  # (B, T, F)
        b = self.explain_batch(mag, tgt)
        # M |X| e^{i phase(X)} = M X: to_audio(explanation_magnitude(M, |X|), phase(X)) in one step
        audio = feats.istft(b.mask.to(spec.device) * spec, self.features, length=n)  # (B, N)
        out = [self._one(b, i, audio[i], mag[i], t_in) for i in range(mag.shape[0])]
        return out[0] if single else out

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


def interpret_files(cfg: InterpretRecipe) -> str:
    """``l2i interpret CKPT FILE... --output_folder O``: explain each file.

    Writes ``O/NAME.explanation.wav``, ``O/NAME.png``, ``O/NAME.json`` per input and
    ``O/config.yaml``. Files of any length and sample rate are accepted; they are mixed to
    mono, resampled to the model's rate and peak-normalised as in training. Returns a summary
    line per file.
    """
    from l2i.audio import load_audio

    if not cfg.ckpt:
        raise ConfigError("l2i interpret needs a checkpoint: l2i interpret RUN/l2i.ckpt FILE...")
    if not Path(cfg.ckpt).is_file():
        raise ConfigError(f"checkpoint {cfg.ckpt} not found: give the l2i.ckpt written by "
                          "'l2i train'")
    if not cfg.files:
        raise ConfigError("l2i interpret needs at least one audio file: "
                          "l2i interpret CKPT FILE [FILE...]")
    files = [Path(f) for f in cfg.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"audio file(s) not found: {', '.join(missing)}")
    if cfg.top_k is not None and cfg.top_k < 1:
        raise ConfigError(f"top_k must be >= 1 (or unset), got {cfg.top_k}")
    explainer = Explainer.load(cfg.ckpt, cfg.device, relevance_th=cfg.relevance_th,
                               top_k=cfg.top_k)
    target = explainer.resolve_target(cfg.target)
    out = Path(cfg.output_folder)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    lines = []
    for f, name in zip(files, _unique_stems(files)):
        x = load_audio(f, explainer.sample_rate, duration_s=None, normalize="peak")
        expl = explainer.explain(x, explainer.sample_rate, target=target)
        write_explanation(expl, out, name, source=str(f))
        lines.append(f"{f} -> {out / name}.explanation.wav  target={expl.target_name} "
                     f"p={expl.classifier_probs[expl.target]:.3f} "
                     f"components={expl.selected}")
    return "\n".join(lines)


__all__ = ["relevance", "select_components", "ratio_mask", "explanation_magnitude", "to_audio",
           "Explanation", "BatchExplanation", "Explainer", "interpret_files",
           "write_explanation"]
