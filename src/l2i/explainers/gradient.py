"""Gradient explainers through captum: Saliency, Integrated Gradients, SmoothGrad, Grad-CAM.

All four attribute the class score (the logit of the target) of the classifier. The input of
the attribution is the linear STFT magnitude ``|X| (B, T, F)``: the classifier's own front end
(log1p mel or log1p magnitude) runs inside the graph, so the attribution lives on the same grid
as every other mask. Each clip's magnitude is first divided by its maximum
(``x = |X| / max|X|``, the model sees ``x * max|X|``): the gradients only change by a constant
per clip, which the normalisation below removes, and SmoothGrad's noise level and IG's path
are then in the same units for every clip.

Mask: ``M = |A| / max|A|`` per clip (per-clip max normalisation of the absolute attribution),
in [0, 1]. For Grad-CAM, ``A`` is captum's ``LayerGradCam`` map of the named layer with the
ReLU applied (``relu_attributions=True``), upsampled bilinearly to the classifier's input grid
(time x mel bands, or time x STFT bins for a log1p-magnitude input) and, for a mel input,
spread onto the STFT bins with the mel filterbank (each STFT bin gets the filter-weighted mean
of the bands it falls into).

Settings (fixed in advance, not tuned on test data): IG 32 steps from a zero baseline (silence);
SmoothGrad 16 noisy copies with noise std 0.15 of the clip's peak (Smilkov et al. 2017 suggest
10-20 % of the input range). Where the front end is not differentiable (the classifier's output
does not depend on its input through autograd), :func:`check_differentiable` raises a clear
L2IError.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from l2i.errors import ConfigError, L2IError
from l2i.explainers.base import MaskExplainer, SpecBatch, per_clip_max_normalise, reclassify

IG_STEPS = 32
SMOOTHGRAD_SAMPLES = 16
SMOOTHGRAD_STD = 0.15  # of the clip's peak magnitude (inputs are per-clip max-normalised)
INTERNAL_BATCH = 32  # clips per forward pass inside IG / SmoothGrad


class _ScaledForward(nn.Module):
    """``x (B, T, F)`` (per-clip normalised magnitude) -> the classifier's logits ``(B, C)``.

    ``scale (B, 1, 1)`` and ``phase`` are passed as additional forward arguments, so captum
    expands them with the batch (IG steps, SmoothGrad samples).
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor, scale: Tensor, phase: Tensor | None = None,
                length: int | None = None) -> Tensor:
        # SmoothGrad's noise can push bins below 0: a magnitude is >= 0 (clamp_min keeps the
        # gradient of bins at exactly 0)
        return reclassify(self.classifier, (x * scale).clamp_min(0.0), phase, length)[0]


def check_differentiable(classifier: nn.Module, spec: SpecBatch) -> None:
    """L2IError when the classifier's logits do not depend on the magnitude through autograd
    (a front end outside the graph: numpy, a non-differentiable feature extractor...)."""
    x = spec.mag[:1].detach().clone().requires_grad_(True)
    phase = None if spec.phase is None else spec.phase[:1]
    with torch.enable_grad():
        logits = reclassify(classifier, x, phase, spec.length)[0]
    if not logits.requires_grad:
        raise L2IError(f"gradient explainers need a classifier whose front end is "
                       f"differentiable: {type(classifier).__name__}'s logits do not depend on "
                       "the STFT magnitude through autograd (its features are computed outside "
                       "the graph). Use the model-free baselines, L2I or L-MAC instead")


