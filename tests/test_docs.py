"""The docs cannot drift from the code: generated blocks are current, documented commands parse."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from l2i import cli

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)


def documented_commands() -> list[tuple[str, int, list[str]]]:
    """``(file, line, argv)`` of every ``l2i COMMAND ...`` line in the docs' code blocks.

    Backslash continuations are joined; shell variables set in the block (``F="..."``) are
    expanded; ``[--opt value]`` (optional parts) are kept without brackets; lines with ``...``
    (elided arguments) are skipped.
    """
    found = []
    for path in DOC_FILES:
        text = path.read_text()
        for block in FENCE.finditer(text):
            body = block.group(1).replace("\\\n", " ")
            start = text[:block.start()].count("\n") + 2
            env = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', body, re.M))  # F="--a 1 --b 2"
            for i, line in enumerate(body.splitlines()):
                line = line.split("#")[0].strip()
                for name, value in env.items():
                    line = line.replace(f"${name}", value)
                m = re.match(r"^(?:\.venv/bin/)?l2i\s+([a-z-]+)(.*)$", line)
                if not m or m.group(1) not in cli.COMMANDS or "..." in line or "…" in line:
                    continue
                args = shlex.split(m.group(2).replace("[", " ").replace("]", " "))
                found.append((path.name, start + i, [m.group(1), *args]))
    return found


def test_generated_doc_blocks_are_current():
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_docs.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_the_docs_show_some_commands():
    names = {argv[0] for _, _, argv in documented_commands()}
    assert {"train-classifier", "train-nmf", "train", "evaluate", "interpret"} <= names


@pytest.mark.parametrize("where,line,argv", documented_commands(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_every_documented_command_parses(where, line, argv, monkeypatch):
    """Each documented command line is accepted by its command's parser (keys, types, choices)."""
    monkeypatch.chdir(ROOT)  # recipes are named relative to the repository
    try:
        cli.parse_command(cli.COMMANDS[argv[0]], cli.set_threads(argv[1:]))
    except Exception as err:  # noqa: BLE001 (any refusal is a stale doc)
        pytest.fail(f"{where}:{line}: `l2i {' '.join(argv)}` does not parse: {err}")
