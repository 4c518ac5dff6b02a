"""``l2i interpret``: explain audio files and write what a person listens to and reads.

Per input file (``NAME`` = its stem, ``-2``, ``-3``... on collisions; ``NAME.CLASS`` per target
when several are asked):

- a clip (not longer than two windows, see ``stream``): ``NAME.explanation.wav``, ``NAME.png``
  (figure), ``NAME.json`` (:meth:`l2i.explain.Explanation.summary`, plus components and
  warnings), ``NAME.components/k{K}.wav`` (each selected component alone; they add up to the
  explanation wav), ``NAME.components.png`` (atom spectra and activations), and once per file
  ``NAME.input.wav`` (the input as explained: resampled, normalised);
- a long recording (streamed in windows, constant memory, :mod:`l2i.longform`):
  ``NAME.explanation.wav`` (overlap-add stitched, written while it grows),
  ``NAME.timeline.csv`` (one row per window), ``NAME.timeline.png``, ``NAME.json`` (segments
  where each class dominates, warnings);
- ``index.html``: the interpret page (jinja2 template ``templates/interpret.html.j2``), linking
  the files above by relative paths (keep it in the folder with them), and ``config.yaml``.

Warnings (:func:`l2i.explain.explanation_warnings`) are printed one line each on stderr and
recorded in the json and the page. The library (math, :class:`l2i.explain.Explainer`) lives in
:mod:`l2i.explain`; this module only reads and writes files.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from l2i import explain as E
from l2i.config import InterpretRecipe, save_config
from l2i.errors import ConfigError, DataError, L2IError
from l2i.explanation_files import write_components, write_explanation
from l2i.fileio import wav_writer, write_csv, write_json
from l2i.interpreter import classifier_threshold

STREAMS = ("auto", "always", "never")
READ_BLOCK_S = 1.0  # seconds read from a long file at a time


def _unique_stems(files: list[Path]) -> list[str]:
    """Output names per input: the file stem, with ``-2``, ``-3``... on collisions."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        stem = f.stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def audio_files(paths: list[str | os.PathLike], skip: Path | None = None) -> list[Path]:
    """The files to explain: each file as given, each folder's audio files (recursive, sorted).

    A folder's files are those with an extension in ``l2i.audio.AUDIO_EXTENSIONS`` (hidden
    files and anything under ``skip``, the output folder, left out). Raises DataError for
    missing paths and for a folder that holds no audio file.
    """
    from l2i.audio import AUDIO_EXTENSIONS

    files, missing = [], []
    skip = skip.resolve() if skip is not None else None
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in AUDIO_EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts)
                           and not (skip and f.resolve().is_relative_to(skip)))
            if not found:
                raise DataError(f"folder {p} holds no audio file ({', '.join(AUDIO_EXTENSIONS)})"
                                ": give audio files or a folder that contains some")
            files += found
        else:
            missing.append(str(p))
    if missing:
        raise DataError(f"audio file(s) not found: {', '.join(missing)}")
    return files


# --------------------------------------------------------------------------- targets
def target_spec(explainer: E.Explainer, cfg: InterpretRecipe) -> str | list[int | None]:
    """``cfg.target`` -> ``"all"`` or a list of class indices (``[None]``: the prediction)."""
    t = cfg.target
    if cfg.top_classes is not None and cfg.top_classes < 1:
        raise ConfigError(f"top_classes must be >= 1 (or unset), got {cfg.top_classes}")
    if (isinstance(t, str) and t.strip().lower() == "all") or cfg.top_classes:
        return "all"
    if t is None or (isinstance(t, str) and not t.strip()):
        # a multi-label classifier: one explanation per class above its decision threshold
        return "multilabel" if explainer.interpreter_activation == "sigmoid" else [None]
    parts = [p.strip() for p in str(t).split(",")] if isinstance(t, str) else [t]
    return [explainer.resolve_target(p) for p in parts if p != ""]


def choose_targets(spec: str | list[int | None], probs: np.ndarray,
                   cfg: InterpretRecipe, threshold: float = 0.5) -> list[int | None]:
    """For ``"all"``: the ``top_classes`` most probable classes, else every class with
    probability >= ``target_min_prob`` (at least the top one). For ``"multilabel"`` (a sigmoid
    classifier, no target given): every class whose probability exceeds ``threshold``, the
    classifier's decision threshold (at least the top one)."""
    order = [int(c) for c in np.argsort(-probs)]
    if spec == "multilabel":
        return [c for c in order if probs[c] > threshold] or order[:1]
    if spec != "all":
        return list(spec)
    if cfg.top_classes:
        return order[:cfg.top_classes]
    return [c for c in order if probs[c] >= cfg.target_min_prob] or order[:1]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "class"


