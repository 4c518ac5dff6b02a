"""Load published weights into l2i's models (``model.pretrained``), with a load report.

Nothing is dropped in silence: every load returns a :class:`LoadReport` listing what was
loaded, what was ignored on purpose (with the reason) and which model keys kept their fresh
init. Dropping a *head* or a *normalisation layer* the file holds is an error unless
``model.allow_partial: true``. :func:`l2i.models.build_classifier` prints the report.

Sources, told apart by the model and by the file:

(a) **SpeechBrain CNN14 pair** (REFERENCE_RECIPE §3.1/3.3, e.g. ``fpaissan/r``) into
    :class:`l2i.models.cnn14.CNN14`: a folder with ``embedding_model.ckpt`` (required),
    ``classifier.ckpt`` and ``label_encoder.txt`` (optional), or the path of the embedding file
    itself (the others are looked for next to it). Plain state dicts; key mapping::

        embedding_model.ckpt                          l2i CNN14
        norm0.{weight,bias,running_mean,...}      ->  norm0.*
        conv_block{1..6}.conv{1,2}.weight          ->  conv_block{k}.conv{1,2}.weight
        conv_block{1..6}.norm{1,2}.*               ->  conv_block{k}.norm{1,2}.*
        classifier.ckpt  weight (C_sb, 2048), bias -> classifier.weight, classifier.bias

    The head's rows follow SpeechBrain's class order (first appearance in its training CSV), read
    from ``label_encoder.txt``: row ``i`` of the l2i head is the SpeechBrain row of
    ``class_names[i]`` (so a 50-class ESC-50 head also serves the 10 ESC-10 classes). Without
    ``label_encoder.txt``, or with a class it does not know, the head is refused.

(b) **SpeechBrain conv2d pair** (``speechbrain/PIQ-ESC50``: ``embedding_modelft.ckpt`` or
    ``embedding_model.ckpt``, ``classifier.ckpt``, ``label_encoder.txt``) into
    :class:`l2i.models.speechbrain_conv2d.SBConv2dClassifier`: embedding keys ``conv{1..4}.*``,
    ``bn{1..4}.*``, ``resblock.block.{0,1,3,4}.*`` -> ``encoder.*``; ECAPA head keys ``weight``,
    ``blocks.0.norm.*``, ``blocks.1.w.*`` -> ``classifier.*`` (rows mapped by class name as in
    (a)). Every key must be present: nothing is optional.

(c) **PANNs** ``Cnn14`` checkpoint (``Cnn14_mAP=0.431.pth``, ``{"model": state_dict}``, 84
    keys) into l2i's CNN14, for fine-tuning::

        bn0.*                                     ->  norm0.*   (only if n_mels == 64)
        conv_block{k}.conv{1,2}.weight            ->  conv_block{k}.conv{1,2}.weight
        conv_block{k}.bn{1,2}.*                   ->  conv_block{k}.norm{1,2}.*
        fc1.*, fc_audioset.*                      ->  dropped: the AudioSet head (needs
                                                      allow_partial; the new head is trained)
        spectrogram_extractor.*, logmel_extractor.* -> ignored (l2i computes its own features)

    PANNs was trained on log-mel power (dB) at 32 kHz, l2i's CNN14 reads log1p mel: fine-tune,
    do not freeze. To use PANNs *as published* (its own front end and its 527 AudioSet outputs)
    use :func:`l2i.models.panns.build` instead (:func:`load_panns`, all 84 keys, strict).

Any other key, a missing key or a shape mismatch raises :class:`~l2i.errors.L2IError` listing
the keys. A ``module.`` prefix (DataParallel) is stripped.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2i.errors import L2IError

SB_EMBEDDING = "embedding_model.ckpt"
SB_EMBEDDING_FT = "embedding_modelft.ckpt"  # the name on speechbrain/PIQ-ESC50
SB_CLASSIFIER = "classifier.ckpt"
SB_LABELS = "label_encoder.txt"
PANNS_HEAD = ("fc1.", "fc_audioset.")
PANNS_FRONTEND = ("spectrogram_extractor.", "logmel_extractor.")
PARTIAL_HINT = "set --model.allow_partial true to train a new one instead"
_BLOCK_RE = re.compile(r"^conv_block([1-6])\.(conv[12]\.weight|norm[12]\.\w+)$")
_PANNS_BLOCK_RE = re.compile(r"^conv_block([1-6])\.(conv[12]\.weight|bn[12]\.\w+)$")
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass
class LoadReport:
    """What a pretrained load did. ``loaded``/``missing`` are model keys; ``ignored`` and
    ``dropped`` are file keys with the reason (``dropped``: head/normalisation weights that could
    not be used, allowed only with ``allow_partial``)."""

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self, limit: int = 8) -> str:
        """A few lines for the terminal (lists capped at ``limit`` names + a count)."""
        def show(keys: list[str]) -> str:
            more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more if keys else "none"

        lines = [f"pretrained weights ({self.kind}) from {self.source}:",
                 f"  loaded  {len(self.loaded)} tensors: {show(_groups(self.loaded))}",
                 f"  ignored {len(self.ignored)}: {show(self.ignored)}",
                 f"  dropped {len(self.dropped)}: {show(self.dropped)}",
                 f"  missing (fresh init) {len(self.missing)}: {show(self.missing)}"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def _groups(keys: list[str]) -> list[str]:
    """``conv_block1.conv1.weight, conv_block1.norm1.bias, norm0.weight`` -> ``conv_block1.*,
    norm0.*`` (first-level modules, in first-seen order)."""
    seen: dict[str, None] = {}
    for k in keys:
        seen[k.split(".", 1)[0] + (".*" if "." in k else "")] = None
    return list(seen)


def _strip_module(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def _read(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unpickling problem is a bad file)
        raise L2IError(f"could not read pretrained weights {path} ({type(err).__name__}: "
                       f"{err})") from None


def _state_dict(path: Path) -> dict[str, Tensor]:
    raw = _read(path)
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise L2IError(f"{path}: expected a plain state dict (name -> tensor), got "
                       f"{type(raw).__name__}")
    return _strip_module(raw)


# --------------------------------------------------------------------------- class order
def read_label_encoder(path: str | os.PathLike) -> list[str]:
    """Class names in index order from a SpeechBrain ``label_encoder.txt``.

    Format: one ``'name' => index`` line per class, then a ``====`` line and extra entries
    (``'starting_index' => 0``). Raises L2IError on a malformed file or non-contiguous indices.
    """
    path = Path(path)
    by_index: dict[int, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise L2IError(f"cannot read {path}: {err}") from None
    for n, line in enumerate(lines, start=1):
        if line.startswith("="):
            break
        if not line.strip():
            continue
        name, sep, idx = line.rpartition(" => ")
        try:
            label, index = ast.literal_eval(name), int(ast.literal_eval(idx))
        except (ValueError, SyntaxError):
            label = index = None
        if not sep or not isinstance(label, str) or index is None:
            raise L2IError(f"{path}:{n}: expected \"'name' => index\", got {line!r}")
        if index in by_index:
            raise L2IError(f"{path}:{n}: index {index} given twice")
        by_index[index] = label
    if sorted(by_index) != list(range(len(by_index))) or not by_index:
        raise L2IError(f"{path}: indices must be 0..C-1, got {sorted(by_index)[:10]}")
    return [by_index[i] for i in range(len(by_index))]


def map_head_rows(head: dict[str, Tensor], labels_path: Path, class_names: list[str] | None,
                  source: str) -> tuple[dict[str, Tensor], str]:
    """Reorder (and select) the class rows of a head by class name.

    The head's top-level ``weight`` (and ``bias``), ``(C_sb, ...)`` rows in SpeechBrain's
    order, are indexed by ``[sb_index[name] for name in class_names]``, giving ``(C, ...)``; the
    other tensors (the ECAPA head's ``blocks.*``) pass unchanged. Returns (new head, a note).
    Refuses (L2IError) without the label file, without class names, when a class is unknown to
    the label file, or when the row count is not the file's class count.
    """
    if class_names is None:
        raise L2IError(f"{source}: the head's rows follow SpeechBrain's class order; the class "
                       f"names of the data are needed to map them ({PARTIAL_HINT})")
    if not labels_path.is_file():
        raise L2IError(f"{source}: {labels_path.name} not found next to it: the head's rows "
                       f"follow SpeechBrain's class order (first appearance in its CSV), which "
                       f"only that file gives; copy it there, or {PARTIAL_HINT}")
    sb_names = read_label_encoder(labels_path)
    index = {name: i for i, name in enumerate(sb_names)}
    unknown = [c for c in class_names if c not in index]
    if unknown:
        raise L2IError(f"{source}: classes {unknown[:10]} are not in {labels_path} (it has "
                       f"{sb_names[:10]}...); name the classes as SpeechBrain does, or "
                       f"{PARTIAL_HINT}")
    rows = torch.tensor([index[c] for c in class_names])
    out = dict(head)
    for k in ("weight", "bias"):  # the class rows (a Linear head; ECAPA: its cosine weight)
        if k in out:
            if out[k].shape[0] != len(sb_names):
                raise L2IError(f"{source}: {k} has {out[k].shape[0]} rows but {labels_path} "
                               f"lists {len(sb_names)} classes: they do not belong together")
            out[k] = out[k].index_select(0, rows)
    same = [index[c] for c in class_names] == list(range(len(sb_names)))
    note = (f"head rows mapped by class name from {labels_path.name}"
            + ("" if same else f" (l2i class i <- SpeechBrain row "
               f"{[index[c] for c in class_names][:10]}{'...' if len(class_names) > 10 else ''})"))
    return out, note


# --------------------------------------------------------------------------- key mapping
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
                       f"got {sorted(sd)[:20]} (an ECAPA cosine head belongs to the conv2d "
                       f"classifier, model.arch: sb_conv2d; drop {SB_CLASSIFIER} to train a new "
                       f"head)")
    return {f"classifier.{k}": v for k, v in sd.items()}


def map_panns(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """PANNs ``Cnn14`` state dict -> (l2i CNN14 backbone keys, PANNs keys not mapped)."""
    sd = _strip_module(sd)
    out, rest, unexpected = {}, [], []
    for k, v in sd.items():
        m = _PANNS_BLOCK_RE.match(k)
        if m:
            out[f"conv_block{m.group(1)}.{m.group(2).replace('bn', 'norm')}"] = v
        elif k.startswith("bn0.") and k[len("bn0."):] in _BN_FIELDS:
            out["norm0." + k[len("bn0."):]] = v
        elif k.startswith(PANNS_HEAD + PANNS_FRONTEND):
            rest.append(k)
        else:
            unexpected.append(k)
    if unexpected:
        raise L2IError(f"PANNs checkpoint: unexpected keys {sorted(unexpected)[:20]}; expected a "
                       "Cnn14 (bn0, conv_block1..6, fc1, fc_audioset)")
    return out, rest


def load_backbone(model: nn.Module, mapped: dict[str, Tensor], source: str,
                  optional_prefixes: tuple[str, ...] = ("classifier.", "fc1.")) -> list[str]:
    """Copy ``mapped`` into ``model``; every key not under ``optional_prefixes`` must be there.

    Returns the model keys left at their fresh init. Raises L2IError listing missing,
    unexpected or mis-shaped keys.
    """
    own = model.state_dict()
    unexpected = sorted(k for k in mapped if k not in own)
    shape_bad = sorted(f"{k}: {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}"
                       for k in mapped if k in own and mapped[k].shape != own[k].shape)
    missing = sorted(k for k in own if k not in mapped and not k.startswith(optional_prefixes))
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:20]}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:20]}")
    if shape_bad:
        problems.append(f"shape mismatches {shape_bad[:20]}")
    if problems:
        raise L2IError(f"{source} does not fit this {type(model).__name__}: "
                       + "; ".join(problems))
    model.load_state_dict(mapped, strict=False)
    return sorted(k for k in own if k not in mapped)


def _drop(report: LoadReport, keys: list[str], why: str) -> None:
    """Record head/normalisation weights of the file that cannot be used."""
    report.dropped += [f"{k}: {why}" for k in keys]


def _refuse_drops(report: LoadReport, allow_partial: bool) -> LoadReport:
    """Every drop at once in one error, unless the user allowed a partial load."""
    if report.dropped and not allow_partial:
        by_reason: dict[str, list[str]] = {}
        for d in report.dropped:
            key, _, why = d.partition(": ")
            by_reason.setdefault(why, []).append(key)
        raise L2IError(f"{report.source}: these weights would be dropped:\n"
                       + "\n".join(f"  - {', '.join(keys)}: {why}"
                                    for why, keys in by_reason.items()) + f"\n{PARTIAL_HINT}")
    return report


# --------------------------------------------------------------------------- entry point
def load_pretrained(model: nn.Module, source: str | os.PathLike,
                    class_names: list[str] | None = None,
                    allow_partial: bool = False) -> LoadReport:
    """Load ``source`` into ``model`` (see the module docstring); returns the report."""
    from l2i.models.cnn14 import CNN14
    from l2i.models.speechbrain_conv2d import SBConv2dClassifier

    path = Path(source)
    if not path.exists():
        raise L2IError(f"model.pretrained {path} not found: give a folder holding the SpeechBrain "
                       f"{SB_EMBEDDING} (+ {SB_CLASSIFIER}, {SB_LABELS}) or a PANNs Cnn14 .pth")
    if isinstance(model, SBConv2dClassifier):
        return _load_sb_conv2d(model, path, class_names, allow_partial)
    if not isinstance(model, CNN14):
        raise L2IError("model.pretrained is only supported for model.arch: cnn14 or sb_conv2d")
    if path.is_dir():
        emb_path = path / SB_EMBEDDING
        if not emb_path.is_file():
            raise L2IError(f"model.pretrained folder {path} has no {SB_EMBEDDING}")
        return _load_sb_cnn14(model, emb_path, _state_dict(emb_path), class_names, allow_partial)
    raw = _read(path)
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        return _load_panns_backbone(model, path, raw["model"], allow_partial)
    if isinstance(raw, dict):
        return _load_sb_cnn14(model, path, _strip_module(raw), class_names, allow_partial)
    raise L2IError(f"model.pretrained {path}: not a state dict (got {type(raw).__name__})")


def _load_panns_backbone(model: nn.Module, path: Path, sd: dict[str, Tensor],
                         allow_partial: bool) -> LoadReport:
    report = LoadReport(str(path), "panns")
    mapped, rest = map_panns(sd)
    report.ignored += [f"{k} (PANNs front end; l2i computes its own features)"
                       for k in rest if k.startswith(PANNS_FRONTEND)]
    head = [k for k in rest if k.startswith(PANNS_HEAD)]
    if head:
        _drop(report, head, "the 527-class AudioSet head does not serve this dataset; to use "
              "it as published: l2i.models.panns")
    if mapped["norm0.weight"].shape != model.norm0.weight.shape:
        norm0 = sorted(k for k in sd if k.startswith("bn0."))
        _drop(report, norm0, f"bn0 normalises {mapped['norm0.weight'].shape[0]} mel bins, "
              f"this model has {model.norm0.weight.shape[0]} (features.n_mels)")
        mapped = {k: v for k, v in mapped.items() if not k.startswith("norm0.")}
    optional = ("classifier.", "fc1.") + (("norm0.",) if "norm0.weight" not in mapped else ())
    report.missing = load_backbone(model, mapped, f"PANNs checkpoint {path}", optional)
    report.loaded = sorted(mapped)
    report.notes.append("PANNs was trained on 32 kHz log-mel dB; fine-tune, do not freeze")
    return _refuse_drops(report, allow_partial)


def _load_sb_cnn14(model: nn.Module, emb_path: Path, sd: dict[str, Tensor],
                   class_names: list[str] | None, allow_partial: bool) -> LoadReport:
    report = LoadReport(str(emb_path), "speechbrain-cnn14")
    mapped = map_speechbrain_embedding(sd)
    clf_path = emb_path.parent / SB_CLASSIFIER
    if clf_path.is_file() and clf_path != emb_path:
        head = map_speechbrain_classifier(_state_dict(clf_path))
        _add_head(model, report, head, clf_path, class_names, allow_partial, mapped)
    else:
        report.notes.append(f"no {SB_CLASSIFIER} next to {emb_path.name}: the head is new")
    report.missing = load_backbone(model, mapped, f"SpeechBrain checkpoint {emb_path}")
    report.loaded = sorted(mapped)
    kind = getattr(getattr(model, "frontend", None), "kind", None)
    if kind != "log1p_mel_sb":
        report.notes.append(f"SpeechBrain's CNN14 was trained on SpeechBrain's mel filterbank; "
                            f"model.input: log1p_mel_sb feeds it exactly (now {kind})")
    return _refuse_drops(report, allow_partial)


def _add_head(model: nn.Module, report: LoadReport, head: dict[str, Tensor], clf_path: Path,
              class_names: list[str] | None, allow_partial: bool,
              mapped: dict[str, Tensor]) -> None:
    """Map the head's rows by class name into ``mapped``; refuse or drop (allow_partial)."""
    own = model.state_dict()
    bare = {k.split(".", 1)[1]: v for k, v in head.items()}  # classifier.weight -> weight
    try:
        bare, note = map_head_rows(bare, clf_path.parent / SB_LABELS, class_names, str(clf_path))
    except L2IError:
        if not allow_partial:
            raise
        _drop(report, [f"{clf_path.name}:{k}" for k in bare], "class order unknown")
        return
    head = {f"classifier.{k}": v for k, v in bare.items()}
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in head.items()
           if k not in own or own[k].shape != v.shape]
    if bad:
        _drop(report, [f"{clf_path.name}:{k}" for k in bare],
              f"head does not fit the model ({'; '.join(bad)})")
        return
    mapped.update(head)
    report.notes.append(note)


