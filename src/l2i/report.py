"""``l2i report RUN_FOLDER``: one self-contained HTML page to read and listen through a run.

The page embeds everything (audio as ``data:audio/wav;base64`` URIs in ``<audio controls>``,
figures as ``data:image/png;base64`` in ``<img>``, inline CSS), so it opens offline and can be
mailed as one file. It shows:

- a run summary (checkpoint, dataset, classes, settings) and the metrics table of every
  ``l2i evaluate`` output found (a folder holding ``metrics.json`` written by
  :mod:`l2i.evaluation`, usually with an ``examples/`` folder), with the reference's rows for
  comparison, the fidelity, the component-removal test and, on synthetic data, localisation;
- the key numbers and figures of the ``classifier/``, ``nmf/`` and ``l2i/`` sub-runs when the
  folder is a ``l2i demo`` / ``l2i run`` output folder;
- up to ``n_examples`` example clips per evaluation: input and explanation players, the figure,
  the predicted class, theta's probabilities and the selected components.

A tiny inline script writes, once the page has loaded, the number of decoded images and of
audio players with loaded metadata into ``<body data-loaded="...">`` (used by the headless
browser test, harmless otherwise).

This module gathers the numbers, texts and ``data:`` URIs into plain dicts; the page itself is
``l2i/templates/report.html.j2`` (jinja2, autoescape on: every value is escaped there).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from l2i import fileio
from l2i.config import ReportRecipe
from l2i.errors import L2IError
from l2i.templating import render

EVAL_KIND = "l2i-evaluate"  # the "kind" key of metrics.json written by l2i.evaluation
SUBRUNS = ("classifier", "nmf", "l2i")
MAX_DEPTH = 3  # how deep below RUN_FOLDER to look for evaluation folders
MAX_SUBRUN_IMAGES = 4
MAX_SUBRUN_NUMBERS = 16

# | Method | AI | AD | AG | FF | Fid-In | SPS | COMP | as in the reference's README
# (REFERENCE_RECIPE §8: OOD mixtures, CNN14, with the reference's AD double softmax and L2I
# Fid-In bug; shown for orientation only).
REFERENCE_ROWS = [
    ("L2I, reference (SB README)", [6.75, 25.93, 1.25, 0.26, 0.01, 0.58, 11.38]),
    ("L-MAC, reference (SB README)", [61.62, 3.83, 33.48, 0.40, 0.82, 0.93, 9.77]),
]
TABLE_KEYS = ["AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP"]
FIDELITY_KEYS = ["fidelity_top1", "fidelity_top3", "fidelity_top5"]


# --------------------------------------------------------------------------- entry point
def write_report(cfg: ReportRecipe) -> str:
    """Write the self-contained ``report.html`` for ``cfg.run_folder``; returns its path.

    Raises L2IError when the folder does not exist or holds nothing to report (no
    ``l2i evaluate`` output and no classifier/nmf/l2i sub-run).
    """
    root = Path(cfg.run_folder) if cfg.run_folder else None
    if root is None or not root.is_dir():
        raise L2IError(f"run folder {cfg.run_folder!r} does not exist: give the output "
                       "folder of 'l2i evaluate' or of 'l2i demo' / 'l2i run'")
    evaluations = find_evaluations(root)
    subruns = {name: root / name for name in SUBRUNS if (root / name).is_dir()}
    if not evaluations and not subruns:
        raise L2IError(f"{root} holds nothing to report: expected a metrics.json written "
                       "by 'l2i evaluate' (in the folder or a sub-folder) or classifier/, nmf/, "
                       "l2i/ sub-runs; run 'l2i evaluate CKPT --data_folder D --output_folder "
                       f"{root}' first")
    if cfg.n_examples < 0:
        raise L2IError(f"n_examples must be >= 0, got {cfg.n_examples}")
    page = render_report(root, evaluations, subruns, cfg.n_examples)
    out = Path(cfg.output) if cfg.output else root / "report.html"
    fileio.write_text(out, page)
    return str(out)


def find_evaluations(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Folders at most ``max_depth`` levels below ``root`` (``root`` included) holding the
    ``metrics.json`` of an ``l2i evaluate`` run, sorted by path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        if depth >= max_depth:
            dirnames[:] = []
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "metrics.json" in filenames and _is_evaluation(Path(dirpath) / "metrics.json"):
            found.append(Path(dirpath))
    return sorted(found)


def _is_evaluation(path: Path) -> bool:
    data = _read_json(path)
    return isinstance(data, dict) and data.get("kind") == EVAL_KIND


# --------------------------------------------------------------------------- rendering
def render_report(root: Path, evaluations: list[Path], subruns: dict[str, Path],
                  n_examples: int) -> str:
    """The whole HTML page as a string (``templates/report.html.j2``)."""
    from l2i import __version__

    evaluations = sorted(evaluations, key=lambda ev: (not _is_clean(ev), ev.as_posix()))
    return render(
        "report.html.j2", name=root.resolve().name, root=str(root), version=__version__,
        now=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        refs=REFERENCE_ROWS, table_keys=TABLE_KEYS,
        overview=_overview(root, evaluations) if len(evaluations) > 1 else None,
        evaluations=[_evaluation(root, ev, n_examples) for ev in evaluations],
        subruns=[_subrun(name, folder) for name, folder in subruns.items()])


def _is_clean(folder: Path) -> bool:
    data = _read_json(folder / "metrics.json") or {}
    return data.get("settings", {}).get("contamination", "none") == "none"


def _rel(root: Path, folder: Path) -> str:
    return folder.relative_to(root).as_posix() if folder != root else "."


def _overview(root: Path, evaluations: list[Path]) -> dict[str, Any]:
    """One row per evaluation: where, contamination, the table metrics and fidelity."""
    keys = TABLE_KEYS + ["fidelity_top1", "accuracy"]
    rows = []
    for ev in evaluations:
        data = _read_json(ev / "metrics.json") or {}
        m, settings = data.get("metrics", {}), data.get("settings", {})
        rows.append({"rel": _rel(root, ev), "contamination": str(settings.get(
            "contamination", "none")), "selection": _selection_text(settings),
            "cells": [m.get(k) for k in keys]})
    return {"titles": [*TABLE_KEYS, "Fid@1 %", "accuracy %"], "rows": rows}


def _evaluation(root: Path, folder: Path, n_examples: int) -> dict[str, Any]:
    """An evaluation section: summary, faithfulness table(s), fidelity, removal, localisation,
    examples."""
    data = _read_json(folder / "metrics.json") or {}
    metrics = data.get("metrics", {})
    settings = data.get("settings", {})
    explainers = data.get("explainers")
    removal, loc = metrics.get("component_removal"), metrics.get("localisation")
    return {
        "rel": _rel(root, folder), "contamination": str(settings.get("contamination", "none")),
        "summary": _summary_rows(settings, data.get("counts", {}), metrics),
        "comparison": (_comparison(explainers) if isinstance(explainers, dict) and explainers
                       else None),
        "ours": [metrics.get(k) for k in TABLE_KEYS], "ad_sb": metrics.get("AD_sb"),
        "fidelity": ([metrics.get(k) for k in [*FIDELITY_KEYS, "accuracy"]]
                     if any(k in metrics for k in FIDELITY_KEYS) else None),
        "removal": _scalars(removal) if isinstance(removal, dict) and removal else None,
        "loc": _localisation(loc) if isinstance(loc, dict) and loc else None,
        "examples": [_example(folder / "examples", name, settings.get("class_names") or [])
                     for name in find_examples(folder / "examples")[:n_examples]],
    }


def _summary_rows(settings: dict, counts: dict, metrics: dict) -> list[tuple[str, str]]:
    classes = settings.get("class_names") or []
    rows = [
        ("checkpoint", settings.get("ckpt")),
        ("dataset", settings.get("data_folder")),
        ("test folds", settings.get("test_folds")),
        ("classes", f"{len(classes)}: " + ", ".join(map(str, classes)) if classes else None),
        ("clips evaluated", counts.get("n_clips")),
        ("contamination", settings.get("contamination")),
        ("component selection", _selection_text(settings)),
        ("mean selected components", counts.get("mean_selected")),
        ("classifier accuracy on these clips", _pct(metrics.get("accuracy"))),
    ]
    return [(k, _plain(v)) for k, v in rows if v not in (None, "", [])]


def _selection_text(settings: dict) -> str | None:
    """How L2I picked its components, and its mask options when they are not the paper's."""
    from l2i.config import MaskConfig, to_dict

    mask = (settings.get("explainer_settings") or {}).get("l2i", {}).get("mask") or {}
    if mask.get("weights") == "soft":
        text = "soft weights max(r, 0)" + (f" ** {mask['power']}" if mask.get("power", 1) != 1
                                            else "")
    elif settings.get("top_k"):
        text = f"top {settings['top_k']} components"
    elif settings.get("relevance_th") is not None:
        text = f"relevance > {settings['relevance_th']}"
    else:
        return None
    paper = to_dict(MaskConfig())
    changed = [f"{k} {v}" for k, v in mask.items() if k not in ("weights", "power")
               and k in paper and v != paper[k]]
    return text + (f"; mask: {', '.join(changed)}" if changed else "")


