"""The classifiers to interpret: one interface, a factory, self-describing checkpoints.

Every classifier is an :class:`AudioClassifier`:

- ``frontend`` (:class:`l2i.features.Frontend`) turns a linear magnitude spectrogram
  ``mag (B, T, F_stft)`` into the network input ``x (B, T, F_in)`` (log1p mel or log1p |X|);
- ``forward_features(x) -> (logits (B, C), maps)`` runs the network on that input, so training
  can augment ``x`` (SpecAugment) in between;
- ``forward(mag) = forward_features(frontend(mag))``;
- ``maps`` is a dict ``name -> (B, C_i, T_i, F_i)`` of hidden maps (time before frequency),
  in the order of ``map_names``; ``map_channels[name] = C_i``. The interpreter reads them.

Checkpoint format (``classifier.ckpt``, a plain dict, loadable with ``weights_only=True``)::

    {"format": "l2i-classifier", "version": 2, "model": asdict(ClassifierModelConfig),
     "n_classes": C, "features": asdict(FeaturesConfig), "class_names": [...],
     "state_dict": {...}, "metrics": {...}, "l2i_version": "x.y.z",
     "normalize": "peak" | "none"}   # data.normalize of the training clips (optional key)

:func:`load_classifier` needs nothing but that file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2i import checkpoints as CK
from l2i.config import ClassifierModelConfig, FeaturesConfig, from_dict
from l2i.errors import L2IError
from l2i.features import MEL_KINDS, Frontend
from l2i.fileio import check_record, read_checkpoint, save_torch

CKPT_FORMAT = CK.CLASSIFIER
CKPT_VERSION = CK.CURRENT[CKPT_FORMAT]
ARCHS = ("conv2d", "cnn14", "sb_conv2d")


def default_maps(classifier: Any) -> list[str]:
    """The hidden maps psi and L-MAC read when a recipe names none (``maps: []``): the
    classifier's ``default_maps`` if it declares them (l2i's conv2d exposes ``block1``-``block4``
    but reads ``block3``, ``block4`` by default), else every map it exposes."""
    names = getattr(classifier, "default_maps", None) or list(classifier.map_channels)
    return list(names)


class AudioClassifier(nn.Module):
    """Base class: magnitude spectrogram -> (logits, named hidden maps).

    Subclasses set ``frontend``, ``map_names`` (tuple) and ``map_channels`` (dict) and implement
    :meth:`forward_features`.
    """

    frontend: Frontend
    map_names: tuple[str, ...]
    map_channels: dict[str, int]
    n_classes: int

    def forward_features(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Network input ``x (B, T, F_in)`` -> ``(logits (B, C), maps)``."""
        raise NotImplementedError

    activation: str = "softmax"  # single-label: probabilities are softmax(logits)
    # inference on the CPU runs its convolutions in channels-last layout (Explainer): set by a
    # subclass where that was measured faster, the outputs being the same to float rounding
    cpu_channels_last: bool = False

    def forward(self, mag: Tensor, phase: Tensor | None = None, length: int | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """Linear magnitude ``mag (B, T, F_stft)`` -> ``(logits (B, C), maps)``.

        ``phase`` and ``length`` are accepted (the shared re-classification contract,
        :func:`l2i.explainers.base.reclassify`) and ignored: these classifiers read the
        magnitude only.
        """
        return self.forward_features(self.frontend(mag))


def input_bins(model_cfg: ClassifierModelConfig, features: FeaturesConfig) -> int:
    """Number of frequency bins of the network input (n_mels or n_fft // 2 + 1)."""
    if model_cfg.input in MEL_KINDS:
        return features.n_mels
    return features.n_freq  # log1p_mag (model.input is a Literal, checked by the config)


@dataclass
class ClassifierInfo:
    """What a classifier checkpoint says about itself."""

    model: ClassifierModelConfig
    features: FeaturesConfig
    n_classes: int
    class_names: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    l2i_version: str = ""
    path: str | None = None


def build_classifier(model_cfg: ClassifierModelConfig, features: FeaturesConfig,
                     n_classes: int, load_pretrained: bool = True,
                     class_names: list[str] | None = None,
                     log: Callable[[str], None] | None = None) -> AudioClassifier:
    """A fresh classifier for ``model_cfg.arch``.

    With ``model_cfg.pretrained`` set (and ``load_pretrained``), weights are loaded from a
    SpeechBrain CNN14 / conv2d pair or a PANNs ``.pth`` (see :mod:`l2i.models.pretrained`);
    ``class_names`` (the data's, in label order) map a pretrained head's rows by name. The load
    report (loaded / ignored / dropped / missing) goes to ``log`` (default: stderr).
    """
    if n_classes < 2:
        raise L2IError(f"a classifier needs at least 2 classes, got {n_classes}")
    if class_names is not None and len(class_names) != n_classes:
        raise L2IError(f"{len(class_names)} class names for {n_classes} classes")
    model = _new_model(model_cfg, features, n_classes)
    if model_cfg.pretrained and load_pretrained:
        from l2i.models.pretrained import load_pretrained as _load
        report = _load(model, model_cfg.pretrained, class_names=class_names,
                       allow_partial=model_cfg.allow_partial)
        (log or _stderr)(report.summary())
    return model


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _new_model(model_cfg: ClassifierModelConfig, features: FeaturesConfig,
               n_classes: int) -> AudioClassifier:
    if model_cfg.arch == "conv2d":
        from l2i.models.conv2d import Conv2dClassifier
        return Conv2dClassifier(features, n_classes, input=model_cfg.input,
                                width=model_cfg.width, embed_dim=model_cfg.embed_dim,
                                dropout=model_cfg.dropout)
    if model_cfg.arch == "cnn14":
        from l2i.models.cnn14 import CNN14
        return CNN14(features, n_classes, input=model_cfg.input,
                     embed_dim=model_cfg.embed_dim, dropout=model_cfg.dropout)
    if model_cfg.arch == "sb_conv2d":
        if model_cfg.input != "log1p_mag":
            raise L2IError("model.arch sb_conv2d reads log1p magnitudes as published: set "
                           f"model.input: log1p_mag (got {model_cfg.input!r})")
        from l2i.models.speechbrain_conv2d import SBConv2dClassifier
        return SBConv2dClassifier(features, n_classes, dim=model_cfg.embed_dim,
                                  lin_neurons=model_cfg.lin_neurons)
    raise L2IError(f"unknown model.arch {model_cfg.arch!r}: use one of {', '.join(ARCHS)}")


def classifier_dict(model: AudioClassifier, model_cfg: ClassifierModelConfig,
                    features: FeaturesConfig, class_names: list[str],
                    metrics: dict[str, Any] | None = None,
                    normalize: str | None = None) -> dict[str, Any]:
    """The checkpoint dict of a classifier (weights moved to CPU); ``normalize``: the
    ``data.normalize`` it was trained with (``l2i.explain`` applies the same to new audio)."""
    from l2i import __version__

    if len(class_names) != model.n_classes:
        raise L2IError(f"{len(class_names)} class names for a {model.n_classes}-class model")
    return {
        "format": CKPT_FORMAT, "version": CKPT_VERSION, "model": asdict(model_cfg),
        "n_classes": int(model.n_classes), "features": asdict(features),
        "class_names": [str(c) for c in class_names],
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}), "l2i_version": __version__,
        **({"normalize": str(normalize)} if normalize else {}),
    }


