"""What ``l2i evaluate`` writes: ``per_clip.csv``, ``metrics.md`` and the example clips.

``metrics.json`` (built in :mod:`l2i.evaluation`) holds ``"explainers"``: explainer name -> its
metrics (:func:`l2i.scoring.aggregate`); this module turns the same numbers into a Markdown
comparison table (one row per explainer, the reference's rows for orientation) and writes, for
a few example clips, the input, each explainer's explanation audio ``M * X`` side by side and,
for L2I, its figure.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2i import fileio
from l2i.scoring import ClipResults

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# (column title, metrics key) of the comparison table, laid out like the reference's README
TABLE = [("AI", "AI"), ("AD", "AD"), ("AG", "AG"), ("FF", "FF"), ("Fid-In", "Fid-In"),
         ("SPS", "SPS"), ("COMP", "COMP")]
EXTRA = [("Fid@1 %", "fidelity_top1"), ("loc ROC-AUC", "loc_auc"), ("ms/clip", "ms_per_clip")]
SB_COLUMN = ("AD (SB)", "AD_sb")
REFERENCE_ROWS = [
    ("L2I, reference (SB README, OOD mixtures, CNN14; its AD/Fid-In bugs)",
     [6.75, 25.93, 1.25, 0.26, 0.01, 0.58, 11.38]),
    ("L-MAC, reference (same conditions)", [61.62, 3.83, 33.48, 0.40, 0.82, 0.93, 9.77]),
]
# per-clip columns repeated for every explainer after the first in per_clip.csv
OTHER_COLUMNS = ("o", "q", "AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP", "mask_mean")
PER_CLIP_FIRST = ["id", "label", "label_name", "prediction", "prediction_name",
                  "theta_prediction", "masked_in_prediction", "p", "o", "q", "theta_p",
                  "n_selected"]


# --------------------------------------------------------------------------- per_clip.csv
def per_clip_csv(ids: list[str], labels: np.ndarray, names: list[str],
                 results: dict[str, ClipResults] | ClipResults,
                 partner: np.ndarray | None = None) -> str:
    """One row per clip: id, label, predictions, p, o, q and every per-clip metric of the first
    explainer; the core columns of the others as ``NAME:COLUMN``."""
    if isinstance(results, ClipResults):
        results = {"": results}
    first_name, first = next(iter(results.items()))
    c = first.columns
    cols: dict[str, list[Any]] = {
        "id": ids, "label": labels.tolist(), "label_name": [names[k] for k in labels],
        "prediction_name": [names[k] for k in c["prediction"]]}
    if partner is not None:
        cols["mixed_with"] = [ids[j] for j in partner]
    for k, v in c.items():
        cols[k] = v.tolist()
    if first.localisation is not None:
        for m, d in first.localisation.items():
            for k, v in d.items():
                cols[f"loc_{m}_{k}"] = v.tolist()
    for name, res in results.items():
        if name == first_name:
            continue
        for k in OTHER_COLUMNS:
            if k in res.columns:
                cols[f"{name}:{k}"] = res.columns[k].tolist()
    order = [k for k in PER_CLIP_FIRST if k in cols] + [k for k in cols
                                                         if k not in PER_CLIP_FIRST]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(order)
    for i in range(len(ids)):
        w.writerow([_cell(cols[k][i]) for k in order])
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.9g}"  # float32 round-trips
    return v


# --------------------------------------------------------------------------- metrics.md
def comparison_columns(sb_compat: bool = False) -> list[tuple[str, str]]:
    """``(title, metrics key)`` of the comparison table's columns."""
    return TABLE + ([SB_COLUMN] if sb_compat else []) + EXTRA


