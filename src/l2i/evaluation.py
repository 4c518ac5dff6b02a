"""``l2i evaluate CKPT``: faithfulness of L2I explanations on the TEST folds (L2I_SPEC §7).

Pipeline: load the ``l2i.ckpt`` bundle, load the test split (never the validation fold:
reference defect §8.6), optionally contaminate it (seeded), then, batched over clips:

- ``p``: the classifier on the input ``|X|``; its prediction ``c`` is the explained class;
- theta's fidelity top-1/3/5 against ``c`` (not the label: defect §8.7);
- relevance, component selection (``relevance_th`` or ``top_k``) and the ratio mask ``M``
  (:mod:`l2i.explain`);
- ``o`` on the masked-in ``M * |X|`` and ``q`` on the masked-out ``(1 - M) * |X|``, both
  through the classifier's own frontend;
- AI, AD, AG, FF, Fid-In, SPS, COMP and the reference-compatible AD (:mod:`l2i.metrics`);
- the paper's component-removal test against removing as many random components;
- on a dataset with ``meta/events.csv`` (``l2i synth``): localisation of the event (ROC-AUC and
  IoU over time-frequency bins) for the mask ``M``, the explanation energy ``M * |X|`` and the
  baseline "input energy" ``|X|``, so the number means something.

Every metric is computed per clip and averaged over all clips (never mean of batch means).
Outputs in ``output_folder``: ``metrics.json``, ``per_clip.csv``, ``metrics.md``,
``examples/NAME.{input.wav,explanation.wav,png,json}`` and ``config.yaml``.

Contaminations (all from the test clips themselves, seeded by ``cfg.seed``; every mixture is
then peak-normalised with ``x / (max|x| + eps)``):

- ``white_noise``: ``s + n`` with white Gaussian noise ``n`` at 0 dB SNR (equal power);
- ``mixtures``: ``0.8 s/||s|| + 0.2 n/||n||`` with ``n`` another TEST clip of a different class
  (the reference's OOD set, REFERENCE_RECIPE §7.3, built there from the validation fold);
- ``noise_folder``: ``s + n`` with ``n`` a clip of the noise corpus ``noise_folder`` at 0 dB.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from l2i import features as feats
from l2i import fileio
from l2i import metrics as M
from l2i.config import (
    DataConfig,
    EvaluateRecipe,
    FeaturesConfig,
    from_dict,
    save_config,
    to_dict,
)
from l2i.errors import ConfigError, DataError

CONTAMINATIONS = ("none", "white_noise", "mixtures", "noise_folder")
KIND = "l2i-evaluate"  # the "kind" key of metrics.json (l2i.report looks for it)
PEAK_EPS = 1e-8
MIX_WEIGHTS = (0.8, 0.2)  # reference OOD mixtures: 0.8 s/|s| + 0.2 n/|n|
FIDELITY_K = (1, 3, 5)
LOC_THRESHOLD = 0.5
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

# (column title, metrics key) of the Markdown table, laid out like the reference's README table
TABLE = [("AI", "AI"), ("AD", "AD"), ("AG", "AG"), ("FF", "FF"), ("Fid-In", "Fid-In"),
         ("SPS", "SPS"), ("COMP", "COMP"), ("Fid@1 %", "fidelity_top1"),
         ("Fid@3 %", "fidelity_top3"), ("Fid@5 %", "fidelity_top5")]
REFERENCE_ROWS = [
    ("L2I, reference (SB README, OOD mixtures, CNN14; its AD/Fid-In bugs)",
     [6.75, 25.93, 1.25, 0.26, 0.01, 0.58, 11.38]),
    ("L-MAC, reference (same conditions)", [61.62, 3.83, 33.48, 0.40, 0.82, 0.93, 9.77]),
]


# --------------------------------------------------------------------------- contamination
def contaminate(wavs: np.ndarray, labels: np.ndarray, kind: str, seed: int,
                noise_folder: str | None = None,
                sample_rate: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A contaminated copy of the test clips (the input is never modified).

    Every contaminated clip is peak-normalised, ``x / (max|x| + eps)`` (the reference divided
    by the signed max, REFERENCE_RECIPE §10.12).

    Args:
        wavs: ``(N, S)`` float32 test clips.
        labels: ``(N,)`` int labels (``mixtures`` draws a partner of another class).
        kind: one of :data:`CONTAMINATIONS`.
        seed: seeds every random draw (same seed -> same set).
        noise_folder: the noise corpus for ``noise_folder``.
        sample_rate: Hz, needed by ``noise_folder``.
    Returns:
        ``(wavs (N, S) float32, partner (N,) int64 or None)``: ``partner[i]`` is the index of
        the clip mixed into clip ``i`` (``mixtures`` only).
    """
    from l2i.noise import NoiseBank, mix_at_snr, white_noise_like

    if kind not in CONTAMINATIONS:
        raise ConfigError(f"contamination must be one of {', '.join(CONTAMINATIONS)}, "
                          f"got {kind!r}")
    x = np.asarray(wavs, dtype=np.float32)
    if kind == "none":
        return x, None
    gen = torch.Generator().manual_seed(int(seed))
    clean = torch.from_numpy(np.ascontiguousarray(x))  # (N, S)
    partner = None
    if kind == "white_noise":
        out = mix_at_snr(clean, white_noise_like(clean, gen), 0.0)  # (N, S)
    elif kind == "mixtures":
        partner = draw_partners(np.asarray(labels), np.random.default_rng(seed))  # (N,)
        w_s, w_n = MIX_WEIGHTS
        mix = w_s * _unit_norm(clean) + w_n * _unit_norm(clean[partner])  # (N, S)
        out = mix / (mix.abs().amax(dim=1, keepdim=True) + PEAK_EPS)
    else:  # noise_folder
        if not noise_folder:
            raise ConfigError("contamination 'noise_folder' needs --noise_folder P (a folder of "
                              "audio files, e.g. WHAM! tr/)")
        bank = NoiseBank(noise_folder, int(sample_rate or 0), x.shape[1], seed)
        out = mix_at_snr(clean, bank.sample(x.shape[0], gen), 0.0)  # (N, S)
    return np.ascontiguousarray(out.numpy(), dtype=np.float32), partner