def save_classifier(path: str | os.PathLike, model: AudioClassifier,
                    model_cfg: ClassifierModelConfig, features: FeaturesConfig,
                    class_names: list[str], metrics: dict[str, Any] | None = None,
                    normalize: str | None = None) -> Path:
    """Write ``classifier.ckpt`` atomically (temp file in the same folder, then rename)."""
    record = classifier_dict(model, model_cfg, features, class_names, metrics, normalize)
    return save_torch(path, record)


def load_classifier(path_or_dict: str | os.PathLike | dict[str, Any],
                    map_location: str | torch.device = "cpu"
                    ) -> tuple[AudioClassifier, ClassifierInfo]:
    """Rebuild a classifier from its checkpoint (a path or the dict itself), in eval mode."""
    hint = ("train one with 'l2i train-classifier' and give its classifier.ckpt "
            "(SpeechBrain/PANNs weights are loaded with model.pretrained instead)")
    if isinstance(path_or_dict, dict):
        where = "classifier checkpoint"
        ck = check_record(path_or_dict, CKPT_FORMAT, CKPT_VERSION, where, hint,
                          "l2i classifier")
    else:
        where = str(path_or_dict)
        ck = read_checkpoint(path_or_dict, CKPT_FORMAT, CKPT_VERSION, "classifier checkpoint",
                             hint, "l2i classifier")
    missing = [k for k in ("model", "n_classes", "features", "class_names", "state_dict")
               if k not in ck]
    if missing:
        raise L2IError(f"{where} lacks the keys {missing}")
    model_cfg = from_dict(ClassifierModelConfig, dict(ck["model"]))
    features = from_dict(FeaturesConfig, dict(ck["features"]))
    model = build_classifier(model_cfg, features, int(ck["n_classes"]), load_pretrained=False)
    own = model.state_dict()
    sd = ck["state_dict"]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mis_shaped = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mis_shaped:
        raise L2IError(f"{where}: weights do not fit a {model_cfg.arch} model built from its "
                       f"own config; missing keys {missing[:10]}, unexpected keys "
                       f"{unexpected[:10]}, shape mismatches {mis_shaped[:10]}")
    model.load_state_dict(sd)
    model = model.to(map_location).eval()
    info = ClassifierInfo(model=model_cfg, features=features, n_classes=int(ck["n_classes"]),
                          class_names=list(ck["class_names"]), metrics=dict(ck.get("metrics", {})),
                          l2i_version=str(ck.get("l2i_version", "")),
                          path=None if isinstance(path_or_dict, dict) else str(path_or_dict))
    return model, info


def input_batchnorm(x: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """Per-frequency-bin BatchNorm of ``x (B, 1, T, F)`` (CNN14's ``bn0``/``norm0``)."""
    x = x.transpose(1, 3)  # (B, F, T, 1)
    x = bn(x)
    return x.transpose(1, 3)  # (B, 1, T, F)


def make_frontend(features: FeaturesConfig, kind: str) -> Frontend:
    """The :class:`~l2i.features.Frontend` for ``model.input`` (L2IError on a bad kind)."""
    try:
        return Frontend(features, kind)
    except ValueError as err:
        raise L2IError(f"model.input: {err}") from None


__all__ = ["AudioClassifier", "default_maps", "ClassifierInfo", "build_classifier",
           "save_classifier", "load_classifier", "classifier_dict", "input_bins", "input_batchnorm",
           "make_frontend", "CKPT_FORMAT", "ARCHS"]