# --------------------------------------------------------------------------- clips
def _warn(source: str, what: str, warnings: list[dict[str, Any]]) -> None:
    for w in warnings:
        print(f"l2i: warning: {source} [{what}]: {w['message']}", file=sys.stderr)


def explain_clip(explainer: E.Explainer, x: np.ndarray, sr: int, source: Path, stem: str,
                 spec: Any, cfg: InterpretRecipe, out: Path) -> dict[str, Any]:
    """Explain one clip for each target; write its files; return its page entry."""
    from l2i.audio import normalize_audio, resample, write_wav
    from l2i.interpret_figures import components_figure

    first = explainer.explain(x, sr, target=None if isinstance(spec, str) else spec[0])[0]
    targets = choose_targets(spec, first.classifier_probs, cfg,
                             classifier_threshold(explainer.interpreter.classifier))
    several = isinstance(spec, str) or len(targets) > 1
    xin = normalize_audio(resample(x, sr, explainer.sample_rate), explainer.normalize)
    input_wav = write_wav(out / f"{stem}.input.wav", xin, explainer.sample_rate)
    entry = {"name": stem, "source": str(source), "kind": "clip", "input_wav": input_wav.name,
             "explanations": []}
    for t in targets:
        expl = (first if t is None or t == first.target
                else explainer.explain(x, sr, target=t)[0])
        name = f"{stem}.{_safe(expl.target_name)}" if several else stem
        paths = write_explanation(expl, out, name, source=str(source))
        info = json.loads(paths["json"].read_text())
        comps, comp_png = [], None
        if cfg.components:
            comps = write_components(expl, out, name)
            comp_png = components_figure(expl, out / f"{name}.components.png",
                                         title=f"{name}: components of '{expl.target_name}'")
        info.update(components=comps, input_wav=input_wav.name,
                    components_figure=comp_png.name if comp_png else None)
        write_json(paths["json"], info)
        _warn(str(source), expl.target_name, expl.warnings)
        entry["explanations"].append({**info, "name": name})
    return entry


# --------------------------------------------------------------------------- long recordings
def file_blocks(path: Path, frames: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``frames`` samples read from ``path`` (channels averaged)."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                block = f.read(frames, dtype="float32", always_2d=True)  # (n, C)
                if block.shape[0] == 0:
                    return
                if not np.isfinite(block).all():
                    raise DataError(f"audio file {path} contains NaN or infinite samples: "
                                    "re-export it")
                yield block.mean(axis=1)  # (n,)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise DataError(f"cannot decode audio file {path} ({err}): re-encode it as wav/flac"
                        ) from None


def write_timeline_csv(timeline: Any, path: Path) -> Path:
    """``start_s,end_s,predicted,p_<class>...,theta_<class>...``: one row per window."""
    return write_csv(path, timeline.csv_header(), timeline.csv_rows())


def explain_recording(explainer: E.Explainer, path: Path, sr_in: int, n_in: int, stem: str,
                      spec: Any, cfg: InterpretRecipe, out: Path) -> dict[str, Any]:
    """Stream one long file in windows; write the stitched wav, timeline and json."""

    from l2i.interpret_figures import timeline_figure
    from l2i.longform import resampled_blocks

    target = spec[0] if not isinstance(spec, str) and len(spec) == 1 else None
    if isinstance(spec, str) or len(spec) > 1:
        print(f"l2i: note: {path} is long: each window explains its own predicted class "
              "(the timeline gives every class's probability)", file=sys.stderr)
    sr = explainer.sample_rate
    n = int(round(n_in * sr / sr_in))
    blocks = resampled_blocks(file_blocks(path, max(1, int(READ_BLOCK_S * sr_in))), sr_in, sr)
    wav = out / f"{stem}.explanation.wav"
    with wav_writer(wav, sr) as sink:
        timeline, warns = explainer.explain_stream(
            blocks, cfg.window_s, cfg.hop_s, target,
            write=lambda a: sink.write(np.clip(a, -1.0, 1.0)), n_samples=n,
            progress=sys.stderr.isatty())
    csv_path = write_timeline_csv(timeline, out / f"{stem}.timeline.csv")
    png = timeline_figure(timeline, out / f"{stem}.timeline.png", title=f"{stem}: timeline")
    info = {"file": str(path), "kind": "long", **timeline.summary(), "warnings": warns,
            "explanation_wav": wav.name, "timeline_csv": csv_path.name,
            "timeline_figure": png.name, "sample_rate": sr,
            "target": None if target is None else explainer.class_names[target]}
    write_json(out / f"{stem}.json", info)
    _warn(str(path), "timeline", warns)
    rel = os.path.relpath(path.resolve(), out.resolve())
    return {"name": stem, "source": str(path), "kind": "long",
            "input_wav": Path(rel).as_posix(), **info}