def draw_partners(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each clip, a random other clip of a different class. ``(N,)`` -> ``(N,)`` indices."""
    labels = np.asarray(labels)
    if np.unique(labels).size < 2:
        raise DataError("contamination 'mixtures' needs test clips of at least two classes "
                        "(each clip is mixed with a clip of another class)")
    u = rng.random(labels.shape[0])  # (N,) one uniform draw per clip
    out = np.empty(labels.shape[0], dtype=np.int64)
    for i, lab in enumerate(labels):  # index bookkeeping only, no signal math
        cands = np.flatnonzero(labels != lab)
        out[i] = cands[int(u[i] * cands.size)]
    return out


def _unit_norm(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Each row divided by its L2 norm. ``(N, S)``."""
    return x / (x.norm(dim=1, keepdim=True) + eps)


# --------------------------------------------------------------------------- batched core
@dataclass
class ClipResults:
    """Per-clip values over the whole test set (numpy, ``(N,)`` unless noted)."""

    columns: dict[str, np.ndarray]
    localisation: dict[str, dict[str, np.ndarray]] | None  # method -> metric -> (N,)
    n_frames: int
    multilabel: dict[str, float] | None = None  # sigmoid classifiers: fid_auprc, fid_agreement


@torch.no_grad()
def score_clips(explainer: Any, wavs: np.ndarray, batch_size: int, seed: int = 0,
                truth_masks: list[np.ndarray | None] | None = None,
                progress: bool = True) -> ClipResults:
    """Run the interpreter and every metric on ``wavs (N, S)``, batched.

    Args:
        explainer: an :class:`l2i.explain.Explainer` (interpreter + selection settings).
        wavs: ``(N, S)`` float32 clips at the model's sample rate.
        batch_size: clips per forward pass.
        seed: seeds the random-component control of the removal test.
        truth_masks: per clip a ``(T, F)`` bool event mask or None (no localisation).
    Returns:
        :class:`ClipResults` with per-clip columns (``p``, ``o``, ``q``, predictions, metric
        values) and, when truth masks are given, per-clip localisation values.
    """
    from tqdm.auto import tqdm

    interp = explainer.interpreter
    fcfg = explainer.features
    device = explainer.device
    gen = torch.Generator().manual_seed(int(seed))
    n = wavs.shape[0]
    cols: dict[str, list[np.ndarray]] = {}
    loc: dict[str, dict[str, list[float]]] = {}
    n_classes = len(explainer.class_names)
    n_frames = 0

    def add(name: str, value: Tensor | np.ndarray) -> None:
        v = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        cols.setdefault(name, []).append(v)

    from l2i.interpreter import class_probs, classifier_activation

    act = classifier_activation(interp.classifier)

    def probs_fn(mag: Tensor, phase: Tensor, length: int) -> Tensor:
        """Re-classify a modified magnitude (with the input's phase): ``(B, C)``."""
        return class_probs(interp.classify(mag, phase, length)[0], act)

    multi: list[tuple[Tensor, Tensor]] = []  # sigmoid: (theta_logits, logits) per batch
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress):
        wav = torch.from_numpy(np.ascontiguousarray(wavs[start:start + batch_size])).to(device)
        spec = feats.stft(wav, fcfg)  # (B, T, F) complex
        mag, phase, length = feats.magnitude(spec), feats.phase(spec), wav.shape[1]
        n_frames = mag.shape[1]
        b = explainer.explain_batch(mag, phase=phase, length=length)  # target: the prediction
        c = b.target  # (B,)
        probs_in = probs_fn(b.mask * mag, phase, length)  # (B, C) masked-in
        probs_out = probs_fn((1.0 - b.mask) * mag, phase, length)  # (B, C) masked-out
        p = b.probs.gather(1, c[:, None])[:, 0]  # (B,)
        o = probs_in.gather(1, c[:, None])[:, 0]
        q = probs_out.gather(1, c[:, None])[:, 0]
        add("prediction", c)
        if act == "sigmoid":
            multi.append((b.theta_logits.cpu(), b.logits.cpu()))
        add("theta_prediction", b.theta_logits.argmax(dim=1))
        add("masked_in_prediction", probs_in.argmax(dim=1))
        add("p", p)
        add("o", o)
        add("q", q)
        add("theta_p", b.theta_probs.gather(1, c[:, None])[:, 0])
        add("n_selected", b.selected.sum(dim=1))
        add("mask_mean", b.mask.mean(dim=(1, 2)))
        for k in FIDELITY_K:
            if k <= n_classes:
                add(f"fid_top{k}", M.fidelity_topk(b.theta_logits, c, k, reduce=False))
        add("AI", M.average_increase(p, o, reduce=False))
        add("AD", M.average_drop(p, o, reduce=False))
        add("AG", M.average_gain(p, o, reduce=False))
        add("FF", M.faithfulness_ff(p, q, reduce=False))
        add("Fid-In", M.input_fidelity(probs_in, b.probs, reduce=False))
        add("AD_sb", M.average_drop_sb_compatible(b.probs, probs_in, c, reduce=False))
        add("SPS", M.sparseness(b.mask.cpu()))
        add("COMP", M.complexity(b.mask.cpu()))
        # component removal (M.component_removal without its two redundant passes): removing
        # the selected components leaves |X| (1 - M_R) with M_R = M, i.e. the masked-out input,
        # so p_relevant = q; the control removes as many random components per clip.
        rnd = M.random_like_selection(b.selected, gen)  # (B, K)
        m_rnd = M.removal_mask(interp.W, b.H, rnd)  # (B, T, F)
        p_rnd = probs_fn(mag * (1.0 - m_rnd), phase, length).gather(1, c[:, None])[:, 0]
        add("p_removed_relevant", q)
        add("p_removed_random", p_rnd)
        add("drop_relevant", p - q)
        add("drop_random", p - p_rnd)
        if truth_masks is not None:
            scores = {"l2i_mask": b.mask, "l2i_energy": b.mask * mag, "input_energy": mag}
            _localise(scores, truth_masks[start:start + mag.shape[0]], loc)
    columns = {k: np.concatenate(v) for k, v in cols.items()}
    loc_arrays = ({m: {k: np.asarray(v, dtype=np.float64) for k, v in d.items()}
                   for m, d in loc.items()} if truth_masks is not None else None)
    ml = None
    if multi:
        from l2i.interpreter import classifier_threshold

        ml = M.multilabel_fidelity(torch.cat([m[0] for m in multi]),
                                   torch.cat([m[1] for m in multi]),
                                   classifier_threshold(interp.classifier))
    return ClipResults(columns=columns, localisation=loc_arrays, n_frames=n_frames,
                       multilabel=ml)


