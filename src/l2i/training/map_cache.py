"""The map cache of ``l2i train``: the frozen classifier's outputs, computed once per clip.

Without augmentation the classifier runs once per clip, batched and without gradients, and its
logits ``(N, C)`` float32 and frequency-pooled maps (:meth:`l2i.models.psi.Psi.reduce`,
``(N, 2C_i, T_i)``, ``trainer.cache_dtype``, float16 by default) are written in shards of
``trainer.cache_shard_clips`` clips to ``output_folder/cache/<split>`` (``logits-00000.npy``,
``map_<name>-00000.npy``, ..., ``labels.npy``, ``meta.json`` last); epochs then only run psi
and theta. The targets ``log1p|X|`` are not stored: :class:`CachedSplit` recomputes them from the
split's audio with l2i's STFT for each batch (an STFT costs a fraction of the classifier; the
magnitude ``|X|`` was the largest array of cache version 2: 442 KB of 546 KB per ESC-10 clip),
and hands the audio on, so a training step that re-classifies a masked input has it.

:func:`cache_plan` decides, before anything is written, whether to cache (``cache_maps``
true / false / ``auto``), from :func:`estimate_bytes` (printed). :func:`split_key` names
everything the arrays are computed from, so a cache is reused only while it matches. Under DDP
rank 0 builds it and the others wait (:func:`wait_for`). Written with numpy memmaps into
temporary names renamed when complete, so memory holds one batch, not a split.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from l2i.config import FeaturesConfig, L2IRecipe, to_dict
from l2i.errors import ConfigError, L2IError
from l2i.features import n_frames, stft
from l2i.fileio import new_npy, save_npy, write_text
from l2i.interpreter import Interpreter

CACHE_VERSION = 3  # 3: sharded, targets recomputed from the audio; 2: whole arrays + targets
SPLITS = ("train", "valid", "test")
NPY_HEADER = 128  # bytes of a .npy header (format 1.0, padded to 64; these shapes fit in 128)
GB = 2**30  # the GB of trainer.cache_auto_gb / cache_limit_gb (and MB = 2**20, as cache_mb)


def shard_name(name: str, shard: int) -> str:
    """File of rows ``shard * shard_clips ...`` of array ``name``: ``name-00003.npy``."""
    return f"{name}-{shard:05d}.npy"


class CachedSplit(Dataset):
    """A split's cache (see :func:`build_cache`) with the split's audio ``wavs (N, S)``.

    A batch is ``{"reduced": {name: (B, 2C_i, T_i)}, "logits": (B, C), "target": (B, T, F),
    "audio": (B, S), "label": (B,)}``: maps and logits read from the shards the rows fall in
    (float16 maps are turned into float32 on the model side), ``target = log1p|STFT(wav)|``
    computed here with ``features`` (float32), ``audio`` the waveform it came from (a step that
    re-classifies a masked input takes magnitude and phase from it).
    """

    def __init__(self, folder: Path, wavs: Any, features: FeaturesConfig) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.labels = np.load(self.folder / "labels.npy")
        self.wavs, self.features = wavs, features
        self.names = ["logits", *(f"map_{n}" for n in self.meta["maps"])]
        if len(wavs) != len(self.labels):
            raise L2IError(f"map cache {folder} holds {len(self.labels)} clips, the split "
                           f"{len(wavs)}: delete {folder} to rebuild it")

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, name: str, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of array ``name``, ``(B, ...)``, read from the shards they fall in."""
        per = int(self.meta["shard_clips"])
        shape = self.meta["arrays"][name]
        out = np.empty((len(idx), *shape), dtype=self.meta["dtypes"][name])
        shard = idx // per  # (B,)
        for s in np.unique(shard).tolist():
            at = np.nonzero(shard == s)[0]
            data = np.load(self.folder / shard_name(name, s), mmap_mode="r")  # (n_s, ...)
            out[at] = data[idx[at] - s * per]
            del data
        return out

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        i = np.asarray(idx, dtype=np.int64)
        got = {n: torch.from_numpy(self.rows(n, i)) for n in self.names}
        wav = torch.from_numpy(np.ascontiguousarray(self.wavs[i], dtype=np.float32))  # (B, S)
        target = torch.log1p(stft(wav, self.features).abs())  # (B, T, F)
        return {"reduced": {n: got[f"map_{n}"] for n in self.meta["maps"]},
                "logits": got["logits"], "target": target, "audio": wav,
                "label": torch.from_numpy(self.labels[i])}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])


