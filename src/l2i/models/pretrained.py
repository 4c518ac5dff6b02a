"""Load existing CNN14 weights into :class:`l2i.models.cnn14.CNN14` (``model.pretrained``).

Two sources, told apart automatically:

(a) **SpeechBrain CNN14 pair** (REFERENCE_RECIPE §3.1/3.3, e.g. ``fpaissan/r``): a folder with
    ``embedding_model.ckpt`` (required) and ``classifier.ckpt`` (optional), or the path of the
    ``embedding_model.ckpt`` itself (``classifier.ckpt`` is then looked for next to it). Both are
    plain state dicts. Key mapping (identical names)::

        embedding_model.ckpt                          l2i CNN14
        norm0.{weight,bias,running_mean,...}      ->  norm0.*
        conv_block{1..6}.conv{1,2}.weight          ->  conv_block{k}.conv{1,2}.weight
        conv_block{1..6}.norm{1,2}.*               ->  conv_block{k}.norm{1,2}.*
        classifier.ckpt  weight (C, 2048), bias (C,) -> classifier.weight, classifier.bias

    The head is loaded only when ``classifier.ckpt`` is a plain ``Linear(2048, C)`` matching the
    model (``model.embed_dim: 2048`` and the dataset's C); otherwise the head stays new and is
    trained. An ECAPA cosine head (keys ``blocks.*``) is not supported: L2IError.

(b) **PANNs** ``Cnn14`` checkpoint (``Cnn14_mAP=0.431.pth``): ``{"model": state_dict}``::

        bn0.*                                     ->  norm0.*   (only if n_mels == 64, the
                                                                 PANNs mel count; else kept new)
        conv_block{k}.conv{1,2}.weight            ->  conv_block{k}.conv{1,2}.weight
        conv_block{k}.bn{1,2}.*                   ->  conv_block{k}.norm{1,2}.*
        fc1.*, fc_audioset.*                      ->  dropped (AudioSet head; the head is new)
        spectrogram_extractor.*, logmel_extractor.* -> dropped (l2i computes its own features)

    PANNs was trained on log-mel power (dB), l2i feeds log1p mel: fine-tune, do not freeze.

Any other key, a missing backbone key or a shape mismatch raises :class:`~l2i.errors.L2IError`
listing the keys. A ``module.`` prefix (DataParallel) is stripped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2i.errors import L2IError

SB_EMBEDDING = "embedding_model.ckpt"
SB_CLASSIFIER = "classifier.ckpt"
PANNS_DROPPED = ("fc1.", "fc_audioset.", "spectrogram_extractor.", "logmel_extractor.")
_BLOCK_RE = re.compile(r"^conv_block([1-6])\.(conv[12]\.weight|norm[12]\.\w+)$")
_PANNS_BLOCK_RE = re.compile(r"^conv_block([1-6])\.(conv[12]\.weight|bn[12]\.\w+)$")
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _strip_module(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def map_speechbrain_embedding(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """SpeechBrain ``Cnn14`` state dict -> l2i CNN14 backbone keys (L2IError on unknown keys)."""
    sd = _strip_module(sd)
    out, unexpected = {}, []
    for k, v in sd.items():
        if (k.startswith("norm0.") and k[len("norm0."):] in _BN_FIELDS) or _BLOCK_RE.match(k):
            out[k] = v
        else:
            unexpected.append(k)
    if unexpected:
        raise L2IError(f"{SB_EMBEDDING}: keys that are not a SpeechBrain Cnn14 embedding model: "
                       f"{sorted(unexpected)[:20]}")
    return out


def map_speechbrain_classifier(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """SpeechBrain ``Linear(2048, C)`` state dict (``weight``, ``bias``) -> ``classifier.*``."""
    sd = _strip_module(sd)
    if set(sd) - {"weight", "bias"} or "weight" not in sd:
        raise L2IError(f"{SB_CLASSIFIER}: expected a plain Linear head with keys weight/bias, "
                       f"got {sorted(sd)[:20]} (ECAPA cosine heads are not supported; drop "
                       f"{SB_CLASSIFIER} to train a new head)")
    return {f"classifier.{k}": v for k, v in sd.items()}


def map_panns(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """PANNs ``Cnn14`` state dict -> (l2i CNN14 backbone keys, dropped keys)."""
    sd = _strip_module(sd)
    out, dropped, unexpected = {}, [], []
    for k, v in sd.items():
        m = _PANNS_BLOCK_RE.match(k)
        if m:
            out[f"conv_block{m.group(1)}.{m.group(2).replace('bn', 'norm')}"] = v
        elif k.startswith("bn0.") and k[len("bn0."):] in _BN_FIELDS:
            out["norm0." + k[len("bn0."):]] = v
        elif k.startswith(PANNS_DROPPED):
            dropped.append(k)
        else:
            unexpected.append(k)
    if unexpected:
        raise L2IError(f"PANNs checkpoint: unexpected keys {sorted(unexpected)[:20]}; expected a "
                       "Cnn14 (bn0, conv_block1..6, fc1, fc_audioset)")
    return out, dropped


def load_backbone(model: nn.Module, mapped: dict[str, Tensor], source: str,
                  optional_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Copy ``mapped`` into ``model``; every backbone key must be present and fit.

    Keys of ``model`` starting with ``classifier.``, ``fc1.`` (the head) or one of
    ``optional_prefixes`` may be missing (they keep their fresh init). Returns those kept-new
    keys. Raises L2IError listing missing, unexpected or mis-shaped keys.
    """
    own = model.state_dict()
    head = ("classifier.", "fc1.", *optional_prefixes)
    unexpected = sorted(k for k in mapped if k not in own)
    shape_bad = sorted(f"{k}: {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}"
                       for k in mapped if k in own and mapped[k].shape != own[k].shape)
    missing = sorted(k for k in own if k not in mapped and not k.startswith(head))
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:20]}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:20]}")
    if shape_bad:
        problems.append(f"shape mismatches {shape_bad[:20]}")
    if problems:
        raise L2IError(f"{source} does not fit this CNN14: " + "; ".join(problems))
    model.load_state_dict(mapped, strict=False)
    return sorted(k for k in own if k not in mapped)