def _localise(scores: dict[str, Tensor], truths: list[np.ndarray | None],
              out: dict[str, dict[str, list[float]]]) -> None:
    """Localisation metrics of each score map ``(B, T, F)`` against the truth masks.

    Per map and clip: ``auc`` (ROC-AUC of the bin scores), ``iou`` (IoU of ``map >= 0.5``, the
    energy maps first divided by their maximum) and ``iou_topn`` (IoU of the ``n`` highest bins
    with the truth, ``n`` = the truth's size: a threshold-free comparison between maps).
    Clips without truth get NaN. The ROC-AUC needs a sort per clip (a loop over the clips of
    the batch).
    """
    for name, s in scores.items():
        s = s.detach().float().cpu()
        d = out.setdefault(name, {"auc": [], "iou": [], "iou_topn": []})
        flat = s.reshape(s.shape[0], -1)  # (B, T*F)
        # the mask is thresholded as is (docs/metrics.md); energy maps relative to their max
        norm = flat if name == "l2i_mask" else flat / flat.amax(dim=1, keepdim=True).clamp_min(
            1e-12)  # (B, T*F) in [0, 1]
        for i, truth in enumerate(truths):
            if truth is None or truth.shape != tuple(s.shape[1:]) or not truth.any():
                d["auc"].append(math.nan)
                d["iou"].append(math.nan)
                d["iou_topn"].append(math.nan)
                continue
            t = torch.from_numpy(np.asarray(truth, dtype=bool).reshape(-1))  # (T*F,)
            d["auc"].append(M.roc_auc(flat[i], t))
            d["iou"].append(M.iou(norm[i] >= LOC_THRESHOLD, t))
            top = torch.zeros_like(t)
            top[flat[i].topk(int(t.sum())).indices] = True
            d["iou_topn"].append(M.iou(top, t))