# --------------------------------------------------------------------------- the command
def _check(cfg: InterpretRecipe) -> None:
    if not cfg.ckpt:
        raise ConfigError("l2i interpret needs a checkpoint: l2i interpret RUN/l2i.ckpt FILE...")
    if not Path(cfg.ckpt).is_file():
        raise ConfigError(f"checkpoint {cfg.ckpt} not found: give the l2i.ckpt written by "
                          "'l2i train'")
    if not cfg.files:
        raise ConfigError("l2i interpret needs at least one audio file or folder: "
                          "l2i interpret CKPT FILE_OR_FOLDER [...]")
    if cfg.top_k is not None and cfg.top_k < 1:
        raise ConfigError(f"top_k must be >= 1 (or unset), got {cfg.top_k}")
    if cfg.stream not in STREAMS:
        raise ConfigError(f"stream must be one of {', '.join(STREAMS)}, got {cfg.stream!r}")


def _is_long(explainer: E.Explainer, cfg: InterpretRecipe, seconds: float) -> bool:
    if cfg.stream != "auto":
        return cfg.stream == "always"
    win, _ = explainer.window_hop(cfg.window_s, cfg.hop_s)
    return seconds > 2 * win / explainer.sample_rate


def interpret_files(cfg: InterpretRecipe) -> str:
    """``l2i interpret CKPT FILE_OR_FOLDER... --output_folder O``: explain each file.

    A folder stands for the audio files inside it (recursively, :func:`audio_files`). Clips
    go through :meth:`l2i.explain.Explainer.explain` (the Python API's path: resampled,
    normalised as the classifier was trained), long recordings through
    :meth:`~l2i.explain.Explainer.explain_stream` (module docstring). Returns a summary line
    per file.
    """
    import soundfile as sf

    from l2i.audio import read_audio

    _check(cfg)
    out = Path(cfg.output_folder)
    files = audio_files(cfg.files, skip=out)
    explainer = E.Explainer.load(cfg.ckpt, cfg.device, relevance_th=cfg.relevance_th,
                                 top_k=cfg.top_k, max_memory_mb=cfg.max_memory_mb or None,
                                 mask=cfg.mask)
    explainer.min_confidence = cfg.min_confidence
    spec = target_spec(explainer, cfg)
    explainer.window_hop(cfg.window_s, cfg.hop_s)  # bad window/hop: fail before any output
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    lines, entries = [], []
    for f, name in zip(files, _unique_stems(files)):
        try:
            info = sf.info(str(f))
            long = _is_long(explainer, cfg, info.frames / max(info.samplerate, 1))
        except RuntimeError:
            long = False  # undecodable: read_audio says why
        try:
            if long:
                entry = explain_recording(explainer, f, int(info.samplerate), int(info.frames),
                                          name, spec, cfg, out)
                segs = ", ".join(f"{s['class']} {s['start_s']:.0f}-{s['end_s']:.0f}s"
                                 for s in entry["segments"][:6])
                lines.append(f"{f} -> {out / name}.timeline.csv  {entry['n_windows']} windows: "
                             f"{segs}")
            else:
                x, sr = read_audio(f)
                entry = explain_clip(explainer, x, sr, f, name, spec, cfg, out)
                for e in entry["explanations"]:
                    lines.append(f"{f} -> {out / e['name']}.explanation.wav  target="
                                 f"{e['target_name']} p={e['classifier_prob_target']:.3f} "
                                 f"components={e['selected_components']}")
        except L2IError as err:
            raise type(err)(f"{f}: {err}") from None
        entries.append(entry)
    from l2i.interpret_page import write_index

    write_index(out, entries, explainer.class_names, title=f"l2i interpret: {cfg.ckpt}")
    lines.append(f"page: {out / 'index.html'}")
    return "\n".join(lines)


__all__ = ["interpret_files", "audio_files", "target_spec", "choose_targets", "file_blocks",
           "write_timeline_csv", "explain_clip", "explain_recording"]
