"""``l2i evaluate CKPT [CKPT ...]``: every explainer, the same clips, the same metric code.

Pipeline: load the checkpoints (``l2i.ckpt``: L2I, ``lmac.ckpt``: L-MAC; the first one's
classifier is the classifier explained, the others must wrap the same one), build the
baselines named by ``--baselines`` (captum gradient methods ``saliency, ig, smoothgrad,
gradcam`` and the trivial ``energy, ones, random``; default the trivial three), load the test
split (never the validation fold: reference defect §8.6), optionally contaminate it (seeded,
:mod:`l2i.contamination`), then score every explainer on it (:mod:`l2i.scoring`: masked-in /
masked-out re-classification, AI, AD, AG, FF, Fid-In, SPS, COMP, L2I's fidelity and
component-removal test, localisation where ``meta/events.csv`` gives ground truth, ms per clip).

Outputs in ``output_folder`` (:mod:`l2i.eval_outputs`): ``metrics.json`` with
``"explainers"``: name -> metrics (and, for readers of version 1, ``"metrics"``: the first
explainer's, its localisation under the old names ``NAME_mask`` / ``NAME_energy`` /
``input_energy``), ``per_clip.csv``, ``metrics.md`` (one row per explainer),
``examples/NAME.{input,EXPLAINER,explanation}.wav`` (+ L2I's figure and json) and
``config.yaml``. ``--metric_compat speechbrain`` adds SpeechBrain's double-softmax AD to the
tables (it is always in metrics.json as ``AD_sb``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2i import features as feats
from l2i import fileio
from l2i.config import (
    DataConfig,
    EvaluateRecipe,
    FeaturesConfig,
    from_dict,
    save_config,
    to_dict,
)
from l2i.contamination import CONTAMINATIONS, MIX_WEIGHTS, contaminate, draw_partners
from l2i.errors import ConfigError, DataError, L2IError
from l2i.eval_outputs import (
    json_safe,
    metrics_markdown,
    per_clip_csv,
    pick_examples,
    safe_name,
    write_examples,
)
from l2i.scoring import ClipResults, aggregate, score_explainers

KIND = "l2i-evaluate"  # the "kind" key of metrics.json (l2i.report looks for it)
VERSION = 2  # 2: the "explainers" mapping
METRIC_COMPAT = ("speechbrain",)
_safe_name = safe_name  # older name
_json_safe = json_safe


# --------------------------------------------------------------------------- explainers
def score_clips(explainer: Any, wavs: np.ndarray, batch_size: int, seed: int = 0,
                truth_masks: list[np.ndarray | None] | None = None,
                progress: bool = True) -> ClipResults:
    """One explainer's per-clip results on ``wavs (N, S)`` (an :class:`l2i.explain.Explainer`
    is wrapped as :class:`~l2i.explainers.l2i.L2IExplainer`)."""
    from l2i.explainers.base import MaskExplainer
    from l2i.explainers.l2i import L2IExplainer

    ex = explainer if isinstance(explainer, MaskExplainer) else L2IExplainer(explainer)
    return score_explainers([ex], wavs, batch_size, seed, truth_masks, progress)[ex.name]


def load_explainers(cfg: EvaluateRecipe, device: torch.device) -> list[Any]:
    """The checkpoints' explainers, then the baselines, with unique names."""
    from l2i.explainers import build_baseline, load_explainer

    ckpts = [cfg.ckpt, *cfg.extra_ckpts]
    out = [load_explainer(c, device, cfg.relevance_th, cfg.top_k, mask=cfg.mask) for c in ckpts]
    first = out[0]
    for ck, ex in zip(ckpts[1:], out[1:]):
        _check_same_classifier(first, ex, ckpts[0], ck)
    for name in cfg.baselines:
        out.append(build_baseline(name, first.classifier, first.features, first.class_names,
                                  seed=cfg.seed, gradcam_layer=cfg.gradcam_layer,
                                  ig_steps=cfg.ig_steps,
                                  smoothgrad_samples=cfg.smoothgrad_samples))
    seen: dict[str, int] = {}
    for ex in out:
        seen[ex.name] = seen.get(ex.name, 0) + 1
        if seen[ex.name] > 1:
            ex.name = f"{ex.name}-{seen[ex.name]}"
    return out


