"""Decoded datasets as shards: written once by ``l2i prepare``, streamed by every stage.

Layout of a shards folder (``index.json`` last, so a folder without it is unfinished)::

    <split>-00000.npy ...   (n, S) float16 | float32 waveforms at ``sample_rate``, ``duration_s``
    index.json              {"format": "l2i-shards", "version": 1, "sample_rate", "duration_s",
                             "n_samples", "dtype", "class_names", "source", "data",
                             "splits": {split: {"shards": [{"file", "n"}], "ids", "labels",
                                                "folds"}}}

A shards folder is also a ``--data_folder``: :func:`l2i.data.load_dataset` reads its
``index.json`` (:func:`shard_rows`; folds re-assigned by ``--data.*_folds``) and
:func:`l2i.data.load_split` returns a :class:`ShardedArray` (read on indexing) instead of
decoding, so every stage trains from the same decoded copy.

Why plain ``.npy`` shards and not WebDataset / litdata: the clips are already fixed-length
float arrays after :func:`l2i.data.load_split`, so a shard is one array that ``np.load(...,
mmap_mode="r")`` maps without decoding, copying or a new dependency; a batch read is a slice
(WebDataset would store one ``.npy`` per clip inside a tar and decode each; litdata adds its own
cache and server stack). What the libraries give beyond this, shard shuffling and worker / rank
splitting, is :class:`ShardStream` below (~60 lines).

:class:`ShardStream` is an ``IterableDataset``: each epoch it permutes the shards and the rows
inside each shard (seeded by ``seed + epoch``), deals the clips of that global order out to
``world_size`` DDP ranks and, inside a rank, to the DataLoader's workers (every clip exactly
once per epoch; with ``even=True`` each rank gets the same count, padded by wrapping around as
``DistributedSampler`` does), and reads them one shard at a time through a memory map, so host
memory stays flat in the number of clips.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from l2i.config import DataConfig
from l2i.errors import DataError, L2IError

FORMAT = "l2i-shards"
VERSION = 1
INDEX = "index.json"
SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------- writing
def check_output_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path; L2IError when it exists and is not empty (never overwritten)."""
    out = Path(folder)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise L2IError(f"{out} exists and is not empty: choose a fresh --output_folder")
    return out


def write_shards(index: Any, data_cfg: DataConfig, sample_rate: int,
                 folder: str | os.PathLike, clips_per_shard: int = 512,
                 dtype: str = "float16", progress: bool = False) -> Path:
    """Decode every split of ``index`` (a :class:`l2i.data.DatasetIndex`) into shards.

    Clips are decoded ``clips_per_shard`` at a time by :func:`l2i.data.load_split` (so memory
    holds one shard), cut to ``data_cfg.duration_s`` (``crop: random`` is stored centred: the
    random window needs whole clips). Written into ``folder.tmp`` and renamed at the end.
    """
    from l2i.data import DatasetIndex, load_split

    if data_cfg.duration_s is None:
        raise DataError("l2i prepare needs fixed-length clips: set --data.duration_s (seconds)")
    if dtype not in ("float16", "float32"):
        raise DataError(f"shards dtype must be float16 or float32, got {dtype!r}")
    if clips_per_shard < 1:
        raise DataError(f"clips_per_shard must be >= 1, got {clips_per_shard}")
    out = check_output_folder(folder)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    splits: dict[str, Any] = {}
    for split in SPLITS:
        clips = index.split(split)
        if not clips:
            continue
        shards = []
        for s, start in enumerate(range(0, len(clips), clips_per_shard)):
            chunk = clips[start:start + clips_per_shard]
            sub = DatasetIndex(index.class_names, chunk, [], [], index.root)
            wavs = load_split(sub, "train", data_cfg, sample_rate, cache_dir=None,
                              progress=progress).wavs  # (n, S)
            name = f"{split}-{s:05d}.npy"
            np.save(tmp / name, np.asarray(wavs, dtype=dtype))
            shards.append({"file": name, "n": len(chunk)})
        splits[split] = {"shards": shards, "ids": [c.id for c in clips],
                         "labels": [int(c.label) for c in clips],
                         "folds": [int(c.fold) for c in clips]}
    meta = {"format": FORMAT, "version": VERSION, "sample_rate": int(sample_rate),
            "duration_s": float(data_cfg.duration_s),
            "n_samples": int(round(data_cfg.duration_s * sample_rate)), "dtype": dtype,
            "class_names": list(index.class_names), "source": str(index.root),
            "data": asdict(data_cfg), "splits": splits}
    (tmp / INDEX).write_text(json.dumps(meta, indent=1))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out