COMPARISON_KEYS = TABLE_KEYS + ["AD_sb", "fidelity_top1", "loc_auc", "ms_per_clip"]
COMPARISON_TITLES = TABLE_KEYS + ["AD (SB)", "Fid@1 %", "loc ROC-AUC", "ms/clip"]


def _comparison(explainers: dict) -> dict[str, Any]:
    """One row per explainer of an ``l2i evaluate`` comparison (``metrics.json``'s
    ``"explainers"``); columns no explainer has are left out (the reference rows are padded)."""
    cols = [(t, k) for t, k in zip(COMPARISON_TITLES, COMPARISON_KEYS)
            if any(isinstance(m, dict) and m.get(k) is not None for m in explainers.values())]
    rows = [(str(name), [(m if isinstance(m, dict) else {}).get(k) for _, k in cols])
            for name, m in explainers.items()]
    n_ref = len(REFERENCE_ROWS[0][1])
    return {"titles": [t for t, _ in cols], "rows": rows, "pad": max(0, len(cols) - n_ref)}


def _localisation(loc: dict) -> dict[str, Any]:
    methods = [k for k, v in loc.items() if isinstance(v, dict)]
    cols: list[str] = []
    for m in methods:
        cols += [c for c in loc[m] if c not in cols]
    return {"cols": cols, "methods": [(m, [loc[m].get(c) for c in cols]) for m in methods],
            "scalars": _scalars({k: v for k, v in loc.items() if not isinstance(v, dict)})}