def _check_same_classifier(a: Any, b: Any, path_a: str, path_b: str) -> None:
    """Explainers compared in one table must explain the same classifier."""
    sa, sb = a.classifier.state_dict(), b.classifier.state_dict()
    same = (a.class_names == b.class_names and sa.keys() == sb.keys()
            and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa))
    if not same:
        raise L2IError(f"{path_b} explains another classifier than {path_a}: explainers in one "
                       "comparison must share the classifier (train them with the same "
                       "--classifier_ckpt)")


def _recipe_of(explainer: Any) -> dict[str, Any]:
    interp = getattr(explainer, "interpreter", None)
    return dict(getattr(interp, "recipe", None) or getattr(explainer, "recipe", None) or {})


def _explainer_settings(ex: Any) -> dict[str, Any]:
    keys = ("relevance_th", "top_k", "n_steps", "n_samples", "stdev", "layer_name")
    if hasattr(ex, "settings"):
        return ex.settings()
    return {k: getattr(ex, k) for k in keys if hasattr(ex, k)}


# --------------------------------------------------------------------------- command
def evaluate(cfg: EvaluateRecipe) -> str:
    """``l2i evaluate CKPT [CKPT ...] --data_folder D --test_folds 4 --output_folder O``.

    Returns a short summary (the CLI prints it). Raises L2IError on a missing checkpoint,
    dataset or noise folder, an unknown baseline, or when the dataset's classes do not match
    the model's.
    """
    from l2i.data import load_dataset, load_split
    from l2i.device import resolve_device

    _check_ckpt(cfg)
    device = resolve_device(cfg.device)
    explainers = load_explainers(cfg, device)
    first = explainers[0]
    given = bool(cfg.data_folder)
    cfg = with_checkpoint_defaults(cfg, _recipe_of(first))
    _check_data_folder(cfg, given)
    _check(cfg)
    data_cfg = _test_data_config(cfg)
    fcfg: FeaturesConfig = first.features
    sr = int(fcfg.sample_rate)

    index = load_dataset(cfg.data_folder, data_cfg, sample_rate=sr, splits=("test",),
                         known_classes=first.class_names)
    label_map = _label_map(list(index.class_names), first.class_names, cfg.data_folder)
    split = load_split(index, "test", data_cfg, sr, None)
    if len(split.labels) == 0:
        raise DataError(f"no test clips in {cfg.data_folder} for test folds "
                        f"{data_cfg.test_folds}: check --test_folds")
    labels = label_map[np.asarray(split.labels, dtype=np.int64)]  # (N,) model's indices
    ids = [str(i) for i in split.ids]
    if isinstance(split.wavs, list):
        raise ConfigError("l2i evaluate batches clips of one length: set --data.duration_s "
                          "(e.g. 5.0) so every test clip is cropped/padded to it")
    clean = np.asarray(split.wavs, dtype=np.float32)  # (N, S)
    wavs, partner = contaminate(clean, labels, cfg.contamination, cfg.seed, cfg.noise_folder, sr)

    truths = _truth_masks(cfg.data_folder, index, ids, fcfg, feats.n_frames(wavs.shape[1], fcfg))
    results = score_explainers(explainers, wavs, cfg.batch_size, cfg.seed, truths)
    aggs = {name: aggregate(res, labels) for name, res in results.items()}
    counts = _counts(labels, first.class_names, results[first.name], wavs.shape[1] / sr)
    settings = _settings(cfg, data_cfg, device, explainers)
    report = {"kind": KIND, "version": VERSION, "explainers": aggs,
              "metrics": legacy_metrics(first.name, aggs[first.name]), "counts": counts,
              "settings": settings}
    out = Path(cfg.output_folder)
    out.mkdir(parents=True, exist_ok=True)
    fileio.write_json(out / "metrics.json", json_safe(report))
    fileio.write_text(out / "per_clip.csv",
                      per_clip_csv(ids, labels, first.class_names, results, partner))
    fileio.write_text(out / "metrics.md", metrics_markdown(aggs, settings, counts))
    if cfg.n_examples > 0:
        write_examples(explainers, wavs, clean if cfg.contamination != "none" else None, labels,
                       ids, results, out / "examples", cfg.n_examples,
                       sources=[str(c.path) for c in _test_clips(index)])
    save_config(cfg, out / "config.yaml")
    return _summary_line(out, aggs, counts)


def legacy_metrics(name: str, agg: dict[str, Any]) -> dict[str, Any]:
    """The first explainer's metrics as version 1 wrote them: localisation maps named
    ``NAME_mask``, ``NAME_energy`` and ``input_energy``."""
    out = dict(agg)
    loc = agg.get("localisation")
    if isinstance(loc, dict):
        rename = {"mask": f"{name}_mask", "energy": f"{name}_energy"}
        out["localisation"] = {rename.get(k, k): v for k, v in loc.items()}
    return out