class _CaptumExplainer(MaskExplainer):
    """Common part: the scaled forward, the differentiability check, the normalisation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.forward_fn = _ScaledForward(self.classifier)
        self._checked = False

    def explain_spec(self, spec: SpecBatch, target: Tensor,
                     **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        if not self._checked:
            check_differentiable(self.classifier, spec)
            self._checked = True
        scale = spec.mag.reshape(spec.mag.shape[0], -1).amax(dim=1).clamp_min(1e-8)  # (B,)
        scale = scale.reshape(-1, 1, 1)  # (B, 1, 1)
        x = (spec.mag / scale).detach().requires_grad_(True)  # (B, T, F) in [0, 1]
        with torch.enable_grad():
            attr = self.captum_attribute(x, target, (scale, spec.phase, spec.length))
        return per_clip_max_normalise(attr.detach()), {}

    def captum_attribute(self, x: Tensor, target: Tensor, args: tuple) -> Tensor:
        raise NotImplementedError


class SaliencyExplainer(_CaptumExplainer):
    """captum ``Saliency``: ``|d logit_c / d|X||``."""

    name = "saliency"

    def captum_attribute(self, x: Tensor, target: Tensor, args: tuple) -> Tensor:
        from captum.attr import Saliency

        return Saliency(self.forward_fn).attribute(x, target=target, abs=True,
                                                   additional_forward_args=args)


class IntegratedGradientsExplainer(_CaptumExplainer):
    """captum ``IntegratedGradients`` from silence (zero magnitude), ``n_steps`` steps."""

    name = "ig"

    def __init__(self, *args: Any, n_steps: int = IG_STEPS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_steps = int(n_steps)

    def captum_attribute(self, x: Tensor, target: Tensor, args: tuple) -> Tensor:
        from captum.attr import IntegratedGradients

        return IntegratedGradients(self.forward_fn).attribute(
            x, baselines=torch.zeros_like(x), target=target, additional_forward_args=args,
            n_steps=self.n_steps, internal_batch_size=INTERNAL_BATCH)


class SmoothGradExplainer(_CaptumExplainer):
    """captum ``NoiseTunnel(Saliency)``, SmoothGrad: the mean of ``n_samples`` noisy
    gradients (std ``stdev`` of the clip's peak)."""

    name = "smoothgrad"

    def __init__(self, *args: Any, n_samples: int = SMOOTHGRAD_SAMPLES,
                 stdev: float = SMOOTHGRAD_STD, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_samples, self.stdev = int(n_samples), float(stdev)

    def captum_attribute(self, x: Tensor, target: Tensor, args: tuple) -> Tensor:
        from captum.attr import NoiseTunnel, Saliency

        # NoiseTunnel runs all samples in one forward pass: chunk the clips to bound memory
        per = max(1, INTERNAL_BATCH // self.n_samples)
        nt = NoiseTunnel(Saliency(self.forward_fn))
        parts = []
        for i in range(0, x.shape[0], per):
            sl = slice(i, i + per)
            a = (args[0][sl], None if args[1] is None else args[1][sl], args[2])
            parts.append(nt.attribute(x[sl], nt_type="smoothgrad", nt_samples=self.n_samples,
                                      stdevs=self.stdev, target=target[sl], abs=True,
                                      additional_forward_args=a))
        return torch.cat(parts)


class GradCAMExplainer(_CaptumExplainer):
    """captum ``LayerGradCam`` on a named layer (default: the classifier's last hidden map),
    mapped onto the STFT grid (module docstring)."""

    name = "gradcam"

    def __init__(self, *args: Any, layer: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.layer_name = layer or default_layer(self.classifier)
        try:
            self.layer = self.classifier.get_submodule(self.layer_name)
        except AttributeError:
            names = [n for n, _ in self.classifier.named_children()]
            raise ConfigError(f"Grad-CAM layer {self.layer_name!r} is not a module of "
                              f"{type(self.classifier).__name__}; its top-level modules: "
                              f"{', '.join(names)}") from None

    def captum_attribute(self, x: Tensor, target: Tensor, args: tuple) -> Tensor:
        from captum.attr import LayerGradCam

        cam = LayerGradCam(self.forward_fn, self.layer).attribute(
            x, target=target, additional_forward_args=args, relu_attributions=True)
        if cam.dim() == 3:  # a 1-D layer (B, 1, T'): the same weight at every frequency
            cam = cam[..., None]  # (B, 1, T', 1)
        if cam.dim() != 4:
            raise L2IError(f"Grad-CAM layer {self.layer_name!r} gives maps of shape "
                           f"{tuple(cam.shape)}; pick a layer with (batch, channels, time[, "
                           "freq]) outputs")
        return cam_to_stft(cam[:, 0], self.classifier, x.shape[1], x.shape[2])


def default_layer(classifier: nn.Module) -> str:
    """The module producing the classifier's last hidden map (``block4`` for conv2d,
    ``conv_block6`` for CNN14)."""
    names = list(getattr(classifier, "map_names", ()) or ())
    mods = dict(classifier.named_modules())
    for name in reversed(names):
        for cand in (name, f"conv_{name}", f"model.{name}"):  # model.: a hooked user module
            if cand in mods:
                return cand
    raise ConfigError(f"{type(classifier).__name__} names no hidden maps: give the Grad-CAM "
                      "layer explicitly (gradcam_layer)")


def cam_to_stft(cam: Tensor, classifier: nn.Module, n_frames: int, n_freq: int) -> Tensor:
    """A class-activation map ``(B, T', F')`` on the classifier's input grid -> ``(B, T, F)``
    on the STFT grid (bilinear upsampling; a mel axis is spread with the filterbank)."""
    frontend = getattr(classifier, "frontend", None)
    fb = getattr(frontend, "fb", None)
    mel = getattr(frontend, "kind", "") == "log1p_mel" and fb is not None and fb.numel() > 0
    n_in = fb.shape[1] if mel else n_freq
    up = F.interpolate(cam[:, None], size=(n_frames, n_in), mode="bilinear",
                       align_corners=False)[:, 0]  # (B, T, F_in)
    if not mel:
        return up
    w = fb.to(up.dtype)  # (F, n_mels)
    return (up @ w.T) / w.sum(dim=1).clamp_min(1e-12)  # (B, T, F)


METHODS = {"saliency": SaliencyExplainer, "ig": IntegratedGradientsExplainer,
           "smoothgrad": SmoothGradExplainer, "gradcam": GradCAMExplainer}

__all__ = ["SaliencyExplainer", "IntegratedGradientsExplainer", "SmoothGradExplainer",
           "GradCAMExplainer", "check_differentiable", "default_layer", "cam_to_stft",
           "METHODS"]
