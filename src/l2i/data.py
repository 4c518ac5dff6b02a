"""Datasets: index the clips, check them, decode them once into a memory-mapped cache.

Three layouts (``DataConfig.format``):

- ``esc50``: ``DATA/meta/esc50.csv`` (columns ``filename,fold,target,category[,esc10,...]``)
  and ``DATA/audio/<filename>``. ``esc10: true`` keeps the rows whose ``esc10`` is true.
  Class ``k`` is the k-th smallest ESC-50 ``target`` present, named by its ``category``.
- ``csv``: a manifest ``path,label[,fold]`` (``DataConfig.manifest``, relative to the data
  folder; paths in it relative to the manifest's folder). Classes sorted by name (numerically
  when every label is an integer).
- ``folders``: ``DATA/<class>/**/<audio files>``, classes sorted by folder name.

Without a ``fold`` column (csv, folders) every clip goes to fold ``1 + sha1(relative path) % 5``,
a deterministic split that does not move when files are added.

:func:`load_dataset` checks the whole dataset in one pass and reports ALL problems in one
:class:`DataError` (the first ``MAX_LISTED``, then "... and N more" with their kinds) before
any training starts: every CSV row, every file header (soundfile.info, ~0.15 ms a file) and,
given the sample rate, a full decode of every clip, which IS the building of the audio cache:
no file is decoded twice, and a cache hit (unchanged files) decodes nothing.

:func:`load_split` decodes, resamples and crops each clip once and caches the result as a
memory-mapped ``.npy`` in ``cache_dir``, keyed by the file list (paths, sizes, mtimes) and the
audio settings, so a changed file or setting makes a fresh cache. ``crop: random`` caches the
whole training clips and :class:`WaveDataset` draws a new window each epoch (valid/test, and
stages that cache their inputs, read the centre window).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from l2i.audio import (
    AUDIO_EXTENSIONS,
    fit_length,
    load_audio,
    peak_normalize,
    probe_audio,
)
from l2i.config import DataConfig
from l2i.errors import ConfigError, DataError
from l2i.fileio import new_npy, save_npy

SPLITS = ("train", "valid", "test")
FORMATS = ("esc50", "csv", "folders")
HASH_FOLDS = 5
CACHE_VERSION = 1
T = TypeVar("T")
MAX_LISTED = 20  # problems listed in one DataError before "... and N more"


@dataclass(frozen=True)
class Clip:
    """One labelled audio file. ``id`` is its path relative to the dataset root (posix)."""

    id: str
    path: Path
    label: int
    fold: int


@dataclass
class DatasetIndex:
    """The clips of each split and the class names (``class_names[label]``)."""

    class_names: list[str]
    train: list[Clip]
    valid: list[Clip]
    test: list[Clip]
    root: Path
    # splits decoded by load_dataset's check, returned by load_split (key: split + settings)
    decoded: dict[str, ClipArrays] = field(default_factory=dict, repr=False)
    # set for a folder written by `l2i prepare` (l2i.shards.shard_rows): where each clip is
    shards: dict[str, Any] | None = field(default=None, repr=False)

    def split(self, name: str) -> list[Clip]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        return (f"{self.root}: {self.n_classes} classes, {len(self.train)} train / "
                f"{len(self.valid)} valid / {len(self.test)} test clips")


@dataclass
class ClipArrays:
    """Decoded clips of one split.

    ``wavs``: ``(N, S)`` float32 (a read-only memmap when cached) or, when the clip duration
    is None, a list of N ``(S_i,)`` arrays; ``labels (N,)`` int64; ``ids`` the clip ids.
    """

    wavs: np.ndarray | list[np.ndarray]
    labels: np.ndarray
    ids: list[str]
    sample_rate: int
    class_names: list[str] = field(default_factory=list)
    crop_samples: int | None = None  # set: wavs are whole clips, WaveDataset crops at random
    normalize: str = "peak"  # re-applied to each random crop

    def __len__(self) -> int:
        return len(self.ids)


# --------------------------------------------------------------------------- indexing
def with_absolute_data_folder(cfg: T) -> T:
    """``cfg`` with ``data_folder`` made absolute (against the current directory).

    Every training command calls this first, so the ``config.yaml`` and the recipe stored in
    its checkpoint name the data wherever they are read from later (``l2i evaluate CKPT``
    without ``--data_folder``, from another directory). An empty folder stays empty.
    """
    if not getattr(cfg, "data_folder", ""):
        return cfg
    return replace(cfg, data_folder=str(Path(cfg.data_folder).expanduser().resolve()))


Problem = tuple[str, str]  # (kind, "where: what is wrong -> what to do")


def load_dataset(data_folder: str | os.PathLike, cfg: DataConfig, check_files: bool = True, *,
                 sample_rate: int | None = None, cache_dir: str | os.PathLike | None = None,
                 splits: tuple[str, ...] = SPLITS, known_classes: list[str] | None = None,
                 n_classes: int | None = None, random_crop: bool = False,
                 progress: bool = False) -> DatasetIndex:
    """Index and check a dataset; raise ONE DataError listing every problem found.

    Every row is checked (columns, folds, labels, duplicates, requested folds that hold no
    clip) and, with ``check_files``, the header of every file of ``splits`` (soundfile.info:
    missing, empty, unreadable, truncated WAV/AIFF). With ``sample_rate`` every clip of
    ``splits`` is also decoded up front, straight into the audio cache (see :func:`load_split`,
    which then returns the decoded split without decoding again), so undecodable, truncated
    and NaN files join the same error. ``known_classes``: the classes a model knows; a clip of
    ``splits`` with another label is a problem. ``n_classes``: the number of classes a model
    has; another count is a problem, and then nothing is decoded (the wrong dataset).
    """
    root = Path(data_folder)
    if not str(data_folder) or not root.is_dir():
        tried = f" (tried {root.resolve()})" if str(data_folder) and not root.is_absolute() else ""
        raise DataError(f"data folder {str(data_folder)!r}{tried} not found: set --data_folder "
                        "to a folder in the ESC-50 layout (meta/esc50.csv + audio/), a folder "
                        "with one sub-folder per class, or the folder of a CSV manifest")
    _check_config(cfg)
    problems: list[Problem] = []
    shards = None
    if (root / "index.json").is_file():  # shards written by `l2i prepare`
        from l2i.shards import shard_rows

        rows, class_names, shards = shard_rows(root)
    elif cfg.format == "esc50":
        rows, class_names = _read_esc50(root, cfg, problems)
    elif cfg.format == "csv":
        rows, class_names = _read_manifest(root, cfg, problems)
    else:
        rows, class_names = _read_folders(root, problems)
    index = _assign_splits(root, rows, class_names, cfg, problems)
    index.shards = shards
    check_files = check_files and shards is None  # decoded already: nothing to probe
    clips = [c for s in splits for c in index.split(s)]
    if known_classes is not None:
        _check_known(index, clips, list(known_classes), problems)
    wrong_count = n_classes is not None and index.n_classes != n_classes
    if wrong_count:
        problems.append(("class count", f"the dataset has {index.n_classes} classes but the "
                         f"model was trained on {n_classes} -> use the data (and data.esc10 "
                         "setting) the model was trained on"))
    if check_files:
        bad = _probe_files(clips, problems)
        for s in splits if sample_rate is not None and not wrong_count else ():
            if index.split(s):
                _decode_up_front(index, s, cfg, sample_rate, cache_dir, random_crop, bad,
                                 progress, problems)
    if problems:
        raise _dataset_error(root, cfg, problems)
    return index


def _probe_files(clips: list[Clip], problems: list[Problem]) -> set[str]:
    """Header check of every clip (no decoding); returns the ids of the clips that fail."""
    bad = set()
    for c in clips:
        try:
            probe_audio(c.path)
        except DataError as err:
            bad.add(c.id)
            problems.append(("missing audio file" if not c.path.is_file() else "bad audio file",
                             str(err)))
    return bad


def _check_known(index: DatasetIndex, clips: list[Clip], known: list[str],
                 problems: list[Problem]) -> None:
    shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    for c in clips:
        name = index.class_names[c.label]
        if name not in known:
            problems.append(("unknown label", f"{c.id}: label {name!r} is not a class of the "
                             f"model (it knows {shown}) -> remove the clip or use data the model "
                             "was trained on"))


def _dataset_error(root: Path, cfg: DataConfig, problems: list[Problem]) -> DataError:
    shown = "\n".join(f"  - {text}" for _, text in problems[:MAX_LISTED])
    hidden = Counter(kind for kind, _ in problems[MAX_LISTED:])
    more = (f"\n  ... and {len(problems) - MAX_LISTED} more ("
            + ", ".join(f"{n} {kind}" for kind, n in hidden.most_common()) + ")"
            if hidden else "")
    return DataError(f"dataset {root} ({cfg.format} format) has {len(problems)} problem(s), "
                     f"all found in one pass (fix them, then run again):\n{shown}{more}")


def _check_config(cfg: DataConfig) -> None:
    bad = []
    if cfg.duration_s is not None and cfg.duration_s <= 0:
        bad.append(f"data.duration_s must be > 0 (or null to keep each file's length), "
                   f"got {cfg.duration_s}")
    if bad:
        raise ConfigError("; ".join(bad))


Row = tuple[str, Path, str, int | None]  # (id, path, label key, fold)


def _read_csv(path: Path, required: list[str], problems: list[Problem]) -> list[dict] | None:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        problems.append(("bad CSV", f"cannot read {path}: {err} -> save it as UTF-8 CSV"))
        return None
    missing = [c for c in required if c not in header]
    if missing:
        problems.append(("bad CSV", f"{path} lacks column(s) {missing} (has {header}) -> the "
                         f"first line must name the columns {required}"))
        return None
    return rows


def _read_esc50(root: Path, cfg: DataConfig,
                problems: list[Problem]) -> tuple[list[Row], list[str]]:
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        problems.append(("bad CSV", f"{meta} not found -> an ESC-50 layout folder holds "
                         "meta/esc50.csv and audio/ (or set --data.format csv|folders)"))
        return [], []
    required = ["filename", "fold", "target", "category"] + (["esc10"] if cfg.esc10 else [])
    table = _read_csv(meta, required, problems)
    if table is None:
        return [], []
    rows: list[Row] = []
    names: dict[int, str] = {}
    bad_values, dups, seen = [], [], set()
    where = "meta/esc50.csv line"
    for i, r in enumerate(table, start=2):  # line numbers (header is line 1)
        if cfg.esc10 and r["esc10"].lower() not in ("true", "1", "yes"):
            continue
        fold, target = _int(r["fold"]), _int(r["target"])
        if fold is None or target is None or target < 0 or not r["filename"] \
                or not r["category"]:
            bad_values.append(f"{where} {i}: filename={r['filename']!r} fold={r['fold']!r} "
                              f"target={r['target']!r} category={r['category']!r}")
            continue
        if r["filename"] in seen:
            dups.append(f"{where} {i}: {r['filename']} is listed twice")
            continue
        seen.add(r["filename"])
        if names.setdefault(target, r["category"]) != r["category"]:
            bad_values.append(f"{where} {i}: target {target} is {r['category']!r} here but "
                              f"{names[target]!r} earlier")
        rows.append((r["filename"], root / "audio" / r["filename"], str(target), fold))
    _add(problems, "bad row", bad_values, "filename and category must be set, fold and target "
         "integers >= 0, one category per target")
    _add(problems, "duplicate row", dups, "remove the repeated row")
    if not rows and not problems:
        problems.append(("bad CSV", f"{meta} lists no clips"
                         + (" with esc10 true" if cfg.esc10 else "") + " -> add rows"))
    order = sorted(names)
    # label keys are str(target); class index follows target order
    return rows, [f"{t}\t{names[t]}" for t in order]


def _read_manifest(root: Path, cfg: DataConfig,
                   problems: list[Problem]) -> tuple[list[Row], list[str]]:
    if not cfg.manifest:
        problems.append(("bad CSV", "data.format is csv but data.manifest is not set -> give "
                         "the CSV file (path,label[,fold]) with --data.manifest"))
        return [], []
    manifest = Path(cfg.manifest)
    manifest = manifest if manifest.is_absolute() else root / manifest
    if not manifest.is_file():
        problems.append(("bad CSV", f"manifest {manifest} not found -> set --data.manifest to "
                         "a CSV file with columns path,label[,fold]"))
        return [], []
    table = _read_csv(manifest, ["path", "label"], problems)
    if table is None:
        return [], []
    base = manifest.parent
    rows: list[Row] = []
    bad_values, dups, seen = [], [], set()
    for i, r in enumerate(table, start=2):
        fold = _int(r.get("fold", "")) if r.get("fold") else None
        if not r["path"] or not r["label"] or (r.get("fold") and fold is None):
            bad_values.append(f"{manifest.name} line {i}: path={r['path']!r} "
                              f"label={r['label']!r} fold={r.get('fold')!r}")
            continue
        path = Path(r["path"]) if Path(r["path"]).is_absolute() else base / r["path"]
        key = os.path.normpath(str(path))
        if key in seen:
            dups.append(f"{manifest.name} line {i}: {r['path']} is listed twice")
            continue
        seen.add(key)
        rid = _rel_id(path, root)
        rows.append((rid, path, r["label"], fold if fold is not None else _hash_fold(rid)))
    _add(problems, "bad row", bad_values,
         "every row needs a path and a label; fold must be an integer")
    _add(problems, "duplicate row", dups, "remove the repeated row")
    if not rows and not problems:
        problems.append(("bad CSV", f"manifest {manifest} lists no clips -> add rows"))
    labels = {lab for _, _, lab, _ in rows}
    if labels and all(_int(lab) is not None for lab in labels):
        order = sorted(labels, key=lambda s: int(s))
    else:
        order = sorted(labels)
    return rows, [f"{lab}\t{lab}" for lab in order]


def _read_folders(root: Path, problems: list[Problem]) -> tuple[list[Row], list[str]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    rows: list[Row] = []
    empty = []
    for name in classes:
        files = sorted(p for p in (root / name).rglob("*")
                       if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                       and not p.name.startswith("."))
        if not files:
            empty.append(f"class folder {name}/ holds no audio file")
        for p in files:
            rid = _rel_id(p, root)
            rows.append((rid, p, name, _hash_fold(rid)))
    _add(problems, "empty class folder", empty,
         f"put audio ({', '.join(AUDIO_EXTENSIONS)}) in it or remove it")
    if not classes:
        problems.append(("bad layout", f"{root} has no sub-folders -> the folders format needs "
                         "one sub-folder of audio files per class"))
    classes = sorted({key for _, _, key, _ in rows})
    return rows, [f"{c}\t{c}" for c in classes]


def _assign_splits(root: Path, rows: list[Row], keyed_names: list[str], cfg: DataConfig,
                   problems: list[Problem]) -> DatasetIndex:
    keys = [k.split("\t", 1)[0] for k in keyed_names]
    class_names = [k.split("\t", 1)[1] for k in keyed_names]
    label_of = {k: i for i, k in enumerate(keys)}
    folds_present = sorted({f for _, _, _, f in rows if f is not None})
    wanted = {s: list(getattr(cfg, f"{s}_folds")) for s in SPLITS}
    unknown = {s: [f for f in wanted[s] if f not in folds_present] for s in SPLITS}
    if rows:
        for s in SPLITS:
            if unknown[s]:
                problems.append(("fold", f"{s} fold(s) {unknown[s]} hold no clips (the dataset "
                                 f"has folds {folds_present}) -> set --data.{s}_folds"))
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        both = sorted(set(wanted[a]) & set(wanted[b]))
        if both:
            problems.append(("fold", f"fold(s) {both} are in both {a}_folds and {b}_folds -> "
                             "the splits must not overlap"))
    splits: dict[str, list[Clip]] = {s: [] for s in SPLITS}
    for rid, path, key, fold in rows:
        for s in SPLITS:
            if fold in wanted[s]:
                splits[s].append(Clip(rid, path, label_of[key], int(fold)))
    if rows:
        for s in SPLITS:
            if not splits[s] and not unknown[s] and s == "train":  # no folds: no such split
                problems.append(("fold", f"the {s} split is empty (folds {wanted[s]}) -> "
                                 f"choose folds that exist ({folds_present}) with "
                                 f"--data.{s}_folds"))
        counts = Counter(c.label for c in splits["train"])
        absent = [f"class {class_names[i]!r} has no clip in the training split"
                  for i in range(len(class_names)) if counts[i] == 0]
        if splits["train"]:
            _add(problems, "class absent from training", absent,
                 "add training clips for it or move folds into train_folds")
    return DatasetIndex(class_names, splits["train"], splits["valid"], splits["test"], root)


def _int(s: str) -> int | None:
    try:
        return int(str(s).strip())
    except ValueError:
        try:
            f = float(s)
        except ValueError:
            return None
        return int(f) if f.is_integer() else None


def _rel_id(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _hash_fold(rid: str) -> int:
    """Deterministic fold 1..5 from a clip id (sha1, stable across runs and machines)."""
    return 1 + int(hashlib.sha1(rid.encode()).hexdigest(), 16) % HASH_FOLDS


def _add(problems: list[Problem], kind: str, items: list[str], todo: str) -> None:
    """One problem per item ("where: what is wrong"), each told what to do."""
    problems.extend((kind, f"{item} -> {todo}") for item in items)


# --------------------------------------------------------------------------- decoding + cache
def cache_key(clips: list[Clip], sample_rate: int, cfg: DataConfig) -> str:
    """Hash of the clip list (id, path, size, mtime, label) and every setting that changes the
    audio (the id too: the clips of a shards folder share their shard files)."""
    h = hashlib.sha1()
    crop = "center" if cfg.crop == "random" else cfg.crop
    h.update(json.dumps([CACHE_VERSION, int(sample_rate), cfg.duration_s, crop,
                         cfg.normalize]).encode())
    for c in clips:
        st = c.path.stat()
        h.update(f"\n{c.id}|{c.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{c.label}".encode())
    return h.hexdigest()[:20]


def load_split(index: DatasetIndex, split: str, data_cfg: DataConfig, sample_rate: int,
               cache_dir: str | os.PathLike | None = None, workers: int | None = None,
               progress: bool = True, random_crop: bool = False) -> ClipArrays:
    """Decode the clips of ``split`` at ``sample_rate``, cut to ``data_cfg.duration_s``.

    With ``cache_dir`` (and ``data_cfg.cache``) the result is a read-only memmap of
    ``cache_dir/<split>-<key>.npy`` (``(N, S)``; variable-length clips: a flat array plus
    ``.offsets.npy``), reused while files and settings are unchanged. Decoding runs in a small
    thread pool behind a progress bar. Raises one DataError listing every file that fails.
    A split :func:`load_dataset` already decoded (same settings) is returned as it is.

    ``random_crop`` (with ``crop: random``, train split only): the clips are kept whole and
    :class:`WaveDataset` draws a new window of ``duration_s`` each time it serves a clip, so
    every epoch sees other crops. Without it (and on valid/test) ``random`` is a centre crop.
    """
    _check_config(data_cfg)
    if not index.split(split):
        raise DataError(f"the {split} split of {index.root} is empty: choose its folds with "
                        f"--data.{split}_folds")
    if index.shards is not None:
        from l2i.shards import sharded_arrays

        return sharded_arrays(index, split, data_cfg, sample_rate)
    key = _decoded_key(split, data_cfg, sample_rate, cache_dir, random_crop)
    if key in index.decoded:
        return index.decoded[key]
    arrays, errors = _decode_split(index, split, data_cfg, sample_rate, cache_dir, workers,
                                   progress, random_crop)
    if errors:
        _raise_errors(errors, split)
    return arrays


def _decoded_key(split: str, cfg: DataConfig, sample_rate: int, cache_dir, random_crop) -> str:
    return json.dumps([split, int(sample_rate), str(cache_dir), bool(random_crop),
                       cfg.duration_s, cfg.crop, cfg.normalize, cfg.cache])


def _decode_up_front(index: DatasetIndex, split: str, cfg: DataConfig, sample_rate: int,
                     cache_dir, random_crop: bool, bad: set[str], progress: bool,
                     problems: list[Problem]) -> None:
    """Decode ``split`` for :func:`load_dataset`: kept on the index, failures to ``problems``."""
    arrays, errors = _decode_split(index, split, cfg, sample_rate, cache_dir, None, progress,
                                   random_crop, skip=bad)
    problems.extend(("bad audio file", e) for e in errors)
    if arrays is not None:
        index.decoded[_decoded_key(split, cfg, sample_rate, cache_dir, random_crop)] = arrays


def _crop_setting(data_cfg: DataConfig, split: str, sample_rate: int, random_crop: bool
                  ) -> tuple[DataConfig, int | None, str]:
    """``(data settings to decode with, samples WaveDataset crops per item or None, crop)``.

    ``data.crop: random`` on the training split of a stage that crops per item
    (``random_crop``) keeps the whole clips; other stages read the centre window (warned).
    """
    n_crop = None
    if data_cfg.crop == "random" and data_cfg.duration_s is not None:
        if random_crop and split == "train":  # keep whole clips: WaveDataset crops
            n_crop = int(round(data_cfg.duration_s * sample_rate))
            data_cfg = replace(data_cfg, duration_s=None, crop="start")
        elif split == "train":
            warnings.warn("data.crop random: this stage reads the centre window of each "
                          "training clip (new random windows each epoch are drawn in "
                          "train-classifier)", stacklevel=4)
    return data_cfg, n_crop, ("center" if data_cfg.crop == "random" else data_cfg.crop)


def _decode_split(index: DatasetIndex, split: str, data_cfg: DataConfig, sample_rate: int,
                  cache_dir, workers: int | None, progress: bool, random_crop: bool,
                  skip: set[str] = frozenset()) -> tuple[ClipArrays | None, list[str]]:
    """Decode (or read from the cache) every clip of ``split``: ``(arrays, errors)``.

    Clips in ``skip`` (already known bad) are not decoded; the others still are, so that
    their problems are found too, but then nothing is cached and ``arrays`` is None.
    """
    clips = index.split(split)
    labels = np.array([c.label for c in clips], dtype=np.int64)  # (N,)
    ids = [c.id for c in clips]
    data_cfg, n_crop, crop = _crop_setting(data_cfg, split, sample_rate, random_crop)
    check_only = any(c.id in skip for c in clips)
    use_cache = cache_dir is not None and data_cfg.cache and not check_only
    path = None

    def result(wavs) -> ClipArrays:
        return ClipArrays(wavs, labels, ids, sample_rate, list(index.class_names), n_crop,
                          data_cfg.normalize)

    if use_cache:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"{split}-{cache_key(clips, sample_rate, data_cfg)}.npy"
        cached = _open_cache(path, len(clips), data_cfg.duration_s)
        if cached is not None:
            return result(cached), []
        _remove_stale(cache_dir, split, keep=path)

    def decode(c: Clip) -> np.ndarray:
        return load_audio(c.path, sample_rate, data_cfg.duration_s, crop, data_cfg.normalize)

    fixed = data_cfg.duration_s is not None and not check_only
    if not fixed:
        out: Any = [None] * len(clips)
        errors = _decode_all(clips, decode, out, skip, check_only, workers, progress, split)
        if errors or check_only:
            return None, sorted(errors)
        return result(_finish_variable(out, path)), []
    shape = (len(clips), int(round(data_cfg.duration_s * sample_rate)))  # (N, S)
    if path is None:
        out = np.empty(shape, np.float32)
        errors = _decode_all(clips, decode, out, skip, check_only, workers, progress, split)
        return (None, sorted(errors)) if errors else (result(out), [])
    try:
        with new_npy(path, shape, np.float32) as out:  # appears whole, or not at all
            errors = _decode_all(clips, decode, out, skip, check_only, workers, progress, split)
            if errors:
                raise _DecodeFailed(errors)
    except _DecodeFailed as failed:
        return None, sorted(failed.errors)
    return result(np.load(path, mmap_mode="r")), []


class _DecodeFailed(Exception):
    """Some clips did not decode: the half-filled cache file is dropped (``new_npy``)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} clips failed to decode")
        self.errors = errors