def _counts(labels: np.ndarray, names: list[str], res: ClipResults,
            clip_seconds: float) -> dict[str, Any]:
    counts: dict[str, Any] = {
        "n_clips": int(len(labels)), "n_classes": len(names),
        "per_class": {names[k]: int((labels == k).sum()) for k in range(len(names))
                      if (labels == k).any()},
        "n_frames": res.n_frames, "clip_seconds": clip_seconds}
    if "n_selected" in res.columns:
        counts["mean_selected"] = float(res.columns["n_selected"].mean())
        counts["empty_masks"] = int((res.columns["n_selected"] == 0).sum())
    return counts


def _settings(cfg: EvaluateRecipe, data_cfg: DataConfig, device: Any,
              explainers: list[Any]) -> dict[str, Any]:
    first = explainers[0]
    sel = _explainer_settings(first) if first.name.startswith("l2i") else {}
    return {
        "ckpt": str(cfg.ckpt), "ckpts": [str(cfg.ckpt), *map(str, cfg.extra_ckpts)],
        "data_folder": str(cfg.data_folder), "test_folds": list(data_cfg.test_folds),
        "contamination": cfg.contamination, "noise_folder": cfg.noise_folder, "seed": cfg.seed,
        "relevance_th": sel.get("relevance_th"), "top_k": sel.get("top_k"),
        "batch_size": cfg.batch_size, "device": str(device), "class_names": first.class_names,
        "features": to_dict(first.features), "mask_domain": "M * |X| (linear magnitude)",
        "explainers": [ex.name for ex in explainers], "baselines": list(cfg.baselines),
        "explainer_settings": {ex.name: _explainer_settings(ex) for ex in explainers},
        "metric_compat": cfg.metric_compat,
    }


def with_checkpoint_defaults(cfg: EvaluateRecipe, recipe: dict[str, Any]) -> EvaluateRecipe:
    """Fill what the command line left unset from the interpreter's training recipe.

    ``data_folder`` (when empty) and the whole ``data`` section (when it is left at its
    defaults: clip length, normalisation, folds...) come from the ``l2i train`` recipe stored in
    the checkpoint, so ``l2i evaluate CKPT`` evaluates on the test folds the model was trained
    against, with the same clip length. ``--test_folds`` still overrides the folds.
    """
    data_folder = cfg.data_folder or str(recipe.get("data_folder") or "")
    data = cfg.data
    if cfg.data == DataConfig() and isinstance(recipe.get("data"), dict):
        try:
            data = from_dict(DataConfig, recipe["data"])
        except ConfigError:
            data = cfg.data  # an older or foreign recipe: keep the defaults
    return replace(cfg, data_folder=data_folder, data=data)


def _check_ckpt(cfg: EvaluateRecipe) -> None:
    if not cfg.ckpt:
        raise ConfigError("l2i evaluate needs a checkpoint: l2i evaluate RUN/l2i/l2i.ckpt "
                          "--data_folder D --output_folder O")
    if not Path(cfg.ckpt).is_file():
        raise ConfigError(f"checkpoint {cfg.ckpt} not found: give the l2i.ckpt or lmac.ckpt "
                          "written by 'l2i train'")


def _check_data_folder(cfg: EvaluateRecipe, given: bool) -> None:
    """Say which data folder was tried (and where it came from) and which flag to pass."""
    if not cfg.data_folder:
        raise ConfigError("l2i evaluate needs --data_folder (the dataset to evaluate on; the "
                          "checkpoint does not name one)")
    path = Path(cfg.data_folder)
    if not path.is_dir():
        source = ("" if given else f", the training data folder stored in {cfg.ckpt}")
        raise DataError(f"data folder {path.resolve()} not found (tried {cfg.data_folder!r}"
                        f"{source}): pass --data_folder DATA (the dataset to evaluate on)")


