"""Explainers of audio classifiers behind one protocol (:mod:`l2i.explainers.base`).

>>> from l2i.explainers import load_explainer, build_baseline
>>> l2i = load_explainer("runs/l2i/l2i.ckpt")                 # or an lmac.ckpt
>>> ig = build_baseline("ig", l2i.classifier, l2i.features)
>>> a = ig.attribute(waveforms, target=None)                   # a.mask (B, T, F) in [0, 1]

Methods: ``l2i`` and ``lmac`` (from their checkpoints), the captum gradient methods
``saliency``, ``ig``, ``smoothgrad``, ``gradcam`` and the trivial baselines ``energy``,
``ones``, ``random``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from l2i.config import FeaturesConfig
from l2i.errors import ConfigError, L2IError
from l2i.explainers.base import (
    Attribution,
    MaskExplainer,
    SpecBatch,
    as_spec,
    class_probs,
    per_clip_max_normalise,
    reclassify,
)

GRADIENT = ("saliency", "ig", "smoothgrad", "gradcam")
TRIVIAL = ("energy", "ones", "random")
BASELINES = GRADIENT + TRIVIAL


def build_baseline(name: str, classifier: Any, features: FeaturesConfig,
                   class_names: list[str] | None = None, seed: int = 0,
                   gradcam_layer: str | None = None, ig_steps: int | None = None,
                   smoothgrad_samples: int | None = None) -> MaskExplainer:
    """A model-agnostic explainer by name (one of :data:`BASELINES`); ``None`` settings keep
    the methods' defaults (:mod:`l2i.explainers.gradient`)."""
    from l2i.explainers import baselines as triv
    from l2i.explainers import gradient as grad

    if name in grad.METHODS:
        options = {"gradcam": {"layer": gradcam_layer}, "ig": {"n_steps": ig_steps},
                   "smoothgrad": {"n_samples": smoothgrad_samples}}.get(name, {})
        kw = {k: v for k, v in options.items() if v is not None}
        return grad.METHODS[name](classifier, features, class_names, **kw)
    if name == "energy":
        return triv.EnergyMask(classifier, features, class_names)
    if name == "ones":
        return triv.OnesMask(classifier, features, class_names)
    if name == "random":
        return triv.RandomMask(classifier, features, class_names, seed=seed)
    import difflib

    close = difflib.get_close_matches(name, BASELINES, n=2)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ConfigError(f"unknown baseline {name!r}: {hint}use any of {', '.join(BASELINES)}")


def checkpoint_format(path: str | os.PathLike) -> str:
    """The ``format`` key of an l2i checkpoint (L2IError when unreadable)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checkpoint {p} not found: give an l2i.ckpt ('l2i train') or an "
                          "lmac.ckpt ('l2i train ... method: lmac')")
    try:
        record = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling error means a bad file
        raise L2IError(f"{p} could not be read as an l2i checkpoint "
                       f"({type(err).__name__}: {err})") from None
    return str(record.get("format")) if isinstance(record, dict) else ""


def load_explainer(ckpt: str | os.PathLike, device: str | torch.device = "cpu",
                   relevance_th: float | None = None,
                   top_k: int | None = None, mask: Any = None) -> MaskExplainer:
    """The explainer stored in ``ckpt``: an ``l2i.ckpt`` (L2I) or an ``lmac.ckpt`` (L-MAC).
    ``mask``: L2I mask settings over the checkpoint's (:class:`l2i.explain.Explainer`)."""
    from l2i.explainers.l2i import L2IExplainer
    from l2i.explainers.lmac import FORMAT as LMAC_FORMAT
    from l2i.explainers.lmac import LMACExplainer
    from l2i.interpreter import FORMAT as L2I_FORMAT

    fmt = checkpoint_format(ckpt)
    if fmt == L2I_FORMAT:
        return L2IExplainer.load(ckpt, device, relevance_th=relevance_th, top_k=top_k,
                                 mask=mask)
    if fmt == LMAC_FORMAT:
        return LMACExplainer.load(ckpt, device)
    raise L2IError(f"{ckpt} is neither an L2I nor an L-MAC checkpoint (format {fmt!r}): give "
                   "the l2i.ckpt or lmac.ckpt that 'l2i train' writes")


__all__ = ["MaskExplainer", "Attribution", "SpecBatch", "as_spec", "reclassify", "class_probs",
           "per_clip_max_normalise", "build_baseline", "load_explainer", "checkpoint_format",
           "BASELINES", "GRADIENT", "TRIVIAL"]
