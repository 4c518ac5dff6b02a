"""Figures of explanations (matplotlib, headless): spectrograms, mask, activations, classes.

:func:`explanation_figure` draws one :class:`l2i.explain.Explanation` into a PNG: the input
spectrogram, the mask, the explanation spectrogram (time in seconds, frequency in Hz, dB colour
scales shared between input and explanation), the activations over time of the selected
components, and the top-5 classes of the classifier next to theta's. The report reuses it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from l2i import fileio

DB_RANGE = 80.0  # dynamic range shown by the spectrogram panels


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def to_db(mag: np.ndarray, ref: float | None = None) -> np.ndarray:
    """``20 log10(|X| / ref)`` with ``ref`` = the max (default), floored at -``DB_RANGE``."""
    mag = np.abs(np.asarray(mag, dtype=np.float64))
    ref = float(mag.max()) if ref is None else float(ref)
    if ref <= 0:
        return np.full(mag.shape, -DB_RANGE)
    return np.maximum(20.0 * np.log10(np.maximum(mag, 1e-12) / ref), -DB_RANGE)


def _extent(n_frames: int, n_freq: int, hop_length: int, sample_rate: int) -> list[float]:
    return [0.0, n_frames * hop_length / sample_rate, 0.0, sample_rate / 2.0]


def plot_spectrogram(ax: Any, img: np.ndarray, extent: list[float], title: str,
                     cmap: str = "magma", vmin: float | None = None, vmax: float | None = None,
                     label: str = "dB") -> Any:
    """``img (T, F)`` as an image with time (s) on x and frequency (Hz) on y; returns it."""
    im = ax.imshow(np.asarray(img).T, origin="lower", aspect="auto", extent=extent, cmap=cmap,
                   vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    cb = ax.figure.colorbar(im, ax=ax, pad=0.01)
    cb.set_label(label)
    return im


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a figure as PNG atomically and close it (:func:`l2i.fileio.save_figure`)."""
    return fileio.save_figure(fig, path, dpi=dpi)


def mask_title(mask_config: dict[str, Any] | None) -> str:
    """The mask panel's title: the paper's ratio mask, or the options that differ from it
    (``{"weights": "soft", "floor_gate": 0.1}`` -> ``mask M (weights soft, floor_gate
    0.1)``)."""
    from l2i.config import MaskConfig, to_dict

    paper = to_dict(MaskConfig())
    changed = [f"{k}" if v is True else f"{k} {v}" for k, v in (mask_config or {}).items()
               if k in paper and v != paper[k]]
    return f"mask M ({', '.join(changed)})" if changed else "mask M = W_L H_L / W H"


def explanation_figure(expl: Any, path: str | os.PathLike, title: str | None = None,
                       max_components: int = 8) -> Path:
    """Draw one explanation into ``path`` (PNG) and return the path.

    Panels: input spectrogram, mask ``M``, explanation spectrogram ``M * |X|`` (same dB scale
    as the input), activations ``H_k(t)`` of the (at most ``max_components`` most relevant)
    selected components, and the top-5 classes of the classifier vs theta.
    """
    plt = _mpl()
    mag = np.asarray(expl.input_magnitude)  # (T, F)
    mask = np.asarray(expl.mask)  # (T, F)
    n_t, n_f = mag.shape
    sr, hop = int(expl.sample_rate), int(expl.hop_length)
    ext = _extent(n_t, n_f, hop, sr)
    ref = float(mag.max()) if mag.size and mag.max() > 0 else 1.0

    fig = plt.figure(figsize=(13, 8.5), layout="constrained")
    grid = fig.add_gridspec(2, 6)
    ax_in = fig.add_subplot(grid[0, 0:2])
    ax_mask = fig.add_subplot(grid[0, 2:4], sharex=ax_in, sharey=ax_in)
    ax_ex = fig.add_subplot(grid[0, 4:6], sharex=ax_in, sharey=ax_in)
    ax_h = fig.add_subplot(grid[1, 0:4])
    ax_cls = fig.add_subplot(grid[1, 4:6])

    plot_spectrogram(ax_in, to_db(mag, ref), ext, "input |X|", vmin=-DB_RANGE, vmax=0.0,
                     label="dB re max")
    plot_spectrogram(ax_mask, mask, ext, mask_title(getattr(expl, "mask_config", None)),
                     cmap="viridis", vmin=0.0, vmax=1.0, label="mask")
    plot_spectrogram(ax_ex, to_db(mag * mask, ref), ext,
                     f"explanation M·|X| ('{expl.target_name}')", vmin=-DB_RANGE, vmax=0.0,
                     label="dB re input max")

    _activations_panel(ax_h, expl, n_t, hop, sr, max_components)
    _classes_panel(ax_cls, expl)

    fig.suptitle(title or f"explanation of '{expl.target_name}'", fontsize=12)
    return save_figure(fig, path)


