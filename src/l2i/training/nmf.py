"""``l2i train-nmf``: learn (or import) the NMF dictionary W on log1p|STFT| training frames.

Writes into ``output_folder``::

    nmf.pt       {"format": "l2i-nmf", "W" (F, K), "features", "stats"} (see l2i.nmf)
    atoms.png    the K atoms sorted by spectral centroid (frequency in Hz) + the objective curve
    nmf.json     objective, relative reconstruction error on train and valid frames, K, frames, time
    config.yaml  the resolved NMFRecipe
    cache/       decoded audio (l2i.data), reused by later runs

The valid error uses ``nmf_transform`` with W fixed: it tells whether the dictionary generalises
to unseen clips (the interpreter reconstructs clips it was not learnt on).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2i.config import FeaturesConfig, NMFRecipe, save_config
from l2i.errors import L2IError
from l2i.features import log1p_magnitude, n_frames, stft
from l2i.fileio import new_npy, save_figure, write_json
from l2i.nmf import (
    NMFResult,
    dictionary_features_source,
    fit_nmf,
    load_dictionary,
    relative_error,
    save_dictionary,
)

TRANSFORM_ITER = 30  # HALS sweeps when fitting H with W fixed (valid frames, imported W)


def spectrogram_frames(wavs: np.ndarray | list[np.ndarray], features: FeaturesConfig,
                       device: torch.device | str = "cpu", batch: int = 16,
                       out_path: str | os.PathLike | None = None) -> np.ndarray:
    """log1p|STFT| frames of every clip, stacked: ``wavs (N, S)`` (or a list of ``(S_i,)``)
    -> ``(sum_i T_i, F)`` float32, computed ``batch`` clips at a time.

    With ``out_path`` the frames go to a ``.npy`` on disk and a read-only memmap of it is
    returned, so host memory stays bounded (the mini-batch solver streams from it).
    """
    total = sum(n_frames(len(w), features) for w in wavs)
    shape = (total, features.n_freq)
    if out_path is None:
        out = np.empty(shape, np.float32)
        _fill_frames(out, wavs, features, device, batch)
        return out
    with new_npy(out_path, shape, np.float32) as out:
        _fill_frames(out, wavs, features, device, batch)
    return np.load(out_path, mmap_mode="r")


def _fill_frames(out: np.ndarray, wavs: np.ndarray | list[np.ndarray], features: FeaturesConfig,
                 device: torch.device | str, batch: int) -> None:
    """Write the log1p|STFT| frames of ``wavs`` into ``out (sum_i T_i, F)``, in order."""
    if isinstance(wavs, np.ndarray) and wavs.ndim == 2:
        groups = [wavs[i:i + batch] for i in range(0, len(wavs), batch)]
    else:
        groups = [np.asarray(w)[None] for w in wavs]  # variable length: one clip at a time
    row = 0
    for g in groups:
        x = torch.from_numpy(np.array(g, dtype=np.float32)).to(device)  # (B, S), a writable copy
        mag = log1p_magnitude(stft(x, features))  # (B, T, F)
        flat = mag.reshape(-1, mag.shape[-1]).cpu().numpy()  # (B * T, F)
        out[row:row + len(flat)] = flat
        row += len(flat)


def subsample(frames: np.ndarray, max_frames: int | None, seed: int) -> np.ndarray:
    """At most ``max_frames`` rows of ``frames (N, F)``, drawn without replacement (seeded)."""
    if max_frames is None or max_frames >= len(frames):
        return frames
    idx = np.sort(np.random.default_rng(seed).choice(len(frames), max_frames, replace=False))
    return frames[idx]


def training_frames(wavs: Any, features: FeaturesConfig, device: torch.device | str,
                    max_frames: int | None, seed: int, out_path: str | os.PathLike | None = None,
                    batch: int = 16) -> np.ndarray:
    """``subsample(spectrogram_frames(wavs, ...), max_frames, seed)``, ``(n, F)``, computed
    ``batch`` clips at a time keeping only the drawn frames when the clips have one length
    (``wavs (N, S)``, e.g. shards): host memory holds ``max_frames`` frames, not every frame
    of the split (the same rows, bit for bit)."""
    fixed = getattr(wavs, "ndim", 1) == 2 and len(wavs)
    per_clip = n_frames(wavs.shape[1], features) if fixed else 0
    total = per_clip * len(wavs) if fixed else 0
    if not fixed or max_frames is None or max_frames >= total:
        return subsample(spectrogram_frames(wavs, features, device, out_path=out_path),
                         max_frames, seed)
    idx = np.sort(np.random.default_rng(seed).choice(total, max_frames, replace=False))
    out = np.empty((max_frames, features.n_freq), np.float32)
    clip_of = idx // per_clip  # (max_frames,) the clip of each drawn frame
    for start in range(0, len(wavs), batch):
        lo, hi = np.searchsorted(clip_of, [start, start + batch])
        if lo == hi:
            continue  # no frame drawn from these clips: not even read
        frames = spectrogram_frames(wavs[start:start + batch], features, device)  # (b T, F)
        out[lo:hi] = frames[idx[lo:hi] - start * per_clip]
    return out


def train_nmf(cfg: NMFRecipe) -> str:
    """Learn the dictionary of ``cfg`` (or import ``cfg.init``) and write the outputs.

    Returns the path of ``nmf.pt``. Raises L2IError when ``output_folder`` already holds an
    ``nmf.pt`` (choose a new folder or delete it: a dictionary is never silently replaced, since
    interpreters trained on it would no longer match).
    """
    from l2i.data import load_split, with_absolute_data_folder
    from l2i.device import resolve_device
    from l2i.shards import training_index

    out = Path(cfg.output_folder)
    target = out / "nmf.pt"
    _check_nmf_inputs(cfg, target)
    cfg = with_absolute_data_folder(cfg)  # config.yaml and nmf.json name it from anywhere
    device = resolve_device(cfg.nmf.device)
    imported = _import_dictionary(cfg) if cfg.init else None  # fails before any audio is read
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    t0 = time.perf_counter()

    cache = out / "cache" if cfg.data.cache else None
    sr = cfg.features.sample_rate
    index = training_index(cfg.data_folder, cfg.data, sr, cache, splits=("train", "valid"))
    print(index.summary())
    train = load_split(index, "train", cfg.data, sr, cache)
    # mini-batch mode streams the frames from disk: host memory stays bounded
    on_disk = out / "cache" / "frames-train.npy" if cfg.nmf.batch_frames else None
    frames = training_frames(train.wavs, cfg.features, device, cfg.nmf.max_frames,
                             cfg.nmf.seed, on_disk)  # (N, F)
    valid_frames = None
    if index.valid:
        valid = load_split(index, "valid", cfg.data, sr, cache)
        valid_frames = spectrogram_frames(valid.wavs, cfg.features, device)  # (N_v, F)

    lam = cfg.nmf.sparsity
    result, features_source = _learn_or_import(cfg, imported, frames, device)
    rel_valid = (relative_error(valid_frames, result.W, lam, TRANSFORM_ITER, device)
                 if valid_frames is not None and len(valid_frames) else None)
    seconds = time.perf_counter() - t0

    stats: dict[str, Any] = {
        "objective": _num(result.objective), "rel_error_train": _num(result.rel_error),
        "rel_error_valid": _num(rel_valid), "K": int(result.W.shape[1]),
        "n_components": int(result.W.shape[1]), "n_freq": int(result.W.shape[0]),
        "n_frames": int(len(frames)),
        "n_frames_valid": int(len(valid_frames)) if valid_frames is not None else 0,
        "n_iter": int(result.n_iter), "seconds": round(seconds, 3), "sparsity": float(lam),
        "solver": cfg.nmf.solver, "init": cfg.init, "features_source": features_source,
        "data_folder": str(cfg.data_folder),
        "train_folds": list(cfg.data.train_folds), "valid_folds": list(cfg.data.valid_folds),
    }
    atoms_figure(out / "atoms.png", result.W, cfg.features, result.history)
    write_json(out / "nmf.json", {**stats, "history": [_num(h) for h in result.history]})
    save_dictionary(target, result.W, cfg.features, stats)
    valid_txt = f", valid {rel_valid:.4f}" if rel_valid is not None else ""
    print(f"wrote {target}: K={stats['n_components']}, relative error train "
          f"{result.rel_error:.4f}{valid_txt} ({seconds:.1f} s)")
    return str(target)


def _check_nmf_inputs(cfg: NMFRecipe, target: Path) -> None:
    """L2IError when ``target`` (``nmf.pt``) exists or no data folder is given."""
    if target.exists():
        raise L2IError(f"{target} already exists: give a new --output_folder, or delete it to "
                       "learn the dictionary again (interpreters trained on it would no longer "
                       "match)")
    if not cfg.data_folder:
        raise L2IError("train-nmf needs --data_folder (the dataset whose training frames the "
                       "dictionary is learnt on)")


def _learn_or_import(cfg: NMFRecipe, imported: tuple[torch.Tensor, str] | None,
                     frames: np.ndarray, device: torch.device) -> tuple[NMFResult, str]:
    """``(result, features source)``: the imported dictionary scored on ``frames (N, F)``
    (``objective`` and ``rel_error`` set, no history), or one learnt on them."""
    if imported is not None:
        W, features_source = imported
        rel, obj = relative_error(frames, W, cfg.nmf.sparsity, TRANSFORM_ITER, device,
                                  objective=True)
        return NMFResult(W=W, history=[], rel_error=rel, n_iter=0, objective=obj), \
            features_source
    print(f"learning {cfg.nmf.n_components} atoms on {len(frames)} frames x "
          f"{frames.shape[1]} bins ({cfg.nmf.solver}, device {device})")
    return fit_nmf(frames, cfg.nmf, device=device, progress=True), "learnt"


def _import_dictionary(cfg: NMFRecipe) -> tuple[torch.Tensor, str]:
    """``(W (F, K), features source)`` of ``cfg.init``, checked against ``cfg.features`` and the
    statement ``init_sample_rate`` / ``init_n_fft`` (see :func:`l2i.nmf.load_dictionary`)."""
    W, found = load_dictionary(cfg.init, cfg.features, sample_rate=cfg.init_sample_rate,
                               n_fft=cfg.init_n_fft)
    source = dictionary_features_source(found, cfg.init_sample_rate, cfg.init_n_fft)
    print(f"imported dictionary {cfg.init}: {W.shape[1]} atoms x {W.shape[0]} bins, STFT "
          f"settings {source}")
    return W, source


def spectral_centroids(W: torch.Tensor, features: FeaturesConfig) -> np.ndarray:
    """Spectral centroid in Hz of each atom of ``W (F, K)`` -> ``(K,)``."""
    Wn = W.detach().cpu().double().numpy()  # (F, K); float64 only on the CPU (MPS has none)
    freqs = np.linspace(0.0, features.sample_rate / 2, Wn.shape[0])  # (F,)
    return (freqs[:, None] * Wn).sum(0) / np.maximum(Wn.sum(0), 1e-12)


def atoms_figure(path: str | os.PathLike, W: torch.Tensor, features: FeaturesConfig,
                 history: list[float]) -> Path:
    """PNG: the atoms (columns of ``W (F, K)``) sorted by spectral centroid, frequency in Hz,
    each labelled with its index ``k`` in ``W``, next to the objective per iteration (absent for
    an imported dictionary)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    order = np.argsort(spectral_centroids(W, features), kind="stable")
    Wn = W.detach().float().cpu().numpy()[:, order]  # (F, K) sorted
    Wn = Wn / np.maximum(Wn.max(0, keepdims=True), 1e-12)  # each atom peaks at 1
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2.2, 1]})
    ax = axes[0]
    im = ax.imshow(Wn, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                   extent=[0.5, Wn.shape[1] + 0.5, 0.0, features.sample_rate / 2])
    # every atom labelled with its index k in W (the k of an explanation's components)
    ax.set_xticks(np.arange(1, Wn.shape[1] + 1), [str(int(k)) for k in order],
                  fontsize=max(3.0, min(8.0, 400.0 / Wn.shape[1])), rotation=90)
    ax.set_xlabel("atom index k (sorted by spectral centroid)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(f"NMF dictionary: {Wn.shape[1]} atoms x {Wn.shape[0]} bins "
                 f"(each scaled to its max)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    ax = axes[1]
    if history:
        ax.plot(np.arange(1, len(history) + 1), history, marker="." if len(history) < 40 else "")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(r"objective / $\|V\|_F^2$")
        ax.set_title("objective")
        ax.grid(True, which="both", alpha=0.3)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "imported dictionary\n(no training curve)", ha="center",
                va="center", transform=ax.transAxes)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)