def _check(cfg: EvaluateRecipe) -> None:
    if cfg.contamination == "noise_folder" and not cfg.noise_folder:
        raise ConfigError("--contamination noise_folder needs --noise_folder P (a folder of "
                          "audio files, e.g. WHAM! tr/)")
    if cfg.noise_folder and cfg.contamination == "noise_folder" \
            and not Path(cfg.noise_folder).is_dir():
        raise DataError(f"noise folder {cfg.noise_folder} does not exist")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.top_k is not None and cfg.top_k < 1:
        raise ConfigError(f"top_k must be >= 1 (or unset), got {cfg.top_k}")
    if cfg.n_examples < 0:
        raise ConfigError(f"n_examples must be >= 0, got {cfg.n_examples}")
    if cfg.ig_steps < 1 or cfg.smoothgrad_samples < 1:
        raise ConfigError(f"ig_steps and smoothgrad_samples must be >= 1, got {cfg.ig_steps}, "
                          f"{cfg.smoothgrad_samples}")
    if cfg.metric_compat is not None and cfg.metric_compat not in METRIC_COMPAT:
        raise ConfigError(f"--metric_compat must be one of {', '.join(METRIC_COMPAT)} (or "
                          f"unset), got {cfg.metric_compat!r}")


def _test_data_config(cfg: EvaluateRecipe) -> Any:
    """``cfg.data`` with ``cfg.test_folds`` (when given) as its test folds.

    The test folds are taken out of the train and valid folds (evaluation reads only the test
    split), so ``--test_folds 4`` works with a data section whose valid fold is 4.
    """
    if not cfg.test_folds:
        return cfg.data
    test = [int(f) for f in cfg.test_folds]
    return replace(cfg.data, test_folds=test,
                   train_folds=[f for f in cfg.data.train_folds if f not in test],
                   valid_folds=[f for f in cfg.data.valid_folds if f not in test])


def _label_map(data_names: list[str], model_names: list[str], folder: str) -> np.ndarray:
    """Dataset label index -> the model's class index, by class name."""
    if data_names == model_names:
        return np.arange(len(data_names), dtype=np.int64)
    missing = [n for n in data_names if n not in model_names]
    if missing:
        raise DataError(f"classes of {folder} unknown to the model: {', '.join(missing)}; the "
                        f"model knows {', '.join(model_names)}. Evaluate on the dataset the "
                        "model was trained on (or the same class names)")
    return np.asarray([model_names.index(n) for n in data_names], dtype=np.int64)


def _test_clips(index: Any) -> list[Any]:
    return list(getattr(index, "test", []) or [])


def _truth_masks(data_folder: str, index: Any, ids: list[str], fcfg: FeaturesConfig,
                 n_frames: int) -> list[np.ndarray | None] | None:
    """Per test clip the ``(T, F)`` ground truth of the event, or None if absent.

    The truth is the event's ideal binary mask (bins where the event alone is louder than the
    background, inside its time span and band: :func:`l2i.synthetic.ideal_mask`) when the
    dataset keeps the isolated events (``events/``, as ``l2i synth`` writes), else the event's
    time x band rectangle from ``meta/events.csv``. The rectangle over-counts thin events (a
    chirp fills ~12 % of it), so a perfect explanation scores low against it.
    """
    if not (Path(data_folder) / "meta" / "events.csv").is_file():
        return None
    from l2i.synthetic import event_mask, ideal_mask, load_events

    events = load_events(data_folder)
    clips = _test_clips(index)
    out: list[np.ndarray | None] = []
    for i, cid in enumerate(ids):
        keys = [cid, Path(cid).name, Path(cid).stem + ".wav"]
        if i < len(clips):
            keys.append(Path(str(clips[i].path)).name)
        name = next((k for k in keys if k in events), None)
        if name is None:
            out.append(None)
        elif (Path(data_folder) / "events" / name).is_file():
            out.append(np.asarray(ideal_mask(data_folder, name, fcfg, n_frames,
                                             event=events[name]), bool))
        else:
            out.append(np.asarray(event_mask(events[name], fcfg, n_frames), bool))
    return out


def _summary_line(out: Path, aggs: dict[str, dict[str, Any]], counts: dict[str, Any]) -> str:
    keys = ["AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP", "fidelity_top1", "loc_auc"]
    lines = [f"{out / 'metrics.json'} ({counts['n_clips']} clips, {len(aggs)} explainers)"]
    for name, agg in aggs.items():
        shown = " ".join(f"{k}={agg[k]:.3g}" for k in keys if isinstance(agg.get(k), float))
        lines.append(f"  {name}: {shown}")
    return "\n".join(lines)


__all__ = ["evaluate", "contaminate", "draw_partners", "score_clips", "score_explainers",
           "aggregate", "per_clip_csv", "metrics_markdown", "write_examples", "pick_examples",
           "load_explainers", "legacy_metrics", "CONTAMINATIONS", "MIX_WEIGHTS", "METRIC_COMPAT"]
