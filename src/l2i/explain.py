"""Listenable explanations (L2I_SPEC §6): relevance, component selection, ratio mask, audio.

For a clip and a target class ``c`` (default: the classifier's prediction):

1. ``z (B, K)``: theta's time-pooled activations of the K NMF components;
   relevance ``r_k = w_ck z_k / max_j |w_cj z_j|`` in [-1, 1] (:func:`relevance`);
2. keep the components with ``r_k > relevance_th`` or the ``top_k`` most relevant positive ones
   (:func:`select_components`);
3. ``M = (W_L H_L) / (W H + eps)`` over (time, freq), in [0, 1] (:func:`ratio_mask`);
4. the explanation spectrogram is ``M * |X|`` (:func:`explanation_magnitude`), turned into
   audio with the input's phase (:func:`to_audio`).

Masking domain (L2I_SPEC §6.4, REFERENCE_RECIPE §10.7): we mask the linear magnitude,
``M * |X|``, a Wiener-like soft mask: a mask value of 0.5 halves the amplitude of that bin, and
the explanation plus the masked-out remainder ``(1 - M) * |X|`` add up to the input exactly. The
reference masks the log1p magnitude, ``expm1(M * log1p|X|) = (1 + |X|)^M - 1``, which is not
proportional (0.5 turns |X| = 3 into 1) and whose complement does not sum back to the input.
The metrics feed the classifier ``M * |X|`` (masked-in) and ``(1 - M) * |X|`` (masked-out)
through its own frontend, the same for every classifier.

The math is in pure batched functions; :class:`Explainer` wraps a trained interpreter
(``l2i.interpreter``) for waveforms of any length and sample rate (:meth:`Explainer.explain`,
and window by window for long recordings :meth:`Explainer.explain_long`, :mod:`l2i.longform`);
:meth:`Explanation.component_audio` plays one component. The ``l2i interpret`` command is
:mod:`l2i.interpret` (``interpret_files`` is re-exported here).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from l2i import features as feats
from l2i.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from l2i.config import DataConfig, FeaturesConfig
from l2i.errors import ConfigError, DataError, L2IError

DEFAULT_RELEVANCE_TH = 0.2
MASK_EPS = 1e-10
MIN_DURATION_S = 1.0  # shorter inputs are zero-padded to this for the analysis (see explain)
DEFAULT_MAX_MEMORY_MB = 4096.0  # Explainer.explain refuses inputs that would need more
# Working bytes per (clip, frame, STFT bin) of one explain call: peak RSS growth measured for
# the esc50 recipes' models (random weights, 10-40 s clips): conv2d 61-67, cnn14 185; rounded up.
BYTES_PER_BIN = 256


# --------------------------------------------------------------------------- pure math
def relevance(theta_weight: Tensor, z: Tensor, target: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-component relevance for the target class, ``r_k = w_ck z_k / max_j |w_cj z_j|``.

    Args:
        theta_weight: ``(C, K)`` theta's linear weights (``theta.linear.weight``).
        z: ``(B, K)`` theta's time-pooled activations.
        target: ``(B,)`` int class per clip.
        eps: when every ``w_cj z_j`` is 0 (silent clip) the relevance is 0, not NaN.
    Returns:
        ``(B, K)`` in [-1, 1]; the most relevant component of each clip has ``r = 1`` (when its
        contribution is positive).
    """
    target = torch.as_tensor(target, device=z.device).long().reshape(-1)
    if z.dim() != 2 or theta_weight.dim() != 2 or theta_weight.shape[1] != z.shape[1]:
        raise ValueError(f"relevance: expected theta_weight (C, K) and z (B, K), got "
                         f"{tuple(theta_weight.shape)} and {tuple(z.shape)}")
    if target.shape[0] != z.shape[0]:
        raise ValueError(f"relevance: {target.shape[0]} targets for a batch of {z.shape[0]}")
    contrib = theta_weight.to(z.dtype)[target] * z  # (B, K)
    scale = contrib.abs().amax(dim=1, keepdim=True)  # (B, 1)
    return contrib / scale.clamp_min(eps)


def select_components(r: Tensor, relevance_th: float = DEFAULT_RELEVANCE_TH,
                      top_k: int | None = None) -> Tensor:
    """Which components form the explanation.

    ``top_k=None``: ``r_k > relevance_th`` (the reference's rule; relative to the clip's most
    relevant component). ``top_k=k``: the ``k`` components of largest ``r``, among those with
    ``r > 0`` only (a component with negative relevance argues against the class, so an
    explanation may hold fewer than ``k``).

    Args:
        r: ``(B, K)`` relevance from :func:`relevance`.
    Returns:
        ``(B, K)`` bool.
    """
    if top_k is None:
        return r > relevance_th
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    k = min(int(top_k), r.shape[1])
    idx = r.topk(k, dim=1).indices  # (B, k)
    chosen = torch.zeros_like(r, dtype=torch.bool).scatter(1, idx, True)
    return chosen & (r > 0)


def ratio_mask(W: Tensor, H: Tensor, selected: Tensor, eps: float = MASK_EPS) -> Tensor:
    """Soft mask ``M = (W_L H_L) / (W H + eps)``: the share of each bin the selected explain.

    ``W`` and ``H`` should be non-negative (NMF); negative entries are clamped to 0 so the mask
    stays in [0, 1]. An empty selection gives an all-zero mask; selecting every component gives
    ``W H / (W H + eps)`` (1 wherever ``W H >> eps``).

    Args:
        W: ``(F, K)`` dictionary.
        H: ``(B, K, T)`` activations.
        selected: ``(B, K)`` bool (or 0/1 weights).
    Returns:
        ``(B, T, F)`` float in [0, 1].
    """
    from l2i.metrics import removal_mask  # the one implementation of the ratio mask

    return removal_mask(W, H, selected, eps=eps)


