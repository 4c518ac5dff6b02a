"""Faithfulness, sparsity and localisation metrics for explanations (L2I_SPEC §7), plain functions.

Notation (per clip ``n``): ``c`` is the classifier's *predicted* class on the input, ``p`` its
probability for ``c`` on the input ``|X|``, ``o`` on the masked-in input ``M * |X|`` and ``q`` on
the masked-out input ``(1 - M) * |X|``. Probabilities are plain softmax outputs in [0, 1].

Every function takes torch tensors or numpy arrays (converted with ``torch.as_tensor``) and is
batched over the first axis. The averaged metrics take ``reduce``: ``True`` gives the mean over
clips as a float, ``False`` the per-clip values ``(N,)`` so a caller can average over all clips
of a test set (never mean-of-batch-means, reference defect §10.14) or write a per-clip table.

Defects of the reference that these definitions avoid (L2I_SPEC §8): AD on plain probabilities
(no double softmax; :func:`average_drop_sb_compatible` reproduces the reference for comparison),
Fid-In against the classifier's prediction (not a label tensor), per-clip SPS/COMP with per-clip
normalisation (not a batch-global max) and empty masks reported as NaN (not silently dropped).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

ArrayLike = Any  # torch.Tensor | numpy.ndarray | sequence of numbers


def _t(x: ArrayLike, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """``x`` as a tensor (float64 by default, for exact metric arithmetic). A tensor on a
    device without float64 (MPS) is moved to the CPU first: every input of a metric goes
    through here, so they all meet on one device."""
    t = torch.as_tensor(x)
    if t.device.type == "mps":
        t = t.cpu()
    return t.to(dtype) if dtype is not None else t


def _reduce(values: Tensor, reduce: bool) -> float | Tensor:
    return float(values.mean()) if reduce else values


def _check_same_shape(name: str, **arrays: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{name}: inputs must have the same shape, got {shapes}")


# --------------------------------------------------------------------------- fidelity
def fidelity_topk(theta_logits: ArrayLike, classifier_pred: ArrayLike, k: int = 1,
                  reduce: bool = True) -> float | Tensor:
    """Share of clips whose classifier prediction is among theta's ``k`` highest logits.

    ``fid@k = mean_n 1[pred_n in topk(theta_logits_n, k)]``.

    Args:
        theta_logits: ``(N, C)`` theta's class scores (logits or probabilities; only the order
            matters).
        classifier_pred: ``(N,)`` int, the classifier's predicted class (argmax of its logits),
            NOT the ground-truth label (reference defect §8.7).
        k: 1 <= k <= C.
    Returns:
        a float in [0, 1], or ``(N,)`` 0/1 values with ``reduce=False``.
    """
    logits = _t(theta_logits)
    pred = _t(classifier_pred, torch.long)
    if logits.dim() != 2 or pred.shape != logits.shape[:1]:
        raise ValueError(f"fidelity_topk: expected theta_logits (N, C) and classifier_pred (N,), "
                         f"got {tuple(logits.shape)} and {tuple(pred.shape)}")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"fidelity_topk: k must be in 1..{logits.shape[1]}, got {k}")
    top = logits.topk(k, dim=1).indices  # (N, k)
    hit = (top == pred[:, None]).any(dim=1).to(torch.float64)  # (N,)
    return _reduce(hit, reduce)


# --------------------------------------------------------------------------- AI / AD / AG / FF
def average_increase(p: ArrayLike, o: ArrayLike, reduce: bool = True) -> float | Tensor:
    """Average Increase: ``AI = 100 * mean(o > p)`` (percent).

    Args:
        p: ``(N,)`` probability of the predicted class on the input.
        o: ``(N,)`` probability of the same class on the masked-in input.
    """
    p, o = _t(p), _t(o)
    _check_same_shape("average_increase", p=p, o=o)
    return _reduce(100.0 * (o > p).to(torch.float64), reduce)


def average_drop(p: ArrayLike, o: ArrayLike, reduce: bool = True,
                 eps: float = 1e-10) -> float | Tensor:
    """Average Drop on plain probabilities: ``AD = 100 * mean(max(0, p - o) / p)`` (percent).

    Lower is better. ``eps`` guards ``p = 0`` (cannot happen for the predicted class of a
    softmax, whose probability is >= 1/C). Unlike the reference, ``p`` and ``o`` are NOT passed
    through a second softmax (L2I_SPEC §8.1).

    Args:
        p, o: ``(N,)`` as in :func:`average_increase`.
    """
    p, o = _t(p), _t(o)
    _check_same_shape("average_drop", p=p, o=o)
    return _reduce(100.0 * torch.clamp(p - o, min=0.0) / (p + eps), reduce)


def average_gain(p: ArrayLike, o: ArrayLike, reduce: bool = True,
                 eps: float = 1e-10) -> float | Tensor:
    """Average Gain: ``AG = 100 * mean(max(0, o - p) / (1 - p))`` (percent); higher is better.

    Args:
        p, o: ``(N,)`` as in :func:`average_increase`. ``eps`` guards ``p = 1``.
    """
    p, o = _t(p), _t(o)
    _check_same_shape("average_gain", p=p, o=o)
    return _reduce(100.0 * torch.clamp(o - p, min=0.0) / (1.0 - p + eps), reduce)


def average_drop_sb_compatible(probs: ArrayLike, probs_in: ArrayLike, target: ArrayLike,
                               reduce: bool = True, eps: float = 1e-10) -> float | Tensor:
    """The reference's (SpeechBrain's) AD, with its double softmax -- for comparison ONLY.

    ``AD_sb = 100 * mean(max(0, p'_c - o'_c) / (p'_c + eps))`` with ``p' = softmax(probs)``,
    ``o' = softmax(probs_in)``: the softmax is applied to vectors that already are
    probabilities, which squeezes every value into ``[1/(C-1+e), e/(C-1+e)]`` and makes the
    number incomparable with the textbook AD (:func:`average_drop`). Use only to compare with
    numbers published by the reference recipe (L2I_SPEC §7, REFERENCE_RECIPE §7.1).

    Args:
        probs: ``(N, C)`` classifier probabilities on the input.
        probs_in: ``(N, C)`` classifier probabilities on the masked-in input.
        target: ``(N,)`` int, the predicted class ``c``.
    """
    probs, probs_in = _t(probs), _t(probs_in)
    c = _t(target, torch.long)
    _check_same_shape("average_drop_sb_compatible", probs=probs, probs_in=probs_in)
    pp = probs.softmax(dim=1).gather(1, c[:, None])[:, 0]  # (N,)
    oo = probs_in.softmax(dim=1).gather(1, c[:, None])[:, 0]  # (N,)
    return _reduce(100.0 * torch.clamp(pp - oo, min=0.0) / (pp + eps), reduce)


def faithfulness_ff(p: ArrayLike, q: ArrayLike, reduce: bool = True) -> float | Tensor:
    """Faithfulness (FF): ``mean(p - q)``, the probability lost when the explanation is masked out.

    Args:
        p: ``(N,)`` probability of the predicted class on the input.
        q: ``(N,)`` probability of the same class on the masked-out input ``(1 - M) * |X|``.
    Returns:
        a float in [-1, 1] (higher = the explanation carried the evidence), or ``(N,)``.
    """
    p, q = _t(p), _t(q)
    _check_same_shape("faithfulness_ff", p=p, q=q)
    return _reduce(p - q, reduce)


def input_fidelity(logits_in: ArrayLike, logits_orig: ArrayLike,
                   reduce: bool = True) -> float | Tensor:
    """Fid-In: ``mean(argmax f(M * X) == argmax f(X))``, agreement with the classifier's prediction.

    Compared with the classifier's own prediction on the input, not with labels (the reference
    compared with ``argmax`` over a ``(B, 1)`` label tensor, always 0: L2I_SPEC §8.2).

    Args:
        logits_in: ``(N, C)`` classifier scores on the masked-in input (logits or probabilities).
        logits_orig: ``(N, C)`` classifier scores on the input.
    Returns:
        a float in [0, 1], or ``(N,)`` 0/1 values.
    """
    a, b = _t(logits_in), _t(logits_orig)
    _check_same_shape("input_fidelity", logits_in=a, logits_orig=b)
    if a.dim() != 2:
        raise ValueError(f"input_fidelity: expected (N, C) scores, got {tuple(a.shape)}")
    return _reduce((a.argmax(dim=1) == b.argmax(dim=1)).to(torch.float64), reduce)


# --------------------------------------------------------------------------- SPS / COMP
def _flat_abs(mask: ArrayLike) -> Tensor:
    m = _t(mask)
    if m.dim() < 2:
        raise ValueError(f"expected a batch of masks (N, ...), got shape {tuple(m.shape)}; "
                         "add a leading batch axis for a single mask")
    return m.reshape(m.shape[0], -1).abs()  # (N, D)


def sparseness(mask: ArrayLike, eps: float = 1e-7) -> Tensor:
    """SPS: quantus 0.5.3 ``Sparseness`` (Gini index of ``|M|``) of each clip, per clip.

    As quantus computes it for one mask (B=1): ``a = |M| / max |M| + eps`` flattened (``eps =
    1e-7``, added after the max-normalisation), sorted ascending ``a_(1) <= ... <= a_(n)``::

        Gini = sum_i (2 i - n - 1) a_(i) / (n * sum_i a_(i)),   i = 1..n

    Equal to quantus within 1e-12 for one mask. Each clip is divided by its own max; quantus
    called on a batch divides by the max of the whole batch, which couples the clips (the
    reference's defect), so a batch here scores as quantus does one mask at a time. A one-bin
    mask of ``n`` bins scores ``(n - 1) / (n (1 + n eps))`` (0.978364 for 431 x 513), not
    ``(n - 1) / n``; in general the epsilon scales the plain Gini index by
    ``1 / (1 + eps / mean(|M| / max |M|))`` (``sum_i (2 i - n - 1) = 0``). A constant non-zero
    mask scores 0 (quantus refuses it: "uniformly distributed"). An all-zero mask has no
    distribution: NaN (quantus refuses it; the reference skipped such batches in silence).

    Args:
        mask: ``(N, ...)`` any trailing shape, e.g. ``(N, T, F)``.
        eps: quantus's constant; 0 gives the plain Gini index of ``|M|``.
    Returns:
        ``(N,)`` float64 Gini indices in [0, 1) (NaN for all-zero masks).
    """
    a = _flat_abs(mask)  # (N, D)
    peak = a.max(dim=1, keepdim=True).values  # (N, 1)
    a = (a / torch.where(peak > 0, peak, torch.ones_like(peak)) + eps).sort(dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=a.dtype)  # (D,)
    gini = ((2 * i - n - 1) * a).sum(dim=1) / (n * a.sum(dim=1))  # (N,)
    return torch.where(peak[:, 0] > 0, gini, torch.full_like(gini, math.nan))


def complexity(mask: ArrayLike) -> Tensor:
    """COMP: quantus 0.5.3 ``Complexity``, Shannon entropy (nats) of ``|M| / sum |M|``, per clip.

    ``COMP = -sum_i P_i ln P_i`` with ``P = |M| / sum |M|`` and ``0 ln 0 = 0``
    (``scipy.stats.entropy`` in quantus, within 1e-12 of it; quantus's max-normalisation does
    not change ``P``, so no epsilon enters). ``ln(n)`` for a constant non-zero mask over ``n``
    bins (quantus refuses constant masks), 0 for a one-bin mask. Lower = a more concentrated
    explanation. A clip whose mask is all zero: NaN (quantus refuses it; report how many, do
    not drop silently).

    Args:
        mask: ``(N, ...)``.
    Returns:
        ``(N,)`` float64 entropies in nats.
    """
    a = _flat_abs(mask)  # (N, D)
    total = a.sum(dim=1, keepdim=True)  # (N, 1)
    prob = a / torch.where(total > 0, total, torch.ones_like(total))
    ent = -torch.special.xlogy(prob, prob).sum(dim=1)  # (N,)
    return torch.where(total[:, 0] > 0, ent, torch.full_like(ent, math.nan))


# --------------------------------------------------------------------------- component removal
def removal_mask(W: Tensor, H: Tensor, removed: Tensor, eps: float = 1e-10) -> Tensor:
    """``M_R = (W_R H_R) / (W H + eps)``: the share of each bin explained by components R.

    The one definition of L2I's ratio mask (``l2i.explain.ratio_mask`` calls it). ``W`` and
    ``H`` should be non-negative (NMF); negative entries are clamped to 0 so the mask stays in
    [0, 1]. An empty ``removed`` gives an all-zero mask.

    Args:
        W: ``(F, K)`` the dictionary; H: ``(N, K, T)`` activations; removed: ``(N, K)`` bool
            (or 0/1 weights).
    Returns:
        ``(N, T, F)`` in [0, 1].
    """
    if W.dim() != 2 or H.dim() != 3 or H.shape[1] != W.shape[1]:
        raise ValueError(f"ratio_mask (removal_mask): expected W (F, K) and H (B, K, T), got "
                         f"{tuple(W.shape)} and {tuple(H.shape)}")
    W = W.to(H.dtype).clamp_min(0.0)
    H = H.clamp_min(0.0)
    sel = torch.as_tensor(removed, device=H.device).to(H.dtype)  # (B, K)
    full = torch.einsum("fk,bkt->btf", W, H)  # (B, T, F)
    part = torch.einsum("fk,bkt->btf", W, H * sel[:, :, None])  # (B, T, F)
    return (part / (full + eps)).clamp(0.0, 1.0)


def random_like_selection(selected: Tensor, generator: torch.Generator | None = None,
                          exclude: bool = False) -> Tensor:
    """For each row, a random set of components of the same size as the row of ``selected``.

    Args:
        selected: ``(N, K)`` bool.
        generator: for reproducibility.
        exclude: draw only among the components NOT in ``selected`` (when too few are left,
            all of them are taken).
    Returns:
        ``(N, K)`` bool with ``out.sum(1) == selected.sum(1)`` (or fewer, with ``exclude``).
    """
    sel = torch.as_tensor(selected).bool()
    n, k = sel.shape
    scores = torch.rand(n, k, generator=generator, device="cpu").to(sel.device)  # (N, K)
    if exclude:
        scores = scores.masked_fill(sel, -1.0)  # never picked before an unselected one
    order = scores.argsort(dim=1, descending=True)  # (N, K)
    counts = sel.sum(dim=1, keepdim=True)  # (N, 1)
    if exclude:
        counts = torch.minimum(counts, (~sel).sum(dim=1, keepdim=True))
    take = torch.arange(k, device=sel.device)[None] < counts  # (N, K) first `count` ranks
    out = torch.zeros_like(sel)
    return out.scatter(1, order, take)


@torch.no_grad()
def component_removal(classifier_prob_fn: Callable[[Tensor], Tensor], W: Tensor, H: Tensor,
                      mag: Tensor, selected: Tensor, generator: torch.Generator | None = None,
                      target: Tensor | None = None, exclude_selected: bool = False,
                      eps: float = 1e-10) -> dict[str, Tensor]:
    """The paper's faithfulness test: remove the relevant components, re-classify.

    The input magnitude loses what the removed components R explain,
    ``|X'| = |X| * (1 - M_R)`` with ``M_R = (W_R H_R) / (W H + eps)``, and the classifier's
    probability for the class ``c`` (default: its prediction on ``|X|``) is measured again. The
    control removes, per clip, the same number of components drawn at random (uniformly among
    all K, or among the unselected ones with ``exclude_selected``). A faithful explanation
    gives ``drop_relevant`` well above ``drop_random``.

    Args:
        classifier_prob_fn: ``mag (N, T, F) -> probs (N, C)`` (softmax of the classifier).
        W: ``(F, K)``; H: ``(N, K, T)`` the interpreter's activations for these clips.
        mag: ``(N, T, F)`` input magnitudes ``|X|``.
        selected: ``(N, K)`` bool, the components to remove (the relevant ones).
        generator: seeds the random control.
        target: ``(N,)`` classes to score; default the classifier's prediction.
    Returns:
        per-clip ``(N,)`` tensors: ``p`` (input), ``p_relevant``, ``p_random`` (after removal),
        ``drop_relevant = p - p_relevant``, ``drop_random = p - p_random``, ``n_removed``
        and ``target``.
    """
    sel = torch.as_tensor(selected).bool().to(mag.device)
    probs = classifier_prob_fn(mag)  # (N, C)
    c = probs.argmax(dim=1) if target is None else torch.as_tensor(target).long().to(mag.device)
    rnd = random_like_selection(sel, generator, exclude=exclude_selected)

    def prob_without(removed: Tensor) -> Tensor:
        m = removal_mask(W, H, removed, eps)  # (N, T, F)
        return classifier_prob_fn(mag * (1.0 - m)).gather(1, c[:, None])[:, 0]  # (N,)

    p = probs.gather(1, c[:, None])[:, 0]
    p_rel, p_rnd = prob_without(sel), prob_without(rnd)
    return {"p": p, "p_relevant": p_rel, "p_random": p_rnd, "drop_relevant": p - p_rel,
            "drop_random": p - p_rnd, "n_removed": sel.sum(dim=1), "target": c}


# --------------------------------------------------------------------------- localisation
def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for ``labels``, by ranks (Mann-Whitney U).

    ``AUC = (sum of the ranks of the positives - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, ranks
    1..n ascending with tied scores given their average rank (a tie between a positive and a
    negative counts one half). 1 = every positive scores above every negative, 0.5 = chance.

    Args:
        scores: ``(n,)`` any real values (flattened if not 1-D).
        labels: ``(n,)`` bool (or 0/1).
    Returns:
        the AUC in [0, 1]; NaN when only one class is present.
    """
    s = _t(scores).reshape(-1)
    y = _t(labels, None).reshape(-1).bool()
    if s.shape != y.shape:
        raise ValueError(f"roc_auc: scores and labels differ in size: {s.numel()} vs {y.numel()}")
    n_pos = int(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # numpy's sort is ~4x faster than torch's on one long CPU vector (measured: 80k bins, 1.5 vs
    # 6.7 ms), and a test set sorts one vector per clip, explainer and score map
    order = torch.from_numpy(np.argsort(s.cpu().numpy(), kind="quicksort")).to(s.device)
    sorted_s = s[order]
    # average rank of each run of ties
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True,
                                                  return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)  # last 1-based rank of each run
    avg_rank = ends - (counts.to(torch.float64) - 1) / 2  # (runs,)
    ranks = torch.empty_like(s)
    ranks[order] = avg_rank[inverse]
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def iou(mask: ArrayLike, truth: ArrayLike) -> float:
    """Intersection over union of two boolean masks of the same shape; NaN if both are empty."""
    a = _t(mask, None).bool()
    b = _t(truth, None).bool()
    _check_same_shape("iou", mask=a, truth=b)
    union = int((a | b).sum())
    return math.nan if union == 0 else int((a & b).sum()) / union


def mask_localisation(mask: ArrayLike, truth: ArrayLike,
                      threshold: float = 0.5) -> dict[str, float]:
    """How well a soft mask finds a ground-truth event (synthetic data).

    Args:
        mask: ``(T, F)`` explanation mask in [0, 1].
        truth: ``(T, F)`` bool, the true event's time-frequency support.
        threshold: the mask is binarised with ``mask >= threshold`` for the IoU.
    Returns:
        ``{"auc": ROC-AUC of the mask values as scores for the truth bins,
        "iou": IoU of (mask >= threshold) with the truth}`` (NaN where undefined).
    """
    m = _t(mask)
    t = _t(truth, None).bool()
    _check_same_shape("mask_localisation", mask=m, truth=t)
    return {"auc": roc_auc(m, t), "iou": iou(m >= threshold, t)}


__all__ = [
    "fidelity_topk", "average_increase", "average_drop", "average_gain",
    "average_drop_sb_compatible", "faithfulness_ff", "input_fidelity", "sparseness",
    "complexity", "removal_mask", "random_like_selection", "component_removal", "roc_auc", "iou",
    "mask_localisation", "average_precision", "macro_average_precision", "multilabel_fidelity",
]


def average_precision(scores: Tensor, truth: Tensor) -> float:
    """Average precision (area under the precision-recall curve, step-wise) of one class.

    ``scores (N,)``, ``truth (N,)`` bool; ``sum_k P@k * rel_k / n_pos`` over the clips sorted by
    decreasing score (ties in input order). NaN when there is no positive.
    """
    t = truth.reshape(-1).bool()
    n_pos = int(t.sum())
    if n_pos == 0:
        return math.nan
    order = torch.argsort(scores.reshape(-1).float(), descending=True, stable=True)
    rel = t[order].double()  # (N,)
    precision = rel.cumsum(0) / torch.arange(1, rel.numel() + 1, dtype=torch.float64)
    return float((precision * rel).sum() / n_pos)


def macro_average_precision(scores: Tensor, truth: Tensor) -> float:
    """Macro AUPRC over classes of ``scores (N, C)`` vs ``truth (N, C)`` bool.

    Classes without a positive are skipped; NaN when no class has one.
    """
    aps = [average_precision(scores[:, c], truth[:, c]) for c in range(scores.shape[1])]
    aps = [a for a in aps if not math.isnan(a)]
    return float(sum(aps) / len(aps)) if aps else math.nan


def multilabel_fidelity(theta_logits: Tensor, classifier_logits: Tensor,
                        threshold: float = 0.5) -> dict[str, float]:
    """The paper's multi-label fidelity over a split, both ``(N, C)``.

    ``fid_auprc``: macro average precision of theta's sigmoids against the classifier's
    decisions ``sigmoid(f) > threshold`` (classes the classifier never turns on are skipped);
    ``fid_agreement``: share of (clip, class) pairs where theta's decision equals the
    classifier's; ``fid_agreement_per_class``: that share per class ``(C,)`` as a list.
    """
    decided = torch.sigmoid(classifier_logits.float()) > threshold  # (N, C)
    theta_p = torch.sigmoid(theta_logits.float())  # (N, C)
    agree = ((theta_p > threshold) == decided).float()  # (N, C)
    return {"fid_auprc": macro_average_precision(theta_p, decided),
            "fid_agreement": float(agree.mean()),
            "fid_agreement_per_class": [float(a) for a in agree.mean(dim=0)]}
