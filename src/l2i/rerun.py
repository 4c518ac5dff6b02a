"""Which config keys change results, and hashes of resolved configs (re-runs and resumes).

``l2i run`` / ``l2i demo`` key each stage on :func:`digest` of the stage's resolved config (as
:func:`hashed_view`) plus the hashes of the stages it reads; ``--trainer.resume`` compares the
current config with the interrupted run's ``config.yaml`` through the same view
(:func:`config_diff`). Keys that only say *where* or *how fast* a result is computed are left
out (:data:`NOT_HASHED`): changing them reuses a finished stage and may be changed on resume.

Everything here is plain data (dicts from :func:`l2i.config.to_dict` or YAML); no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

# Dotted keys (of any recipe) that never change a result: where outputs go, which device runs
# the maths, data-loading workers, progress bars and logs, the resume/restart switches, the audio
# cache (decoding once or every time gives the same samples) and evaluation's batch size.
NOT_HASHED = frozenset({
    "output_folder", "output", "device", "batch_size",
    "trainer.device", "trainer.num_workers", "trainer.progress", "trainer.tensorboard",
    "trainer.resume", "trainer.restart",
    "nmf.device", "data.cache",
})
# Keys that may differ when resuming an interrupted training: more epochs extend the run, and a
# larger patience lets an early-stopped run continue.
RESUME_MAY_CHANGE = frozenset({"trainer.epochs", "trainer.patience", "trainer.min_delta"})


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def hashed_view(cfg: Any, drop: Iterable[str] = ()) -> dict[str, Any]:
    """The flattened config minus :data:`NOT_HASHED` and ``drop`` (JSON-normalised values)."""
    tree = asdict(cfg) if is_dataclass(cfg) else dict(cfg)
    skip = NOT_HASHED | set(drop)
    flat = {k: v for k, v in flatten(tree).items() if k not in skip}
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


def digest(obj: Any) -> str:
    """A short, stable hash (16 hex digits) of JSON-able ``obj``."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any],
                ignore: Iterable[str] = (), shared_only: bool = False) -> list[str]:
    """``"key: old -> new"`` for every key of two :func:`hashed_view` s that differs.

    ``shared_only``: leave out keys that only one side has (a config written by another l2i
    version, before a field was added or after one was removed).
    """
    skip = set(ignore)
    missing = object()
    out = []
    keys = set(old) & set(new) if shared_only else set(old) | set(new)
    for key in sorted(keys):
        a, b = old.get(key, missing), new.get(key, missing)
        if key in skip or a == b:
            continue
        show = ["(absent)" if v is missing else repr(v) for v in (a, b)]
        out.append(f"{key}: {show[0]} -> {show[1]}")
    return out


def file_digest(path: str | os.PathLike) -> str:
    """sha1 of a file's bytes (16 hex digits): unlike size + mtime, a file replaced by another
    of the same size and time stamp (``cp -p``, a coarse file system) gets a new digest."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


__all__ = ["NOT_HASHED", "RESUME_MAY_CHANGE", "flatten", "hashed_view", "digest", "config_diff",
           "file_digest"]