def frame_relevance(theta_weight: Tensor, H: Tensor, target: Tensor,
                    attention: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """Relevance per component and frame, ``r_k(t) = c_k(t) / max_{j,s} |c_j(s)|``.

    ``c_k(t) = w_ck h_k(t)`` (``attention`` None) or ``w_ck a_k(t) h_k(t)`` with theta's
    attention weights ``a (B, K, T)`` (summing to 1 over T, so ``sum_t c_k(t) = w_ck z_k``:
    the clip's relevance spread over the frames where it comes from).

    Args:
        theta_weight: ``(C, K)``; H: ``(B, K, T)`` activations; target: ``(B,)`` int.
    Returns:
        ``(B, K, T)`` in [-1, 1]; 1 at the clip's most relevant (component, frame) when its
        contribution is positive; 0 everywhere for a silent clip.
    """
    target = torch.as_tensor(target, device=H.device).long().reshape(-1)
    if H.dim() != 3 or theta_weight.dim() != 2 or theta_weight.shape[1] != H.shape[1]:
        raise ValueError(f"frame_relevance: expected theta_weight (C, K) and H (B, K, T), got "
                         f"{tuple(theta_weight.shape)} and {tuple(H.shape)}")
    contrib = theta_weight.to(H.dtype)[target][:, :, None] * H  # (B, K, T)
    if attention is not None:
        contrib = contrib * attention
    scale = contrib.abs().amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    return contrib / scale.clamp_min(eps)


def foreground(H: Tensor) -> Tensor:
    """Each component's activation above its median over the clip's frames,
    ``max(h_k(t) - median_t h_k, 0)``: a component active all the time (a background) keeps
    only what rises above its usual level. ``H (B, K, T)`` -> ``(B, K, T)`` >= 0."""
    H = H.clamp_min(0.0)
    return (H - H.median(dim=-1, keepdim=True).values).clamp_min(0.0)  # (B, K, T)


def peakiness(H: Tensor, eps: float = 1e-12) -> Tensor:
    """Temporal peakiness ``1 - mean_t h_k / max_t h_k`` in [0, 1) per component: 0 for a
    component equally active in every frame, near 1 for one active in a single frame.
    ``H (B, K, T)`` -> ``(B, K)`` (0 for a component never active)."""
    H = H.clamp_min(0.0)
    peak = H.amax(dim=-1)  # (B, K)
    return torch.where(peak > eps, 1.0 - H.mean(dim=-1) / peak.clamp_min(eps),
                       torch.zeros_like(peak))


def relevance_weights(r: Tensor, kind: str = "threshold", power: float = 1.0,
                      relevance_th: float = DEFAULT_RELEVANCE_TH,
                      top_k: int | None = None) -> Tensor:
    """Relevance ``r`` (``(B, K)`` or ``(B, K, T)``) -> mask weights of the same shape.

    ``threshold``: 1 where :func:`select_components` keeps the component (``r > relevance_th``
    or the ``top_k`` per clip / per frame), else 0; ``soft``: ``max(r, 0) ** power``.
    """
    if kind == "soft":
        return r.clamp_min(0.0) ** float(power)
    return select_components(r, relevance_th, top_k).to(r.dtype)


def weighted_mask(W: Tensor, H: Tensor, weights: Tensor, denominator: str = "model",
                  mag: Tensor | None = None, eps: float = MASK_EPS) -> Tensor:
    """``M = W (weights * H) / D`` clamped to [0, 1].

    ``D = W H + eps`` (``model``, the paper's ratio mask; with ``(B, K)`` weights this is
    :func:`ratio_mask` itself) or ``D = log1p|X| + eps`` (``input``: what ``W H`` models; needs
    ``mag``, the input's linear magnitude ``(B, T, F)``).

    Args:
        W: ``(F, K)``; H: ``(B, K, T)``; weights: ``(B, K)`` or ``(B, K, T)`` in [0, 1].
    Returns:
        ``(B, T, F)`` in [0, 1].
    """
    if weights.dim() == 2 and denominator == "model":
        return ratio_mask(W, H, weights, eps=eps)
    W = W.to(H.dtype).clamp_min(0.0)
    H = H.clamp_min(0.0)
    w = weights.to(H.dtype)
    w = w[:, :, None] if w.dim() == 2 else w  # (B, K, 1) or (B, K, T)
    part = torch.einsum("fk,bkt->btf", W, H * w)  # (B, T, F)
    if denominator == "input":
        if mag is None:
            raise ValueError("weighted_mask: denominator 'input' needs mag (B, T, F)")
        den = torch.log1p(mag.to(H.dtype).clamp_min(0.0))  # (B, T, F)
    else:
        den = torch.einsum("fk,bkt->btf", W, H)  # (B, T, F)
    return (part / (den + eps)).clamp(0.0, 1.0)


def sharpen_mask(mask: Tensor, power: float = 1.0, binarize: float = 0.0,
                 rescale: bool = False) -> Tensor:
    """With ``rescale``, ``mask / max`` (the clip's maximum over (time, freq); an all-zero mask
    stays 0); then ``mask ** power``; then, with ``binarize > 0``, 1 where
    ``mask >= binarize * max`` and 0 elsewhere. ``(B, T, F)`` -> ``(B, T, F)``.

    A binarised mask is computed in one step, ``mask >= binarize ** (1 / power) * max``: a
    threshold relative to the clip's peak is the same before and after rescaling and the
    (increasing) power, to float rounding, in a third of the time."""
    if binarize > 0:
        peak = mask.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        threshold = float(binarize) ** (1.0 / float(power)) * peak
        return ((mask >= threshold) & (peak > 0)).to(mask.dtype)
    if rescale:
        peak = mask.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        mask = mask / peak.clamp_min(MASK_EPS)
    return mask ** float(power) if power != 1.0 else mask


def floor_gate(mag: Tensor, quantile: float, eps: float = MASK_EPS) -> Tensor:
    """``|X| / (|X| + N_f)`` in [0, 1): ``N_f`` is the ``quantile`` of ``mag`` over the clip's
    frames at each frequency (the clip's noise floor there). A bin at the floor gets 1/2, one
    10x above it 0.91, a silent one 0. ``mag (B, T, F)`` linear magnitude -> ``(B, T, F)``."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"floor_gate quantile must be in (0, 1), got {quantile}")
    mag = mag.clamp_min(0.0)
    # torch.quantile's linear interpolation between the two nearest ranks, from kthvalue:
    # 5x faster on a 5 s clip, and quantile refuses inputs over 2^24 elements (long recordings)
    pos = float(quantile) * (mag.shape[1] - 1)
    lo, frac = int(math.floor(pos)), pos - math.floor(pos)
    floor = mag.kthvalue(lo + 1, dim=1, keepdim=True).values  # (B, 1, F)
    if frac > 0:
        upper = mag.kthvalue(lo + 2, dim=1, keepdim=True).values  # (B, 1, F)
        floor = floor * (1 - frac) + upper * frac
    return mag / (mag + floor + eps)


def prune_mask(mask: Tensor, mag: Tensor, tolerance: float,
               bands: Tensor | None = None) -> Tensor:
    """Zero the faintest bins of the explanation that the classifier's input hardly registers.

    The classifier reads ``log1p(M|X| @ bands)`` (:class:`l2i.features.Frontend`; ``bands
    (F, n_bands)`` its filterbank, None = every bin its own band, ``log1p_mag``). A band whose
    input ``u`` loses at most ``D = (1 + u)(1 - exp(-tolerance))`` moves its feature by at most
    ``tolerance``. Each bin belongs to the band where its weight is largest and may also feed
    the two neighbouring bands (triangular filters), never more than its own. ``D`` is shared
    out in advance: a quarter for each neighbour whose bins feed the band, the rest for the
    band's own bins. In each (frame, band) the band's own bins are dropped in increasing order
    of their contribution while the dropped sum stays within the band's own share and within
    a quarter of the budget of each neighbour they feed, so no band loses more than its
    ``D``. A filterbank whose bins feed bands further away gets a second pass that restores
    every bin of a band that still moved by more (restoring only brings features back). Bins
    with no filter weight are invisible to the classifier and always dropped.

    On return, in every (clip, frame, band), ``|log1p(M'|X| @ bands) - log1p(M|X| @ bands)|
    <= tolerance`` (within float rounding), and ``M'`` is ``M`` or 0 in each bin.

    Args:
        mask: ``(B, T, F)`` in [0, 1]; mag: ``(B, T, F)`` linear magnitude ``|X|``;
        tolerance: in log1p units (nats of ``1 + input``); 0 returns ``mask``.
    Returns:
        ``(B, T, F)``.
    """
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"prune tolerance must be a finite number >= 0, got {tolerance}")
    if tolerance == 0:
        return mask
    work = torch.float32 if mask.dtype in (torch.float16, torch.bfloat16) else mask.dtype
    mag = mag.to(work).clamp_min(0.0)
    x = mask.to(work) * mag  # (B, T, F), half precision widened: the sort key needs 1e-5
    if bands is None:  # one bin per band: log1p(x) <= tolerance
        return mask * (x > math.expm1(tolerance))
    bands = bands.to(x.device, x.dtype)
    n_bands = bands.shape[1]
    own, part = bands.max(dim=1)  # (F,) each: the bin's largest weight and its band
    u = x @ bands  # (B, T, n_bands)
    budget = (1.0 + u) * -math.expm1(-tolerance)  # (B, T, n_bands)
    feeds = bands > 0  # (F, n_bands): which bands each bin feeds
    allowed = _allowed_drop(budget, feeds, part)  # (B, T, n_bands)
    c = x * own  # (B, T, F) each bin's input to its own band
    # bins ordered by (band, contribution), one sort of the key band + c / (just above the
    # frame's max c) in [band, band + 1). float32 ties contributions under ~1e-5 of the
    # frame's largest; the order among those may be off, the bound is not (every prefix is
    # checked against the real sums)
    peak = c.amax(dim=-1, keepdim=True).clamp_min(MASK_EPS) * (1 + 1e-3)  # (B, T, 1)
    order = _argsort_last(part.to(c.dtype) + c / peak)  # (B, T, F) bin at each position
    band_at, _ = part.sort()  # (F,) the band of each sorted position (static)
    counts = torch.bincount(part, minlength=n_bands)  # (n_bands,)
    cum = c.gather(-1, order).cumsum(-1)  # (B, T, F) running sum over the sorted bins
    before = torch.nn.functional.pad(cum, (1, 0))[..., counts.cumsum(0) - counts]  # (B,T,nb)
    keep_sorted = cum > (before + allowed).index_select(-1, band_at)  # (B, T, F)
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted) & (own > 0)
    return _restore_far_bands(mask * keep, mask, mag, u, bands, feeds, part,
                              tolerance)  # (B, T, F)


def _restore_far_bands(pruned: Tensor, mask: Tensor, mag: Tensor, u: Tensor, bands: Tensor,
                       feeds: Tensor, part: Tensor, tolerance: float) -> Tensor:
    """:func:`prune_mask`'s second pass, for a filterbank whose bins feed bands beyond their
    neighbours: every bin of a band whose ``log1p`` input still moved by more than
    ``tolerance`` gets its mask value back (restoring only brings features back). ``u (B, T,
    n_bands)``: the bands' inputs under ``mask``; ``feeds (F, n_bands)``: ``bands > 0``; others
    as in :func:`prune_mask`."""
    near = torch.arange(bands.shape[1], device=bands.device)
    if not bool((feeds & ((part[:, None] - near[None]).abs() > 1)).any()):
        return pruned  # neighbouring triangles: the shares already bound every band
    moved = torch.log1p(u) - torch.log1p((pruned.to(u.dtype) * mag) @ bands)  # (B, T, bands)
    over = moved > tolerance * (1 + 1e-5) + 1e-7
    restore = (over.to(u.dtype) @ feeds.T.to(u.dtype)) > 0  # (B, T, F)
    return torch.where(restore, mask, pruned)


def _allowed_drop(budget: Tensor, feeds: Tensor, part: Tensor) -> Tensor:
    """What each band's own bins may drop, ``(B, T, n_bands)``, from the bands' budgets
    ``(B, T, n_bands)`` (:func:`prune_mask`): the band's share of its own budget (1 - 1/4 per
    neighbour whose bins feed it) and a quarter of the budget of each neighbour its bins
    feed (a bin feeds a neighbour at most as much as its own band). ``feeds (F, n_bands)``:
    which bands each bin feeds; ``part (F,)``: each bin's band."""
    n_bands = feeds.shape[1]
    near = torch.arange(n_bands, device=budget.device)
    pad = torch.nn.functional.pad
    up = (feeds[:, 1:] & (part[:, None] == near[None, :-1])).any(0)  # band b's bins feed b + 1
    down = (feeds[:, :-1] & (part[:, None] == near[None, 1:])).any(0)  # band b + 1's feed b
    share = 1.0 - 0.25 * (pad(up, (1, 0)).to(budget.dtype) + pad(down, (0, 1)).to(budget.dtype))
    inf = torch.full_like(budget, math.inf)
    below = torch.where(pad(down, (1, 0)), budget[..., (near - 1).clamp_min(0)], inf)
    above = torch.where(pad(up, (0, 1)), budget[..., (near + 1).clamp_max(n_bands - 1)], inf)
    return torch.minimum(budget * share, 0.25 * torch.minimum(below, above))


def _argsort_last(key: Tensor) -> Tensor:
    """``key.argsort(dim=-1)``; on the CPU through numpy, whose sort took 1.6 ms where
    torch's took 8 ms for one 5 s clip's ``(431, 513)`` (1 thread, torch 2.13)."""
    if key.device.type != "cpu":
        return key.argsort(dim=-1)
    return torch.from_numpy(np.argsort(key.detach().contiguous().numpy(), axis=-1))


def classifier_bands(classifier: Any, features: FeaturesConfig) -> Tensor | None:
    """The frequency bands a classifier's input pools, for :func:`prune_mask`: its frontend's
    filterbank ``(F, n_bands)`` (l2i's classifiers), None for a ``log1p_mag`` frontend (every
    bin), and for a classifier given as code (which has no known frontend) the mel filterbank
    of L2I's features config, an approximation."""
    frontend = getattr(classifier, "frontend", None)
    kind = getattr(frontend, "kind", None)
    fb = getattr(frontend, "fb", None)
    if kind in feats.MEL_KINDS and fb is not None and fb.numel() > 0:
        return fb
    if kind == "log1p_mag":
        return None
    return feats.mel_filterbank(features)


def explanation_mask(W: Tensor, H: Tensor, theta_weight: Tensor, z: Tensor, target: Tensor,
                     cfg: Any = None, *, relevance_th: float = DEFAULT_RELEVANCE_TH,
                     top_k: int | None = None, attention: Tensor | None = None,
                     mag: Tensor | None = None,
                     bands: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The explanation mask of a :class:`l2i.config.MaskConfig` (None = ``MaskConfig()``, the
    paper's: clip relevance, threshold, ratio to ``W H``).

    Steps: relevance (clip ``r_k`` from ``z``, or per frame from ``H``: :func:`frame_relevance`,
    with theta's ``attention (B, K, T)`` for ``frame_attention``); weights
    (:func:`relevance_weights`); background (``median``: the numerator, and the frame
    relevance, use :func:`foreground` activations; ``spread``: weights times
    :func:`peakiness`); :func:`weighted_mask`; :func:`sharpen_mask` (rescale, power,
    binarize); with ``floor_gate > 0``, times :func:`floor_gate` of the input ``mag``; with
    ``prune > 0``, last, :func:`prune_mask` with the classifier's ``bands``.

    Args:
        W: ``(F, K)``; H: ``(B, K, T)``; theta_weight: ``(C, K)``; z: ``(B, K)``;
        target: ``(B,)``; mag: ``(B, T, F)`` linear magnitude (``denominator: input``,
        ``floor_gate``, ``prune``); bands: ``(F, n_bands)`` the classifier's filterbank
        (``prune``; None = every bin its own band, :func:`classifier_bands`).
    Returns:
        ``mask (B, T, F)`` in [0, 1] and ``weights`` ``(B, K)`` (clip relevance) or
        ``(B, K, T)``: the factor on each activation in the numerator, ``W (weights * H)``
        (with ``background: median`` it includes ``foreground(H) / H``).
    """
    from l2i.config import MaskConfig

    cfg = cfg if cfg is not None else MaskConfig()
    Hb = foreground(H) if cfg.background == "median" else H
    if cfg.resolution == "clip":
        r = relevance(theta_weight, z, target)  # (B, K)
    else:
        att = attention if cfg.resolution == "frame_attention" else None
        r = frame_relevance(theta_weight, Hb, target, att)  # (B, K, T)
    w = relevance_weights(r, cfg.weights, cfg.power, relevance_th, top_k)
    if cfg.background == "spread":
        p = peakiness(H)  # (B, K)
        w = w * (p if w.dim() == 2 else p[:, :, None])
    if cfg.background == "median":
        share = torch.where(H > 0, Hb / H.clamp_min(MASK_EPS), torch.zeros_like(H))  # (B, K, T)
        w = (w[:, :, None] if w.dim() == 2 else w) * share
    mask = weighted_mask(W, H, w, cfg.denominator, mag)
    mask = sharpen_mask(mask, cfg.sharpen, cfg.binarize, cfg.rescale)
    if cfg.floor_gate > 0:
        if mag is None:
            raise ValueError("explanation_mask: floor_gate needs mag (B, T, F)")
        mask = mask * floor_gate(mag.to(mask.dtype), cfg.floor_gate)  # (B, T, F)
    if cfg.prune > 0:
        if mag is None:
            raise ValueError("explanation_mask: prune needs mag (B, T, F)")
        mask = prune_mask(mask, mag, cfg.prune, bands)  # (B, T, F)
    return mask, w


def selected_of(weights: Tensor) -> Tensor:
    """Components that enter the mask: ``weights (B, K)`` or ``(B, K, T)`` -> ``(B, K)`` bool
    (a positive weight in some frame)."""
    return (weights.amax(dim=-1) if weights.dim() == 3 else weights) > 0


def explanation_magnitude(mask: Tensor, mag: Tensor) -> Tensor:
    """The explanation spectrogram ``M * |X|`` (linear-magnitude masking, see module doc).

    Args:
        mask: ``(B, T, F)`` in [0, 1]; mag: ``(B, T, F)`` input magnitude ``|X|``.
    Returns:
        ``(B, T, F)``; ``explanation_magnitude(1 - M, mag)`` is the masked-out remainder.
    """
    if mask.shape != mag.shape:
        raise ValueError(f"explanation_magnitude: mask {tuple(mask.shape)} and magnitude "
                         f"{tuple(mag.shape)} differ")
    return mask * mag


def to_audio(mag_explained: Tensor, phase: Tensor, features_cfg: FeaturesConfig,
             length: int | None = None) -> Tensor:
    """Inverse STFT of a magnitude with the input's phase.

    Args:
        mag_explained: ``(B, T, F)`` magnitude; phase: ``(B, T, F)`` radians.
        length: samples of the output (the input's length).
    Returns:
        ``(B, N)`` waveform (float32).
    """
    spec = feats.with_phase(mag_explained, phase)  # (B, T, F) complex
    return feats.istft(spec, features_cfg, length=length)


# --------------------------------------------------------------------------- results
@dataclass
class Explanation:
    """One clip's explanation, numpy arrays on the CPU (ready for figures, files, json).

    ``audio (N,)`` is the explanation waveform at ``sample_rate``; ``mask``,
    ``input_magnitude`` are ``(T, F)`` (frames ``hop_length`` samples apart, bins from 0 to
    ``sample_rate / 2``); ``relevance (K,)``; ``H (K, T)``; ``classifier_probs``,
    ``theta_probs`` ``(C,)``.
    """

    audio: np.ndarray
    sample_rate: int
    mask: np.ndarray
    relevance: np.ndarray
    selected: list[int]
    target: int
    target_name: str
    classifier_probs: np.ndarray
    theta_probs: np.ndarray
    H: np.ndarray
    input_magnitude: np.ndarray
    class_names: list[str] = field(default_factory=list)
    hop_length: int = 1
    relevance_th: float | None = None
    top_k: int | None = None
    # for listening to single components (filled by Explainer.explain; None elsewhere)
    phase: np.ndarray | None = None  # (T, F) radians, the input's STFT phase
    atoms: np.ndarray | None = None  # (F, K) the dictionary W
    features: FeaturesConfig | None = None  # the STFT that inverts the magnitudes
    input_peak: float | None = None  # peak |x| of the input before normalisation
    warnings: list[dict[str, str]] = field(default_factory=list)  # see explanation_warnings
    # the mask's weights on H, (K,) or (K, T) (explanation_mask); None: the paper's mask, whose
    # component masks are W_k H_k / (W H + eps)
    weights: np.ndarray | None = None
    mask_config: dict[str, Any] | None = None  # the MaskConfig used (None: the paper's)

    @property
    def predicted(self) -> int:
        """The classifier's predicted class."""
        return int(np.argmax(self.classifier_probs))

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.sample_rate

    @property
    def explanation_magnitude(self) -> np.ndarray:
        """``(T, F)`` the masked magnitude ``M * |X|``."""
        return self.mask * self.input_magnitude

    def component_mask(self, k: int) -> np.ndarray:
        """``(T, F)`` component ``k``'s share of each bin, ``W_k H_k / (W H + eps)``.

        The masks of the selected components add up to :attr:`mask` (the ratio mask is linear
        in the selection).
        """
        if self.atoms is None:
            raise L2IError("this explanation carries no dictionary (atoms): make it with "
                           "Explainer.explain to listen to single components")
        K = self.atoms.shape[1]
        if not 0 <= int(k) < K:
            raise L2IError(f"component {k} out of range: the dictionary has {K} atoms "
                           f"(0..{K - 1})")
        W = np.maximum(self.atoms, 0.0).astype(np.float32, copy=False)  # (F, K)
        H = np.maximum(self.H, 0.0).astype(np.float32, copy=False)  # (K, T)
        if self.weights is None:  # the paper's ratio mask: linear in the selection
            full = H.T @ W.T  # (T, F)
            return (np.outer(H[k], W[:, k]) / (full + MASK_EPS)).astype(np.float32)  # (T, F)
        # any other mask: k's share of the weighted numerator W (weights * H) of each bin
        w = self.weights if self.weights.ndim == 2 else self.weights[:, None]  # (K, T|1)
        Hw = H * w  # (K, T)
        part = Hw.T @ W.T  # (T, F)
        return (self.mask * np.outer(Hw[k], W[:, k]) / (part + MASK_EPS)).astype(np.float32)

    def component_audio(self, k: int) -> np.ndarray:
        """``(N,)`` the audio of component ``k`` alone: its mask on ``|X|``, inverted with the
        input's phase (same length and rate as :attr:`audio`). The selected components' audio
        adds up to :attr:`audio` (within float error)."""
        if self.phase is None or self.features is None:
            raise L2IError("this explanation carries no phase/STFT settings: make it with "
                           "Explainer.explain to listen to single components")
        mag = torch.from_numpy(self.component_mask(k) * self.input_magnitude)[None]  # (1, T, F)
        wav = to_audio(mag, torch.from_numpy(self.phase)[None], self.features,
                       length=self.audio.shape[0])  # (1, N)
        return wav[0].float().numpy()

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts: target, top probabilities, relevance, selected components."""
        names = self.class_names or [str(i) for i in range(len(self.classifier_probs))]
        top = np.argsort(-self.classifier_probs)[:5]
        return {
            "target": self.target, "target_name": self.target_name,
            "predicted": self.predicted, "predicted_name": names[self.predicted],
            "classifier_prob_target": float(self.classifier_probs[self.target]),
            "theta_prob_target": float(self.theta_probs[self.target]),
            "top5": [{"class": names[i], "index": int(i),
                      "classifier_prob": float(self.classifier_probs[i]),
                      "theta_prob": float(self.theta_probs[i])} for i in top],
            "classifier_probs": {n: float(p) for n, p in zip(names, self.classifier_probs)},
            "theta_probs": {n: float(p) for n, p in zip(names, self.theta_probs)},
            "selected_components": list(self.selected),
            "relevance": [float(v) + 0.0 for v in self.relevance],  # no -0.0
            "relevance_th": self.relevance_th, "top_k": self.top_k,
            **({"mask_config": dict(self.mask_config)} if self.mask_config else {}),
            "mask_mean": float(self.mask.mean()) if self.mask.size else 0.0,
            "sample_rate": self.sample_rate, "duration_s": self.duration_s,
            "warnings": list(self.warnings),
        }


@dataclass
class BatchExplanation:
    """Batched tensors of one forward pass (for evaluation code).

    Shapes: ``logits``, ``probs``, ``theta_logits``, ``theta_probs`` ``(B, C)``;
    ``H (B, K, T)``; ``z``, ``relevance``, ``selected`` ``(B, K)``; ``target (B,)``;
    ``mask (B, T, F)``.
    """

    logits: Tensor
    probs: Tensor
    theta_logits: Tensor
    theta_probs: Tensor
    H: Tensor
    z: Tensor
    target: Tensor
    relevance: Tensor
    selected: Tensor
    mask: Tensor
    weights: Tensor | None = None  # (B, K) or (B, K, T): explanation_mask's weights


class Explanations(Sequence):
    """What :meth:`Explainer.explain` returns, for one clip or many: a sequence of
    :class:`Explanation` (``len(e)``, ``e[i]``, iteration; a slice is an ``Explanations``).

    ``tensors`` is the :class:`BatchExplanation` of the forward pass (batched tensors, for
    evaluation code). ``targets`` / ``target_names`` / ``predicted`` list the clips' values;
    :meth:`summaries` their JSON-ready facts.
    """

    def __init__(self, items: Sequence[Explanation], tensors: BatchExplanation | None = None
                 ) -> None:
        self.items = list(items)
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return Explanations(self.items[i])
        return self.items[i]

    def __repr__(self) -> str:
        return f"Explanations({len(self)} clip(s): {self.target_names})"

    @property
    def targets(self) -> list[int]:
        return [e.target for e in self.items]

    @property
    def target_names(self) -> list[str]:
        return [e.target_name for e in self.items]

    @property
    def predicted(self) -> list[int]:
        return [e.predicted for e in self.items]

    def summaries(self) -> list[dict[str, Any]]:
        return [e.summary() for e in self.items]


# --------------------------------------------------------------------------- warnings
SILENCE_PEAK = 1e-4  # an input whose peak is below this (-80 dBFS) is called silent
CONFIDENCE_KEY = "valid_max_prob_q05"  # classifier metric: 5th percentile of the max probability
CONFIDENCE_RULE_SHARE = 0.2  # no calibration stored: chance + 0.2 of the way to certainty


def default_confidence_level(n_classes: int) -> float:
    """The documented rule when no calibration is stored: ``1/C + 0.2 (1 - 1/C)``
    (0.28 for 10 classes, 0.6 for 2), fixed in advance, not tuned on any test fold."""
    chance = 1.0 / max(int(n_classes), 1)
    return chance + CONFIDENCE_RULE_SHARE * (1.0 - chance)


def max_prob_quantile(logits: Any, q: float = 0.05, activation: str = "softmax") -> float:
    """The ``q`` quantile of the top class probability over clips, ``logits (N, C)``: the
    calibration stored as ``valid_max_prob_q05`` by ``l2i train-classifier`` (validation
    clips), below which :func:`explanation_warnings` says ``low_confidence``. ``activation``:
    ``softmax`` (single-label) or ``sigmoid`` (multi-label)."""
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float32)  # (N, C)
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be softmax or sigmoid, got {activation!r}")
    p = x.softmax(dim=1) if activation == "softmax" else x.sigmoid()  # (N, C)
    return float(np.quantile(p.max(dim=1).values.numpy(), q)) if p.shape[0] else float("nan")


def explanation_warnings(expl: Explanation, confidence_level: float) -> list[dict[str, str]]:
    """Honest warnings about one explanation, each ``{"code", "message"}``.

    ``silent_input``: the input's peak (before normalisation) is under ``SILENCE_PEAK``;
    ``low_confidence``: the classifier's top probability is under ``confidence_level`` (the
    input may be far from the training data); ``theta_disagrees``: theta's top class is not
    the classifier's (the explanation then follows theta's reading); ``empty_selection``: no
    component selected (the explanation wav is silent).
    """
    names = expl.class_names or [str(i) for i in range(len(expl.classifier_probs))]
    pc, pt = np.asarray(expl.classifier_probs), np.asarray(expl.theta_probs)
    c, t = int(np.argmax(pc)), int(np.argmax(pt))
    out = []
    if expl.input_peak is not None and expl.input_peak < SILENCE_PEAK:
        db = 20 * math.log10(max(expl.input_peak, 1e-12))
        out.append({"code": "silent_input", "message": (
            f"the input is silent (peak {db:.0f} dBFS): far from the training data, the "
            "explanation carries no meaning")})
    elif pc[c] < confidence_level:
        out.append({"code": "low_confidence", "message": (
            f"the classifier's top probability {pc[c]:.2f} ('{names[c]}') is below the "
            f"calibrated level {confidence_level:.2f}: the input may be far from the "
            "training data")})
    if t != c:
        out.append({"code": "theta_disagrees", "message": (
            f"theta predicts '{names[t]}' ({pt[t]:.2f}) where the classifier predicts "
            f"'{names[c]}' ({pc[c]:.2f}): the explanation follows theta's reading, not the "
            "classifier's")})
    if not expl.selected:
        out.append({"code": "empty_selection", "message": (
            f"no component passed the selection for '{expl.target_name}': the explanation "
            "wav is silent")})
    return out


# --------------------------------------------------------------------------- explainer
class Explainer:
    """Explanations from a trained interpreter, captum-style.

    >>> explainer = Explainer.load("runs/l2i/l2i.ckpt")
    >>> e = explainer.explain(waveform, sample_rate=44100)[0]  # explain -> Explanations
    >>> e.audio, e.mask, e.relevance, e.selected

    ``relevance_th`` / ``top_k`` default to the checkpoint's ``loss.relevance_th`` (0.2 in the
    reference) and None; ``normalize`` (``peak`` | ``none``) to the normalisation the classifier
    was trained with (:func:`checkpoint_normalize`). ``max_memory_mb`` (None: no limit) caps
    the working memory of one :meth:`explain` call. ``mask``: how the mask is built, a
    :class:`l2i.config.MaskConfig`, or overrides of the checkpoint's (a ``MaskOverrides``
    or a dict; None values keep the checkpoint's), see :func:`checkpoint_mask_config`.
    """

    def __init__(self, interpreter: Any, relevance_th: float | None = None,
                 top_k: int | None = None, min_duration_s: float = MIN_DURATION_S,
                 normalize: str | None = None,
                 max_memory_mb: float | None = DEFAULT_MAX_MEMORY_MB,
                 mask: Any = None) -> None:
        from l2i.audio import NORMALIZATIONS

        self.interpreter = interpreter.eval()
        clf = getattr(interpreter, "classifier", None)
        if getattr(clf, "cpu_channels_last", False) and self.device.type == "cpu":
            clf.to(memory_format=torch.channels_last)  # faster, same outputs (models/conv2d.py)
        self.mask_config = checkpoint_mask_config(interpreter, mask)
        self.relevance_th = float(relevance_th if relevance_th is not None
                                  else _checkpoint_relevance_th(interpreter))
        self.top_k = top_k
        self.min_duration_s = float(min_duration_s)
        self.normalize = normalize if normalize is not None else checkpoint_normalize(interpreter)
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got "
                              f"{self.normalize!r}")
        self.max_memory_mb = max_memory_mb
        self.min_confidence: float | None = None  # None: confidence_level's calibration

    @classmethod
    def load(cls, ckpt: str | os.PathLike, device: str | torch.device = "cpu",
             relevance_th: float | None = None, top_k: int | None = None,
             max_memory_mb: float | None = DEFAULT_MAX_MEMORY_MB, mask: Any = None) -> Explainer:
        """Load an ``l2i.ckpt`` (``l2i.interpreter.load_interpreter``) onto ``device``."""
        from l2i.device import resolve_device
        from l2i.interpreter import load_interpreter

        interp = load_interpreter(ckpt, resolve_device(device))
        return cls(interp, relevance_th=relevance_th, top_k=top_k, max_memory_mb=max_memory_mb,
                   mask=mask)

    # ---- model facts
    @property
    def features(self) -> FeaturesConfig:
        f = self.interpreter.features
        return f if isinstance(f, FeaturesConfig) else FeaturesConfig(**f)

    @property
    def sample_rate(self) -> int:
        return int(self.features.sample_rate)

    @property
    def class_names(self) -> list[str]:
        return list(self.interpreter.class_names)

    @property
    def device(self) -> torch.device:
        return self.interpreter.W.device

    @property
    def confidence_level(self) -> float:
        """Below this top class probability an input is flagged ``low_confidence``.

        ``self.min_confidence`` when set; else the classifier's calibration stored in its
        checkpoint metrics (``valid_max_prob_q05``: the 5th percentile of the top probability
        on the validation clips, written by ``l2i train-classifier``); else
        :func:`default_confidence_level`.
        """
        if getattr(self, "min_confidence", None) is not None:
            return float(self.min_confidence)
        record = getattr(self.interpreter, "classifier_record", None) or {}
        for metrics in (record.get("metrics") or {}, getattr(self.interpreter, "metrics", {})):
            value = (metrics or {}).get(CONFIDENCE_KEY)
            if isinstance(value, (int, float)) and math.isfinite(value):
                return float(value)
        return default_confidence_level(len(self.class_names))

    @property
    def training_duration_s(self) -> float:
        """The classifier's training clip length (the recipe's ``data.duration_s``; 5 s when
        unrecorded): the default window of :meth:`explain_long`."""
        data = (getattr(self.interpreter, "recipe", None) or {}).get("data") or {}
        value = data.get("duration_s") or DataConfig().duration_s
        return float(value or 5.0)

    @property
    def interpreter_activation(self) -> str:
        """The classifier's activation: softmax (single-label) or sigmoid (multi-label)."""
        from l2i.interpreter import classifier_activation

        return classifier_activation(self.interpreter.classifier)

    def resolve_target(self, target: int | str | None) -> int | None:
        """A class index from an index, a class name (or its index as a string) or None."""
        if target is None:
            return None
        names = self.class_names
        if isinstance(target, str):
            if target in names:
                return names.index(target)
            if target.strip().lstrip("-").isdigit():
                target = int(target)
            else:
                import difflib
                close = difflib.get_close_matches(target, names, n=3)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise ConfigError(f"target class {target!r} is not one of the model's classes: "
                                  f"{hint}valid names: {', '.join(names)}")
        t = int(target)
        if not 0 <= t < len(names):
            raise ConfigError(f"target class index {t} out of range: the model has "
                              f"{len(names)} classes (0..{len(names) - 1})")
        return t

    @functools.cached_property
    def _bands(self) -> Tensor | None:
        """:func:`classifier_bands` of the interpreter's classifier, on its device."""
        bands = classifier_bands(self.interpreter.classifier, self.features)
        return None if bands is None else bands.to(self.device)

    # ---- batched core
    @torch.no_grad()
    def explain_batch(self, mag: Tensor, target: Tensor | int | None = None,
                      phase: Tensor | None = None, length: int | None = None
                      ) -> BatchExplanation:
        """One forward pass on magnitudes ``mag (B, T, F)`` (already on any device).

        ``target``: ``(B,)`` class indices, one int for all, or None (the classifier's
        prediction per clip). ``phase (B, T, F)`` and ``length`` (samples) go to the classifier
        (a classifier given as code needs them). Probabilities use the classifier's activation.
        """
        from l2i.interpreter import class_probs, classifier_activation

        interp = self.interpreter
        mag = mag.to(self.device, torch.float32)
        out = interp(mag, phase=phase, length=length)
        logits, theta_logits, H, z = out.logits, out.theta_logits, out.H, out.z
        if H.shape[-1] != mag.shape[1]:
            raise L2IError(f"interpreter returned H with {H.shape[-1]} frames for an input of "
                           f"{mag.shape[1]} frames: the interpreter must emit one activation "
                           "per STFT frame")
        if target is None:
            tgt = logits.argmax(dim=1)
        else:
            tgt = torch.as_tensor(target, device=mag.device).long().reshape(-1)
            if tgt.numel() == 1:
                tgt = tgt.expand(mag.shape[0])
        tw = interp.theta.linear.weight  # (C, K)
        r = relevance(tw, z, tgt)  # (B, K)
        cfg = self.mask_config
        att = interp.theta.attention(H) if cfg.resolution == "frame_attention" else None
        bands = self._bands if cfg.prune > 0 else None
        mask, w = explanation_mask(interp.W, H, tw, z, tgt, cfg, relevance_th=self.relevance_th,
                                   top_k=self.top_k, attention=att, mag=mag,
                                   bands=bands)  # (B, T, F)
        act = classifier_activation(interp.classifier)
        return BatchExplanation(logits=logits, probs=class_probs(logits, act),
                                theta_logits=theta_logits,
                                theta_probs=class_probs(theta_logits, act),
                                H=H, z=z, target=tgt, relevance=r, selected=selected_of(w),
                                mask=mask, weights=w)

    # ---- waveforms
    def memory_estimate_mb(self, n_clips: int, n_samples: int, sample_rate: int) -> float:
        """Working memory (MB) :meth:`explain` needs for ``n_clips`` clips of ``n_samples``
        samples at ``sample_rate`` Hz: ``BYTES_PER_BIN`` per (clip, frame, bin) of the model's
        STFT (spectrogram, magnitude, mask, activations, the classifier's maps; measured, see
        ``BYTES_PER_BIN``) plus the input and its resampled copy."""
        sr = self.sample_rate
        n = max(int(math.ceil(n_samples * sr / sample_rate)),
                int(math.ceil(self.min_duration_s * sr)))
        bins = n_clips * feats.n_frames(n, self.features) * self.features.n_freq
        return (bins * BYTES_PER_BIN + 8 * n_clips * (n_samples + n)) / 2**20

    def _check_size(self, n_clips: int, n_samples: int, sample_rate: int) -> None:
        """Refuse (L2IError) an input whose explanation would need more than max_memory_mb."""
        if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
            raise DataError(f"explain: sample_rate {sample_rate} Hz is implausible (expected "
                            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}): pass the rate of the audio")
        need = self.memory_estimate_mb(n_clips, n_samples, sample_rate)
        if self.max_memory_mb and need > self.max_memory_mb:
            raise L2IError(
                f"explain: {n_clips} clip(s) of {n_samples} samples ({n_samples / sample_rate:.1f}"
                f" s at {sample_rate} Hz) need about {need:.0f} MB, more than max_memory_mb="
                f"{self.max_memory_mb:g}: explain shorter excerpts or fewer clips at a time, or "
                "raise the limit (Explainer(..., max_memory_mb=...), l2i interpret "
                "--max_memory_mb)")

    @torch.no_grad()
    def explain(self, waveform: Any, sample_rate: int, target: Any = None,
                batch: bool = False) -> Explanations:
        """Explain one clip, or a batch of clips with ``batch=True``; always returns an
        :class:`Explanations` (``e[0]`` is the first clip's :class:`Explanation`).

        ``waveform``: numpy or torch, in any layout :func:`l2i.audio.as_clips` accepts: one clip
        ``(S,)``; one multi-channel clip ``(S, channels)`` (``soundfile.read``) or
        ``(channels, S)`` (``torchaudio.load``), at most 8 channels, mixed to mono by averaging
        as ``l2i interpret`` does; with ``batch=True`` a batch ``(B, S)`` (or
        ``(B, S, channels)``, ``(B, channels, S)``, a list of equally long clips). A ``(B, S)``
        batch is never guessed: without ``batch`` it is refused as ambiguous (or, when B <= 8,
        read as channels). Float samples in [-1, 1] or int8/int16/int32 PCM (scaled).
        ``target``: None (the classifier's prediction), a class index or name for every clip,
        or a sequence of them, one per clip of a batch.

        The audio is resampled to the model's rate (soxr), then normalised the way the
        classifier's training clips were (``normalize``, from the checkpoint: ``peak`` divides
        each clip by its peak, so a quiet recording is explained like a loud one), exactly
        as ``l2i interpret`` does, analysed with the model's STFT and explained in one batched
        forward pass. The explanation (``audio``, ``input_magnitude``) is of that normalised
        clip, at the model's sample rate, as long as the resampled input. Inputs shorter
        than ``min_duration_s`` (1 s) are zero-padded at the end for the classifier (whose
        pooling needs a few frames; training clips are zero-padded the same way) and the
        mask, activations and audio are cropped back to the input's frames. An input whose
        explanation would need more than ``max_memory_mb`` is refused before anything large
        is allocated (:meth:`memory_estimate_mb`).
        """
        from l2i.audio import as_clips, normalize_audio, resample

        x2 = as_clips(waveform, batch=batch, what="explain")  # (B, S)
        sr_in, sr = int(sample_rate), self.sample_rate
        self._check_size(x2.shape[0], x2.shape[1], sr_in)
        if sr_in != sr:
            x2 = np.stack([resample(row, sr_in, sr) for row in x2])  # (B, N')
        peaks = np.abs(x2).max(axis=1, initial=0.0)  # (B,) before normalisation
        x2 = normalize_audio(x2, self.normalize)  # (B, N), per clip
        n = x2.shape[1]
        n_min = int(math.ceil(self.min_duration_s * sr))
        if n < n_min:
            x2 = np.pad(x2, ((0, 0), (0, n_min - n)))  # (B, n_min)
        t_in = feats.n_frames(n, self.features)  # frames of the unpadded input
        tgt = self._targets(target, x2.shape[0])
        wav = torch.from_numpy(np.ascontiguousarray(x2)).to(self.device)  # (B, N)
        spec = feats.stft(wav, self.features)  # (B, T, F) complex
        mag = feats.magnitude(spec)  # (B, T, F)
        ph = feats.phase(spec)  # (B, T, F), once: for the classifier and the explanation
        b = self.explain_batch(mag, tgt, phase=ph, length=n)
        # M |X| e^{i phase(X)} = M X: to_audio(explanation_magnitude(M, |X|), phase(X)) in one step
        # the input's own frames only (t_in = n_frames(n)): the components sum to it exactly
        spec_in = spec[:, :t_in]  # (B, t_in, F)
        audio = feats.istft(b.mask[:, :t_in].to(spec.device) * spec_in, self.features,
                            length=n)  # (B, N)
        level = self.confidence_level
        return Explanations([self._one(b, i, audio[i], mag[i], t_in, ph[i, :t_in],
                                       float(peaks[i]), level) for i in range(mag.shape[0])],
                            tensors=b)

    # ---- long recordings
    def window_hop(self, window_s: float | None, hop_s: float | None) -> tuple[int, int]:
        """Window and hop in samples at the model's rate (defaults: the training clip length,
        half of it)."""
        win_s = float(window_s) if window_s else self.training_duration_s
        hop = float(hop_s) if hop_s else win_s / 2
        if not win_s > 0 or not 0 < hop <= win_s:
            raise ConfigError(f"window_s={win_s:g} and hop_s={hop:g}: need window_s > 0 and "
                              "0 < hop_s <= window_s (a larger hop would skip audio)")
        sr = self.sample_rate
        return max(1, int(round(win_s * sr))), max(1, int(round(hop * sr)))

    @torch.no_grad()
    def explain_stream(self, blocks: Any, window_s: float | None = None,
                       hop_s: float | None = None, target: Any = None,
                       write: Any = None, n_samples: int | None = None,
                       progress: bool = False) -> tuple[Any, list[dict[str, Any]]]:
        """Explain a stream of mono blocks ``(n,)`` at the model's rate, window by window.

        Memory holds a few windows (:mod:`l2i.longform`); ``write(samples)`` receives the
        stitched explanation (overlap-add of each window's explanation, scaled back by the
        window's normalisation gain) as it is finished. ``n_samples`` (optional) sizes the
        progress bar (tqdm, with ETA, when ``progress``). Returns the
        :class:`l2i.longform.Timeline` and the merged warnings.
        """
        from tqdm.auto import tqdm

        from l2i.audio import PEAK_EPS
        from l2i.longform import OverlapAdd, Timeline, count_warnings, iter_windows, n_windows

        win, hop = self.window_hop(window_s, hop_s)
        sr = self.sample_rate
        tgt = self.resolve_target(target) if not isinstance(target, int) else target
        timeline = Timeline(self.class_names, win / sr, hop / sr)
        ola = OverlapAdd(write if write is not None else (lambda x: None))
        per_window, total = [], 0
        bar = tqdm(total=n_windows(n_samples, win, hop) if n_samples else None, unit="window",
                   disable=not progress, desc="explaining", leave=False)
        for start, x in iter_windows(blocks, win, hop):
            e = self.explain(x, sr, target=tgt)[0]
            gain = float(np.abs(x).max(initial=0.0)) + PEAK_EPS if self.normalize == "peak" else 1.0
            ola.add(start, e.audio * gain)
            timeline.append(start / sr, (start + x.shape[0]) / sr, e)
            per_window.append(e.warnings)
            total = start + x.shape[0]
            bar.update()
        bar.close()
        if not len(timeline):
            raise DataError("explain_long: the recording holds no samples")
        ola.finish(total)
        timeline.duration_s = total / sr
        return timeline, count_warnings(per_window, len(timeline))

    @torch.no_grad()
    def explain_long(self, waveform: Any, sample_rate: int, window_s: float | None = None,
                     hop_s: float | None = None, target: Any = None,
                     progress: bool = False) -> Any:
        """Explain a recording of any length in windows of ``window_s`` seconds (default: the
        classifier's training clip length) every ``hop_s`` (default: half a window).

        ``waveform`` as for :meth:`explain` (one clip, mono or channels). Each window is
        explained as by :meth:`explain` (its own target: ``target``, or the classifier's
        prediction on that window); the explanation audio is stitched by overlap-add at the
        model's rate, as long as the resampled input. Returns a
        :class:`l2i.longform.LongExplanation` (``timeline``, ``audio``, ``warnings``).
        ``l2i interpret`` streams files the same way without holding them.
        """
        from l2i.audio import as_clips, resample
        from l2i.longform import LongExplanation, array_blocks

        x = as_clips(waveform, what="explain_long")[0]  # (S,)
        sr_in = int(sample_rate)
        if not MIN_SAMPLE_RATE <= sr_in <= MAX_SAMPLE_RATE:
            raise DataError(f"explain_long: sample_rate {sr_in} Hz is implausible")
        x = resample(x, sr_in, self.sample_rate)  # (N,)
        chunks: list[np.ndarray] = []
        _, hop = self.window_hop(window_s, hop_s)
        timeline, warns = self.explain_stream(array_blocks(x, hop), window_s, hop_s, target,
                                              write=chunks.append, n_samples=x.shape[0],
                                              progress=progress)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return LongExplanation(timeline=timeline, audio=audio, sample_rate=self.sample_rate,
                               warnings=warns)

    def _targets(self, target: Any, n_clips: int) -> Any:
        """``explain``'s target argument -> None, one class index, or a ``(B,)`` tensor."""
        if not isinstance(target, (list, tuple, np.ndarray, Tensor)):
            return self.resolve_target(target)
        seq = target.tolist() if isinstance(target, (np.ndarray, Tensor)) else list(target)
        if len(seq) != n_clips:
            raise ConfigError(f"explain: {len(seq)} targets for {n_clips} clips")
        if any(t is None for t in seq):
            raise ConfigError("explain: a per-clip target list cannot hold None")
        return torch.tensor([self.resolve_target(t) for t in seq])

    def _one(self, b: BatchExplanation, i: int, audio: Tensor, mag: Tensor, n_frames: int,
             phase: Tensor, peak: float, confidence_level: float) -> Explanation:
        """Clip ``i`` of a batch as an :class:`Explanation` (numpy, its own ``n_frames``);
        ``phase (n_frames, F)`` its STFT phase, ``peak`` its peak before normalisation."""
        names = self.class_names
        t = int(b.target[i])
        sel = b.selected[i]
        order = b.relevance[i][sel].argsort(descending=True)
        e = Explanation(
            audio=audio.float().cpu().numpy(), sample_rate=self.sample_rate,
            mask=b.mask[i, :n_frames].float().cpu().numpy(),
            relevance=b.relevance[i].float().cpu().numpy(),
            selected=[int(k) for k in torch.nonzero(sel).flatten()[order]],
            target=t, target_name=names[t] if t < len(names) else str(t),
            classifier_probs=b.probs[i].float().cpu().numpy(),
            theta_probs=b.theta_probs[i].float().cpu().numpy(),
            H=b.H[i, :, :n_frames].float().cpu().numpy(),
            input_magnitude=mag[:n_frames].float().cpu().numpy(),
            class_names=names, hop_length=self.features.hop_length,
            relevance_th=None if self.top_k else self.relevance_th, top_k=self.top_k,
            atoms=self.interpreter.W.float().cpu().numpy(), features=self.features,
            phase=phase.float().cpu().numpy(), input_peak=peak,  # phase (T, F)
            **self._weights_of(b, i, n_frames))
        e.warnings = explanation_warnings(e, confidence_level)
        return e

    def _weights_of(self, b: BatchExplanation, i: int, n_frames: int) -> dict[str, Any]:
        """Clip ``i``'s mask weights and settings for :class:`Explanation` (none for the
        paper's mask, whose component masks need no weights)."""
        from l2i.config import MaskConfig, to_dict

        if self.mask_config == MaskConfig() or b.weights is None:
            return {}
        w = b.weights[i] if b.weights.dim() == 2 else b.weights[i, :, :n_frames]  # (K,|K, T)
        return {"weights": w.float().cpu().numpy(), "mask_config": to_dict(self.mask_config)}