def _activations_panel(ax: Any, expl: Any, n_t: int, hop: int, sr: int,
                       max_components: int) -> None:
    """Activations ``H_k(t)`` of the (at most ``max_components``) selected components."""
    times = (np.arange(n_t) * hop) / sr
    H = np.asarray(expl.H)  # (K, T)
    shown = list(expl.selected)[:max_components]
    if shown:
        for k in shown:
            ax.plot(times, H[k], lw=1.2, label=f"k={k} (r={expl.relevance[k]:.2f})")
        ax.legend(fontsize=8, ncol=2, loc="upper right")
        extra = len(expl.selected) - len(shown)
        sub = f" (+{extra} more)" if extra > 0 else ""
        ax.set_title(f"activations of the {len(shown)} selected components{sub}", fontsize=10)
    else:
        ax.text(0.5, 0.5, "no component passed the relevance threshold: empty explanation",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_title("activations of the selected components", fontsize=10)
    ax.set_xlim(0, max(times[-1] if n_t else 0.0, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("activation H_k(t)")
    ax.grid(alpha=0.3)


def _classes_panel(ax: Any, expl: Any) -> None:
    """The top classes, classifier vs theta (the target always shown, marked with an arrow)."""
    names = list(expl.class_names) or [str(i) for i in range(len(expl.classifier_probs))]
    pc, pt = np.asarray(expl.classifier_probs), np.asarray(expl.theta_probs)
    top = list(np.argsort(-pc)[:5])
    if expl.target not in top:
        top[-1] = expl.target
    y = np.arange(len(top))
    ax.barh(y - 0.2, pc[top], height=0.4, label="classifier", color="tab:blue")
    ax.barh(y + 0.2, pt[top], height=0.4, label="theta (from H)", color="tab:orange")
    ax.set_yticks(y, [("→ " if i == expl.target else "") + names[i] for i in top], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.set_title("top classes", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)


def masks_figure(mag: np.ndarray, masks: dict[str, np.ndarray], path: str | os.PathLike,
                 sample_rate: int, hop_length: int, title: str = "") -> Path:
    """Any explainers side by side: the input spectrogram, then each explainer's explanation
    ``M * |X|`` (same dB scale as the input). ``mag`` and every mask are ``(T, F)``."""
    plt = _mpl()
    mag = np.asarray(mag)
    n_t, n_f = mag.shape
    ext = _extent(n_t, n_f, int(hop_length), int(sample_rate))
    ref = float(mag.max()) if mag.size and mag.max() > 0 else 1.0
    panels = [("input |X|", mag)] + [(f"{name}: M·|X|", mag * np.asarray(m))
                                     for name, m in masks.items()]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False,
                             layout="constrained", sharex=True, sharey=True)
    for ax, (name, img) in zip(axes.flat, panels):
        plot_spectrogram(ax, to_db(img, ref), ext, name, vmin=-DB_RANGE, vmax=0.0,
                         label="dB re input max")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=12)
    return save_figure(fig, path)


__all__ = ["explanation_figure", "masks_figure", "plot_spectrogram", "save_figure", "to_db"]