def _decode_all(clips: list[Clip], decode, out, skip: set[str], check_only: bool,
                workers: int | None, progress: bool, split: str) -> list[str]:
    """Decode ``clips`` into ``out[i]`` in a small thread pool; returns the error messages."""
    errors: list[str] = []

    def job(i: int) -> None:
        if clips[i].id in skip:
            return
        try:
            x = decode(clips[i])  # a silent clip warns (from the worker thread)
            if not check_only:
                out[i] = x
        except DataError as err:
            errors.append(str(err))

    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
            total=len(clips), desc=f"decode {split}", unit="clip", disable=not progress,
            leave=False) as bar:
        for _ in pool.map(job, range(len(clips))):
            bar.update(1)
    return errors


def _raise_errors(errors: list[str], split: str) -> None:
    """One DataError listing the first ``MAX_LISTED`` errors; ``split``: a split's name, or
    ``"dataset"`` for the whole of it."""
    shown = "\n".join(f"  - {e}" for e in sorted(errors)[:MAX_LISTED])
    more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
    where = "the dataset" if split == "dataset" else f"the {split} split"
    raise DataError(f"{len(errors)} clip(s) of {where} cannot be used:\n{shown}{more}")


def _finish_variable(out: list[np.ndarray], path: Path | None) -> list[np.ndarray]:
    if path is None:
        return out
    lengths = np.array([x.size for x in out], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # (N + 1,)
    flat = np.concatenate(out).astype(np.float32)  # (sum S_i,)
    save_npy(path.with_suffix(".offsets.npy"), offsets)
    save_npy(path, flat)
    return _split_flat(np.load(path, mmap_mode="r"), offsets)


def _split_flat(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def _open_cache(path: Path, n: int, duration_s: float | None):
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r")
        if duration_s is None:
            offsets = np.load(path.with_suffix(".offsets.npy"))
            if offsets.shape != (n + 1,) or offsets[-1] != arr.shape[0]:
                return None
            return _split_flat(arr, offsets)
        return arr if arr.ndim == 2 and arr.shape[0] == n else None
    except (OSError, ValueError):
        return None  # truncated/corrupt cache: decode again


def _remove_stale(cache_dir: Path, split: str, keep: Path) -> None:
    for old in cache_dir.glob(f"{split}-*.npy"):
        if old.name != keep.name and not old.name.startswith(keep.stem + "."):
            old.unlink(missing_ok=True)


# --------------------------------------------------------------------------- torch dataset
class WaveDataset(Dataset):
    """``ClipArrays`` as a torch Dataset: item ``i`` is ``(wav (S,) float32 tensor, label, i)``.

    When ``arrays.crop_samples`` is set (``crop: random`` in training) each item is a fresh
    window of that many samples at a uniform random offset (torch's RNG, so seeded by
    ``seed_everything`` and different every epoch), zero-padded when the clip is shorter.
    """

    def __init__(self, arrays: ClipArrays) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        x, n = self.arrays.wavs[i], self.arrays.crop_samples
        if n is not None:
            start = int(torch.randint(0, max(1, len(x) - n + 1), ()))
            x = fit_length(np.asarray(x[start:start + n]), n)  # (n,)
            x = peak_normalize(x) if self.arrays.normalize == "peak" else x
        wav = torch.from_numpy(np.array(x, dtype=np.float32))  # copy: writable
        return wav, int(self.arrays.labels[i]), int(i)