# --------------------------------------------------------------------------- reading
@dataclass
class ShardSplit:
    """One split of a shards folder: shard files, clip counts, ids, labels (N,), folds (N,)."""

    folder: Path
    files: list[str]
    counts: list[int]
    ids: list[str]
    labels: np.ndarray
    folds: np.ndarray
    sample_rate: int
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def shard(self, s: int) -> np.ndarray:
        """Shard ``s`` as a read-only memory map ``(n, S)``."""
        return np.load(self.folder / self.files[s], mmap_mode="r")


def read_index(folder: str | os.PathLike) -> dict[str, Any]:
    """``index.json`` of a shards folder (DataError when absent or of another format)."""
    path = Path(folder) / INDEX
    if not path.is_file():
        raise DataError(f"{folder} is not a shards folder ({path} missing): make one with "
                        "'l2i prepare DATA --output_folder SHARDS'")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or int(meta.get("version", 0)) > VERSION:
        raise DataError(f"{path}: format {meta.get('format')!r} version {meta.get('version')} "
                        f"is not {FORMAT!r} <= {VERSION}: re-run l2i prepare with this l2i")
    return meta


def open_split(folder: str | os.PathLike, split: str) -> ShardSplit:
    """The :class:`ShardSplit` ``split`` of a shards folder (DataError when it has none)."""
    meta = read_index(folder)
    s = meta["splits"].get(split)
    if not s:
        raise DataError(f"{folder} holds no {split} clips (splits: {sorted(meta['splits'])})")
    return ShardSplit(Path(folder), [x["file"] for x in s["shards"]],
                      [int(x["n"]) for x in s["shards"]], list(s["ids"]),
                      np.asarray(s["labels"], dtype=np.int64),
                      np.asarray(s["folds"], dtype=np.int64), int(meta["sample_rate"]),
                      list(meta["class_names"]))


def read_split(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, ShardSplit]:
    """Every clip of ``split`` in order, ``(N, S)`` float32 (small splits, tests)."""
    sp = open_split(folder, split)
    wavs = np.concatenate([np.asarray(sp.shard(s), dtype=np.float32)
                           for s in range(len(sp.files))])  # (N, S)
    return wavs, sp


