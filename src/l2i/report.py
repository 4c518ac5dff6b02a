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
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
from pathlib import Path
from typing import Any

from l2i import fileio
from l2i.config import ReportRecipe
from l2i.errors import L2IError

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

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;
max-width:1100px;padding:1.5em;color:#1d2330;background:#fbfbfd;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #dde;padding-bottom:.2em;margin-top:1.6em}
h3{margin-bottom:.3em}.muted{color:#667;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccd;padding:.25em .6em;text-align:right}
th{background:#eef0f6}td.l,th.l{text-align:left}tr.ref td{color:#667;font-style:italic}
.card{background:#fff;border:1px solid #dde;border-radius:8px;padding:1em;margin:1em 0}
.players{display:flex;gap:2em;flex-wrap:wrap}.players div{flex:1;min-width:260px}
audio{width:100%}img{max-width:100%;border:1px solid #eee}
.imgs{display:flex;gap:1em;flex-wrap:wrap}.imgs figure{flex:1;min-width:300px;margin:0}
.bar{display:inline-block;height:.7em;background:#4b6cb7;vertical-align:middle}
code{background:#eef0f6;padding:0 .25em;border-radius:3px}
"""

LOAD_SCRIPT = """
<script>
(function(){
  function count(){
    var imgs=document.images, ok=0;
    for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
    var auds=document.getElementsByTagName('audio'), ready=0;
    for(var j=0;j<auds.length;j++){if(auds[j].readyState>=1){ready++;}}
    return {img:ok, imgs:imgs.length, audio:ready, audios:auds.length};
  }
  function write(){
    var c=count();
    document.body.setAttribute('data-loaded','img='+c.img+'/'+c.imgs+' audio='+c.audio+'/'+
      c.audios);
    return c;
  }
  window.addEventListener('load', function(){
    var tries=0;
    (function poll(){
      var c=write();
      if((c.audio<c.audios)&&tries<50){tries++;setTimeout(poll,100);}
    })();
  });
})();
</script>
"""


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
    _write_text_atomic(out, page)
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
    """The whole HTML page as a string."""
    from l2i import __version__

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>L2I report: {_e(root.resolve().name)}</title>",
        f"<style>{CSS}</style></head><body data-loaded=''>",
        f"<h1>L2I report: {_e(root.resolve().name)}</h1>",
        f"<p class='muted'>Run folder <code>{_e(str(root))}</code>; written {now} by l2i "
        f"{_e(__version__)}. L2I explains a frozen audio classifier with the components of an "
        "NMF dictionary; an explanation is the part of the input spectrogram those components "
        "account for, turned back into sound.</p>",
    ]
    evaluations = sorted(evaluations, key=lambda ev: (not _is_clean(ev), ev.as_posix()))
    if len(evaluations) > 1:
        parts.append(_overview_table(root, evaluations))
    for ev in evaluations:
        parts.append(_evaluation_section(root, ev, n_examples))
    if subruns:
        parts.append("<h2>Training runs</h2>")
        for name, folder in subruns.items():
            parts.append(_subrun_section(name, folder))
    parts.append(_glossary())
    parts.append(LOAD_SCRIPT)
    parts.append("</body></html>")
    return "\n".join(parts)


def _is_clean(folder: Path) -> bool:
    data = _read_json(folder / "metrics.json") or {}
    return data.get("settings", {}).get("contamination", "none") == "none"


def _overview_table(root: Path, evaluations: list[Path]) -> str:
    """One row per evaluation: where, contamination, the table metrics and fidelity."""
    keys = TABLE_KEYS + ["fidelity_top1", "accuracy"]
    head = ("<th class='l'>evaluation</th><th class='l'>contamination</th>"
            "<th class='l'>selection</th>"
            + "".join(f"<th>{_e(k)}</th>" for k in [*TABLE_KEYS, "Fid@1 %", "accuracy %"]))
    rows = [f"<tr>{head}</tr>"]
    for ev in evaluations:
        data = _read_json(ev / "metrics.json") or {}
        m = data.get("metrics", {})
        rel = ev.relative_to(root).as_posix() if ev != root else "."
        settings = data.get("settings", {})
        cont = settings.get("contamination", "none")
        cells = "".join(f"<td>{_fmt(m.get(k))}</td>" for k in keys)
        rows.append(f"<tr><td class='l'><code>{_e(rel)}</code></td><td class='l'>"
                    f"{_e(str(cont))}</td><td class='l'>{_e(_selection_text(settings) or '')}"
                    f"</td>{cells}</tr>")
    return "<h2>Overview</h2><table>" + "".join(rows) + "</table>"


def _evaluation_section(root: Path, folder: Path, n_examples: int) -> str:
    data = _read_json(folder / "metrics.json") or {}
    metrics = data.get("metrics", {})
    settings = data.get("settings", {})
    counts = data.get("counts", {})
    rel = folder.relative_to(root).as_posix() if folder != root else "."
    contamination = settings.get("contamination", "none")
    title = f"Evaluation <code>{_e(rel)}</code> (contamination: {_e(str(contamination))})"
    out = [f"<h2>{title}</h2>", _summary_table(settings, counts, metrics)]

    out.append("<h3>Faithfulness</h3>")
    explainers = data.get("explainers")
    out.append(comparison_table(explainers) if isinstance(explainers, dict) and explainers
               else _metrics_table(metrics))
    out.append(
        "<p class='muted'>AI, AD, AG in %; FF, Fid-In, SPS as fractions; COMP in nats. "
        "AD here is the textbook AD on plain probabilities; the reference rows use the "
        "reference's own metric code (double-softmax AD, Fid-In bug) on OOD mixtures with CNN14, "
        f"so compare with care (our SB-compatible AD: {_fmt(metrics.get('AD_sb'))}).</p>")
    if any(k in metrics for k in FIDELITY_KEYS):
        out.append("<h3>Fidelity of theta to the classifier</h3>")
        cells = "".join(f"<td>{_fmt(metrics.get(k))}</td>" for k in FIDELITY_KEYS)
        out.append("<table><tr><th>top-1 %</th><th>top-3 %</th><th>top-5 %</th>"
                   f"<th>classifier accuracy %</th></tr><tr>{cells}"
                   f"<td>{_fmt(metrics.get('accuracy'))}</td></tr></table>")
    removal = metrics.get("component_removal")
    if isinstance(removal, dict) and removal:
        out.append("<h3>Component removal (the paper's faithfulness test)</h3>")
        out.append(_kv_table(removal, "Drop of the predicted class's probability when the "
                             "relevant components are removed, vs as many random ones."))
    loc = metrics.get("localisation")
    if isinstance(loc, dict) and loc:
        out.append("<h3>Localisation against the true events (synthetic data)</h3>")
        out.append(_localisation_table(loc))
    out.append(_examples_section(folder / "examples", n_examples,
                                 settings.get("class_names") or []))
    return "\n".join(out)


def _summary_table(settings: dict, counts: dict, metrics: dict) -> str:
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
    body = "".join(f"<tr><th class='l'>{_e(k)}</th><td class='l'>{_e(_plain(v))}</td></tr>"
                   for k, v in rows if v not in (None, "", []))
    return f"<table>{body}</table>"


def _selection_text(settings: dict) -> str | None:
    if settings.get("top_k"):
        return f"top {settings['top_k']} components"
    if settings.get("relevance_th") is not None:
        return f"relevance > {settings['relevance_th']}"
    return None


def _metrics_table(metrics: dict) -> str:
    head = "".join(f"<th>{k}</th>" for k in TABLE_KEYS)
    ours = "".join(f"<td>{_fmt(metrics.get(k))}</td>" for k in TABLE_KEYS)
    rows = [f"<tr><th class='l'>Method</th>{head}</tr>",
            f"<tr><td class='l'><b>L2I (this run)</b></td>{ours}</tr>"]
    for name, vals in REFERENCE_ROWS:
        cells = "".join(f"<td>{v:.2f}</td>" for v in vals)
        rows.append(f"<tr class='ref'><td class='l'>{_e(name)}</td>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


COMPARISON_KEYS = TABLE_KEYS + ["AD_sb", "fidelity_top1", "loc_auc", "ms_per_clip"]
COMPARISON_TITLES = TABLE_KEYS + ["AD (SB)", "Fid@1 %", "loc ROC-AUC", "ms/clip"]


def comparison_table(explainers: dict) -> str:
    """One row per explainer of an ``l2i evaluate`` comparison (``metrics.json``'s
    ``"explainers"``), then the reference rows; columns no explainer has are left out."""
    cols = [(t, k) for t, k in zip(COMPARISON_TITLES, COMPARISON_KEYS)
            if any(isinstance(m, dict) and m.get(k) is not None for m in explainers.values())]
    head = "".join(f"<th>{_e(t)}</th>" for t, _ in cols)
    rows = [f"<tr><th class='l'>Method</th>{head}</tr>"]
    for name, m in explainers.items():
        m = m if isinstance(m, dict) else {}
        cells = "".join(f"<td>{_fmt(m.get(k))}</td>" for _, k in cols)
        rows.append(f"<tr><td class='l'><b>{_e(str(name))}</b></td>{cells}</tr>")
    for name, vals in REFERENCE_ROWS:
        cells = "".join(f"<td>{v:.2f}</td>" for v in vals)
        cells += "<td>&ndash;</td>" * (len(cols) - len(vals))
        rows.append(f"<tr class='ref'><td class='l'>{_e(name)}</td>{cells}</tr>")
    return ("<table class='comparison'>" + "".join(rows) + "</table><p class='muted'>Every "
            "explainer on the same clips, for the same classifier and its predicted class: "
            "L2I / L-MAC from their checkpoints, captum's gradient methods and the trivial "
            "baselines (ones: the input itself; energy: |X|/max|X|; random: a random mask with "
            "the first explainer's mean).</p>")


def _localisation_table(loc: dict) -> str:
    methods = [k for k, v in loc.items() if isinstance(v, dict)]
    scalars = {k: v for k, v in loc.items() if not isinstance(v, dict)}
    cols: list[str] = []
    for m in methods:
        cols += [c for c in loc[m] if c not in cols]
    out = []
    if methods:
        head = "".join(f"<th>{_e(c)}</th>" for c in cols)
        rows = [f"<tr><th class='l'>score map</th>{head}</tr>"]
        for m in methods:
            cells = "".join(f"<td>{_fmt(loc[m].get(c))}</td>" for c in cols)
            rows.append(f"<tr><td class='l'>{_e(m)}</td>{cells}</tr>")
        out.append("<table>" + "".join(rows) + "</table>")
    if scalars:
        out.append(_kv_table(scalars, ""))
    return "\n".join(out)


def _kv_table(values: dict, caption: str) -> str:
    rows = "".join(f"<tr><th class='l'>{_e(k)}</th><td>{_fmt(v)}</td></tr>"
                   for k, v in values.items() if not isinstance(v, (dict, list)))
    cap = f"<p class='muted'>{_e(caption)}</p>" if caption else ""
    return f"{cap}<table>{rows}</table>"


# --------------------------------------------------------------------------- examples
def find_examples(folder: Path) -> list[str]:
    """Names ``NAME`` of the example clips in ``folder`` (those with a ``NAME.json``), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in folder.glob("*.json"))


def _examples_section(folder: Path, n_examples: int, class_names: list) -> str:
    names = find_examples(folder)[:n_examples]
    if not names:
        return ""
    out = [f"<h3>Example explanations ({len(names)})</h3>"]
    for name in names:
        out.append(_example_card(folder, name, class_names))
    return "\n".join(out)


def _example_card(folder: Path, name: str, class_names: list) -> str:
    info = _read_json(folder / f"{name}.json") or {}
    pred = _first(info, "predicted_name", "prediction_name", "predicted", "prediction")
    target = _first(info, "target_name", "target")
    label = _first(info, "label_name", "label")
    facts = [f"predicted class: <b>{_e(_plain(pred))}</b>"]
    if target is not None and target != pred:
        facts.append(f"explained class: <b>{_e(_plain(target))}</b>")
    if label is not None:
        facts.append(f"true class: {_e(_plain(label))}")
    for key, what in (("p", "p (input)"), ("o", "o (explanation)"), ("q", "q (rest)")):
        if isinstance(info.get(key), (int, float)):
            facts.append(f"{what} = {info[key]:.3f}")
    source = info.get("file") or info.get("id")
    head = (f"<h4>{_e(name)}</h4><p>{' &middot; '.join(facts)}</p>"
            + (f"<p class='muted'>{_e(str(source))}</p>" if source else ""))
    players = []
    tracks = [("clean", "clean clip (before contamination)"), ("input", "input"),
              ("explanation", "explanation (listen)")]
    per = info.get("explainer_wavs")
    if isinstance(per, dict) and per:  # a comparison: every explainer's audio side by side
        tracks = tracks[:2] + [(Path(str(f)).name[len(name) + 1:-4], f"explanation: {ex}")
                               for ex, f in per.items()]
    for suffix, title in tracks:
        wav = folder / f"{name}.{suffix}.wav"
        if wav.is_file():
            players.append(f"<div><b>{_e(title)}</b><br><audio controls preload='metadata' "
                           f"src='{_data_uri(wav, 'audio/wav')}'></audio></div>")
    parts = [head, f"<div class='players'>{''.join(players)}</div>", _component_players(
        folder, info)]
    for png in (folder / f"{name}.png", folder / f"{name}.masks.png"):
        if png.is_file():
            parts.append(f"<img alt='{_e(png.name)} figure' src='{_data_uri(png, 'image/png')}'>")
    parts.append(_probs_table(info, class_names))
    sel = _first(info, "selected_components", "selected")
    if isinstance(sel, list):
        rel = info.get("relevance") if isinstance(info.get("relevance"), list) else []
        text = ", ".join(_component_text(s, rel) for s in sel) if sel else "none"
        parts.append(f"<p>selected NMF components ({len(sel)}, relevance in brackets): "
                     f"{_e(text)}</p>")
    return "<div class='card'>" + "\n".join(parts) + "</div>"


def _component_players(folder: Path, info: dict) -> str:
    """A player per selected component (``NAME.components/k{K}.wav``, listed in the json's
    ``components``); they add up to the explanation."""
    comps = [c for c in info.get("components") or [] if isinstance(c, dict)
             and (folder / str(c.get("wav", ""))).is_file()]
    if not comps:
        return ""
    cells = "".join(f"<div><b>k={_e(str(c.get('k')))}</b> r={_fmt(c.get('relevance'))}<br>"
                    f"<audio controls preload='metadata' src='"
                    f"{_data_uri(folder / str(c['wav']), 'audio/wav')}'></audio></div>"
                    for c in comps)
    return ("<p>each selected component alone (they add up to the explanation):</p>"
            f"<div class='players'>{cells}</div>")


def _component_text(s: Any, relevance: list) -> str:
    if isinstance(s, int) and 0 <= s < len(relevance) and isinstance(relevance[s], (int, float)):
        return f"{s} ({relevance[s]:.2f})"
    return str(s)


def _probs_table(info: dict, class_names: list, top: int = 5) -> str:
    """theta's and the classifier's top classes as a small bar table."""
    cols = []
    for title, keys in (("theta", ("theta_probs", "theta_probabilities")),
                        ("classifier", ("classifier_probs", "probs", "classifier_probabilities"))):
        probs = _as_prob_dict(_first(info, *keys), info.get("class_names") or class_names)
        if probs:
            cols.append((title, sorted(probs.items(), key=lambda kv: -kv[1])[:top]))
    if not cols:
        return ""
    rows = ["<tr>" + "".join(f"<th class='l' colspan='2'>{t} top {top}</th>" for t, _ in cols)
            + "</tr>"]
    for i in range(max(len(v) for _, v in cols)):
        cells = ""
        for _, items in cols:
            if i < len(items):
                name, pr = items[i]
                cells += (f"<td class='l'>{_e(str(name))}</td><td class='l'><span class='bar' "
                          f"style='width:{100 * pr:.0f}px'></span> {pr:.2f}</td>")
            else:
                cells += "<td></td><td></td>"
        rows.append(f"<tr>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _as_prob_dict(probs: Any, class_names: list) -> dict[str, float]:
    if isinstance(probs, dict):
        return {str(k): float(v) for k, v in probs.items() if isinstance(v, (int, float))}
    if isinstance(probs, list) and probs and all(isinstance(v, (int, float)) for v in probs):
        names = class_names if len(class_names) == len(probs) else range(len(probs))
        return {str(n): float(v) for n, v in zip(names, probs)}
    return {}


# --------------------------------------------------------------------------- sub-runs
def _subrun_section(name: str, folder: Path) -> str:
    numbers: dict[str, Any] = {}
    for path in sorted(folder.glob("*.json")):
        data = _read_json(path)
        if isinstance(data, dict) and data.get("kind") != EVAL_KIND:
            numbers.update(_flat_scalars(data))
    shown = dict(list(_prioritised(numbers).items())[:MAX_SUBRUN_NUMBERS])
    out = [f"<div class='card'><h3>{_e(name)} <span class='muted'>({_e(str(folder))})"
           "</span></h3>"]
    if shown:
        out.append(_kv_table(shown, ""))
    imgs = sorted(folder.glob("*.png"), key=lambda p: (not _is_key_figure(p), p.name))
    figs = [f"<figure><img alt='{_e(p.name)}' src='{_data_uri(p, 'image/png')}'>"
            f"<figcaption class='muted'>{_e(p.name)}</figcaption></figure>"
            for p in imgs[:MAX_SUBRUN_IMAGES]]
    if figs:
        out.append(f"<div class='imgs'>{''.join(figs)}</div>")
    if not shown and not figs:
        out.append("<p class='muted'>no metrics.json or figures in this folder yet.</p>")
    out.append("</div>")
    return "\n".join(out)


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


def _glossary() -> str:
    return """
<h2>How to read the metrics</h2>
<p class='muted'>c is the classifier's prediction on the input; p, o, q its probability for c
on the input |X|, on the explanation M&middot;|X| (masked-in) and on the rest (1&minus;M)&middot;|X|
(masked-out). <b>AI</b> = % of clips with o &gt; p (higher is better); <b>AD</b> = mean
relative drop max(0, p&minus;o)/p in % (lower is better); <b>AG</b> = mean relative gain
max(0, o&minus;p)/(1&minus;p) in % (higher); <b>FF</b> = mean(p&minus;q) (higher); <b>Fid-In</b>
= share of clips whose masked-in prediction is c (higher); <b>SPS</b> = Gini index of the mask
(higher = sparser); <b>COMP</b> = entropy of the mask in nats (lower = more concentrated).
<b>Fidelity top-k</b> = % of clips where c is among theta's k best classes.</p>
"""


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


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "&ndash;" if v is None else str(v)
    if isinstance(v, (int, float)):
        if isinstance(v, float) and math.isnan(v):
            return "n/a"
        return f"{v + 0.0:.2f}".replace("-0.00", "0.00") if isinstance(v, float) else str(v)
    return _e(str(v))


def _pct(v: Any) -> str | None:
    return None if not isinstance(v, (int, float)) else f"{v:.1f} %"


def _plain(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(map(str, v))
    if isinstance(v, float):
        return f"{v:.2f}"
    return "" if v is None else str(v)


def _e(s: str) -> str:
    return html.escape(s, quote=True)


def _write_text_atomic(path: Path, text: str) -> None:
    fileio.write_text(path, text)


__all__ = ["write_report", "render_report", "find_evaluations", "find_examples",
           "comparison_table"]
