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
a deterministic split that does not move when files are added. :func:`load_dataset` checks the
whole dataset and reports ALL problems in one :class:`DataError` before any training starts.

:func:`load_split` decodes, resamples and crops each clip once and caches the result as a
memory-mapped ``.npy`` in ``cache_dir``, keyed by the file list (paths, sizes, mtimes) and the
audio settings, so a changed file or setting makes a fresh cache. ``crop: random`` is cached as
``center`` (random cropping of a cached clip is the training loop's business, e.g. time shift).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from l2i.audio import AUDIO_EXTENSIONS, load_audio
from l2i.config import DataConfig
from l2i.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
FORMATS = ("esc50", "csv", "folders")
HASH_FOLDS = 5
CACHE_VERSION = 1
MAX_LISTED = 20  # problems of one kind listed before "... and N more"


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

    def __len__(self) -> int:
        return len(self.ids)


# --------------------------------------------------------------------------- indexing
def load_dataset(data_folder: str | os.PathLike, cfg: DataConfig,
                 check_files: bool = True) -> DatasetIndex:
    """Index and check a dataset. Raises one DataError listing every problem found."""
    root = Path(data_folder)
    if not str(data_folder) or not root.is_dir():
        raise DataError(f"data folder {str(data_folder)!r} not found: set --data_folder to a "
                        "folder in the ESC-50 layout (meta/esc50.csv + audio/), a folder with one "
                        "sub-folder per class, or the folder of a CSV manifest")
    _check_config(cfg)
    problems: list[str] = []
    if cfg.format == "esc50":
        rows, class_names = _read_esc50(root, cfg, problems)
    elif cfg.format == "csv":
        rows, class_names = _read_manifest(root, cfg, problems)
    else:
        rows, class_names = _read_folders(root, problems)
    if check_files:
        missing = [str(p) for _, p, _, _ in rows if not p.is_file()]
        _add(problems, "audio file(s) missing", missing, "fix the paths or remove those rows")
    index = _assign_splits(root, rows, class_names, cfg, problems)
    if problems:
        raise DataError(f"dataset {root} ({cfg.format} format) has {len(problems)} problem(s):\n"
                        + "\n".join(f"  - {p}" for p in problems))
    return index


def _check_config(cfg: DataConfig) -> None:
    bad = []
    if cfg.duration_s is not None and cfg.duration_s <= 0:
        bad.append(f"data.duration_s must be > 0 (or null to keep each file's length), "
                   f"got {cfg.duration_s}")
    if bad:
        raise ConfigError("; ".join(bad))


Row = tuple[str, Path, str, int | None]  # (id, path, label key, fold)


def _read_csv(path: Path, required: list[str], problems: list[str]) -> list[dict] | None:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        problems.append(f"cannot read {path}: {err}")
        return None
    missing = [c for c in required if c not in header]
    if missing:
        problems.append(f"{path} lacks column(s) {missing} (has {header}): the first line must "
                        f"name the columns {required}")
        return None
    return rows


def _read_esc50(root: Path, cfg: DataConfig, problems: list[str]) -> tuple[list[Row], list[str]]:
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        problems.append(f"{meta} not found: an ESC-50 layout folder holds meta/esc50.csv and "
                        "audio/ (or set --data.format csv|folders)")
        return [], []
    required = ["filename", "fold", "target", "category"] + (["esc10"] if cfg.esc10 else [])
    table = _read_csv(meta, required, problems)
    if table is None:
        return [], []
    rows: list[Row] = []
    names: dict[int, str] = {}
    bad_values, dups, seen = [], [], set()
    for i, r in enumerate(table, start=2):  # line numbers (header is line 1)
        if cfg.esc10 and r["esc10"].lower() not in ("true", "1", "yes"):
            continue
        fold, target = _int(r["fold"]), _int(r["target"])
        if fold is None or target is None or target < 0 or not r["filename"]:
            bad_values.append(f"line {i}: filename={r['filename']!r} fold={r['fold']!r} "
                              f"target={r['target']!r}")
            continue
        if r["filename"] in seen:
            dups.append(f"line {i}: {r['filename']}")
            continue
        seen.add(r["filename"])
        if names.setdefault(target, r["category"]) != r["category"]:
            bad_values.append(f"line {i}: target {target} is {r['category']!r} here but "
                              f"{names[target]!r} earlier")
        rows.append((r["filename"], root / "audio" / r["filename"], str(target), fold))
    _add(problems, f"bad value(s) in {meta}", bad_values,
         "fold and target must be integers >= 0, one category per target")
    _add(problems, f"duplicate row(s) in {meta}", dups, "remove the repeated rows")
    if not rows and not problems:
        problems.append(f"{meta} lists no clips" + (" with esc10 true" if cfg.esc10 else ""))
    order = sorted(names)
    # label keys are str(target); class index follows target order
    return rows, [f"{t}\t{names[t]}" for t in order]


def _read_manifest(root: Path, cfg: DataConfig,
                   problems: list[str]) -> tuple[list[Row], list[str]]:
    if not cfg.manifest:
        problems.append("data.format is csv but data.manifest is not set: give the CSV file "
                        "(path,label[,fold]) with --data.manifest")
        return [], []
    manifest = Path(cfg.manifest)
    manifest = manifest if manifest.is_absolute() else root / manifest
    if not manifest.is_file():
        problems.append(f"manifest {manifest} not found: set --data.manifest to a CSV file with "
                        "columns path,label[,fold]")
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
            bad_values.append(f"line {i}: path={r['path']!r} label={r['label']!r} "
                              f"fold={r.get('fold')!r}")
            continue
        path = Path(r["path"]) if Path(r["path"]).is_absolute() else base / r["path"]
        key = os.path.normpath(str(path))
        if key in seen:
            dups.append(f"line {i}: {r['path']}")
            continue
        seen.add(key)
        rid = _rel_id(path, root)
        rows.append((rid, path, r["label"], fold if fold is not None else _hash_fold(rid)))
    _add(problems, f"bad value(s) in {manifest}", bad_values,
         "every row needs a path and a label; fold must be an integer")
    _add(problems, f"duplicate row(s) in {manifest}", dups, "remove the repeated rows")
    if not rows and not problems:
        problems.append(f"manifest {manifest} lists no clips")
    labels = {lab for _, _, lab, _ in rows}
    if labels and all(_int(lab) is not None for lab in labels):
        order = sorted(labels, key=lambda s: int(s))
    else:
        order = sorted(labels)
    return rows, [f"{lab}\t{lab}" for lab in order]


def _read_folders(root: Path, problems: list[str]) -> tuple[list[Row], list[str]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    rows: list[Row] = []
    empty = []
    for name in classes:
        files = sorted(p for p in (root / name).rglob("*")
                       if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                       and not p.name.startswith("."))
        if not files:
            empty.append(name)
        for p in files:
            rid = _rel_id(p, root)
            rows.append((rid, p, name, _hash_fold(rid)))
    _add(problems, f"class folder(s) without audio files in {root}", empty,
         f"put audio ({', '.join(AUDIO_EXTENSIONS)}) in them or remove them")
    if not classes:
        problems.append(f"{root} has no sub-folders: the folders format needs one sub-folder of "
                        "audio files per class")
    classes = [c for c in classes if c not in empty]
    return rows, [f"{c}\t{c}" for c in classes]


def _assign_splits(root: Path, rows: list[Row], keyed_names: list[str], cfg: DataConfig,
                   problems: list[str]) -> DatasetIndex:
    keys = [k.split("\t", 1)[0] for k in keyed_names]
    class_names = [k.split("\t", 1)[1] for k in keyed_names]
    label_of = {k: i for i, k in enumerate(keys)}
    folds_present = sorted({f for _, _, _, f in rows if f is not None})
    wanted = {s: list(getattr(cfg, f"{s}_folds")) for s in SPLITS}
    if rows:
        for s in SPLITS:
            unknown = [f for f in wanted[s] if f not in folds_present]
            if unknown:
                problems.append(f"{s} fold(s) {unknown} do not exist (the dataset has folds "
                                f"{folds_present}): set --data.{s}_folds")
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        both = sorted(set(wanted[a]) & set(wanted[b]))
        if both:
            problems.append(f"fold(s) {both} are in both {a}_folds and {b}_folds: the splits "
                            "must not overlap")
    splits: dict[str, list[Clip]] = {s: [] for s in SPLITS}
    for rid, path, key, fold in rows:
        for s in SPLITS:
            if fold in wanted[s]:
                splits[s].append(Clip(rid, path, label_of[key], int(fold)))
    if rows:
        for s in SPLITS:
            if not splits[s] and (wanted[s] or s == "train"):  # no folds given: no such split
                problems.append(f"the {s} split is empty (folds {wanted[s]}): choose folds that "
                                f"exist ({folds_present}) with --data.{s}_folds")
        counts = Counter(c.label for c in splits["train"])
        absent = [class_names[i] for i in range(len(class_names)) if counts[i] == 0]
        if splits["train"] and absent:
            _add(problems, "class(es) absent from the training split", absent,
                 "add training clips for them or move folds into train_folds")
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


def _add(problems: list[str], what: str, items: list[str], todo: str) -> None:
    if not items:
        return
    shown = ", ".join(items[:MAX_LISTED])
    more = f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    problems.append(f"{len(items)} {what}: {shown}{more} ({todo})")


# --------------------------------------------------------------------------- decoding + cache
def cache_key(clips: list[Clip], sample_rate: int, cfg: DataConfig) -> str:
    """Hash of the file list (path, size, mtime) and every setting that changes the audio."""
    h = hashlib.sha1()
    crop = "center" if cfg.crop == "random" else cfg.crop
    h.update(json.dumps([CACHE_VERSION, int(sample_rate), cfg.duration_s, crop,
                         cfg.normalize]).encode())
    for c in clips:
        st = c.path.stat()
        h.update(f"\n{c.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{c.label}".encode())
    return h.hexdigest()[:20]


def load_split(index: DatasetIndex, split: str, data_cfg: DataConfig, sample_rate: int,
               cache_dir: str | os.PathLike | None = None, workers: int | None = None,
               progress: bool = True) -> ClipArrays:
    """Decode the clips of ``split`` at ``sample_rate``, cut to ``data_cfg.duration_s``.

    With ``cache_dir`` (and ``data_cfg.cache``) the result is a read-only memmap of
    ``cache_dir/<split>-<key>.npy`` (``(N, S)``; variable-length clips: a flat array plus
    ``.offsets.npy``), reused while files and settings are unchanged. Decoding runs in a small
    thread pool behind a progress bar. Raises one DataError listing every file that fails.
    """
    _check_config(data_cfg)
    clips = index.split(split)
    if not clips:
        raise DataError(f"the {split} split of {index.root} is empty: choose its folds with "
                        f"--data.{split}_folds")
    labels = np.array([c.label for c in clips], dtype=np.int64)  # (N,)
    ids = [c.id for c in clips]
    crop = "center" if data_cfg.crop == "random" else data_cfg.crop
    use_cache = cache_dir is not None and data_cfg.cache
    path = None
    if use_cache:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"{split}-{cache_key(clips, sample_rate, data_cfg)}.npy"
        cached = _open_cache(path, len(clips), data_cfg.duration_s)
        if cached is not None:
            return ClipArrays(cached, labels, ids, sample_rate, list(index.class_names))
        _remove_stale(cache_dir, split, keep=path)

    def decode(c: Clip) -> np.ndarray:
        return load_audio(c.path, sample_rate, data_cfg.duration_s, crop, data_cfg.normalize)

    fixed = data_cfg.duration_s is not None
    n_samples = int(round(data_cfg.duration_s * sample_rate)) if fixed else 0
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp") if path is not None else None
    if fixed:
        out = (np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                         shape=(len(clips), n_samples))
               if tmp is not None else np.empty((len(clips), n_samples), np.float32))  # (N, S)
    else:
        out = [None] * len(clips)
    errors: list[str] = []

    def job(i: int) -> None:
        try:
            out[i] = decode(clips[i])  # a silent clip warns (from the worker thread)
        except DataError as err:
            errors.append(str(err))

    workers = workers or min(4, os.cpu_count() or 1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
                total=len(clips), desc=f"decode {split}", unit="clip", disable=not progress,
                leave=False) as bar:
            for _ in pool.map(job, range(len(clips))):
                bar.update(1)
        if errors:
            _raise_errors(errors, split)
        if not fixed:
            return _finish_variable(out, path, labels, ids, sample_rate, index)
        if tmp is None:
            return ClipArrays(out, labels, ids, sample_rate, list(index.class_names))
        out.flush()
        out = None  # close the memmap before renaming
        os.replace(tmp, path)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    return ClipArrays(np.load(path, mmap_mode="r"), labels, ids, sample_rate,
                      list(index.class_names))


def _raise_errors(errors: list[str], split: str) -> None:
    shown = "\n".join(f"  - {e}" for e in sorted(errors)[:MAX_LISTED])
    more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
    raise DataError(f"{len(errors)} clip(s) of the {split} split cannot be used:\n{shown}{more}")


def _finish_variable(out: list[np.ndarray], path: Path | None, labels: np.ndarray,
                     ids: list[str], sample_rate: int, index: DatasetIndex) -> ClipArrays:
    lengths = np.array([x.size for x in out], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # (N + 1,)
    if path is None:
        return ClipArrays(out, labels, ids, sample_rate, list(index.class_names))
    flat = np.concatenate(out).astype(np.float32)  # (sum S_i,)
    off_path = path.with_suffix(".offsets.npy")
    _save_atomic(off_path, offsets)
    _save_atomic(path, flat)
    return ClipArrays(_split_flat(np.load(path, mmap_mode="r"), offsets), labels, ids,
                      sample_rate, list(index.class_names))


def _split_flat(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, path)


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
    """``ClipArrays`` as a torch Dataset: item ``i`` is ``(wav (S,) float32 tensor, label, i)``."""

    def __init__(self, arrays: ClipArrays) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        wav = torch.from_numpy(np.array(self.arrays.wavs[i], dtype=np.float32))  # copy: writable
        return wav, int(self.arrays.labels[i]), int(i)