# --------------------------------------------------------------------------- aggregation
def aggregate(res: ClipResults, labels: np.ndarray) -> dict[str, Any]:
    """Means over all clips (percent where the reference reports percent)."""
    c = res.columns
    out: dict[str, Any] = {}
    for key in ("AI", "AD", "AG", "FF", "Fid-In", "AD_sb"):
        out[key] = _mean(c[key])
    out["SPS"] = _nanmean(c["SPS"])
    out["COMP"] = _nanmean(c["COMP"])
    for k in FIDELITY_K:
        col = c.get(f"fid_top{k}")
        out[f"fidelity_top{k}"] = None if col is None else 100.0 * _mean(col)
    if res.multilabel is not None:  # the paper's multi-label fidelity (percent)
        out.update({k: [100.0 * x for x in v] if isinstance(v, list) else 100.0 * v
                    for k, v in res.multilabel.items()})
    out["accuracy"] = 100.0 * _mean(c["prediction"] == labels)
    out["theta_accuracy"] = 100.0 * _mean(c["theta_prediction"] == labels)
    out["component_removal"] = {
        "drop_relevant": _mean(c["drop_relevant"]),
        "drop_random": _mean(c["drop_random"]),
        "drop_gap": _mean(c["drop_relevant"] - c["drop_random"]),
        "share_relevant_beats_random": _mean(c["drop_relevant"] > c["drop_random"]),
        "mean_removed": _mean(c["n_selected"]),
    }
    if res.localisation is not None:
        loc = {m: {k: _nanmean(v) for k, v in d.items()} for m, d in res.localisation.items()}
        loc["n_clips_with_events"] = int(np.isfinite(
            next(iter(res.localisation.values()))["auc"]).sum())
        out["localisation"] = loc
        out["loc_auc"] = loc["l2i_mask"]["auc"]
        out["loc_iou"] = loc["l2i_mask"]["iou"]
        out["loc_auc_baseline"] = loc["input_energy"]["auc"]
    return out


