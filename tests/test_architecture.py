"""The import rules of docs/architecture.md hold, and its module map names every module.

The layers are read from the doc's "Import rules" section, so the doc and this test cannot
drift apart: a new module must be placed in a layer there, and its imports must obey it.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "l2i"
DOC = (ROOT / "docs" / "architecture.md").read_text()
STDLIB = set(sys.stdlib_module_names)


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files(entry: str) -> list[Path]:
    """A doc entry (``x.py``, ``models/x.py``, ``explainers/``) -> the files it names."""
    if entry.endswith("/"):
        return sorted((SRC / entry).rglob("*.py"))
    return [SRC / entry]


def _layer(name: str) -> set[str]:
    """The modules of one layer of the doc's import rules (``- **name** ...: `a.py`, ...``)."""
    section = DOC.split("## Import rules", 1)[1].split("\n## ", 1)[0]
    item = re.search(rf"^- \*\*{name}\*\*(.*?)(?=^- \*\*|\Z)", section, re.M | re.S)
    assert item, f"docs/architecture.md: no '- **{name}**' in the import rules"
    text = item.group(1).split("(`models/__init__.py`")[0]  # the loaders' aside is no list
    out = set()
    for entry in re.findall(r"`([\w/]+(?:\.py|/))`", text):
        files = _files(entry)
        assert files and all(f.is_file() for f in files), f"doc names a missing {entry}"
        out |= {_module(f) for f in files}
    return out


def _imports(path: Path) -> set[str]:
    """Every module imported anywhere in ``path`` (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "l2i":  # from l2i import features
                found |= {f"l2i.{a.name}" for a in node.names if a.name != "__version__"}
    return found


MODULES = {_module(p): p for p in sorted(SRC.rglob("*.py"))}
IMPORTS = {m: _imports(p) for m, p in MODULES.items()}


def _l2i(m: str) -> set[str]:
    return {i for i in IMPORTS[m] if i == "l2i" or i.startswith("l2i.")} - {"l2i"}


def test_every_module_is_in_one_layer_and_in_the_map():
    layers = {n: _layer(n) for n in ("library", "commands", "cli")}
    placed = set().union(*layers.values())
    assert sorted(set(MODULES) - placed) == [], "place these in docs/architecture.md"
    assert not layers["library"] & layers["commands"]
    table = DOC.split("## Modules", 1)[1].split("\n## ", 1)[0]
    for path in MODULES.values():
        rel = path.relative_to(SRC).as_posix()
        if rel == "__init__.py":
            continue
        folder = rel.split("/")[0] + "/"
        if rel.endswith("/__init__.py"):  # a package: the folder or one of its files named
            assert f"`{folder}" in table, f"{folder} is not in docs/architecture.md's map"
            continue
        assert f"`{rel}`" in table or f"`{folder}`" in table or rel in DOC, \
            f"{rel} is not in docs/architecture.md's module map"


@pytest.mark.parametrize("module", sorted(_layer("models")))
def test_models_import_only_torch_and_typed_configs(module):
    third = {i.split(".")[0] for i in IMPORTS[module]} - STDLIB - {"l2i", "torch"}
    assert third == set()
    assert _l2i(module) <= {"l2i.config", "l2i.models"}, _l2i(module)


def test_metrics_import_no_l2i_module_but_errors():
    for m in _layer("metrics"):
        assert _l2i(m) <= {"l2i.errors"}, _l2i(m)


def test_the_library_never_imports_commands_or_the_cli():
    library, commands = _layer("library"), _layer("commands") | _layer("cli")
    bad = {m: sorted(_l2i(m) & commands) for m in library if _l2i(m) & commands}
    assert bad == {}
    importers = [m for m in MODULES if m != "l2i.cli" and "l2i.cli" in IMPORTS[m]]
    assert importers == []


def test_the_rules_see_a_violation(monkeypatch):
    """Not vacuous: a model importing numpy or l2i.fileio, a library module importing a
    command, are caught."""
    monkeypatch.setitem(IMPORTS, "l2i.models.theta", IMPORTS["l2i.models.theta"] | {"numpy"})
    with pytest.raises(AssertionError):
        test_models_import_only_torch_and_typed_configs("l2i.models.theta")
    monkeypatch.setitem(IMPORTS, "l2i.explain", IMPORTS["l2i.explain"] | {"l2i.report"})
    with pytest.raises(AssertionError):
        test_the_library_never_imports_commands_or_the_cli()


# functions over the limit that may stay long, each with why (none today)
LONG_ALLOWED: dict[str, str] = {}  # every long function is split or gives its reason


def test_no_function_over_60_lines_without_a_reason():
    spec = importlib.util.spec_from_file_location("long_functions",
                                                  ROOT / "tools" / "long_functions.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    found = [where.split(":")[0] + " " + where.split(" ")[1]
             for _, where, explained in tool.long_functions(60) if not explained]
    assert sorted(set(found) - set(LONG_ALLOWED)) == [], \
        "split these, or give the reason in a 'Long:' line of the docstring"
