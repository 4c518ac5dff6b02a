"""List the functions in ``src/`` longer than a limit (default 60 lines), longest first.

A function may stay long when its docstring says why (a line starting ``Long:``); those are
listed apart. ``python tools/long_functions.py [--max 60] [--all]`` (``--all``: also the
explained ones). Exit status 0 always: this is a map, the rule lives in CONTRIBUTING.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def long_functions(max_lines: int = 60, root: Path = SRC) -> list[tuple[int, str, bool]]:
    """``(lines, "path:line name", explained)`` of every function over ``max_lines``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > max_lines:
                    doc = ast.get_docstring(node) or ""
                    explained = any(line.strip().startswith("Long:") for line in doc.splitlines())
                    out.append((n, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}",
                                explained))
    return sorted(out, reverse=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=60)
    ap.add_argument("--all", action="store_true", help="also list the explained ones")
    args = ap.parse_args(argv)
    for n, where, explained in long_functions(args.max):
        if args.all or not explained:
            print(f"{n:4d}  {where}{'  (explained)' if explained else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
