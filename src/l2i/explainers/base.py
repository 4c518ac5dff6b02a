"""The explainer protocol: inputs -> a mask ``(B, T, F)`` in [0, 1] on l2i's STFT grid.

Every explanation method of l2i (L2I, L-MAC, the captum gradient methods, the trivial
baselines) is a :class:`MaskExplainer`. Like captum's attribution classes it is built around a
model and called as ``explainer.attribute(inputs, target=None)``:

- ``inputs``: a waveform batch ``(B, N)`` (or one clip ``(N,)``) at the model's sample rate, a
  :class:`SpecBatch` (STFT magnitude + phase + length), or a ``(mag, phase)`` pair of
  ``(B, T, F)`` tensors. A bare ``(B, T, F)`` magnitude is accepted too (no phase: a classifier
  that needs the waveform then cannot run).
- ``target``: None (the classifier's prediction per clip), one class index for all clips, or
  ``(B,)`` indices.
- returns an :class:`Attribution`: ``mask (B, T, F)`` in [0, 1] (frames ``hop_length``
  apart, bins 0 .. ``sample_rate / 2``), the explained ``target (B,)`` and method-specific
  ``extras`` (L2I: its NMF activations, selected components, theta's logits).

The explanation is always ``M * |X|`` (linear magnitude) with the input's phase; the
masked-out rest is ``(1 - M) * |X|``. Every re-classification of such a modified input goes
through :func:`reclassify` (``classifier(mag, phase=phase, length=length)``, the shared
contract of l2i's classifiers and classifiers given as code), and probabilities through
:func:`class_probs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from l2i import features as feats
from l2i.config import FeaturesConfig
from l2i.errors import DataError, L2IError
from l2i.interpreter import (  # one definition: the interpreter's
    class_probs,
    classifier_activation,
    classifier_threshold,
)


# --------------------------------------------------------------------------- shared contract
def reclassify(classifier: Any, mag: Tensor, phase: Tensor | None = None,
               length: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Classify a (possibly masked) magnitude: THE one place l2i re-runs a classifier.

    Calls ``classifier(mag, phase=phase, length=length)``. l2i's own classifiers read the
    magnitude and ignore ``phase``/``length``; a classifier given as code rebuilds the waveform
    by inverse STFT with ``phase`` (``length`` samples) and runs the user's model.

    Args:
        classifier: a callable module following that contract.
        mag: ``(B, T, F)`` linear STFT magnitude.
        phase: ``(B, T, F)`` radians, or None.
        length: samples of the waveform the STFT came from, or None.
    Returns:
        ``(logits (B, C), maps {name: (B, C_i, T_i, F_i)})``.
    """
    return classifier(mag, phase=phase, length=length)


# --------------------------------------------------------------------------- inputs / outputs
@dataclass
class SpecBatch:
    """A batch on the STFT grid: ``mag (B, T, F)`` linear magnitude, ``phase (B, T, F)``
    radians (or None), ``length`` samples of the waveform (or None)."""

    mag: Tensor
    phase: Tensor | None = None
    length: int | None = None

    def __post_init__(self) -> None:
        if self.mag.dim() != 3:
            raise DataError(f"a magnitude batch must be (batch, time, freq), got shape "
                            f"{tuple(self.mag.shape)}")
        if self.phase is not None and self.phase.shape != self.mag.shape:
            raise DataError(f"phase {tuple(self.phase.shape)} and magnitude "
                            f"{tuple(self.mag.shape)} differ")

    def masked(self, mask: Tensor) -> SpecBatch:
        """The same batch with magnitude ``mask * mag`` (phase and length kept)."""
        return SpecBatch(mask * self.mag, self.phase, self.length)

    def to(self, device: torch.device | str) -> SpecBatch:
        phase = None if self.phase is None else self.phase.to(device)
        return SpecBatch(self.mag.to(device, torch.float32), phase, self.length)