def _scalars(values: dict) -> list[tuple[str, Any]]:
    return [(str(k), v) for k, v in values.items() if not isinstance(v, (dict, list))]


# --------------------------------------------------------------------------- examples
def find_examples(folder: Path) -> list[str]:
    """Names ``NAME`` of the example clips in ``folder`` (those with a ``NAME.json``), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in folder.glob("*.json"))


def _example(folder: Path, name: str, class_names: list) -> dict[str, Any]:
    """One example card: facts, players (input, explanation(s), components), figures, the top
    classes and the selected components."""
    info = _read_json(folder / f"{name}.json") or {}
    sel = _first(info, "selected_components", "selected")
    rel = info.get("relevance") if isinstance(info.get("relevance"), list) else []
    figures = [(png.name, _data_uri(png, "image/png"))
               for png in (folder / f"{name}.png", folder / f"{name}.masks.png") if png.is_file()]
    return {"name": name, "facts": _facts(info), "source": info.get("file") or info.get("id"),
            "tracks": _tracks(folder, name, info), "components": _components(folder, info),
            "figures": figures, "probs": _probs(info, class_names),
            "selected": _selected_text(sel, rel) if isinstance(sel, list) else None,
            "n_selected": len(sel) if isinstance(sel, list) else 0}


def _facts(info: dict) -> list[dict[str, Any]]:
    pred = _first(info, "predicted_name", "prediction_name", "predicted", "prediction")
    target = _first(info, "target_name", "target")
    label = _first(info, "label_name", "label")
    facts = [{"label": "predicted class: ", "value": _plain(pred), "bold": True}]
    if target is not None and target != pred:
        facts.append({"label": "explained class: ", "value": _plain(target), "bold": True})
    if label is not None:
        facts.append({"label": "true class: ", "value": _plain(label), "bold": False})
    for key, what in (("p", "p (input)"), ("o", "o (explanation)"), ("q", "q (rest)")):
        if isinstance(info.get(key), (int, float)):
            facts.append({"label": f"{what} = ", "value": f"{info[key]:.3f}", "bold": False})
    return facts


def _tracks(folder: Path, name: str, info: dict) -> list[tuple[str, str]]:
    """(title, data URI) of the clip's players: clean, input, the explanation(s)."""
    tracks = [("clean", "clean clip (before contamination)"), ("input", "input"),
              ("explanation", "explanation (listen)")]
    per = info.get("explainer_wavs")
    if isinstance(per, dict) and per:  # a comparison: every explainer's audio side by side
        tracks = tracks[:2] + [(Path(str(f)).name[len(name) + 1:-4], f"explanation: {ex}")
                               for ex, f in per.items()]
    wavs = [(title, folder / f"{name}.{suffix}.wav") for suffix, title in tracks]
    return [(title, _data_uri(wav, "audio/wav")) for title, wav in wavs if wav.is_file()]


# Soft relevance weights (mask.weights: soft) select every component with r > 0, many of them
# at r ~ 1e-4, which add nothing one can hear: the page lists and plays those with r >= this
# and counts the rest.
SHOWN_MIN_RELEVANCE = 0.01