def checkpoint_normalize(interpreter: Any) -> str:
    """The ``data.normalize`` the classifier was trained with.

    Read from the classifier checkpoint (``normalize``, written by ``l2i train-classifier``),
    else from the recipe embedded in the L2I checkpoint (``recipe.data.normalize``, for
    classifier checkpoints written before the key existed), else the recipes' default
    (``DataConfig.normalize``, ``peak``).
    """
    record = getattr(interpreter, "classifier_record", None) or {}
    if record.get("normalize"):
        return str(record["normalize"])
    data = (getattr(interpreter, "recipe", None) or {}).get("data") or {}
    if data.get("normalize"):
        return str(data["normalize"])
    return DataConfig().normalize


def checkpoint_mask_config(interpreter: Any, overrides: Any = None) -> Any:
    """The :class:`l2i.config.MaskConfig` to explain with.

    ``overrides`` a ``MaskConfig``: used as it is. Otherwise the ``mask`` section of the
    ``l2i train`` recipe stored in the checkpoint (``interpreter.recipe``; a checkpoint
    without one: ``MaskConfig()``, the paper's mask, so old checkpoints explain as before),
    with the non-None fields of ``overrides`` (a ``MaskOverrides`` or a dict) on top.
    """
    from dataclasses import asdict, is_dataclass

    from l2i.config import MaskConfig, from_dict

    if isinstance(overrides, MaskConfig):
        return overrides
    stored = ((getattr(interpreter, "recipe", None) or {}).get("mask") or {})
    over = asdict(overrides) if is_dataclass(overrides) else dict(overrides or {})
    merged = {**dict(stored), **{k: v for k, v in over.items() if v is not None}}
    try:
        return from_dict(MaskConfig, merged, "mask.")
    except ConfigError as err:
        raise ConfigError(f"mask settings (the checkpoint's recipe 'mask' section and the "
                          f"overrides): {err}") from None