def _load_sb_conv2d(model: nn.Module, path: Path, class_names: list[str] | None,
                    allow_partial: bool) -> LoadReport:
    if path.is_dir():
        found = [path / n for n in (SB_EMBEDDING_FT, SB_EMBEDDING) if (path / n).is_file()]
        if not found:
            raise L2IError(f"model.pretrained folder {path} has neither {SB_EMBEDDING_FT} nor "
                           f"{SB_EMBEDDING} (the SpeechBrain PIQ-ESC50 conv2d encoder)")
        path = found[0]
    report = LoadReport(str(path), "speechbrain-conv2d")
    mapped = {f"encoder.{k}": v for k, v in _state_dict(path).items()}
    clf_path = path.parent / SB_CLASSIFIER
    if not clf_path.is_file():
        if not allow_partial:
            raise L2IError(f"{clf_path} not found: the conv2d classifier's ECAPA head is part of "
                           f"the published model; {PARTIAL_HINT}")
        report.notes.append(f"no {SB_CLASSIFIER}: the head is new")
    else:
        head = {f"classifier.{k}": v for k, v in _state_dict(clf_path).items()}
        _add_head(model, report, head, clf_path, class_names, allow_partial, mapped)
    report.missing = load_backbone(model, mapped, f"SpeechBrain conv2d checkpoint {path}",
                                   ("classifier.",) if allow_partial else ())
    report.loaded = sorted(mapped)
    return _refuse_drops(report, allow_partial)


