"""Checkpoint formats, versions and the migration chain that loads older ones.

Every checkpoint dict l2i writes carries ``format`` and ``version`` (:data:`CURRENT`):
``l2i-classifier`` (``classifier.ckpt``), ``l2i-classifier-code`` (the record of a classifier
given as code, inside ``l2i.ckpt``), ``l2i-nmf`` (``nmf.pt``), ``l2i-interpreter``
(``l2i.ckpt``) and ``l2i-lmac`` (``lmac.ckpt``). Loading goes through :func:`migrate`: a record
of an older version is brought up step by step, ``MIGRATIONS[format][v]`` turning a version
``v`` dict into a version ``v + 1`` dict; a record newer than this l2i is refused with an
:class:`~l2i.errors.L2IError` naming the file and both versions.

Version history (the same for every format):

- 1: the first self-describing format. Stored configs hold the fields the writing l2i had.
- 2: every stored config is complete (all fields stated), so that a later change of a
  dataclass default cannot change how an old checkpoint explains, and the record names the
  l2i that wrote it (``l2i_version``). The 1 -> 2 step fills each missing field with the value
  the version-1 code used: theta's ``normalize`` was absent before it existed, and absent meant
  off (``False``); every other field missing from a version-1 record has a dataclass default
  equal to the behaviour of the code that lacked it.

A config field renamed or removed later is handled here, not by loosening
:func:`l2i.config.from_dict`: bump the format's version, and add a step that calls
:func:`rename_key` / :func:`remove_key` (``tests/data/`` keeps a checkpoint of each previous
version; ``tools/make_old_checkpoints.py`` wrote them).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from l2i import config as C
from l2i.errors import L2IError

CLASSIFIER = "l2i-classifier"
CLASSIFIER_CODE = "l2i-classifier-code"
NMF = "l2i-nmf"
INTERPRETER = "l2i-interpreter"
LMAC = "l2i-lmac"

CURRENT: dict[str, int] = {CLASSIFIER: 2, CLASSIFIER_CODE: 2, NMF: 2, INTERPRETER: 2, LMAC: 2}
V1_WRITER = "<= 0.x (checkpoint format version 1)"  # l2i_version of a migrated v1 record


# --------------------------------------------------------------------------- key helpers
def _parent(record: dict[str, Any], dotted: str) -> tuple[dict[str, Any] | None, str]:
    *path, last = dotted.split(".")
    node: Any = record
    for p in path:
        node = node.get(p) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), last


def rename_key(record: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """Move ``a.b.old`` to ``a.b.new`` (dotted paths, same parent) when present; returns
    ``record``."""
    parent, last = _parent(record, old)
    if parent is not None and last in parent:
        parent[new.rsplit(".", 1)[-1]] = parent.pop(last)
    return record


def remove_key(record: dict[str, Any], dotted: str) -> dict[str, Any]:
    """Drop ``a.b.key`` when present; returns ``record``."""
    parent, last = _parent(record, dotted)
    if parent is not None:
        parent.pop(last, None)
    return record


def complete(section: Any, cls: type, legacy: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config dict with every field of dataclass ``cls``: missing ones from ``legacy`` (what
    the older code did) or the dataclass default. Keys ``cls`` lacks are kept (from_dict names
    them)."""
    out = dict(section or {})
    default = cls()
    for f in fields(cls):
        if f.name not in out:
            value = (legacy or {}).get(f.name, getattr(default, f.name))
            out[f.name] = C.to_dict(value) if hasattr(value, "__dataclass_fields__") else value
    return out


# --------------------------------------------------------------------------- 1 -> 2
def _v1_common(record: dict[str, Any]) -> dict[str, Any]:
    record.setdefault("l2i_version", V1_WRITER)
    if isinstance(record.get("features"), dict):
        record["features"] = complete(record["features"], C.FeaturesConfig)
    record["version"] = 2
    return record


def _classifier_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    record["model"] = complete(record.get("model"), C.ClassifierModelConfig)
    return _v1_common(record)


def _code_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    record["spec"] = complete(record.get("spec"), C.ClassifierSpec)
    return _v1_common(record)


def _nmf_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    return _v1_common(record)


def _interpreter_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    record["psi"]["config"] = complete(record["psi"].get("config"), C.PsiConfig)
    # theta.normalize did not exist before b592e60: those interpreters ran without it
    record["theta"]["config"] = complete(record["theta"].get("config"), C.ThetaConfig,
                                         legacy={"normalize": False})
    record["loss"] = complete(record.get("loss"), C.L2ILossConfig)
    return _v1_common(record)


def _lmac_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    record["decoder"]["config"] = complete(record["decoder"].get("config"), C.LMACConfig)
    return _v1_common(record)


Migration = Callable[[dict[str, Any]], dict[str, Any]]
MIGRATIONS: dict[str, dict[int, Migration]] = {
    CLASSIFIER: {1: _classifier_1_to_2},
    CLASSIFIER_CODE: {1: _code_1_to_2},
    NMF: {1: _nmf_1_to_2},
    INTERPRETER: {1: _interpreter_1_to_2},
    LMAC: {1: _lmac_1_to_2},
}


# --------------------------------------------------------------------------- entry point
def migrate(record: dict[str, Any], fmt: str, where: str = "checkpoint") -> dict[str, Any]:
    """``record`` (of format ``fmt``) brought to :data:`CURRENT` ``[fmt]``; a new dict when a
    step ran (the caller's dict is left alone), else ``record`` itself.

    A record without ``version`` is version 1. Raises L2IError naming ``where`` for a version
    newer than this l2i reads, or one no migration starts from.
    """
    want = CURRENT[fmt]
    try:
        version = int(record.get("version", 1))
    except (TypeError, ValueError):
        raise L2IError(f"{where}: format version {record.get('version')!r} is not a "
                       "number") from None
    if version > want:
        raise L2IError(f"{where} has {fmt} format version {version}, this l2i reads up to "
                       f"{want}: upgrade l2i (pip install -U l2i) to load it")
    if version == want:
        return record
    out = copy.copy(record)
    for key in ("psi", "theta", "decoder"):  # nested sections the steps edit in place
        if isinstance(out.get(key), dict):
            out[key] = dict(out[key])
    while version < want:
        step = MIGRATIONS.get(fmt, {}).get(version)
        if step is None:
            raise L2IError(f"{where}: no migration from {fmt} version {version}; retrain it "
                           "with this l2i")
        out = step(out)
        if int(out.get("version", version)) != version + 1:
            raise RuntimeError(f"migration {fmt} {version} did not set version {version + 1}")
        version += 1
    return out


__all__ = ["CURRENT", "MIGRATIONS", "migrate", "rename_key", "remove_key", "complete",
           "CLASSIFIER", "CLASSIFIER_CODE", "NMF", "INTERPRETER", "LMAC"]