def _checkpoint_relevance_th(interpreter: Any) -> float:
    """``loss.relevance_th`` stored with the interpreter, else the reference's 0.2."""
    for holder in (interpreter, getattr(interpreter, "info", None)):
        if holder is None:
            continue
        loss = getattr(holder, "loss", None) or getattr(holder, "loss_config", None)
        if isinstance(loss, dict) and "relevance_th" in loss:
            return float(loss["relevance_th"])
        if loss is not None and hasattr(loss, "relevance_th"):
            return float(loss.relevance_th)
        th = getattr(holder, "relevance_th", None)
        if isinstance(th, (int, float)):
            return float(th)
    return DEFAULT_RELEVANCE_TH


# names that moved to the command side and still import from here (backward compatibility)
_MOVED = {"interpret_files": "l2i.interpret", "audio_files": "l2i.interpret",
          "write_explanation": "l2i.explanation_files",
          "write_components": "l2i.explanation_files"}


def __getattr__(name: str) -> Any:
    """``l2i.explain.interpret_files`` / ``audio_files`` (now in :mod:`l2i.interpret`) and
    ``write_explanation`` / ``write_components`` (now in :mod:`l2i.explanation_files`) still
    import."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["relevance", "select_components", "ratio_mask", "explanation_magnitude", "to_audio",
           "frame_relevance", "foreground", "peakiness", "relevance_weights", "weighted_mask",
           "sharpen_mask", "floor_gate", "prune_mask", "classifier_bands", "explanation_mask",
           "selected_of", "checkpoint_mask_config",
           "Explanation", "Explanations", "BatchExplanation", "Explainer", "checkpoint_normalize",
           "explanation_warnings", "default_confidence_level", "max_prob_quantile"]
