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

Training reads them in flat host memory: :class:`ShardedArray` reads the rows a batch asks for
with ``os.pread`` (no memory map, so no page of the shards counts in the process's resident
memory), and :class:`ClipBatchSampler` orders an epoch by :func:`epoch_order`: with
``data.shuffle_buffer`` N > 0 the shards in a permuted order, the clips of each permuted, then
a shuffle buffer of N clip *indices* (:func:`buffer_shuffle`; no audio is buffered, and a run
of reads stays within a few shards), seeded by ``(seed, epoch)``; dealt to the DDP ranks and,
through the DataLoader, to any number of workers without changing the order.
:func:`training_index` gives a training stage its shards: a shards folder as it is, a raw
dataset decoded once into the stage's cache.

Why plain ``.npy`` shards and not WebDataset / litdata: the clips are already fixed-length
float arrays after :func:`l2i.data.load_split`, so a shard is one array whose rows are read at
known offsets without decoding or a new dependency (WebDataset would store one ``.npy`` per
clip inside a tar and decode each; litdata adds its own chunk cache and optimisation stack).
What the libraries give beyond this, shard shuffling, a shuffle buffer and worker / rank
splitting, is :func:`epoch_order` and :class:`ClipBatchSampler` (~90 lines); a sampler rather
than an ``IterableDataset`` because Lightning calls a sampler's ``set_epoch`` (persistent
workers keep working) and takes the steps per epoch from its length. Measured in
docs/scaling.md (``benchmarks/scale.py``).
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
from torch.utils.data import Sampler

from l2i.config import DataConfig
from l2i.errors import DataError, L2IError
from l2i.fileio import save_npy, write_json

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
    from l2i.data import DatasetIndex, _decode_split, _raise_errors

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
    errors: list[str] = []
    for split in SPLITS:
        clips = index.split(split)
        if not clips:
            continue
        shards = []
        for s, start in enumerate(range(0, len(clips), clips_per_shard)):
            chunk = clips[start:start + clips_per_shard]
            sub = DatasetIndex(index.class_names, chunk, [], [], index.root)
            arrays, bad = _decode_split(sub, "train", data_cfg, sample_rate, None, None,
                                        progress, False)
            errors += bad  # every bad file of every shard, reported together below
            name = f"{split}-{s:05d}.npy"
            if arrays is not None and not errors:
                save_npy(tmp / name, np.asarray(arrays.wavs, dtype=dtype))  # (n, S)
            shards.append({"file": name, "n": len(chunk)})
        splits[split] = {"shards": shards, "ids": [c.id for c in clips],
                         "labels": [int(c.label) for c in clips],
                         "folds": [int(c.fold) for c in clips]}
    if errors:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_errors(errors, "dataset")
    meta = {"format": FORMAT, "version": VERSION, "sample_rate": int(sample_rate),
            "duration_s": float(data_cfg.duration_s),
            "n_samples": int(round(data_cfg.duration_s * sample_rate)), "dtype": dtype,
            "class_names": list(index.class_names), "source": str(index.root),
            "data": asdict(data_cfg), "splits": splits}
    write_json(tmp / INDEX, meta, indent=1)
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


