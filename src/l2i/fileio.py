"""Atomic file output: write to a temp file in the same folder, then rename.

Nothing half-written is ever left under the final name, and files come out with ordinary
permissions (0644, not mkstemp's 0600) so that results can be shared.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


def check_record(record: object, fmt: str, max_version: int, where: str, hint: str,
                 kind: str) -> dict:
    """Check a checkpoint dict's ``format`` and ``version``; return it.

    ``where`` names the file in the message, ``kind`` the expected checkpoint ("l2i classifier"),
    ``hint`` says what the user should give instead.
    Raises :class:`l2i.errors.L2IError`.
    """
    from l2i.errors import L2IError

    if not isinstance(record, dict) or record.get("format") != fmt:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise L2IError(f"{where} is not an {kind} checkpoint (format {found!r}); {hint}")
    if int(record.get("version", 0)) > max_version:
        raise L2IError(f"{where} has format version {record.get('version')}, this l2i reads up "
                       f"to {max_version}: upgrade l2i")
    return record


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