def _mean(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64))) if np.size(x) else math.nan


def _nanmean(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


# --------------------------------------------------------------------------- command
def evaluate(cfg: EvaluateRecipe) -> str:
    """``l2i evaluate CKPT --data_folder D --test_folds 4 --output_folder O``.

    Returns a short summary (the CLI prints it). Raises L2IError on a missing checkpoint,
    dataset or noise folder, or when the dataset's classes do not match the model's.
    """
    from l2i.data import load_dataset, load_split
    from l2i.explain import Explainer
    from l2i.interpreter import load_interpreter, resolve_device

    _check_ckpt(cfg)
    device = resolve_device(cfg.device)
    interp = load_interpreter(cfg.ckpt, device)
    given = bool(cfg.data_folder)
    cfg = with_checkpoint_defaults(cfg, getattr(interp, "recipe", None) or {})
    _check_data_folder(cfg, given)
    _check(cfg)
    data_cfg = _test_data_config(cfg)
    explainer = Explainer(interp, relevance_th=cfg.relevance_th, top_k=cfg.top_k)
    fcfg: FeaturesConfig = explainer.features
    sr = int(fcfg.sample_rate)

    index = load_dataset(cfg.data_folder, data_cfg, sample_rate=sr, splits=("test",),
                         known_classes=explainer.class_names)
    label_map = _label_map(list(index.class_names), explainer.class_names, cfg.data_folder)
    out = Path(cfg.output_folder)
    out.mkdir(parents=True, exist_ok=True)
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
    res = score_clips(explainer, wavs, cfg.batch_size, cfg.seed, truths)
    agg = aggregate(res, labels)
    names = explainer.class_names
    counts = {
        "n_clips": int(len(labels)), "n_classes": len(names),
        "per_class": {names[k]: int((labels == k).sum()) for k in range(len(names))
                      if (labels == k).any()},
        "mean_selected": float(res.columns["n_selected"].mean()),
        "empty_masks": int((res.columns["n_selected"] == 0).sum()),
        "n_frames": res.n_frames, "clip_seconds": wavs.shape[1] / sr,
    }
    settings = {
        "ckpt": str(cfg.ckpt), "data_folder": str(cfg.data_folder),
        "test_folds": list(data_cfg.test_folds), "contamination": cfg.contamination,
        "noise_folder": cfg.noise_folder, "seed": cfg.seed,
        "relevance_th": None if cfg.top_k else explainer.relevance_th, "top_k": cfg.top_k,
        "batch_size": cfg.batch_size, "device": str(device), "class_names": names,
        "features": to_dict(fcfg), "mask_domain": "M * |X| (linear magnitude)",
    }
    report = {"kind": KIND, "version": 1, "metrics": agg, "counts": counts,
              "settings": settings}
    _write_text(out / "metrics.json", json.dumps(_json_safe(report), indent=2) + "\n")
    _write_text(out / "per_clip.csv", per_clip_csv(ids, labels, names, res, partner))
    _write_text(out / "metrics.md", metrics_markdown(agg, settings, counts))
    if cfg.n_examples > 0:
        write_examples(explainer, wavs, clean if cfg.contamination != "none" else None, labels,
                       ids, res, out / "examples", cfg.n_examples,
                       sources=[str(c.path) for c in _test_clips(index)])
    save_config(cfg, out / "config.yaml")
    return _summary_line(out, agg, counts)


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
        raise ConfigError(f"checkpoint {cfg.ckpt} not found: give the l2i.ckpt written by "
                          "'l2i train'")


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


# --------------------------------------------------------------------------- outputs
PER_CLIP_FIRST = ["id", "label", "label_name", "prediction", "prediction_name",
                  "theta_prediction", "masked_in_prediction", "p", "o", "q", "theta_p",
                  "n_selected"]


def per_clip_csv(ids: list[str], labels: np.ndarray, names: list[str], res: ClipResults,
                 partner: np.ndarray | None = None) -> str:
    """One row per clip: id, label, predictions, p, o, q, every per-clip metric."""
    c = res.columns
    cols: dict[str, list[Any]] = {
        "id": ids, "label": labels.tolist(), "label_name": [names[k] for k in labels],
        "prediction_name": [names[k] for k in c["prediction"]]}
    if partner is not None:
        cols["mixed_with"] = [ids[j] for j in partner]
    for k, v in c.items():
        cols[k] = v.tolist()
    if res.localisation is not None:
        for m, d in res.localisation.items():
            for k, v in d.items():
                cols[f"loc_{m}_{k}"] = v.tolist()
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


def metrics_markdown(agg: dict[str, Any], settings: dict[str, Any],
                     counts: dict[str, Any]) -> str:
    """The reference-style table (``| Method | AI | AD | AG | FF | Fid-In | SPS | COMP |``,
    plus theta's fidelity) and the other figures, as Markdown."""
    head = "| Method | " + " | ".join(label for label, _ in TABLE) + " |"
    sep = "|---" * (len(TABLE) + 1) + "|"
    ours = "| L2I (this run) | " + " | ".join(_md(agg.get(key)) for _, key in TABLE) + " |"
    blanks = " | –" * (len(TABLE) - 7)
    refs = [f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + blanks + " |"
            for name, vals in REFERENCE_ROWS]
    sel = (f"top {settings['top_k']} components" if settings.get("top_k")
           else f"relevance > {settings.get('relevance_th')}")
    lines = [
        f"# L2I evaluation: `{settings['ckpt']}`", "",
        f"Data `{settings['data_folder']}`, test folds {settings['test_folds']}, "
        f"{counts['n_clips']} clips, contamination **{settings['contamination']}**, "
        f"selection {sel} (mean {counts['mean_selected']:.1f} components, "
        f"{counts['empty_masks']} empty masks), seed {settings['seed']}.", "",
        head, sep, ours, *refs, "",
        "AI, AD, AG and fidelity in %; FF, Fid-In, SPS as fractions; COMP in nats. AD is on "
        f"plain probabilities; the reference-compatible AD (double softmax) is "
        f"{_md(agg.get('AD_sb'))}. Reference rows: SpeechBrain's README, with its metric bugs "
        "(L2I_SPEC §8), for orientation only.", "",
        f"- classifier accuracy on these clips: {_md(agg.get('accuracy'))} %; theta accuracy: "
        f"{_md(agg.get('theta_accuracy'))} %",
    ]
    rem = agg.get("component_removal") or {}
    if rem:
        lines.append(
            f"- component removal (paper): probability drop {_md(rem.get('drop_relevant'), 3)} "
            f"removing the relevant components vs {_md(rem.get('drop_random'), 3)} removing as "
            f"many random ones (relevant > random on "
            f"{_md(100 * (rem.get('share_relevant_beats_random') or 0))} % of clips)")
    loc = agg.get("localisation")
    if loc:
        lines += ["", f"Localisation against the true events ({loc['n_clips_with_events']} "
                  "clips):", "", "| score map | ROC-AUC | IoU (≥ 0.5 of max) | IoU (top-n) |",
                  "|---|---|---|---|"]
        for m, d in loc.items():
            if isinstance(d, dict):
                lines.append(f"| {m} | {_md(d.get('auc'), 3)} | {_md(d.get('iou'), 3)} | "
                             f"{_md(d.get('iou_topn'), 3)} |")
    return "\n".join(lines) + "\n"


def _md(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def write_examples(explainer: Any, wavs: np.ndarray, clean: np.ndarray | None,
                   labels: np.ndarray, ids: list[str], res: ClipResults, folder: Path,
                   n_examples: int, sources: list[str] | None = None) -> list[str]:
    """``NAME.input.wav``, ``NAME.explanation.wav``, ``NAME.png``, ``NAME.json`` and
    ``NAME.components/k{K}.wav`` (each selected component alone) for ``n_examples`` clips:
    the first clip of each class in turn, then the next ones."""
    from l2i.audio import write_wav
    from l2i.explain import write_components, write_explanation

    chosen = pick_examples(labels, n_examples)
    if not chosen:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    sr = explainer.sample_rate
    expls = explainer.explain(wavs[chosen], sr, batch=True)  # (B, S): a batch of clips
    names = explainer.class_names
    c = res.columns
    written = []
    used: set[str] = set()
    for i, expl in zip(chosen, expls):
        name = base = _safe_name(ids[i])
        k = 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        write_wav(folder / f"{name}.input.wav", wavs[i], sr)
        if clean is not None:
            write_wav(folder / f"{name}.clean.wav", clean[i], sr)
        source = sources[i] if sources and i < len(sources) else ids[i]
        paths = write_explanation(expl, folder, name, source=source)
        info = json.loads(paths["json"].read_text())
        info.update({"id": ids[i], "label": int(labels[i]), "label_name": names[labels[i]],
                     "input_wav": f"{name}.input.wav",
                     "p": float(c["p"][i]), "o": float(c["o"][i]), "q": float(c["q"][i]),
                     "components": write_components(expl, folder, name)})  # k{K}.wav each
        _write_text(paths["json"], json.dumps(_json_safe(info), indent=2) + "\n")
        written.append(name)
    return written


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


def _safe_name(cid: str) -> str:
    """A file name from a clip id (its path relative to the dataset root): ``dog/01.wav`` ->
    ``dog_01`` (the folder is kept so ids of a folder-per-class dataset stay distinct)."""
    p = Path(cid)
    stem = p.with_suffix("").as_posix() if p.suffix.lower() in AUDIO_SUFFIXES else p.as_posix()
    return re.sub(r"[^A-Za-z0-9.-]+", "_", stem).strip("._") or "clip"


def _summary_line(out: Path, agg: dict[str, Any], counts: dict[str, Any]) -> str:
    keys = ["AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP", "fidelity_top1", "loc_auc"]
    shown = " ".join(f"{k}={agg[k]:.3g}" for k in keys if isinstance(agg.get(k), float))
    return f"{out / 'metrics.json'} ({counts['n_clips']} clips): {shown}"


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_text(path: Path, text: str) -> None:
    fileio.write_text(path, text)


__all__ = ["evaluate", "contaminate", "draw_partners", "score_clips",
           "aggregate", "per_clip_csv", "metrics_markdown", "write_examples", "pick_examples",
           "CONTAMINATIONS"]