@torch.no_grad()
def clip_layout(interp: Interpreter, wav: np.ndarray, dtype: str = "float16"
                ) -> dict[str, tuple[list[int], str]]:
    """What the cache stores per clip: ``{array: (shape, dtype)}``, from one clip ``wav (S,)``.

    ``logits`` ``[C]`` float32 and ``map_<name>`` ``[2C_i, T_i]`` (``Psi.reduce``) in ``dtype``;
    every clip of a split has the same length, so one forward pass on CPU tells all.
    """
    from l2i.training.interpreter import classify_wave

    was_training = interp.training
    interp.eval()
    dev = interp.W.device
    one = torch.from_numpy(np.array(wav[None], dtype=np.float32)).to(dev)  # (1, S)
    logits, maps, _ = classify_wave(interp, one)
    reduced = interp.psi.reduce(maps)  # {name: (1, 2C, T_i)}
    interp.train(was_training)
    layout = {"logits": (list(logits.shape[1:]), "float32")}
    layout.update({f"map_{n}": (list(r.shape[1:]), dtype) for n, r in reduced.items()})
    return layout


def estimate_bytes(layout: dict[str, tuple[list[int], str]], n: int, shard_clips: int) -> int:
    """Bytes :func:`build_cache` writes for ``n`` clips of ``layout``: the arrays, one
    ``.npy`` header per shard file, ``labels.npy`` (int64) and ``meta.json`` (~1 KB)."""
    per_clip = sum(math.prod(shape) * np.dtype(dt).itemsize for shape, dt in layout.values())
    shards = max(1, math.ceil(n / max(1, shard_clips)))
    return int(n * per_clip + shards * len(layout) * NPY_HEADER + NPY_HEADER + 8 * n + 1024)


@torch.no_grad()
def build_cache(interp: Interpreter, wavs: Any, labels: np.ndarray, folder: Path,
                key: str, batch_size: int, device: torch.device,
                progress: bool = False, dtype: str = "float16",
                shard_clips: int = 1024) -> Path:
    """Run the frozen classifier once per clip and store its outputs in shards.

    ``wavs (N, S)``: the split's audio (array, memmap or :class:`l2i.shards.ShardedArray`).
    Writes into ``folder``, per shard of ``shard_clips`` clips, ``logits-NNNNN.npy (n, C)``
    float32 and ``map_<name>-NNNNN.npy (n, 2C_i, T_i)`` in ``dtype`` (``Psi.reduce``, clamped to
    the float16 range), then ``labels.npy (N,)`` and, last, ``meta.json`` (with ``key``).
    Reused while ``key`` matches. Memory holds one batch.
    """
    from l2i.training.interpreter import classify_wave

    if cache_ready(folder, key):
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    was_training = interp.training
    interp.eval().to(device)
    N, S = wavs.shape
    layout = clip_layout(interp, wavs[0], dtype)
    per = max(1, int(shard_clips))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=N, desc=f"cache {folder.name}", unit="clip", leave=False)
    f16 = float(np.finfo(np.float16).max)
    for shard, s0 in enumerate(range(0, N, per)):
        n = min(per, N - s0)
        with ExitStack() as files:  # each shard file appears whole, or not at all
            out = {a: files.enter_context(new_npy(folder / shard_name(a, shard), (n, *shape),
                                                  dt))
                   for a, (shape, dt) in layout.items()}
            for s in range(s0, s0 + n, batch_size):
                e = min(s + batch_size, s0 + n)
                wav = torch.from_numpy(np.array(wavs[s:e], dtype=np.float32)).to(device)
                logits, maps, _ = classify_wave(interp, wav)  # (B, C), {name: maps}
                out["logits"][s - s0:e - s0] = logits.float().cpu()
                for name, r in interp.psi.reduce(maps).items():  # (B, 2C, T_i)
                    out[f"map_{name}"][s - s0:e - s0] = r.float().clamp(-f16, f16).cpu()
                if bar is not None:
                    bar.update(e - s)
            out.clear()
    if bar is not None:
        bar.close()
    save_npy(folder / "labels.npy", np.asarray(labels, dtype=np.int64))
    meta = {"key": key, "version": CACHE_VERSION, "n": int(N),
            "frames": int(n_frames(S, interp.features)), "maps": list(interp.psi.map_names),
            "shard_clips": per, "shards": math.ceil(N / per),
            "arrays": {a: shape for a, (shape, _) in layout.items()},
            "dtypes": {a: dt for a, (_, dt) in layout.items()}}
    write_text(folder / "meta.json", json.dumps(meta))
    interp.train(was_training)
    return folder