# --------------------------------------------------------------------------- training order
def buffer_shuffle(order: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``order (N,)`` passed through a shuffle buffer of ``size`` slots (as WebDataset's
    ``shuffle(size)``): fill the buffer, then each next item replaces a uniformly drawn slot,
    whose item is emitted. An item moves at most ``size`` places earlier; it can move later
    without bound (geometrically rare). Applied to clip indices, so no audio is held."""
    if size <= 1 or len(order) <= 1:
        return order
    size = min(size, len(order))
    buf = list(order[:size])
    out = np.empty_like(order)
    draws = rng.integers(0, size, len(order) - size)
    for k, (j, x) in enumerate(zip(draws.tolist(), order[size:].tolist())):
        out[k], buf[j] = buf[j], x
    tail = np.asarray(buf, dtype=order.dtype)
    out[len(order) - size:] = tail[rng.permutation(size)]
    return out


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True, buffer: int = 0,
                groups: np.ndarray | None = None) -> np.ndarray:
    """``(N,)`` clip indices: the order of epoch ``epoch`` (the same on every rank and worker).

    - ``shuffle`` False: ``0 .. N-1``.
    - ``buffer`` 0: one global permutation, ``torch.randperm(N)`` seeded ``seed + epoch``
      (what ``DistributedSampler`` and :class:`l2i.training.common.EpochShuffleSampler` draw).
    - ``buffer`` > 0: shard order permuted, the clips of each shard permuted, then a
      :func:`buffer_shuffle` of ``buffer`` clips (seeded ``[seed, epoch]``): the reads of a
      stretch of ``buffer`` clips touch about ``1 + buffer / clips_per_shard`` shards.
      ``groups (N,)``: each clip's shard (None: one shard).
    """
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    if buffer <= 0:
        gen = torch.Generator().manual_seed(int(seed) + int(epoch))
        return torch.randperm(n, generator=gen).numpy().astype(np.int64)
    rng = np.random.default_rng([int(seed), int(epoch)])
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    shards = list(dict.fromkeys(groups.tolist()))  # in order of first appearance
    members = {g: np.flatnonzero(groups == g) for g in shards}
    parts = [rng.permutation(members[shards[s]]) for s in rng.permutation(len(shards))]
    order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return buffer_shuffle(order.astype(np.int64), int(buffer), rng)


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class ClipBatchSampler(Sampler):
    """Batches of clip indices for one DDP rank: :func:`epoch_order`, dealt to the ranks.

    The epoch's order is padded by wrapping to a multiple of ``world_size`` (as
    ``DistributedSampler``: every rank runs the same number of steps) and rank ``r`` takes
    positions ``r, r + world, ...``; so the ``b``-th batches of all ranks together are the
    ``b``-th batch of one process with ``world_size x batch_size``. The DataLoader hands the
    batches to its workers in turn and yields them in this order, so the order does not depend
    on ``num_workers``. Lightning calls :meth:`set_epoch` (it finds the sampler as
    ``batch_sampler.sampler``); the trainer must not inject its own DistributedSampler
    (``build_trainer(..., distributed_sampler=False)``).

    Args:
        n: clips in the split; ``groups (N,)``: each clip's shard (for ``buffer`` > 0).
        rank, world_size: this process (default: torch.distributed at iteration time, else
            ``RANK`` / ``WORLD_SIZE``, else one process).
        drop_single: drop a last batch of one clip (batch norm cannot train on it).
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 buffer: int = 0, groups: np.ndarray | None = None, rank: int | None = None,
                 world_size: int | None = None, drop_single: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle, self.seed = int(n), int(batch_size), shuffle, seed
        self.buffer, self.groups, self.drop_single = int(buffer), groups, drop_single
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    @property
    def sampler(self) -> ClipBatchSampler:  # where Lightning looks for set_epoch
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _layout(self) -> tuple[int, int]:
        r, w = _dist_rank_world()
        return (r if self.rank is None else int(self.rank),
                w if self.world_size is None else int(self.world_size))

    def rank_order(self) -> np.ndarray:
        """``(n_rank,)`` the clip indices this rank reads this epoch, in order."""
        rank, world = self._layout()
        order = epoch_order(self.n, self.seed, self.epoch, self.shuffle, self.buffer,
                            self.groups)
        if len(order) and len(order) % world:
            order = np.resize(order, len(order) + world - len(order) % world)  # wraps around
        return order[rank::world]

    def _n_batches(self, n_rank: int) -> int:
        full, rest = divmod(n_rank, self.batch_size)
        single = rest == 1 and self.drop_single and full > 0  # a lone last clip: dropped
        return full + (1 if rest and not single else 0)

    def __len__(self) -> int:
        rank, world = self._layout()
        return self._n_batches(-(-self.n // world) if self.n else 0)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.rank_order()
        for b in range(self._n_batches(len(order))):
            yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()


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

    ``a[i]`` (int) -> ``(S,)``; ``a[idx]`` (int array or slice) -> ``(B, S)``. Rows are read
    with ``os.pread`` (no memory map), so the pages read stay in the kernel's page cache and
    out of this process's resident memory: host memory holds the batch, whatever the number of
    clips. ``files``: the shard files; ``file_index (N,)``, ``rows (N,)``: each clip's shard and
    row (arrays, not per-clip Python objects). Picklable (DataLoader workers): no open files.
    """

    def __init__(self, folder: str | os.PathLike, files: list[str], file_index: np.ndarray,
                 rows: np.ndarray, n_samples: int) -> None:
        self.folder, self.files, self.n_samples = Path(folder), list(files), int(n_samples)
        self.file_index = np.asarray(file_index, dtype=np.int32)  # (N,)
        self.rows = np.asarray(rows, dtype=np.int64)  # (N,)
        self.dtype = np.dtype(np.float32)
        self._headers: dict[int, tuple[int, np.dtype]] = {}

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.n_samples)

    def __len__(self) -> int:
        return len(self.rows)

    def _header(self, f: int, fh: Any) -> tuple[int, np.dtype]:
        """``(byte offset of row 0, stored dtype)`` of shard ``f`` (read once)."""
        if f not in self._headers:
            fmt = np.lib.format
            read = (fmt.read_array_header_1_0 if fmt.read_magic(fh) == (1, 0)
                    else fmt.read_array_header_2_0)
            shape, fortran, dtype = read(fh)
            if fortran or len(shape) != 2 or shape[1] != self.n_samples:
                raise DataError(f"{self.folder / self.files[f]}: shape {shape} is not "
                                f"(n, {self.n_samples}): re-run l2i prepare")
            self._headers[f] = (fh.tell(), np.dtype(dtype))
        return self._headers[f]

    def __getitem__(self, idx: Any) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            return self[np.asarray([idx])][0]
        i = np.arange(len(self.rows))[idx] if isinstance(idx, slice) else np.asarray(idx)
        out = np.empty((len(i), self.n_samples), dtype=np.float32)  # (B, S)
        fi = self.file_index[i]
        for f in dict.fromkeys(fi.tolist()):
            ks = np.flatnonzero(fi == f)
            with open(self.folder / self.files[f], "rb") as fh:
                offset, dtype = self._header(f, fh)
                size = self.n_samples * dtype.itemsize
                for k in ks.tolist():
                    buf = os.pread(fh.fileno(), size, offset + int(self.rows[i[k]]) * size)
                    out[k] = np.frombuffer(buf, dtype=dtype)
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
    at = [where["at"][c.id] for c in clips]
    files = list(dict.fromkeys(f for f, _ in at))
    number = {f: k for k, f in enumerate(files)}
    wavs = ShardedArray(where["folder"], files, np.asarray([number[f] for f, _ in at]),
                        np.asarray([r for _, r in at]), n)
    return ClipArrays(wavs,
                      np.asarray([c.label for c in clips], dtype=np.int64),
                      [c.id for c in clips], int(sample_rate), list(index.class_names))


# --------------------------------------------------------------------------- training stages
def streamable(data_cfg: DataConfig, random_crop: bool = False) -> bool:
    """Whether a stage with these settings can read shards: fixed-length clips, the audio
    cache on, and no new random window per epoch (``random_crop`` with ``crop: random`` needs
    the whole clips)."""
    return (data_cfg.duration_s is not None and data_cfg.cache
            and not (random_crop and data_cfg.crop == "random"))


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def training_index(data_folder: str | os.PathLike, data_cfg: DataConfig, sample_rate: int,
                   cache_dir: str | os.PathLike | None, *, random_crop: bool = False,
                   progress: bool = False, wait_s: float = 6 * 3600, **checks: Any) -> Any:
    """The :class:`l2i.data.DatasetIndex` a training stage reads, over shards when it can.

    - A shards folder (``l2i prepare``): indexed as it is (folds re-assigned by ``data.*``).
    - A raw dataset that is :func:`streamable`: checked (:func:`l2i.data.load_dataset`, file
      headers), then decoded once into float32 shards in ``cache_dir/shards-<key>`` (every
      split, in the source's order; the key is
      :func:`l2i.data.cache_key` of the clips and audio settings, so a changed file or setting
      decodes afresh and the older shards are removed), reused while the key matches. Under
      DDP rank 0 writes it and the others wait. ``l2i prepare`` (or ``l2i run`` / ``l2i demo``)
      shares one such copy between the stages instead.
    - Otherwise (variable-length clips, random crops, ``data.cache: false`` or no
      ``cache_dir``) as before: the raw index, every clip decoded up front (on rank 0) into the
      memory-mapped audio cache in ``cache_dir`` (or memory) for the one-pass check, which
      :func:`l2i.data.load_split` then returns.

    ``checks``: ``load_dataset``'s ``n_classes`` / ``known_classes`` / ``splits``.
    """
    import time

    from l2i.data import cache_key, load_dataset

    if (Path(data_folder) / INDEX).is_file():
        return load_dataset(data_folder, data_cfg, **checks)
    if cache_dir is None or not streamable(data_cfg, random_crop):
        return load_dataset(data_folder, data_cfg, sample_rate=sample_rate if _rank() == 0
                            else None, cache_dir=cache_dir, random_crop=random_crop,
                            progress=progress, **checks)
    index = load_dataset(data_folder, data_cfg, **checks)
    clips = [c for s in SPLITS for c in index.split(s)]
    folder = Path(cache_dir) / f"shards-{cache_key(clips, sample_rate, data_cfg)}"
    if not (folder / INDEX).is_file():
        if _rank() == 0:
            for old in Path(cache_dir).glob("shards-*"):
                if old.name not in (folder.name, folder.name + ".tmp"):
                    shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)  # an unfinished earlier attempt
            if progress:
                print(f"decoding {len(clips)} clips once into {folder} (to share one copy "
                      "between stages: l2i prepare DATA --output_folder SHARDS)", flush=True)
            write_shards(index, data_cfg, sample_rate, folder, dtype="float32",
                         progress=progress)  # float32: the values the stage decoded before
        else:
            start = time.time()
            while not (folder / INDEX).is_file():
                if time.time() - start > wait_s:
                    raise L2IError(f"rank {_rank()}: gave up waiting for rank 0 to write "
                                   f"{folder}")
                time.sleep(1.0)
    return load_dataset(folder, data_cfg, **checks)
