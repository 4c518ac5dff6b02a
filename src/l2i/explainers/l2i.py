"""L2I as one explainer of the protocol: wraps :meth:`l2i.explain.Explainer.explain_batch`.

The mask is :func:`l2i.explain.explanation_mask` of the explainer's ``MaskConfig`` (by
default the paper's ratio mask ``M = (W_L H_L) / (W H + eps)`` of the selected NMF
components); the extras carry what only L2I has, for its fidelity and the paper's
component-removal test: ``H (B, K, T)``, ``selected``/``relevance`` ``(B, K)``, the mask's
``weights`` (``(B, K)`` or ``(B, K, T)``), ``theta_logits (B, C)`` and ``W (F, K)``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from l2i.explainers.base import MaskExplainer, SpecBatch


class L2IExplainer(MaskExplainer):
    """An :class:`l2i.explain.Explainer` (interpreter + selection settings) as a
    :class:`~l2i.explainers.base.MaskExplainer`."""

    name = "l2i"

    def __init__(self, explainer: Any) -> None:
        interp = explainer.interpreter
        super().__init__(interp.classifier, explainer.features, explainer.class_names)
        self.explainer = explainer

    @classmethod
    def load(cls, ckpt: str | os.PathLike, device: str | torch.device = "cpu",
             relevance_th: float | None = None, top_k: int | None = None,
             mask: Any = None) -> L2IExplainer:
        """``mask``: a ``MaskConfig``, or overrides of the checkpoint's (``MaskOverrides`` /
        dict; None values keep the checkpoint's)."""
        from l2i.explain import Explainer

        return cls(Explainer.load(ckpt, device, relevance_th=relevance_th, top_k=top_k,
                                  mask=mask))

    @property
    def interpreter(self) -> Any:
        return self.explainer.interpreter

    @property
    def device(self) -> torch.device:
        return self.explainer.device

    def explain_spec(self, spec: SpecBatch, target: Tensor,
                     **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        b = self.explainer.explain_batch(spec.mag, target, phase=spec.phase, length=spec.length)
        extras = {"H": b.H, "selected": b.selected, "relevance": b.relevance, "weights": b.weights,
                  "theta_logits": b.theta_logits, "W": self.interpreter.W}
        return b.mask, extras

    def settings(self) -> dict[str, Any]:
        """The selection rule and mask settings, for metrics.json."""
        from l2i.config import to_dict

        ex = self.explainer
        return {"relevance_th": None if ex.top_k else ex.relevance_th, "top_k": ex.top_k,
                "mask": to_dict(ex.mask_config)}


__all__ = ["L2IExplainer"]
