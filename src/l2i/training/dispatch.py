"""``l2i train RECIPE``: the recipe's ``method`` key picks what is trained.

``method: l2i`` (default) trains the L2I interpreter (:mod:`l2i.training.interpreter`),
``method: lmac`` an L-MAC decoder (:mod:`l2i.training.lmac`). Both read the same
:class:`~l2i.config.L2IRecipe` (data, trainer, classifier checkpoint).
"""

from __future__ import annotations

from l2i.config import L2IRecipe

METHODS = {"l2i": "l2i.training.interpreter:train_interpreter",
           "lmac": "l2i.training.lmac:train_lmac"}


def train(cfg: L2IRecipe) -> str:
    """Train ``cfg.method``; returns the trainer's summary / checkpoint path."""
    import importlib

    module, func = METHODS[cfg.method].split(":")  # `method` is a Literal: checked by the config
    return getattr(importlib.import_module(module), func)(cfg)


__all__ = ["train", "METHODS"]
