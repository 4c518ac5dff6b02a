"""Figures of ``l2i interpret``: single components, and the timeline of a long recording.

:func:`components_figure` draws, for each selected component ``k`` of an explanation, its
atom's spectrum ``W[:, k]`` (frequency in Hz) next to its activation ``H_k(t)`` (seconds), with
its relevance. :func:`timeline_figure` draws a :class:`l2i.longform.Timeline`: the classifier's
probability of the top classes over time (theta's dashed), the dominant class per window, and
the pooled activations of the components selected most often.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from l2i.figures import _mpl, save_figure


def components_figure(expl: Any, path: str | os.PathLike, max_components: int = 8,
                      title: str | None = None) -> Path:
    """PNG: one row per selected component (at most ``max_components``, most relevant first):
    atom spectrum ``W[:, k]`` (F bins, 0..sr/2 Hz) and activation ``H_k(t)`` (T frames)."""
    plt = _mpl()
    shown = list(expl.selected)[:max_components]
    rows = max(len(shown), 1)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 1.9 * rows + 0.9), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2]}, layout="constrained")
    sr, hop = int(expl.sample_rate), int(expl.hop_length)
    H = np.asarray(expl.H)  # (K, T)
    times = np.arange(H.shape[1]) * hop / sr
    if not shown:
        for ax in axes[0]:
            ax.axis("off")
        axes[0, 1].text(0.5, 0.5, "no component selected: the explanation is silent",
                        ha="center", va="center", transform=axes[0, 1].transAxes)
    W = None if expl.atoms is None else np.asarray(expl.atoms)  # (F, K)
    for row, k in enumerate(shown):
        ax_w, ax_h = axes[row]
        if W is not None:
            freqs = np.linspace(0.0, sr / 2, W.shape[0])
            ax_w.plot(freqs, W[:, k], color="tab:purple", lw=1)
            ax_w.set_xlim(0, sr / 2)
        ax_w.set_ylabel(f"k={k}\nr={expl.relevance[k]:.2f}", rotation=0, ha="right",
                        va="center", fontsize=9)
        ax_w.tick_params(labelsize=7)
        ax_h.plot(times, H[k], color="tab:green", lw=1)
        ax_h.set_xlim(0, max(times[-1] if len(times) else 0.0, 1e-3))
        ax_h.tick_params(labelsize=7)
        ax_h.grid(alpha=0.3)
    axes[0, 0].set_title("atom spectrum W[:, k]", fontsize=9)
    axes[0, 1].set_title("activation H_k(t)", fontsize=9)
    axes[-1, 0].set_xlabel("frequency (Hz)")
    axes[-1, 1].set_xlabel("time (s)")
    fig.suptitle(title or f"selected components of '{expl.target_name}'", fontsize=11)
    return save_figure(fig, path)


def _top_classes(probs: np.ndarray, n: int) -> list[int]:
    """The ``n`` classes of highest mean probability over the windows of ``probs (W, C)``."""
    return [int(c) for c in np.argsort(-probs.mean(axis=0))[:n]]


def timeline_figure(timeline: Any, path: str | os.PathLike, n_classes: int = 5,
                    n_components: int = 6, title: str | None = None) -> Path:
    """PNG of a :class:`l2i.longform.Timeline`: class evidence over time (window centres, s)."""
    plt = _mpl()
    pc, pt = timeline.probs("classifier"), timeline.probs("theta")  # (W, C)
    spans = timeline.spans()  # (W, 2)
    centre = (np.asarray(timeline.start_s) + np.asarray(timeline.end_s)) / 2
    names = timeline.class_names
    fig, (ax_p, ax_d, ax_z) = plt.subplots(3, 1, figsize=(13, 7.5), sharex=True,
                                           gridspec_kw={"height_ratios": [3, 0.6, 2]},
                                           layout="constrained")
    colours = plt.get_cmap("tab10")
    top = _top_classes(pc, n_classes)
    for i, c in enumerate(top):
        ax_p.plot(centre, pc[:, c], color=colours(i % 10), lw=1.4, label=f"{names[c]}")
        ax_p.plot(centre, pt[:, c], color=colours(i % 10), lw=0.9, ls="--")
    ax_p.set_ylim(0, 1)
    ax_p.set_ylabel("probability")
    ax_p.set_title("class evidence per window (solid: classifier, dashed: theta)", fontsize=10)
    ax_p.legend(fontsize=8, ncol=min(len(top), 5), loc="upper right")
    ax_p.grid(alpha=0.3)
    pred = timeline.predicted
    for (lo, hi), c in zip(spans, pred):
        i = top.index(int(c)) if int(c) in top else None
        ax_d.axvspan(lo, hi, color=colours(i % 10) if i is not None else "0.7", lw=0)
    ax_d.set_yticks([])
    ax_d.set_ylabel("top", rotation=0, ha="right", va="center")
    z = np.stack(timeline.z) if len(timeline) else np.zeros((0, 0))  # (W, K)
    counts = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64)
                                         for s in timeline.selected] or [np.zeros(0, int)]),
                         minlength=z.shape[1] if z.size else 0)
    comps = [int(k) for k in np.argsort(-counts)[:n_components] if counts[k] > 0]
    for k in comps:
        ax_z.plot(centre, z[:, k], lw=1, label=f"k={k} (selected in {counts[k]} windows)")
    if comps:
        ax_z.legend(fontsize=7, ncol=2, loc="upper right")
    ax_z.set_ylabel("mean activation z_k")
    ax_z.set_xlabel("time (s)")
    ax_z.set_title("activations of the most often selected components", fontsize=10)
    ax_z.grid(alpha=0.3)
    ax_z.set_xlim(0, max(timeline.duration_s, 1e-3))
    fig.suptitle(title or "timeline", fontsize=12)
    return save_figure(fig, path)


__all__ = ["components_figure", "timeline_figure"]