# --------------------------------------------------------------------------- PANNs as published
def read_panns_state(checkpoint: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict of a PANNs ``.pth`` (``{"model": state_dict}``), ``module.`` stripped."""
    path = Path(checkpoint)
    if not path.is_file():
        raise L2IError(f"PANNs checkpoint {path} not found (e.g. Cnn14_mAP=0.431.pth from "
                       "the PANNs release on zenodo)")
    raw = _read(path)
    sd = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise L2IError(f"{path}: not a PANNs checkpoint ({{'model': state_dict}})")
    return _strip_module(sd)


def load_panns(model: nn.Module, sd: dict[str, Tensor], source: str) -> LoadReport:
    """Load a PANNs ``Cnn14`` state dict into :class:`l2i.models.panns.Cnn14`, strictly.

    All keys (84 for the release: front-end kernels, mel matrix, bn0, 6 blocks, fc1,
    fc_audioset) must be there with their shapes, nothing else. The file's front end is compared
    with the one computed from the published settings; a difference is noted (the file's values
    are used, as PANNs does).
    """
    report = LoadReport(source, "panns-cnn14")
    computed = {k: v.detach().clone() for k, v in model.state_dict().items()
                if k.startswith(PANNS_FRONTEND)}
    report.missing = load_backbone(model, sd, f"PANNs checkpoint {source}", optional_prefixes=())
    report.loaded = sorted(sd)
    for k, v in computed.items():
        err = float((v.float() - sd[k].float()).abs().max())
        if err > 1e-4:
            report.notes.append(f"{k} differs from the published front end by {err:.3g} "
                                "(the file's values are used)")
    return report


def read_class_names(path: str | os.PathLike, n_classes: int) -> list[str]:
    """Class names from a text file (one per line) or AudioSet's ``class_labels_indices.csv``
    (``index,mid,display_name``); must give exactly ``n_classes`` names."""
    import csv

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise L2IError(f"cannot read class names {path}: {err}") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].replace(" ", "").lower().startswith("index,mid,display_name"):
        names = [row[2] for row in csv.reader(lines[1:]) if len(row) >= 3]
    else:
        names = [ln.strip() for ln in lines]
    if len(names) != n_classes:
        raise L2IError(f"{path} gives {len(names)} class names, the model has {n_classes} "
                       "outputs: one name per line, in output order")
    return names


__all__ = ["LoadReport", "load_pretrained", "read_panns_state", "load_panns", "read_class_names",
           "read_label_encoder", "map_head_rows", "map_speechbrain_embedding",
           "map_speechbrain_classifier", "map_panns", "load_backbone"]