def comparison_markdown(explainers: dict[str, dict[str, Any]], sb_compat: bool = False) -> str:
    """``| Method | AI | AD | ... |``: one row per explainer, then the reference rows."""
    cols = comparison_columns(sb_compat)
    lines = ["| Method | " + " | ".join(t for t, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in explainers.items():
        lines.append(f"| {name} | " + " | ".join(_md(m.get(k), 3 if k == "loc_auc" else 2)
                                                 for _, k in cols) + " |")
    blanks = " | –" * (len(cols) - len(TABLE))
    lines += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + blanks + " |"
              for name, vals in REFERENCE_ROWS]
    return "\n".join(lines)


def metrics_markdown(explainers: dict[str, dict[str, Any]], settings: dict[str, Any],
                     counts: dict[str, Any]) -> str:
    """The comparison table and the other figures (fidelity, removal, localisation)."""
    sb = settings.get("metric_compat") == "speechbrain"
    lines = [
        f"# Explainer comparison: `{settings['ckpt']}`", "",
        f"Data `{settings['data_folder']}`, test folds {settings['test_folds']}, "
        f"{counts['n_clips']} clips, contamination **{settings['contamination']}**, "
        f"seed {settings['seed']}; every explainer scored on the same clips, for the same "
        "classifier and its predicted class.", "",
        comparison_markdown(explainers, sb), "",
        "AI, AD, AG and fidelity in %; FF, Fid-In, SPS as fractions; COMP in nats; ms/clip the "
        "explainer's own time (loaded machine). AD is on plain probabilities"
        + (" ; AD (SB) with SpeechBrain's double softmax (docs/metrics.md)" if sb else "")
        + ". Reference rows: SpeechBrain's README, with its metric bugs (L2I_SPEC §8), for "
        "orientation only.", "",
    ]
    for name, m in explainers.items():
        rem = m.get("component_removal") or {}
        if rem:
            lines.append(
                f"- {name}: theta fidelity top-1/3/5 {_md(m.get('fidelity_top1'))} / "
                f"{_md(m.get('fidelity_top3'))} / {_md(m.get('fidelity_top5'))} %; component "
                f"removal: drop {_md(rem.get('drop_relevant'), 3)} removing the relevant "
                f"components vs {_md(rem.get('drop_random'), 3)} removing as many random ones")
    first = next(iter(explainers.values()), {})
    lines.append(f"- classifier accuracy on these clips: {_md(first.get('accuracy'))} %")
    if any(m.get("localisation") for m in explainers.values()):
        lines += _localisation_lines(explainers)
    return "\n".join(lines) + "\n"


def _localisation_lines(explainers: dict[str, dict[str, Any]]) -> list[str]:
    n = next(m["localisation"]["n_clips_with_events"] for m in explainers.values()
             if m.get("localisation"))
    out = ["", f"Localisation against the true events ({n} clips):", "",
           "| explainer | score map | ROC-AUC | IoU (≥ 0.5 of max) | IoU (top-n) |",
           "|---|---|---|---|---|"]
    shared_done = False
    for name, m in explainers.items():
        for mp, d in (m.get("localisation") or {}).items():
            if not isinstance(d, dict) or (mp == "input_energy" and shared_done):
                continue
            who = "–" if mp == "input_energy" else name
            out.append(f"| {who} | {mp} | {_md(d.get('auc'), 3)} | {_md(d.get('iou'), 3)} | "
                       f"{_md(d.get('iou_topn'), 3)} |")
        shared_done = shared_done or bool(m.get("localisation"))
    return out


def _md(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


# --------------------------------------------------------------------------- examples
def pick_examples(labels: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` clips cycling through the classes (first clip of each class first)."""
    labels = np.asarray(labels)
    by_class = [list(np.flatnonzero(labels == k)) for k in np.unique(labels)]
    out: list[int] = []
    rnd = 0
    while len(out) < min(n, labels.size):
        for idx in by_class:
            if rnd < len(idx) and len(out) < n:
                out.append(int(idx[rnd]))
        rnd += 1
    return out


def safe_name(cid: str) -> str:
    """A file name from a clip id (its path relative to the dataset root): ``dog/01.wav`` ->
    ``dog_01`` (the folder is kept so ids of a folder-per-class dataset stay distinct)."""
    p = Path(cid)
    stem = p.with_suffix("").as_posix() if p.suffix.lower() in AUDIO_SUFFIXES else p.as_posix()
    return re.sub(r"[^A-Za-z0-9.-]+", "_", stem).strip("._") or "clip"


def _unique_names(ids: list[str], chosen: list[int]) -> list[str]:
    used: set[str] = set()
    out = []
    for i in chosen:
        name = base = safe_name(ids[i])
        k = 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        out.append(name)
    return out


def example_masks(explainers: list[Any], wav: np.ndarray) -> tuple[dict[str, torch.Tensor], Any]:
    """Each explainer's mask ``(B, T, F)`` for ``wav (B, N)`` (targets: the first explainer's
    classifier's prediction) and the :class:`~l2i.explainers.SpecBatch`."""
    from l2i.explainers.base import as_spec
    from l2i.scoring import reference_mean

    first = explainers[0]
    spec = as_spec(torch.from_numpy(np.ascontiguousarray(wav)), first.features, first.device)
    c = first.predict(spec).argmax(dim=1)
    masks: dict[str, torch.Tensor] = {}
    for ex in explainers:
        kw = {"mean": reference_mean(explainers, masks)} if ex.needs_reference else {}
        masks[ex.name] = ex.attribute(spec, target=c, **kw).mask
    return masks, spec


def write_examples(explainers: list[Any], wavs: np.ndarray, clean: np.ndarray | None,
                   labels: np.ndarray, ids: list[str], results: dict[str, ClipResults],
                   folder: Path, n_examples: int, sources: list[str] | None = None) -> list[str]:
    """For ``n_examples`` clips (the first clip of each class in turn, then the next ones):
    ``NAME.input.wav`` (``NAME.clean.wav`` before contamination), ``NAME.EXPLAINER.wav`` for
    every explainer, ``NAME.explanation.wav`` = the first explainer's, ``NAME.json`` and, when
    the first explainer is L2I, its figure ``NAME.png`` and ``NAME.components/k{K}.wav`` (each
    selected component alone)."""
    from l2i import features as feats
    from l2i.audio import write_wav
    from l2i.figures import masks_figure

    chosen = pick_examples(labels, n_examples)
    if not chosen:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    first = explainers[0]
    sr = int(first.features.sample_rate)
    names = _unique_names(ids, chosen)
    masks, spec = example_masks(explainers, wavs[chosen])
    complex_spec = feats.with_phase(spec.mag, spec.phase)  # (B, T, F)
    audio = {n: feats.istft(m * complex_spec, first.features, length=spec.length).cpu().numpy()
             for n, m in masks.items()}  # name -> (B, N)
    l2i_paths = _l2i_examples(first, wavs[chosen], folder, names, sources, chosen, ids)
    class_names = first.class_names
    c0 = next(iter(results.values())).columns
    for j, (i, name) in enumerate(zip(chosen, names)):
        write_wav(folder / f"{name}.input.wav", wavs[i], sr)
        if clean is not None:
            write_wav(folder / f"{name}.clean.wav", clean[i], sr)
        wav_files = {n: write_wav(folder / f"{name}.{_file_tag(n)}.wav", a[j], sr).name
                     for n, a in audio.items()}
        if name not in l2i_paths:
            write_wav(folder / f"{name}.explanation.wav", audio[first.name][j], sr)
        pred = int(c0["prediction"][i])
        masks_figure(spec.mag[j].cpu().numpy(), {n: m[j].cpu().numpy() for n, m in masks.items()},
                     folder / f"{name}.masks.png", sr, first.features.hop_length,
                     title=f"{name}: every explainer (class '{class_names[pred]}')")
        info = json.loads(l2i_paths[name].read_text()) if name in l2i_paths else {}
        info.update({
            "id": ids[i], "label": int(labels[i]), "label_name": class_names[labels[i]],
            "predicted": pred, "predicted_name": class_names[pred],
            "input_wav": f"{name}.input.wav", "explanation_wav": f"{name}.explanation.wav",
            "explainer": first.name, "explainer_wavs": wav_files,
            "masks_figure": f"{name}.masks.png",
            "file": sources[i] if sources and i < len(sources) else ids[i],
            "per_explainer": {n: {k: float(r.columns[k][i]) for k in ("o", "q", "mask_mean")}
                              for n, r in results.items()},
            "p": float(c0["p"][i]), "o": float(c0["o"][i]), "q": float(c0["q"][i])})
        fileio.write_json(folder / f"{name}.json", json_safe(info))
    return names


def _file_tag(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "_", name)


def _l2i_examples(first: Any, wavs: np.ndarray, folder: Path, names: list[str],
                  sources: list[str] | None, chosen: list[int],
                  ids: list[str]) -> dict[str, Path]:
    """L2I's own explanation files (wav, figure, json) when the first explainer is L2I."""
    inner = getattr(first, "explainer", None)
    if inner is None or not hasattr(inner, "explain"):
        return {}
    from l2i.explanation_files import write_components, write_explanation

    expls = inner.explain(wavs, inner.sample_rate, batch=True)  # (B, S): a batch of clips
    out = {}
    for name, i, expl in zip(names, chosen, expls):
        source = sources[i] if sources and i < len(sources) else ids[i]
        path = write_explanation(expl, folder, name, source=source)["json"]
        info = json.loads(path.read_text())
        info["components"] = write_components(expl, folder, name)  # k{K}.wav each, they sum up
        fileio.write_json(path, json_safe(info))
        out[name] = path
    return out


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


__all__ = ["per_clip_csv", "comparison_markdown", "comparison_columns", "metrics_markdown",
           "write_examples", "pick_examples", "safe_name", "json_safe", "example_masks"]
