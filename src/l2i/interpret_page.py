"""The interpret page: ``index.html`` in ``l2i interpret``'s output folder (jinja2).

One card per input file: the input and explanation players, a player per selected component
(with its relevance), the figures, the top classes of the classifier and of theta, the
warnings, and for a long recording the timeline figure and its dominant-class segments. Audio
and images are RELATIVE links to the files next to the page (``NAME.explanation.wav``,
``NAME.components/k3.wav``, ``NAME.png``...): move or share the whole folder, not the page
alone. A long recording's input player links the original file by its relative path.
The template is ``l2i/templates/interpret.html.j2`` (package data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from l2i.fileio import write_text
from l2i.templating import render

TOP_CLASSES = 5


def top_rows(info: dict[str, Any], n: int = TOP_CLASSES) -> list[dict[str, Any]]:
    """The ``n`` classes of highest classifier probability, with theta's, from a summary."""
    pc, pt = info["classifier_probs"], info["theta_probs"]
    names = sorted(pc, key=lambda c: -pc[c])[:n]
    return [{"class": c, "classifier": pc[c], "theta": pt[c],
             "target": c == info.get("target_name")} for c in names]


def write_index(out: Path, entries: list[dict[str, Any]], class_names: list[str],
                title: str = "l2i interpret") -> Path:
    """Render ``out/index.html`` from the per-file entries of :func:`l2i.interpret
    .interpret_files` (atomically)."""
    for entry in entries:
        for e in entry.get("explanations", []):
            e["top"] = top_rows(e)
    n_warnings = sum(len(e.get("warnings", [])) for entry in entries
                     for e in entry.get("explanations", [entry]))
    html = render("interpret.html.j2", title=title, entries=entries,
                  n_classes=len(class_names), n_warnings=n_warnings)
    return write_text(Path(out) / "index.html", html)


__all__ = ["write_index", "top_rows"]