# --------------------------------------------------------------------------- streaming
def epoch_order(counts: list[int], seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """``(N, 2)`` rows ``(shard, row)``: the epoch's global order (shards then rows permuted)."""
    rng = np.random.default_rng([seed, epoch])
    shards = rng.permutation(len(counts)) if shuffle else np.arange(len(counts))
    parts = [np.stack([np.full(counts[s], s), rng.permutation(counts[s]) if shuffle
                       else np.arange(counts[s])], axis=1) for s in shards]
    return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class ShardStream(IterableDataset):
    """Stream ``{"wav": (S,) float32, "label": int, "index": int}`` from a shards split.

    Args:
        folder, split: the shards folder and split (``train | valid | test``).
        shuffle: permute shards and rows each epoch (``seed + epoch``; call :meth:`set_epoch`).
        rank, world_size: this DDP process (default: torch.distributed, else ``RANK`` /
            ``WORLD_SIZE``, else a single process).
        even: give every rank ``ceil(N / world_size)`` clips (wrap around), so DDP ranks run
            the same number of steps; False: each clip exactly once, counts may differ by one.
    """

    def __init__(self, folder: str | os.PathLike, split: str, shuffle: bool = True,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 even: bool = True) -> None:
        super().__init__()
        self.split = open_split(folder, split)
        self.shuffle, self.seed, self.epoch, self.even = shuffle, int(seed), 0, even
        r, w = _dist_rank_world()
        self.rank = r if rank is None else int(rank)
        self.world_size = w if world_size is None else int(world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rank_order(self) -> np.ndarray:
        """``(n, 2)`` ``(shard, row)`` pairs this rank reads this epoch (all its workers)."""
        order = epoch_order(self.split.counts, self.seed, self.epoch, self.shuffle)
        if self.even and len(order) % self.world_size:
            pad = self.world_size - len(order) % self.world_size
            order = np.concatenate([order, order[:pad]])
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        return len(self.rank_order())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        mine = self.rank_order()
        if info is not None:
            mine = mine[info.id::info.num_workers]
        labels = self.split.labels
        starts = np.cumsum([0, *self.split.counts])
        for s in dict.fromkeys(mine[:, 0].tolist()):  # shards in order of first use
            rows = mine[mine[:, 0] == s, 1]
            data = self.split.shard(s)  # (n, S) memory map: one shard open at a time
            for r in rows.tolist():
                i = int(starts[s] + r)  # the clip's position in the split (ids[i])
                yield {"wav": torch.from_numpy(np.array(data[r], dtype=np.float32)),  # a copy
                       "label": int(labels[i]), "index": i}
            del data


# --------------------------------------------------------------------------- as a dataset
def shard_rows(folder: str | os.PathLike) -> tuple[list[tuple], list[str], dict[str, Any]]:
    """A shards folder as :func:`l2i.data.load_dataset`'s rows: ``(rows (id, shard path,
    label key, fold), keyed class names "key\\tname", where)`` with ``where`` the
    ``DatasetIndex.shards`` record (``{"sample_rate", "duration_s", "at": {id: (file, row)}}``)."""
    root = Path(folder)
    meta = read_index(root)
    rows, at = [], {}
    for s in meta["splits"].values():
        places = [(f["file"], r) for f in s["shards"] for r in range(int(f["n"]))]
        for cid, label, fold, (file, r) in zip(s["ids"], s["labels"], s["folds"], places):
            rows.append((cid, root / file, str(label), int(fold)))
            at[cid] = (file, int(r))
    keyed = [f"{i}\t{name}" for i, name in enumerate(meta["class_names"])]
    return rows, keyed, {"folder": str(root), "sample_rate": int(meta["sample_rate"]),
                         "duration_s": float(meta["duration_s"]), "at": at}


class ShardedArray:
    """``(N, S)`` float32 view of clips spread over shard files, read on indexing.

    ``a[i]`` (int) -> ``(S,)``; ``a[idx]`` (int array or slice) -> ``(B, S)``; each read maps
    the shards it needs and lets them go, so nothing stays resident between reads.
    """

    def __init__(self, folder: str | os.PathLike, at: list[tuple[str, int]], n_samples: int):
        self.folder, self.at, self.n_samples = Path(folder), list(at), int(n_samples)
        self.dtype = np.dtype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.at), self.n_samples)

    def __len__(self) -> int:
        return len(self.at)

    def __getitem__(self, idx: Any) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            return self[np.asarray([idx])][0]
        i = np.arange(len(self.at))[idx] if isinstance(idx, slice) else np.asarray(idx)
        out = np.empty((len(i), self.n_samples), dtype=np.float32)  # (B, S)
        by_file: dict[str, list[int]] = {}
        for k, j in enumerate(i.tolist()):
            by_file.setdefault(self.at[j][0], []).append(k)
        for file, ks in by_file.items():
            data = np.load(self.folder / file, mmap_mode="r")  # (n, S)
            out[ks] = data[[self.at[i[k]][1] for k in ks]]
            del data
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)


def sharded_arrays(index: Any, split: str, data_cfg: DataConfig, sample_rate: int) -> Any:
    """:func:`l2i.data.load_split` of a shards index: a :class:`ShardedArray` split."""
    from l2i.data import ClipArrays

    where = index.shards
    if int(sample_rate) != where["sample_rate"]:
        raise DataError(f"{where['folder']}: shards hold audio at {where['sample_rate']} Hz, "
                        f"the model needs {sample_rate} Hz: re-run l2i prepare with "
                        f"--sample_rate {sample_rate}")
    if data_cfg.duration_s is None or abs(data_cfg.duration_s - where["duration_s"]) > 1e-9:
        raise DataError(f"{where['folder']}: shards hold {where['duration_s']} s clips, "
                        f"data.duration_s is {data_cfg.duration_s}: set --data.duration_s "
                        f"{where['duration_s']} or re-run l2i prepare")
    clips = index.split(split)
    n = int(round(where["duration_s"] * where["sample_rate"]))
    return ClipArrays(ShardedArray(where["folder"], [where["at"][c.id] for c in clips], n),
                      np.asarray([c.label for c in clips], dtype=np.int64),
                      [c.id for c in clips], int(sample_rate), list(index.class_names))
