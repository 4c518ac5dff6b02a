"""The files of one explanation, written by ``l2i interpret`` and ``l2i evaluate``'s examples.

``NAME.explanation.wav``, ``NAME.png``, ``NAME.json`` (:func:`write_explanation`) and
``NAME.components/k{K}.wav`` (:func:`write_components`, played in the report and the interpret
page). The library side (:mod:`l2i.explain`) writes nothing; every write goes through
:mod:`l2i.fileio`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from l2i.explain import Explanation


def write_components(expl: Explanation, out_dir: Path, name: str) -> list[dict[str, Any]]:
    """``NAME.components/k{K}.wav`` for each selected component (its audio alone, see
    :meth:`Explanation.component_audio`); returns ``[{"k", "relevance", "wav"}]`` (``wav``
    relative to ``out_dir``)."""
    from l2i.audio import write_wav

    folder = out_dir / f"{name}.components"
    comps = []
    for k in expl.selected:
        wav = write_wav(folder / f"k{k}.wav", expl.component_audio(k), expl.sample_rate)
        comps.append({"k": int(k), "relevance": float(expl.relevance[k]),
                      "wav": wav.relative_to(out_dir).as_posix()})
    return comps


def write_explanation(expl: Explanation, out_dir: Path, name: str,
                      source: str | None = None) -> dict[str, Path]:
    """``NAME.explanation.wav``, ``NAME.png`` and ``NAME.json`` for one explanation."""
    from l2i.audio import write_wav
    from l2i.figures import explanation_figure
    from l2i.fileio import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    wav = write_wav(out_dir / f"{name}.explanation.wav", expl.audio, expl.sample_rate)
    png = explanation_figure(expl, out_dir / f"{name}.png",
                             title=f"{name}: explaining '{expl.target_name}'")
    info = {"file": source, **expl.summary(), "explanation_wav": wav.name, "figure": png.name}
    js = out_dir / f"{name}.json"
    write_json(js, info)
    return {"wav": wav, "png": png, "json": js}


__all__ = ["write_components", "write_explanation"]