def cache_ready(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a complete cache written under ``key``."""
    try:
        return json.loads((folder / "meta.json").read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def folder_size(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (0 when absent)."""
    if not folder.exists():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def cache_plan(mode: bool | str, est_bytes: int, auto_gb: float, limit_gb: float) -> bool:
    """Whether to cache the maps (True) or recompute them each epoch (False).

    ``mode`` is ``cache_maps``: True / False decide; ``auto`` caches while ``est_bytes`` is at
    most ``auto_gb`` (trainer.cache_auto_gb) and recomputes above it, but past ``limit_gb``
    (trainer.cache_limit_gb, 0 = none) it raises a ConfigError asking for an explicit choice:
    at that size both caching (disk) and recomputing (a classifier pass per clip per epoch)
    are large costs.
    """
    if mode is True or mode is False:
        return mode
    if limit_gb > 0 and est_bytes > limit_gb * GB:
        raise ConfigError(
            f"the map cache would take {est_bytes / GB:.1f} GB, past trainer.cache_limit_gb "
            f"= {limit_gb:g}: pass --cache_maps true to write it anyway, or --cache_maps false "
            "to recompute the classifier's maps each epoch (docs/scaling.md gives both costs); "
            "or raise --trainer.cache_limit_gb")
    return est_bytes <= auto_gb * GB


def split_key(cfg: L2IRecipe, clips: list, interp: Interpreter, classifier_digest: str) -> str:
    """Key of a split's map cache: everything its arrays are computed from.

    The classifier by the sha1 of its checkpoint's bytes (``classifier_digest``, from
    :func:`l2i.rerun.file_digest`; a retrained classifier of the same size and time stamp is a
    new key), the maps psi reads and their frequency reduction, the STFT, and the clips with
    the data settings that shape their audio (:func:`l2i.data.cache_key`), and the cache's
    dtype and shard size.
    """
    from l2i.data import cache_key

    rec = interp.classifier_record or {}
    if rec.get("state_sha256"):  # a classifier given as code: its spec and hashes
        who: list[Any] = [rec.get("spec"), rec.get("module_sha256"), rec["state_sha256"]]
    else:
        who = [classifier_digest]
    h = hashlib.sha1(json.dumps([
        CACHE_VERSION, *who, interp.psi.map_names, interp.psi.freq_reduce,
        cfg.trainer.cache_dtype, int(cfg.trainer.cache_shard_clips), to_dict(interp.features),
        cache_key(clips, interp.features.sample_rate, cfg.data)
    ]).encode())
    return h.hexdigest()[:20]


def split_keys(cfg: L2IRecipe, index: Any, interp: Interpreter) -> dict[str, str]:
    """:func:`split_key` of each split of ``index`` (the classifier checkpoint hashed once)."""
    from l2i.rerun import file_digest

    digest = file_digest(cfg.classifier_ckpt) if cfg.classifier_ckpt else ""
    return {s: split_key(cfg, index.split(s), interp, digest) for s in SPLITS}


def wait_for(path: Path, key: str, rank: int, timeout_s: float = 6 * 3600) -> None:
    """Block until another process (DDP rank 0) has written the cache ``path`` with ``key``."""
    start = time.time()
    while not cache_ready(path, key):
        if time.time() - start > timeout_s:
            raise L2IError(f"rank {rank}: gave up waiting for rank 0 to write {path}")
        time.sleep(1.0)


__all__ = ["CACHE_VERSION", "CachedSplit", "build_cache", "cache_plan", "clip_layout",
           "estimate_bytes", "folder_size", "split_key", "split_keys", "wait_for"]
