"""The trained L2I bundle: frozen classifier + psi + theta + fixed dictionary W.

``Interpreter.forward(mag (B, T, F))`` runs the classifier on the magnitude spectrogram, maps its
hidden maps to NMF activations ``H (B, K, T)`` with psi, and reproduces the classifier's decision
from H with theta. ``W H`` (``(B, T, F)``) approximates ``log1p|X|``.

``save_interpreter`` / ``load_interpreter`` read and write the self-contained ``l2i.ckpt``
(format in docs/architecture.md): the classifier's own checkpoint dict is embedded, so one file
is enough to explain audio. For a classifier given as code (:mod:`l2i.models.hooked`) the
embedded record holds the spec and the sha256 of its file and weights instead of the weights;
loading re-imports the module and refuses when a hash differs.

The classifier is called as ``classifier(mag (B, T, F), phase=(B, T, F) or None, length=int or
None) -> (logits (B, C), maps)``; l2i's own classifiers ignore phase and length. Probabilities
come from :func:`class_probs` with the classifier's ``activation`` (softmax or sigmoid).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2i import checkpoints as CK
from l2i.config import FeaturesConfig, L2ILossConfig, PsiConfig, ThetaConfig, from_dict
from l2i.device import resolve_device
from l2i.errors import L2IError
from l2i.fileio import read_checkpoint, save_torch
from l2i.models.psi import Psi
from l2i.models.theta import Theta

FORMAT = CK.INTERPRETER
VERSION = CK.CURRENT[FORMAT]


@dataclass
class InterpreterOutput:
    """What :meth:`Interpreter.forward` returns.

    logits: the classifier's logits ``(B, C)``; H: activations ``(B, K, T)`` >= 0;
    theta_logits: theta's logits ``(B, C)``; z: time-pooled activations ``(B, K)`` >= 0;
    maps: the classifier's hidden maps ``{name: (B, C_i, T_i, F_i)}`` (only when asked for).
    """

    logits: Tensor
    H: Tensor
    theta_logits: Tensor
    z: Tensor
    maps: dict[str, Tensor] | None = None


def class_probs(logits: Tensor, activation: str = "softmax") -> Tensor:
    """Probabilities from logits ``(B, C)``: softmax over classes, or a sigmoid per class."""
    if activation == "sigmoid":
        return torch.sigmoid(logits.float())
    if activation == "softmax":
        return torch.softmax(logits.float(), dim=-1)
    raise L2IError(f"activation must be softmax or sigmoid, got {activation!r}")


def classifier_activation(classifier: Any) -> str:
    """The ``activation`` a classifier carries ("softmax" when it has none)."""
    return str(getattr(classifier, "activation", "softmax") or "softmax")


def classifier_threshold(classifier: Any) -> float:
    """The decision threshold of a multi-label classifier (``classifier.threshold``; 0.5)."""
    return float(getattr(getattr(classifier, "spec", None), "threshold", 0.5))


def reconstruct(W: Tensor, H: Tensor) -> Tensor:
    """NMF decoder: ``W (F, K)``, ``H (B, K, T)`` -> ``W H`` as ``(B, T, F)`` (log1p-magnitude)."""
    return torch.einsum("fk,bkt->btf", W.to(H.dtype), H)  # (B, T, F)


class Interpreter(nn.Module):
    """Frozen classifier + trainable psi and theta + fixed dictionary ``W (F, K)``.

    The classifier takes a linear magnitude spectrogram ``(B, T, F)`` and returns
    ``(logits (B, C), maps {name: (B, C_i, T_i, F_i)})``. It is frozen (no gradients, always in
    eval mode, even after ``.train()``). ``W`` is a buffer.

    Attributes besides the modules: ``features`` (:class:`FeaturesConfig`), ``class_names``,
    ``relevance_th``, ``loss`` (:class:`L2ILossConfig` or None), ``metrics`` and ``recipe``
    (dicts, filled by :func:`load_interpreter`), ``classifier_record`` (the classifier's
    checkpoint dict, embedded on save).
    """

    def __init__(self, classifier: nn.Module, psi: Psi, theta: Theta, W: Tensor,
                 features: FeaturesConfig | dict, class_names: list[str],
                 relevance_th: float = 0.2, classifier_record: dict | None = None) -> None:
        super().__init__()
        if W.dim() != 2 or W.shape[1] != psi.n_components:
            raise L2IError(f"W must be (freq, K={psi.n_components}), got {tuple(W.shape)}")
        if theta.n_components != psi.n_components:
            raise L2IError(f"psi gives K={psi.n_components} components, theta expects "
                           f"{theta.n_components}")
        if len(class_names) != theta.n_classes:
            raise L2IError(f"{len(class_names)} class names for a {theta.n_classes}-class theta")
        self.classifier = classifier
        self.psi = psi
        self.theta = theta
        self.register_buffer("W", W.detach().float().clone())
        self.features = (features if isinstance(features, FeaturesConfig)
                         else from_dict(FeaturesConfig, dict(features)))
        self.class_names = list(class_names)
        self.relevance_th = float(relevance_th)
        self.classifier_record = classifier_record
        self.loss: L2ILossConfig | None = None
        self.metrics: dict[str, Any] = {}
        self.recipe: dict[str, Any] = {}
        self.freeze_classifier()

    # ------------------------------------------------------------------ frozen parts
    def freeze_classifier(self) -> None:
        """Classifier: no gradients, eval mode (no dropout, fixed BatchNorm statistics)."""
        self.classifier.requires_grad_(False)
        self.classifier.eval()

    def train(self, mode: bool = True) -> Interpreter:
        super().train(mode)
        self.classifier.eval()  # never leaves eval mode
        return self

    @property
    def n_components(self) -> int:
        return self.psi.n_components

    @property
    def n_classes(self) -> int:
        return self.theta.n_classes

    @property
    def activation(self) -> str:
        """The classifier's output activation: softmax (single-label) or sigmoid (multi-label)."""
        return classifier_activation(self.classifier)

    def probs(self, logits: Tensor) -> Tensor:
        """:func:`class_probs` with the classifier's activation, ``(B, C)``."""
        return class_probs(logits, self.activation)

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def classify(self, mag: Tensor, phase: Tensor | None = None, length: int | None = None
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """The frozen classifier: ``mag (B, T, F)`` (+ ``phase``, samples ``length``) ->
        ``(logits (B, C), maps)``. A classifier given as code (``needs_phase``) gets the phase
        and length; the others are called with the magnitude alone (any ``mag -> (logits,
        maps)`` module keeps working)."""
        if getattr(self.classifier, "needs_phase", False):
            return self.classifier(mag, phase=phase, length=length)
        return self.classifier(mag)

    def heads(self, reduced: dict[str, Tensor], n_frames: int, log_mag: Tensor | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:
        """psi + theta from frequency-pooled maps (:meth:`Psi.reduce`); ``log_mag (B,
        n_frames, F)``, the input's ``log1p|X|``, for a psi with ``input_map``.

        Returns ``H (B, K, n_frames)``, ``z (B, K)``, ``theta_logits (B, C)``.
        """
        H = self.psi.forward_reduced(reduced, n_frames, log_mag)  # (B, K, T)
        z = self.theta.pool(H)  # (B, K)
        return H, z, self.theta.classify(z)

    def forward(self, mag: Tensor, return_maps: bool = False, phase: Tensor | None = None,
                length: int | None = None) -> InterpreterOutput:
        """``mag (B, T, F)`` linear magnitude -> :class:`InterpreterOutput` (H has T frames).

        ``phase (B, T, F)`` and ``length`` (samples) are passed to the classifier (a classifier
        given as code re-synthesises the waveform from them).
        """
        if mag.dim() != 3 or mag.shape[-1] != self.W.shape[0]:
            raise L2IError(f"interpreter expects a magnitude spectrogram (B, T, "
                           f"{self.W.shape[0]}), got {tuple(mag.shape)}")
        logits, maps = self.classify(mag, phase, length)
        log_mag = torch.log1p(mag) if getattr(self.psi, "input_map", False) else None
        H, z, theta_logits = self.heads(self.psi.reduce(maps), mag.shape[1], log_mag)
        return InterpreterOutput(logits=logits, H=H, theta_logits=theta_logits, z=z,
                                 maps=maps if return_maps else None)

    def reconstruct(self, H: Tensor) -> Tensor:
        """``W H``: ``H (B, K, T)`` -> ``(B, T, F)``, in the log1p-magnitude domain."""
        return reconstruct(self.W, H)


# ---------------------------------------------------------------------- checkpoint I/O
def _plain(cfg: Any) -> dict[str, Any]:
    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)


def interpreter_record(interp: Interpreter, loss: L2ILossConfig | dict | None = None,
                       recipe: dict | None = None, metrics: dict | None = None,
                       psi_cfg: PsiConfig | None = None,
                       theta_cfg: ThetaConfig | None = None) -> dict[str, Any]:
    """The ``l2i.ckpt`` dict (see docs/architecture.md); tensors on CPU."""
    if interp.classifier_record is None:
        raise L2IError("cannot save the interpreter: it has no classifier checkpoint record "
                       "(build it with classifier_record=<the classifier checkpoint dict>)")
    psi_cfg = psi_cfg or getattr(interp.psi, "config", None) or PsiConfig()
    theta_cfg = theta_cfg or getattr(interp.theta, "config", None) or ThetaConfig()
    loss = loss if loss is not None else (interp.loss or L2ILossConfig(
        relevance_th=interp.relevance_th))

    def cpu(sd: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in sd.items()}

    return {
        "format": FORMAT, "version": VERSION, "l2i_version": _l2i_version(),
        "classifier": interp.classifier_record,
        "W": interp.W.detach().cpu().clone(),
        "features": asdict(interp.features),
        "class_names": list(interp.class_names),
        "psi": {"map_channels": dict(interp.psi.map_channels),
                "map_bins": dict(interp.psi.map_bins),
                "n_components": interp.psi.n_components,
                "config": _plain(psi_cfg), "state_dict": cpu(interp.psi.state_dict())},
        "theta": {"n_components": interp.theta.n_components, "n_classes": interp.theta.n_classes,
                  "config": _plain(theta_cfg), "state_dict": cpu(interp.theta.state_dict())},
        "loss": _plain(loss),
        "recipe": dict(recipe or interp.recipe or {}),
        "metrics": dict(metrics or interp.metrics or {}),
    }


def _l2i_version() -> str:
    from l2i import __version__

    return __version__


def save_interpreter(path: str | os.PathLike, interp: Interpreter,
                     loss: L2ILossConfig | dict | None = None, recipe: dict | None = None,
                     metrics: dict | None = None, psi_cfg: PsiConfig | None = None,
                     theta_cfg: ThetaConfig | None = None) -> Path:
    """Write the self-contained ``l2i.ckpt`` atomically (temp file, then rename)."""
    record = interpreter_record(interp, loss, recipe, metrics, psi_cfg, theta_cfg)
    return save_torch(path, record)


def load_any_classifier(record: dict[str, Any], device: str | torch.device = "cpu",
                        module: str | None = None) -> nn.Module:
    """The classifier of an embedded record: l2i's own (weights) or one given as code.

    ``module`` re-imports a classifier given as code from another ``file.py:callable``.
    """
    from l2i.models.hooked import CODE_FORMAT, load_code_classifier

    if isinstance(record, dict) and record.get("format") == CODE_FORMAT:
        return load_code_classifier(record, map_location=device, module=module)
    from l2i.models import load_classifier

    return load_classifier(record, map_location=device)[0]


def build_interpreter(record: dict[str, Any], device: str | torch.device = "cpu",
                      classifier_module: str | None = None) -> Interpreter:
    """An :class:`Interpreter` from an ``l2i.ckpt`` dict (see :func:`load_interpreter`); an
    older version's dict is migrated first (:mod:`l2i.checkpoints`)."""
    record = CK.migrate(record, FORMAT, "interpreter record")
    dev = resolve_device(device)
    classifier = load_any_classifier(record["classifier"], dev, classifier_module)
    psi_cfg = from_dict(PsiConfig, record["psi"]["config"])
    theta_cfg = from_dict(ThetaConfig, record["theta"]["config"])
    psi = Psi(record["psi"]["map_channels"], record["psi"]["n_components"], psi_cfg,
              map_bins=record["psi"].get("map_bins"), n_freq=int(record["W"].shape[0]))
    psi.load_state_dict(record["psi"]["state_dict"])
    theta = Theta(record["theta"]["n_components"], record["theta"]["n_classes"], theta_cfg)
    theta.load_state_dict(record["theta"]["state_dict"])
    loss = from_dict(L2ILossConfig, record.get("loss") or {})
    interp = Interpreter(classifier, psi, theta, record["W"], record["features"],
                         record["class_names"], relevance_th=loss.relevance_th,
                         classifier_record=record["classifier"])
    interp.loss = loss
    interp.metrics = dict(record.get("metrics") or {})
    interp.recipe = dict(record.get("recipe") or {})
    return interp.to(dev).eval()


def load_interpreter(path: str | os.PathLike, device: str | torch.device = "cpu",
                     classifier_module: str | None = None) -> Interpreter:
    """Load ``l2i.ckpt`` -> :class:`Interpreter` in eval mode on ``device`` (``auto`` allowed).

    Raises L2IError when the file is missing or is not an L2I checkpoint, and, for a classifier
    given as code, when its file or weights differ from the recorded sha256.
    """
    record = read_checkpoint(path, FORMAT, VERSION, "interpreter checkpoint",
                             "give the l2i.ckpt that 'l2i train recipes/esc50/l2i_conv2d.yaml "
                             "...' writes", kind="L2I interpreter")
    return build_interpreter(record, device, classifier_module)
