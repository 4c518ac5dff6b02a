"""L-MAC as an explainer, and its self-describing checkpoint ``lmac.ckpt``.

The mask is ``sigmoid(decoder(maps))`` with ``maps`` the frozen classifier's hidden maps of the
input (:class:`l2i.models.lmac.LMACDecoder`). L-MAC's mask does not depend on the target class
(it explains the classifier's decision): ``target`` only selects what the metrics score.

Checkpoint (a plain dict, loadable with ``weights_only=True``)::

    {"format": "l2i-lmac", "version": 2, "classifier": <the classifier checkpoint dict>,
     "features": asdict(FeaturesConfig), "class_names": [...],
     "decoder": {"map_channels", "map_bins", "n_freq", "config": asdict(LMACConfig),
                 "state_dict"},
     "recipe": to_dict(L2IRecipe), "metrics": {...}, "l2i_version"}
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2i import checkpoints as CK
from l2i.config import FeaturesConfig, LMACConfig, from_dict
from l2i.explainers.base import MaskExplainer, SpecBatch, reclassify
from l2i.fileio import read_checkpoint
from l2i.models.lmac import LMACDecoder

FORMAT = CK.LMAC
VERSION = CK.CURRENT[FORMAT]
FINAL = "lmac.ckpt"


class LMACExplainer(MaskExplainer):
    """A frozen classifier + a trained :class:`LMACDecoder`."""

    name = "lmac"

    def __init__(self, classifier: nn.Module, decoder: LMACDecoder, features: FeaturesConfig,
                 class_names: list[str] | None = None) -> None:
        super().__init__(classifier, features, class_names)
        self.decoder = decoder.eval()

    @classmethod
    def load(cls, ckpt: str | os.PathLike | dict[str, Any],
             device: str | torch.device = "cpu") -> LMACExplainer:
        """Load an ``lmac.ckpt`` (path or its dict) onto ``device``."""
        from l2i.models import load_classifier

        record = (CK.migrate(ckpt, FORMAT, "L-MAC record") if isinstance(ckpt, dict)
                  else read_lmac(ckpt))
        classifier, _info = load_classifier(record["classifier"], map_location=device)
        dec = record["decoder"]
        decoder = LMACDecoder(dec["map_channels"], dec["map_bins"], dec["n_freq"],
                              from_dict(LMACConfig, dec["config"]))
        decoder.load_state_dict(dec["state_dict"])
        explainer = cls(classifier.eval(), decoder.to(device),
                        from_dict(FeaturesConfig, record["features"]), record["class_names"])
        explainer.recipe = dict(record.get("recipe") or {})
        explainer.metrics = dict(record.get("metrics") or {})
        return explainer

    def mask_logits(self, spec: SpecBatch) -> Tensor:
        """Decoder logits ``(B, T, F)`` from the classifier's maps of ``spec`` (no gradient
        into the classifier)."""
        with torch.no_grad():
            _, maps = reclassify(self.classifier, spec.mag, spec.phase, spec.length)
        return self.decoder({k: maps[k] for k in self.decoder.map_names}, spec.mag.shape[1])

    def explain_spec(self, spec: SpecBatch, target: Tensor,
                     **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        with torch.no_grad():
            return torch.sigmoid(self.mask_logits(spec)), {}


def lmac_record(classifier_record: dict[str, Any], decoder: LMACDecoder,
                features: FeaturesConfig, class_names: list[str], cfg: LMACConfig,
                recipe: dict[str, Any] | None = None,
                metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``lmac.ckpt`` dict (tensors on the CPU)."""
    from l2i import __version__

    return {
        "format": FORMAT, "version": VERSION, "classifier": classifier_record,
        "features": asdict(features), "class_names": list(class_names),
        "decoder": {"map_channels": dict(decoder.map_channels),
                    "map_bins": dict(decoder.map_bins), "n_freq": decoder.n_freq,
                    "config": asdict(cfg),
                    "state_dict": {k: v.detach().cpu().clone()
                                   for k, v in decoder.state_dict().items()}},
        "recipe": dict(recipe or {}), "metrics": dict(metrics or {}),
        "l2i_version": __version__,
    }


def save_lmac(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``lmac.ckpt`` atomically."""
    from l2i.fileio import save_torch

    return save_torch(path, record)


def read_lmac(path: str | os.PathLike) -> dict[str, Any]:
    """The checked ``lmac.ckpt`` dict (L2IError naming the file when it is not one)."""
    return read_checkpoint(path, FORMAT, VERSION, "L-MAC checkpoint",
                           "give the lmac.ckpt that 'l2i train recipes/esc50/lmac_conv2d.yaml "
                           "...' writes", kind="L-MAC")


__all__ = ["LMACExplainer", "lmac_record", "save_lmac", "read_lmac", "FORMAT", "VERSION",
           "FINAL"]
