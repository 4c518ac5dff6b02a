"""The map cache of ``l2i train``: the frozen classifier's outputs, computed once per clip.

Without augmentation the classifier runs once per clip, batched and without gradients, and its
logits, frequency-pooled maps (:meth:`l2i.models.psi.Psi.reduce`) and the targets
``log1p|X|`` are stored as float16/float32 ``.npy`` memmaps in ``output_folder/cache/<split>``;
epochs then only run psi and theta. :func:`split_key` names everything the arrays are computed
from, so a cache is reused only while it matches. Under DDP rank 0 builds it and the others wait
(:func:`wait_for`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from l2i.config import L2IRecipe, to_dict
from l2i.errors import L2IError
from l2i.features import n_frames
from l2i.interpreter import Interpreter

CACHE_VERSION = 2  # 2: the classifier keyed by its bytes, not its size and mtime
SPLITS = ("train", "valid", "test")


class CachedSplit(Dataset):
    """A split's cache (see :func:`build_cache`), read through memmaps.

    A batch is ``{"reduced": {name: (B, 2C_i, T_i)}, "logits": (B, C), "target": (B, T, F),
    "label": (B,)}`` (float16 maps and targets are turned into float32 on the model side).
    """

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        self.meta = meta
        self.logits = np.load(folder / "logits.npy", mmap_mode="r")
        self.target = np.load(folder / "target.npy", mmap_mode="r")
        self.labels = np.load(folder / "labels.npy")
        self.maps = {n: np.load(folder / f"map_{n}.npy", mmap_mode="r") for n in meta["maps"]}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        i = np.asarray(idx, dtype=np.int64)
        return {"reduced": {n: torch.from_numpy(np.ascontiguousarray(m[i]))
                            for n, m in self.maps.items()},
                "logits": torch.from_numpy(np.ascontiguousarray(self.logits[i])),
                "target": torch.from_numpy(np.ascontiguousarray(self.target[i])),
                "label": torch.from_numpy(self.labels[i])}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])


@torch.no_grad()
def build_cache(interp: Interpreter, wavs: np.ndarray, labels: np.ndarray, folder: Path,
                key: str, batch_size: int, device: torch.device,
                progress: bool = False) -> Path:
    """Run the frozen classifier once per clip and store what training needs.

    Writes into ``folder``: ``logits.npy (N, C)`` float32, ``target.npy (N, T, F)`` float16
    (``log1p|X|``), ``map_<name>.npy (N, 2C_i, T_i)`` float16 (``Psi.reduce``),
    ``labels.npy (N,)`` and, last, ``meta.json`` (with ``key``). Reused while ``key`` matches.
    """
    from l2i.training.interpreter import classify_wave

    meta_path = folder / "meta.json"
    if _cache_ready(folder, key):
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    was_training = interp.training
    interp.eval().to(device)
    N, S = wavs.shape
    T = n_frames(S, interp.features)
    Fq = interp.W.shape[0]
    arrays: dict[str, np.ndarray] = {}

    def out(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        if name not in arrays:
            arrays[name] = np.lib.format.open_memmap(folder / f".{name}.npy.tmp", mode="w+",
                                                     dtype=dtype, shape=shape)
        return arrays[name]

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=N, desc=f"cache {folder.name}", unit="clip", leave=False)
    f16 = float(np.finfo(np.float16).max)
    for s in range(0, N, batch_size):
        wav = torch.from_numpy(np.array(wavs[s:s + batch_size], dtype=np.float32))
        logits, maps, target = classify_wave(interp, wav.to(device))  # target (B, T, F)
        reduced = interp.psi.reduce(maps)  # {name: (B, 2C, T_i)}
        out("logits", (N, logits.shape[1]), np.float32)[s:s + len(wav)] = logits.float().cpu()
        out("target", (N, T, Fq), np.float16)[s:s + len(wav)] = target.half().cpu()
        for name, r in reduced.items():
            out(f"map_{name}", (N, *r.shape[1:]), np.float16)[s:s + len(wav)] = \
                r.clamp(-f16, f16).half().cpu()
        if bar is not None:
            bar.update(len(wav))
    if bar is not None:
        bar.close()
    for arr in arrays.values():
        arr.flush()
    arrays.clear()
    for tmp in folder.glob(".*.npy.tmp"):
        os.replace(tmp, folder / tmp.name[1:-4])
    np.save(folder / "labels.npy", np.asarray(labels, dtype=np.int64))
    meta = {"key": key, "version": CACHE_VERSION, "n": int(N), "frames": int(T),
            "maps": list(interp.psi.map_names)}
    tmp_meta = folder / ".meta.json.tmp"
    tmp_meta.write_text(json.dumps(meta))
    os.replace(tmp_meta, meta_path)
    interp.train(was_training)
    return folder


def _cache_ready(folder: Path, key: str) -> bool:
    try:
        return json.loads((folder / "meta.json").read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def folder_size(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (0 when absent)."""
    if not folder.exists():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def split_key(cfg: L2IRecipe, clips: list, interp: Interpreter, classifier_digest: str) -> str:
    """Key of a split's map cache: everything its arrays are computed from.

    The classifier by the sha1 of its checkpoint's bytes (``classifier_digest``, from
    :func:`l2i.rerun.file_digest`; a retrained classifier of the same size and time stamp is a
    new key), the maps psi reads and their frequency reduction, the STFT, and the clips with
    the data settings that shape their audio (:func:`l2i.data.cache_key`).
    """
    from l2i.data import cache_key

    rec = interp.classifier_record or {}
    if rec.get("state_sha256"):  # a classifier given as code: its spec and hashes
        who: list[Any] = [rec.get("spec"), rec.get("module_sha256"), rec["state_sha256"]]
    else:
        who = [classifier_digest]
    h = hashlib.sha1(json.dumps([
        CACHE_VERSION, *who, interp.psi.map_names, interp.psi.freq_reduce,
        to_dict(interp.features), cache_key(clips, interp.features.sample_rate, cfg.data)
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
    while not _cache_ready(path, key):
        if time.time() - start > timeout_s:
            raise L2IError(f"rank {rank}: gave up waiting for rank 0 to write {path}")
        time.sleep(1.0)


__all__ = ["CACHE_VERSION", "CachedSplit", "build_cache", "folder_size", "split_key",
           "split_keys", "wait_for"]