def as_spec(inputs: Any, features: FeaturesConfig,
            device: torch.device | str | None = None) -> SpecBatch:
    """``inputs`` (waveforms ``(B, N)`` / ``(N,)``, a :class:`SpecBatch`, a ``(mag, phase)``
    pair or a magnitude ``(B, T, F)``) as a :class:`SpecBatch` on ``device``."""
    if isinstance(inputs, SpecBatch):
        spec = inputs
    elif isinstance(inputs, (tuple, list)) and len(inputs) == 2:
        spec = SpecBatch(torch.as_tensor(inputs[0]), torch.as_tensor(inputs[1]))
    else:
        x = torch.as_tensor(inputs, dtype=torch.float32)
        if x.dim() == 3:
            spec = SpecBatch(x)
        elif x.dim() in (1, 2):
            wav = x[None] if x.dim() == 1 else x  # (B, N)
            z = feats.stft(wav.to(device or wav.device), features)  # (B, T, F) complex
            spec = SpecBatch(feats.magnitude(z), feats.phase(z), int(wav.shape[-1]))
        else:
            raise DataError(f"explainer inputs: expected waveforms (B, N), a SpecBatch or a "
                            f"magnitude (B, T, F), got shape {tuple(x.shape)}")
    if spec.mag.shape[-1] != features.n_freq:
        raise DataError(f"explainer inputs have {spec.mag.shape[-1]} frequency bins, the "
                        f"model's STFT has {features.n_freq} (n_fft {features.n_fft})")
    return spec.to(device) if device is not None else spec


@dataclass
class Attribution:
    """What :meth:`MaskExplainer.attribute` returns.

    ``mask (B, T, F)`` in [0, 1]; ``target (B,)`` the explained classes; ``extras``
    method-specific tensors with a leading batch axis.
    """

    mask: Tensor
    target: Tensor
    extras: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- base class
class MaskExplainer:
    """Base class of every explainer (see the module docstring).

    Subclasses set ``name`` and implement :meth:`explain_spec`; the base class turns inputs into
    a :class:`SpecBatch`, resolves the target and clamps the mask to [0, 1].

    Args:
        classifier: the model to explain, following :func:`reclassify`'s contract.
        features: its STFT settings (the grid of the mask).
        class_names: its classes (for reports), optional.
    """

    name = "explainer"
    #: True when the method needs other explainers' masks (the random baseline's mean)
    needs_reference = False

    def __init__(self, classifier: nn.Module, features: FeaturesConfig,
                 class_names: list[str] | None = None) -> None:
        self.classifier = classifier
        self.features = features
        self.class_names = list(class_names or [])

    @property
    def device(self) -> torch.device:
        try:
            return next(self.classifier.parameters()).device
        except (StopIteration, AttributeError):
            return torch.device("cpu")

    @property
    def activation(self) -> str:
        return classifier_activation(self.classifier)

    def predict(self, spec: SpecBatch) -> Tensor:
        """The classifier's logits ``(B, C)`` on ``spec`` (no gradients)."""
        with torch.no_grad():
            return reclassify(self.classifier, spec.mag, spec.phase, spec.length)[0]

    def resolve_target(self, spec: SpecBatch, target: Any) -> Tensor:
        """``(B,)`` long class indices: the prediction (None), one index, or one per clip."""
        b = spec.mag.shape[0]
        if target is None:
            return self.predict(spec).argmax(dim=1)
        t = torch.as_tensor(target, device=spec.mag.device).long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        if t.shape[0] != b:
            raise DataError(f"{t.shape[0]} targets for a batch of {b} clips")
        return t

    def attribute(self, inputs: Any, target: Any = None, **kwargs: Any) -> Attribution:
        """Explain ``inputs`` for ``target``; see the module docstring."""
        spec = as_spec(inputs, self.features, self.device)
        tgt = self.resolve_target(spec, target)
        mask, extras = self.explain_spec(spec, tgt, **kwargs)
        if mask.shape != spec.mag.shape:
            raise L2IError(f"explainer {self.name!r} returned a mask of shape "
                           f"{tuple(mask.shape)} for inputs {tuple(spec.mag.shape)}")
        return Attribution(mask.detach().float().clamp(0.0, 1.0), tgt, extras)

    def explain_spec(self, spec: SpecBatch, target: Tensor,
                     **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        """``(mask (B, T, F), extras)`` for a :class:`SpecBatch` and targets ``(B,)``."""
        raise NotImplementedError


def per_clip_max_normalise(a: Tensor, eps: float = 1e-12) -> Tensor:
    """``|a| / max|a|`` per clip: ``(B, ...)`` -> ``(B, ...)`` in [0, 1] (an all-zero clip
    stays 0)."""
    a = a.abs()
    peak = a.reshape(a.shape[0], -1).amax(dim=1).clamp_min(eps)  # (B,)
    return a / peak.reshape(-1, *([1] * (a.dim() - 1)))


__all__ = ["reclassify", "class_probs", "classifier_activation", "classifier_threshold",
           "SpecBatch", "as_spec",
           "Attribution", "MaskExplainer", "per_clip_max_normalise"]