def _components(folder: Path, info: dict) -> list[dict[str, Any]]:
    """A player per selected component with relevance >= ``SHOWN_MIN_RELEVANCE``
    (``NAME.components/k{K}.wav``, listed in the json's ``components``); all the selected
    components add up to the explanation."""
    return [{"k": str(c.get("k")), "relevance": c.get("relevance"),
             "uri": _data_uri(folder / str(c["wav"]), "audio/wav")}
            for c in info.get("components") or []
            if isinstance(c, dict) and (folder / str(c.get("wav", ""))).is_file()
            and not _faint(c.get("relevance"))]


def _faint(r: Any) -> bool:
    return isinstance(r, (int, float)) and r < SHOWN_MIN_RELEVANCE


def _selected_text(sel: list, relevance: list) -> str:
    """``"29 (1.00), 4 (0.77), ... and 7 more with relevance < 0.01"`` (or ``"none"``)."""
    if not sel:
        return "none"
    rel = [relevance[s] if isinstance(s, int) and 0 <= s < len(relevance) else None
           for s in sel]
    shown = [_component_text(s, relevance) for s, r in zip(sel, rel) if not _faint(r)]
    faint = sum(_faint(r) for r in rel)
    more = f"{faint} more with relevance < {SHOWN_MIN_RELEVANCE:g}" if faint else ""
    return ", ".join(shown) + (" and " if shown and more else "") + more


def _component_text(s: Any, relevance: list) -> str:
    if isinstance(s, int) and 0 <= s < len(relevance) and isinstance(relevance[s], (int, float)):
        return f"{s} ({relevance[s]:.2f})"
    return str(s)


def _probs(info: dict, class_names: list, top: int = 5) -> dict[str, Any] | None:
    """theta's and the classifier's top classes, side by side: rows of ``(name, p)`` or None."""
    cols = []
    for title, keys in (("theta", ("theta_probs", "theta_probabilities")),
                        ("classifier", ("classifier_probs", "probs", "classifier_probabilities"))):
        probs = _as_prob_dict(_first(info, *keys), info.get("class_names") or class_names)
        if probs:
            cols.append((title, sorted(probs.items(), key=lambda kv: -kv[1])[:top]))
    if not cols:
        return None
    rows = [[items[i] if i < len(items) else None for _, items in cols]
            for i in range(max(len(v) for _, v in cols))]
    return {"cols": cols, "rows": rows, "top": top}


def _as_prob_dict(probs: Any, class_names: list) -> dict[str, float]:
    if isinstance(probs, dict):
        return {str(k): float(v) for k, v in probs.items() if isinstance(v, (int, float))}
    if isinstance(probs, list) and probs and all(isinstance(v, (int, float)) for v in probs):
        names = class_names if len(class_names) == len(probs) else range(len(probs))
        return {str(n): float(v) for n, v in zip(names, probs)}
    return {}


# --------------------------------------------------------------------------- sub-runs
def _subrun(name: str, folder: Path) -> dict[str, Any]:
    """A training sub-run card: its key numbers (from its json files) and figures."""
    numbers: dict[str, Any] = {}
    for path in sorted(folder.glob("*.json")):
        data = _read_json(path)
        if isinstance(data, dict) and data.get("kind") != EVAL_KIND:
            numbers.update(_flat_scalars(data))
    shown = dict(list(_prioritised(numbers).items())[:MAX_SUBRUN_NUMBERS])
    imgs = sorted(folder.glob("*.png"), key=lambda p: (not _is_key_figure(p), p.name))
    return {"name": name, "folder": str(folder), "numbers": _scalars(shown),
            "figures": [(p.name, _data_uri(p, "image/png")) for p in imgs[:MAX_SUBRUN_IMAGES]]}


def _is_key_figure(p: Path) -> bool:
    return any(k in p.stem for k in ("atoms", "confusion", "curve", "history"))


def _prioritised(numbers: dict[str, Any]) -> dict[str, Any]:
    keys = ("acc", "rel_error", "fid", "loss", "error")
    first = {k: v for k, v in numbers.items() if any(s in k.lower() for s in keys)}
    return {**first, **{k: v for k, v in numbers.items() if k not in first}}


def _flat_scalars(data: dict, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            out[key] = v
        elif isinstance(v, dict) and depth < 1:
            out.update(_flat_scalars(v, key + ".", depth + 1))
    return out


# --------------------------------------------------------------------------- helpers
def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _first(d: dict, *keys: str) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def _pct(v: Any) -> str | None:
    return None if not isinstance(v, (int, float)) else f"{v:.1f} %"


def _plain(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(map(str, v))
    if isinstance(v, float):
        return f"{v:.2f}"
    return "" if v is None else str(v)


__all__ = ["write_report", "render_report", "find_evaluations", "find_examples"]