def _read(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unpickling problem is a bad file)
        raise L2IError(f"could not read pretrained weights {path} ({type(err).__name__}: "
                       f"{err})") from None


def load_pretrained(model: nn.Module, source: str | os.PathLike) -> dict[str, Any]:
    """Load ``source`` (SpeechBrain pair folder / embedding ckpt, or PANNs .pth) into ``model``.

    Returns ``{"source", "kind": "speechbrain" | "panns", "kept_new": [...], "dropped": [...]}``.
    """
    from l2i.models.cnn14 import CNN14

    if not isinstance(model, CNN14):
        raise L2IError("model.pretrained is only supported for model.arch: cnn14")
    path = Path(source)
    if not path.exists():
        raise L2IError(f"model.pretrained {path} not found: give a folder holding the SpeechBrain "
                       f"{SB_EMBEDDING} (+ {SB_CLASSIFIER}) or a PANNs Cnn14 .pth file")
    if path.is_dir():
        emb_path = path / SB_EMBEDDING
        if not emb_path.is_file():
            raise L2IError(f"model.pretrained folder {path} has no {SB_EMBEDDING}")
        return _load_speechbrain(model, emb_path)
    raw = _read(path)
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        mapped, dropped = map_panns(raw["model"])
        norm0_ok = ("norm0.weight" in mapped
                    and mapped["norm0.weight"].shape == model.norm0.weight.shape)
        if not norm0_ok:  # PANNs has 64 mel bins; keep a fresh input norm otherwise
            dropped += [k for k in list(mapped) if k.startswith("norm0.")]
            mapped = {k: v for k, v in mapped.items() if not k.startswith("norm0.")}
        kept = load_backbone(model, mapped, f"PANNs checkpoint {path}",
                             optional_prefixes=() if norm0_ok else ("norm0.",))
        return {"source": str(path), "kind": "panns", "kept_new": kept, "dropped": dropped}
    if isinstance(raw, dict):
        return _load_speechbrain(model, path, raw)
    raise L2IError(f"model.pretrained {path}: not a state dict (got {type(raw).__name__})")


def _load_speechbrain(model: nn.Module, emb_path: Path,
                      raw: dict[str, Tensor] | None = None) -> dict[str, Any]:
    mapped = map_speechbrain_embedding(raw if raw is not None else _read(emb_path))
    dropped: list[str] = []
    clf_path = emb_path.parent / SB_CLASSIFIER
    if clf_path.is_file() and clf_path != emb_path:
        head = map_speechbrain_classifier(_read(clf_path))
        own = model.state_dict()
        if all(k in own and own[k].shape == v.shape for k, v in head.items()):
            mapped.update(head)
        else:
            dropped = [f"{clf_path.name}:{k[len('classifier.'):]} {tuple(v.shape)}"
                       for k, v in head.items()]
    kept = load_backbone(model, mapped, f"SpeechBrain checkpoint {emb_path}")
    return {"source": str(emb_path), "kind": "speechbrain", "kept_new": kept, "dropped": dropped}


__all__ = ["load_pretrained", "map_speechbrain_embedding", "map_speechbrain_classifier",
           "map_panns", "load_backbone"]
