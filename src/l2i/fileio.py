"""The one writer module: every file l2i writes goes through here, atomically.

Write to a temp file in the same folder, then rename: nothing half-written is ever left under
the final name, and files come out with ordinary permissions (0644, not mkstemp's 0600) so
that results can be shared. Writers: :func:`write_bytes`, :func:`write_text`,
:func:`write_json`, :func:`write_csv`, :func:`save_torch` (checkpoints), :func:`save_npy`,
:func:`new_npy` (a ``.npy`` memmap filled in place), :func:`wav_writer` (a streamed wav),
:func:`save_figure` (matplotlib PNG);
:func:`atomic_path` for any other writer that takes a path. Readers of self-describing
checkpoints: :func:`read_checkpoint` (format and version checks, migrations in
:mod:`l2i.checkpoints`). ``tests/test_architecture.py`` checks that nothing else in ``src/``
writes files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path``, else it is removed.

    ``suffix`` (default: ``path``'s own) keeps writers that choose a format by extension happy.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix or path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2,
               allow_nan: bool = True) -> Path:
    """Atomically write ``obj`` as JSON (UTF-8, a final newline) to ``path``."""
    return write_text(path, json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n")


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Atomically write a CSV (``\\n`` line ends) with ``header`` then ``rows``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj`` (a checkpoint dict) to ``path``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_npy(path: str | os.PathLike, arr: Any) -> Path:
    """Atomically ``np.save`` ``arr`` to ``path`` (a ``.npy``)."""
    import numpy as np

    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)
    return Path(path)


@contextmanager
def new_npy(path: str | os.PathLike, shape: tuple[int, ...], dtype: Any) -> Iterator[Any]:
    """Yield a writable ``.npy`` memmap of ``shape``/``dtype``; flushed and renamed to ``path``
    when the block ends without error (removed otherwise)."""
    import numpy as np

    with atomic_path(path, suffix=".npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        try:
            yield arr
            arr.flush()
        finally:
            del arr


@contextmanager
def wav_writer(path: str | os.PathLike, sample_rate: int, subtype: str = "PCM_16") -> Iterator[Any]:
    """Yield a mono ``soundfile.SoundFile`` open for writing (stream blocks with ``.write``);
    renamed to ``path`` when the block ends without error."""
    import soundfile as sf

    with atomic_path(path, suffix=".wav") as tmp, sf.SoundFile(
            str(tmp), "w", samplerate=int(sample_rate), channels=1, subtype=subtype,
            format="WAV") as sink:
        yield sink


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110, close: bool = True) -> Path:
    """Atomically save a matplotlib figure as PNG; close it (also on error) unless ``close``
    is False."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return path


def check_record(record: object, fmt: str, max_version: int | None, where: str, hint: str,
                 kind: str) -> dict:
    """Check a checkpoint dict's ``format``; return it migrated to this l2i's version.

    ``where`` names the file in the message, ``kind`` the expected checkpoint ("l2i classifier"),
    ``hint`` says what the user should give instead. The version is checked and older records
    brought up by :func:`l2i.checkpoints.migrate` (``max_version``, when given, must be the
    current one). Raises :class:`l2i.errors.L2IError`.
    """
    from l2i.checkpoints import CURRENT, migrate
    from l2i.errors import L2IError

    if not isinstance(record, dict) or record.get("format") != fmt:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise L2IError(f"{where} is not an {kind} checkpoint (format {found!r}); {hint}")
    if max_version is not None and max_version != CURRENT[fmt]:
        raise RuntimeError(f"{fmt}: reader expects version {max_version}, "
                           f"l2i.checkpoints.CURRENT says {CURRENT[fmt]}")
    return migrate(record, fmt, where)


def read_checkpoint(path: str | os.PathLike, fmt: str, max_version: int, what: str,
                    hint: str, kind: str) -> dict:
    """``torch.load`` (weights only) a self-describing checkpoint and check its format.

    ``what`` describes the file ("classifier checkpoint"); ``hint`` says how to get a right one.
    Missing, unreadable or foreign files raise :class:`l2i.errors.L2IError`.
    """
    import torch

    from l2i.errors import L2IError

    path = Path(path)
    if not path.is_file():
        raise L2IError(f"{what} {path} not found: {hint}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is a bad file
        raise L2IError(f"{path} could not be read as an l2i {what} "
                       f"({type(err).__name__}: {err})") from None
    return check_record(record, fmt, max_version, str(path), hint, kind)
