"""Shared by the benchmark scripts: print the result as JSON, optionally also to a file."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out: str | None) -> int:
    """Print ``result`` as indented JSON; write it to ``out`` too when given. Returns 0."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return 0
