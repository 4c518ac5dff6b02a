"""Regenerate the generated parts of the docs, so they cannot drift from the code.

    .venv/bin/python tools/gen_docs.py          # rewrite the docs in place
    .venv/bin/python tools/gen_docs.py --check  # exit 1 naming stale files (a test runs this)

Generated parts sit between ``<!-- generated: KEY -->`` and ``<!-- end generated -->`` lines;
everything outside them is prose and left alone. Keys:

- ``l2i --help`` / ``l2i COMMAND --help``: the CLI's own help text (docs/cli.md);
- ``bench NAME``: a table rendered from ``benchmarks/results/NAME.json``, the JSON a benchmark
  script wrote with ``--out`` (docs/benchmarks.md). See :func:`bench_table`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "cli.md", ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "scaling.md"]
BLOCK = re.compile(r"(<!-- generated: (?P<key>[^>]+?) -->\n)(?P<body>.*?)(<!-- end generated -->)",
                   re.S)


def help_text(argv: list[str]) -> str:
    """What ``l2i ARGV`` prints (``argv`` ends with ``--help``)."""
    from l2i import cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        cli.main(argv)
    return buf.getvalue().rstrip("\n")


def bench_table(name: str) -> str:
    """A markdown table from ``benchmarks/results/NAME.json``.

    The JSON holds ``{"command": str, "machine": str, "rows": [{column: value}, ...]}`` (the
    benchmark scripts write ``rows`` with the columns they measure); the table has one row per
    entry, the columns of the first row, then the command and the machine under it.
    """
    data = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
    rows = data["rows"]
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    lines += ["", f"Command: `{data['command']}`; machine: {data['machine']}."]
    return "\n".join(lines)


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "–" if v is None else str(v)


def render(key: str) -> str:
    if key.startswith("l2i "):
        return "```\n" + help_text(key.split()[1:]) + "\n```\n"
    if key.startswith("bench "):
        return bench_table(key.split(maxsplit=1)[1]) + "\n"
    raise SystemExit(f"unknown generated block key {key!r}")


def regenerate(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("key")) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only report stale files")
    args = ap.parse_args(argv)
    stale = []
    for path in DOCS:
        old = path.read_text()
        new = regenerate(old)
        if new != old:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("stale generated docs: " + ", ".join(stale)
              + " (run .venv/bin/python tools/gen_docs.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
