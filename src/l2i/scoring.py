"""Scoring explainers on clips: the ONE place masks are applied, re-classified and measured.

For every batch of clips the classifier runs once on the input ``|X|``: its prediction ``c``
is the explained class and ``p`` its probability. Then, for every explainer (the same clips,
the same classifier, the same code), its mask ``M (B, T, F)`` gives:

- ``o`` on the masked-in input ``M * |X|`` and ``q`` on the masked-out ``(1 - M) * |X|``, both
  re-classified through :func:`l2i.explainers.reclassify` (phase and length passed along);
- AI, AD, AG, FF, Fid-In, SPS, COMP, the mask's mean and SpeechBrain's double-softmax AD
  (:mod:`l2i.metrics`);
- where the explainer has NMF components (L2I): theta's fidelity top-1/3/5 against ``c`` and
  the paper's component-removal test against removing as many random components;
- with ground-truth event masks (synthetic data): localisation of the mask ``M`` and of the
  explanation energy ``M * |X|`` (ROC-AUC, IoU at 0.5 of the max, IoU of the top-n bins),
  next to the input energy ``|X|``;
- the explainer's time per clip (milliseconds, the ``attribute`` call only).

Every metric is kept per clip and averaged over all clips (never mean of batch means).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from l2i import metrics as M
from l2i.explainers.base import (
    MaskExplainer,
    SpecBatch,
    as_spec,
    class_probs,
    classifier_threshold,
    reclassify,
)

FIDELITY_K = (1, 3, 5)
LOC_THRESHOLD = 0.5
INPUT_ENERGY = "input_energy"


@dataclass
class ClipResults:
    """Per-clip values of one explainer over the whole test set (numpy, ``(N,)``)."""

    columns: dict[str, np.ndarray]
    localisation: dict[str, dict[str, np.ndarray]] | None  # score map -> metric -> (N,)
    n_frames: int
    ms_per_clip: float | None = None  # the explainer's own time (not a per-clip column: the
    # per-clip table of a seeded run stays reproducible)
    multilabel: dict[str, Any] | None = None  # sigmoid classifiers: fid_auprc, fid_agreement


class _Columns:
    """Per-clip values accumulated batch by batch."""

    def __init__(self) -> None:
        self.cols: dict[str, list[np.ndarray]] = {}
        self.loc: dict[str, dict[str, list[float]]] = {}

    def add(self, name: str, value: Tensor | np.ndarray) -> None:
        v = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        self.cols.setdefault(name, []).append(v)

    def add_all(self, values: dict[str, Tensor]) -> None:
        for k, v in values.items():
            self.add(k, v)

    def result(self, n_frames: int, with_loc: bool) -> ClipResults:
        columns = {k: np.concatenate(v) for k, v in self.cols.items()}
        loc = ({m: {k: np.asarray(v, dtype=np.float64) for k, v in d.items()}
                for m, d in self.loc.items()} if with_loc else None)
        return ClipResults(columns=columns, localisation=loc, n_frames=n_frames)


# --------------------------------------------------------------------------- per batch
def _at(probs: Tensor, c: Tensor) -> Tensor:
    return probs.gather(1, c[:, None])[:, 0]  # (B,)


def mask_scores(classifier: Any, spec: SpecBatch, mask: Tensor, target: Tensor,
                probs: Tensor, activation: str = "softmax") -> dict[str, Tensor]:
    """Per-clip ``(B,)`` scores of ``mask (B, T, F)`` for classes ``target (B,)``.

    ``probs (B, C)``: the classifier's probabilities on the input. Returns ``o``, ``q``,
    ``masked_in_prediction``, ``AI``, ``AD``, ``AG``, ``FF``, ``Fid-In``, ``AD_sb``, ``SPS``,
    ``COMP``, ``mask_mean`` and ``probs_in`` ``(B, C)``.
    """
    with torch.no_grad():
        probs_in = class_probs(reclassify(classifier, mask * spec.mag, spec.phase,
                                          spec.length)[0], activation)  # (B, C)
        probs_out = class_probs(reclassify(classifier, (1.0 - mask) * spec.mag, spec.phase,
                                           spec.length)[0], activation)  # (B, C)
    p, o, q = _at(probs, target), _at(probs_in, target), _at(probs_out, target)
    m_cpu = mask.detach().cpu()
    return {
        "p": p, "o": o, "q": q, "masked_in_prediction": probs_in.argmax(dim=1),
        "AI": M.average_increase(p, o, reduce=False), "AD": M.average_drop(p, o, reduce=False),
        "AG": M.average_gain(p, o, reduce=False), "FF": M.faithfulness_ff(p, q, reduce=False),
        "Fid-In": M.input_fidelity(probs_in, probs, reduce=False),
        "AD_sb": M.average_drop_sb_compatible(probs, probs_in, target, reduce=False),
        "SPS": M.sparseness(m_cpu), "COMP": M.complexity(m_cpu),
        "mask_mean": mask.mean(dim=(1, 2)),
    }


def component_scores(classifier: Any, spec: SpecBatch, extras: dict[str, Any],
                     target: Tensor, probs: Tensor, q: Tensor, generator: torch.Generator,
                     activation: str = "softmax") -> dict[str, Tensor]:
    """L2I's extras: theta's fidelity and the component-removal test, per clip ``(B,)``.

    Removing the selected components leaves ``|X| (1 - M_R)`` with ``M_R = M``, the
    masked-out input, so ``p_removed_relevant = q``; the control removes as many random
    components per clip.
    """
    out: dict[str, Tensor] = {}
    theta = extras["theta_logits"]
    out["theta_prediction"] = theta.argmax(dim=1)
    out["theta_p"] = _at(theta.float().softmax(dim=1), target)
    for k in FIDELITY_K:
        if k <= theta.shape[1]:
            out[f"fid_top{k}"] = M.fidelity_topk(theta, target, k, reduce=False)
    sel = extras["selected"]
    out["n_selected"] = sel.sum(dim=1)
    rnd = M.random_like_selection(sel, generator)  # (B, K)
    m_rnd = M.removal_mask(extras["W"], extras["H"], rnd)  # (B, T, F)
    with torch.no_grad():
        p_rnd = _at(class_probs(reclassify(classifier, spec.mag * (1.0 - m_rnd), spec.phase,
                                           spec.length)[0], activation), target)
    p = _at(probs, target)
    out.update({"p_removed_relevant": q, "p_removed_random": p_rnd, "drop_relevant": p - q,
                "drop_random": p - p_rnd})
    return out


def localise(scores: dict[str, Tensor], truths: list[np.ndarray | None],
             out: dict[str, dict[str, list[float]]], as_is: tuple[str, ...] = ("mask",)) -> None:
    """Localisation of each score map ``(B, T, F)`` against the truth masks, appended to
    ``out[map][metric]``.

    Per map and clip: ``auc`` (ROC-AUC of the bin scores), ``iou`` (IoU of ``map >= 0.5``;
    maps not in ``as_is`` are first divided by their maximum) and ``iou_topn`` (IoU of the
    ``n`` highest bins with the truth, ``n`` = the truth's size: threshold-free). Clips
    without truth get NaN. The ROC-AUC needs a sort per clip (a loop over the batch).
    """
    for name, s in scores.items():
        s = s.detach().float().cpu()
        d = out.setdefault(name, {"auc": [], "iou": [], "iou_topn": []})
        flat = s.reshape(s.shape[0], -1)  # (B, T*F)
        norm = flat if name in as_is else flat / flat.amax(dim=1, keepdim=True).clamp_min(1e-12)
        for i, truth in enumerate(truths):
            if truth is None or truth.shape != tuple(s.shape[1:]) or not truth.any():
                for k in ("auc", "iou", "iou_topn"):
                    d[k].append(math.nan)
                continue
            t = torch.from_numpy(np.asarray(truth, dtype=bool).reshape(-1))  # (T*F,)
            d["auc"].append(M.roc_auc(flat[i], t))
            d["iou"].append(M.iou(norm[i] >= LOC_THRESHOLD, t))
            top = torch.zeros_like(t)
            top[flat[i].topk(int(t.sum())).indices] = True
            d["iou_topn"].append(M.iou(top, t))


# --------------------------------------------------------------------------- whole set
def reference_mean(explainers: list[MaskExplainer], masks: dict[str, Tensor]) -> Tensor | None:
    """Per-clip mean ``(B,)`` of the first explainer that needs no reference (the random
    baseline's target mean), or None."""
    for ex in explainers:
        if not ex.needs_reference and ex.name in masks:
            return masks[ex.name].mean(dim=(1, 2))
    return None


def score_explainers(explainers: list[MaskExplainer], wavs: np.ndarray, batch_size: int,
                     seed: int = 0, truth_masks: list[np.ndarray | None] | None = None,
                     progress: bool = True) -> dict[str, ClipResults]:
    """Every explainer on ``wavs (N, S)``, batched; the first explainer's classifier scores
    every mask. Returns ``{explainer name: ClipResults}`` in the explainers' order."""
    from tqdm.auto import tqdm

    if not explainers:
        raise ValueError("score_explainers needs at least one explainer")
    first = explainers[0]
    clf, fcfg, device, act = first.classifier, first.features, first.device, first.activation
    gen = torch.Generator().manual_seed(int(seed))
    acc = {ex.name: _Columns() for ex in explainers}
    shared_loc: dict[str, dict[str, list[float]]] = {}
    multi: dict[str, list[tuple[Tensor, Tensor]]] = {}  # sigmoid: (theta_logits, logits)
    seconds = dict.fromkeys(acc, 0.0)
    n_frames = 0
    for start in tqdm(range(0, wavs.shape[0], batch_size), desc="evaluate", unit="batch",
                      disable=not progress):
        wav = torch.from_numpy(np.ascontiguousarray(wavs[start:start + batch_size]))
        spec = as_spec(wav.to(device), fcfg, device)
        n_frames = spec.mag.shape[1]
        with torch.no_grad():
            logits = reclassify(clf, spec.mag, spec.phase, spec.length)[0]  # (B, C)
            probs = class_probs(logits, act)
        c = probs.argmax(dim=1)  # (B,) the explained class
        masks: dict[str, Tensor] = {}
        truths = None if truth_masks is None else truth_masks[start:start + wav.shape[0]]
        for ex in explainers:
            kw = {"mean": reference_mean(explainers, masks)} if ex.needs_reference else {}
            t0 = time.perf_counter()
            a = ex.attribute(spec, target=c, **kw)
            seconds[ex.name] += time.perf_counter() - t0
            masks[ex.name] = a.mask
            cols = acc[ex.name]
            cols.add("prediction", c)
            scores = mask_scores(clf, spec, a.mask, c, probs, act)
            cols.add_all(scores)
            if "selected" in a.extras:
                cols.add_all(component_scores(clf, spec, a.extras, c, probs, scores["q"], gen,
                                              act))
            if act == "sigmoid" and "theta_logits" in a.extras:  # the paper's multi-label fidelity
                multi.setdefault(ex.name, []).append(
                    (a.extras["theta_logits"].detach().cpu(), logits.detach().cpu()))
            if truths is not None:
                localise({"mask": a.mask, "energy": a.mask * spec.mag}, truths, cols.loc)
        if truths is not None:
            localise({INPUT_ENERGY: spec.mag}, truths, shared_loc)
    return {ex.name: _finish(acc[ex.name], shared_loc, n_frames, truth_masks is not None,
                             1000.0 * seconds[ex.name] / max(1, wavs.shape[0]),
                             multi.get(ex.name), clf) for ex in explainers}


def _finish(cols: _Columns, shared_loc: dict[str, dict[str, list[float]]], n_frames: int,
            localised: bool, ms_per_clip: float, multi: list[tuple[Tensor, Tensor]] | None,
            clf: Any) -> ClipResults:
    """One explainer's :class:`ClipResults` from its columns (plus the shared localisation
    scores of the input energy and, for a sigmoid classifier, the multi-label fidelity of
    ``(theta_logits, logits)`` pairs)."""
    cols.loc.update(shared_loc)
    res = cols.result(n_frames, localised)
    res.ms_per_clip = ms_per_clip
    if multi:
        res.multilabel = M.multilabel_fidelity(torch.cat([p[0] for p in multi]),
                                               torch.cat([p[1] for p in multi]),
                                               classifier_threshold(clf))
    return res


# --------------------------------------------------------------------------- aggregation
def aggregate(res: ClipResults, labels: np.ndarray) -> dict[str, Any]:
    """Means over all clips (percent where the reference reports percent); the keys an
    explainer lacks (fidelity, component removal, localisation) are left out."""
    c = res.columns
    out: dict[str, Any] = {k: _mean(c[k]) for k in ("AI", "AD", "AG", "FF", "Fid-In", "AD_sb")}
    out["SPS"] = _nanmean(c["SPS"])
    out["COMP"] = _nanmean(c["COMP"])
    out["mask_mean"] = _mean(c["mask_mean"])
    if res.ms_per_clip is not None:
        out["ms_per_clip"] = float(res.ms_per_clip)
    out["accuracy"] = 100.0 * _mean(c["prediction"] == labels)
    if "theta_prediction" in c:
        for k in FIDELITY_K:
            col = c.get(f"fid_top{k}")
            out[f"fidelity_top{k}"] = None if col is None else 100.0 * _mean(col)
        out["theta_accuracy"] = 100.0 * _mean(c["theta_prediction"] == labels)
        if res.multilabel is not None:  # the paper's multi-label fidelity (percent)
            out.update({k: [100.0 * x for x in v] if isinstance(v, list) else 100.0 * v
                        for k, v in res.multilabel.items()})
        out["component_removal"] = {
            "drop_relevant": _mean(c["drop_relevant"]),
            "drop_random": _mean(c["drop_random"]),
            "drop_gap": _mean(c["drop_relevant"] - c["drop_random"]),
            "share_relevant_beats_random": _mean(c["drop_relevant"] > c["drop_random"]),
            "mean_removed": _mean(c["n_selected"]),
        }
    if res.localisation is not None:
        loc: dict[str, Any] = {m: {k: _nanmean(v) for k, v in d.items()}
                               for m, d in res.localisation.items()}
        loc["n_clips_with_events"] = int(np.isfinite(res.localisation["mask"]["auc"]).sum())
        out["localisation"] = loc
        out["loc_auc"] = loc["mask"]["auc"]
        out["loc_iou"] = loc["mask"]["iou"]
        out["loc_auc_baseline"] = loc[INPUT_ENERGY]["auc"]
    return out


def _mean(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64))) if np.size(x) else math.nan


def _nanmean(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


__all__ = ["ClipResults", "mask_scores", "component_scores", "localise", "score_explainers",
           "aggregate", "reference_mean", "FIDELITY_K", "LOC_THRESHOLD", "INPUT_ENERGY"]
