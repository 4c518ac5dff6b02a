"""The one writer module: atomic writers, and nothing else in src/ writes files."""

from __future__ import annotations

import ast
import json
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from l2i import fileio

SRC = Path(__file__).resolve().parents[1] / "src" / "l2i"

# (module, function) -> why it may write without going through l2i.fileio
ALLOWED = {
    ("audio.py", "write_wav"): "soundfile encodes into a BytesIO; fileio.write_bytes writes it",
}

WRITE_CALLS = {"savez", "savez_compressed", "savefig", "write_text", "write_bytes",
               "open_memmap", "to_csv", "copyfile", "copy2", "copytree"}


def _write_mode(node: ast.Call, first: int) -> bool:
    """A constant mode argument (positional from ``first``, or ``mode=``) that writes."""
    modes = [a for a in node.args[first:first + 1]]
    modes += [k.value for k in node.keywords if k.arg == "mode"]
    return any(isinstance(m, ast.Constant) and isinstance(m.value, str)
               and set(m.value) & set("wax+") for m in modes)


def _writes(node: ast.Call, from_fileio: set[str]) -> bool:
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    if isinstance(f, ast.Name) and name in from_fileio:
        return False
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
            and f.value.id == "fileio":
        return False
    if name == "open":  # open(path, "w"...) / path.open("w")
        return _write_mode(node, 0 if isinstance(f, ast.Attribute) else 1)
    if name == "SoundFile":
        return _write_mode(node, 1)
    if name == "write" and isinstance(f.value if isinstance(f, ast.Attribute) else None,
                                      ast.Name):
        return f.value.id in ("sf", "soundfile")
    if name in ("dump", "safe_dump"):
        return len(node.args) >= 2 or any(k.arg == "stream" for k in node.keywords)
    if name in ("replace", "rename", "copy", "move"):  # os.replace, shutil.copy; not str's
        return isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
            and f.value.id in ("os", "shutil")
    if name == "save":
        return isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
            and f.value.id in ("torch", "np", "numpy")
    return name in WRITE_CALLS


def _writers() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "fileio.py" or (rel, "*") in ALLOWED:
            continue
        tree = ast.parse(path.read_text())
        from_fileio = {a.asname or a.name for n in ast.walk(tree)
                       if isinstance(n, ast.ImportFrom) and n.module == "l2i.fileio"
                       for a in n.names}
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and _writes(node, from_fileio) \
                        and (rel, fn.name) not in ALLOWED:
                    found.append(f"{rel}:{node.lineno} in {fn.name}")
    return sorted(set(found))


def test_nothing_in_src_writes_files_but_fileio():
    assert _writers() == [], "write through l2i.fileio (or add a reason to ALLOWED)"


def test_the_check_sees_a_writer(tmp_path):
    """The AST check is not vacuous: a module that writes on its own is caught."""
    fake = tmp_path / "l2i"
    fake.mkdir()
    (fake / "bad.py").write_text("import torch, os\n"
                                 "def f(p, x):\n    torch.save(x, p)\n"
                                 "def g(p):\n    open(p, 'w').write('x')\n"
                                 "def h(a, b):\n    os.replace(a, b)\n"
                                 "def ok(s):\n    return s.replace('a', 'b')\n"
                                 "def r(p):\n    return open(p).read()\n")
    globals()["SRC"], old = fake, SRC
    try:
        assert _writers() == ["bad.py:3 in f", "bad.py:5 in g", "bad.py:7 in h"]
    finally:
        globals()["SRC"] = old


def test_writers_are_atomic_and_readable(tmp_path):
    out = tmp_path / "sub" / "a.json"
    fileio.write_json(out, {"x": float("nan"), "y": [1, 2]})
    assert json.loads(out.read_text().replace("NaN", "null")) == {"x": None, "y": [1, 2]}
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    fileio.write_csv(tmp_path / "t.csv", ["a", "b"], [[1, 2], [3, 4]])
    assert (tmp_path / "t.csv").read_text() == "a,b\n1,2\n3,4\n"
    fileio.save_torch(tmp_path / "c.ckpt", {"w": torch.ones(2)})
    assert torch.equal(torch.load(tmp_path / "c.ckpt", weights_only=True)["w"], torch.ones(2))
    fileio.save_npy(tmp_path / "a.npy", np.arange(3))
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]
    with fileio.new_npy(tmp_path / "m.npy", (2, 3), np.float32) as m:
        m[:] = 1.5
    assert np.load(tmp_path / "m.npy").sum() == 9.0
    with fileio.wav_writer(tmp_path / "s.wav", 8000) as sink:
        sink.write(np.zeros(80))
        sink.write(np.zeros(20))
    assert sf.info(str(tmp_path / "s.wav")).frames == 100
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "x.npy"
    fileio.write_text(target, "old")
    with pytest.raises(RuntimeError), fileio.new_npy(target, (4,), np.float32) as m:
        m[:] = 2
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]
