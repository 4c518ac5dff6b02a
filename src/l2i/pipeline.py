"""Whole-path commands: ``l2i demo`` (synthetic data) and ``l2i run`` (a real dataset).

Each stage writes into its own sub-folder of the output folder and is keyed on a hash of its
resolved config (:func:`stage_hash`: the config as :func:`l2i.rerun.hashed_view`, which leaves
out keys that do not change results, plus the hashes of the stages it reads). The hash is
stored with the stage's outputs (``<stage folder>/stage.json``, written as "running" before
the stage starts and "finished" after it). On a re-run a finished stage whose hash is
unchanged is reused; a changed hash (an option of the stage, or of a stage it reads) removes
the stage's old outputs (its ``cache/`` stays: those caches have their own keys) and runs it
again, and so every stage downstream; an interrupted stage with the same hash resumes from its
``last.ckpt``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from l2i import config as C
from l2i.errors import ConfigError
from l2i.fileio import write_text
from l2i.rerun import config_diff, digest, file_digest, hashed_view

STAGE_VERSION = 1  # bump when a stage's outputs change meaning for the same config
RECORD = "stage.json"


@dataclass
class Stage:
    """One step of a pipeline.

    ``folder`` holds what the stage writes (cleared, but for ``cache/``, before it re-runs);
    ``artefact`` exists once it finished; ``config`` is hashed minus ``drop`` (keys naming
    upstream outputs, which enter through ``needs``: names of the stages it reads); ``extra``
    is hashed too (e.g. digests of files the user gave). ``outputs``: when set, the only paths
    removed before a re-run (the report lives in the run's top folder). ``record``: where the
    stage's hash is stored (default ``folder/stage.json``).
    """

    name: str
    folder: Path
    artefact: Path
    run: Callable[[], Any]
    config: Any = None
    needs: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[Path, ...] | None = None
    record: Path | None = None
    resumable: bool = False  # a training stage: an interrupted run continues from last.ckpt

    @property
    def record_path(self) -> Path:
        return self.record or self.folder / RECORD


# the demo's report plays 4 example clips (each with every explainer's audio and figures; 8
# examples cost ~16 s more of the demo's ~1 min on a 2-core CPU)
DEMO_EXAMPLES = 4


def recipes_folder() -> Path:
    """The ``recipes/`` folder shipped with l2i (repository checkout or installed package)."""
    here = Path(__file__).resolve()
    for cand in (here.parent / "recipes", here.parents[2] / "recipes"):
        if cand.is_dir():
            return cand
    raise ConfigError("cannot find l2i's recipes/ folder: run l2i from a checkout of the "
                      "repository (pip install -e .)")


def stage_view(stage: Stage) -> dict[str, Any]:
    """What a stage's hash covers, minus its inputs' hashes: config view + ``extra``."""
    view = hashed_view(stage.config, stage.drop) if stage.config is not None else {}
    return {**view, **{f"extra.{k}": v for k, v in stage.extra.items()}}


def stage_hash(stage: Stage, upstream: dict[str, str]) -> str:
    """Hash of the stage's name, :func:`stage_view` and the hashes of the stages it reads."""
    missing = [n for n in stage.needs if n not in upstream]
    if missing:
        raise ValueError(f"stage {stage.name!r} reads {missing}, which do not come before it")
    return digest({"stage": stage.name, "version": STAGE_VERSION, "config": stage_view(stage),
                   "inputs": {n: upstream[n] for n in stage.needs}})


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _write_record(stage: Stage, h: str, upstream: dict[str, str], finished: bool) -> None:
    write_text(stage.record_path, json.dumps({
        "stage": stage.name, "hash": h, "finished": finished, "version": STAGE_VERSION,
        "inputs": {n: upstream[n] for n in stage.needs}, "config": stage_view(stage)},
        indent=2) + "\n")


def _why_rerun(stage: Stage, rec: dict[str, Any] | None, upstream: dict[str, str]) -> str:
    """Why a stage with an outdated or missing record runs again (one line)."""
    if rec is None:
        return "no stage record (outputs of an older l2i?)"
    changed = config_diff(rec.get("config", {}), stage_view(stage), shared_only=True)
    inputs = [n for n in stage.needs if rec.get("inputs", {}).get(n) != upstream[n]]
    parts = []
    if changed:
        parts.append("config changed: " + "; ".join(changed[:4])
                     + (f"; +{len(changed) - 4} more" if len(changed) > 4 else ""))
    if inputs:
        parts.append("its inputs changed: " + ", ".join(inputs))
    return ", ".join(parts) or "stage version changed"


def _clear(stage: Stage) -> None:
    """Remove the stage's outputs before it runs again (``cache/`` sub-folders stay)."""
    paths = stage.outputs if stage.outputs is not None else (
        list(stage.folder.iterdir()) if stage.folder.is_dir() else [])
    for path in paths:
        if path.name == "cache" and path.is_dir():
            continue
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _same_as_record(stage: Stage, rec: dict[str, Any] | None, upstream: dict[str, str]) -> bool:
    """The record describes this stage: same stage version, same inputs (their hashes) and no
    key of both configs differs (a key only one side has, i.e. a field added or removed by an
    l2i update, keeps its default behaviour and is no change)."""
    if rec is None or rec.get("version") != STAGE_VERSION or not rec.get("hash"):
        return False
    inputs = rec.get("inputs", {})
    return (all(inputs.get(n) == upstream[n] for n in stage.needs)
            and not config_diff(rec.get("config", {}), stage_view(stage), shared_only=True))


def _decide(stage: Stage, upstream: dict[str, str]) -> tuple[str, str, str]:
    """``("reuse" | "resume" | "run", the stage's hash, message)``."""
    rec = _read_record(stage.record_path)
    if _same_as_record(stage, rec, upstream):
        h = rec["hash"]  # the recorded run's hash: what the later stages' records name
        if rec.get("finished") and stage.artefact.exists():
            return "reuse", h, f"config unchanged ({h}), reused {stage.artefact}"
        if stage.resumable and not stage.artefact.exists():
            return "resume", h, "interrupted earlier with the same config: resuming"
    h = stage_hash(stage, upstream)
    if rec is None and not stage.artefact.exists():
        return "run", h, ""  # a first run (leftovers without a record are cleared)
    return "run", h, _why_rerun(stage, rec, upstream) + ": running it again"


def run_stages(stages: list[Stage]) -> dict[str, str]:
    """Run, resume or reuse each stage in order (printing why and how long); its hashes."""
    n = len(stages)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    hashes: dict[str, str] = {}
    for i, stage in enumerate(stages, 1):
        action, h, why = _decide(stage, hashes)
        hashes[stage.name] = h
        if action == "reuse":
            print(f"[{i}/{n}] {stage.name}: {why}", flush=True)
            continue
        if action == "run":
            _clear(stage)
        print(f"[{i}/{n}] {stage.name} ...{f' ({why})' if why else ''}", flush=True)
        _write_record(stage, h, hashes, finished=False)
        t0, c0 = time.perf_counter(), cpu_seconds()
        try:
            stage.run()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"stage '{stage.name}' interrupted; run the same command again: finished "
                "stages are reused and this one resumes") from None
        _write_record(stage, h, hashes, finished=True)
        print(f"[{i}/{n}] {stage.name}: finished in {time.perf_counter() - t0:.1f} s, CPU "
              f"{cpu_seconds() - c0:.1f} s (total {time.perf_counter() - start:.1f} s, CPU "
              f"{cpu_seconds() - cpu0:.1f} s)", flush=True)
    return hashes


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its finished children: next
    to wall time it tells a slow stage from a loaded machine."""
    import resource

    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _resumable(trainer: C.TrainerConfig, out: Path) -> C.TrainerConfig:
    """Resume a training stage exactly when it left a last checkpoint (:func:`run_stages`
    cleared the folder of a stage whose config changed); ``--trainer.resume`` is not needed."""
    has_last = (out / "checkpoints" / "last.ckpt").exists()
    return replace(trainer, resume=has_last)


def _train_classifier(cfg: C.ClassifierRecipe) -> None:
    from l2i.training.classifier import train_classifier
    train_classifier(replace(cfg, trainer=_resumable(cfg.trainer, Path(cfg.output_folder))))


def _train_nmf(cfg: C.NMFRecipe) -> None:
    from l2i.training.nmf import train_nmf
    train_nmf(cfg)


def _train_interpreter(cfg: C.L2IRecipe) -> None:
    from l2i.training.interpreter import train_interpreter
    train_interpreter(replace(cfg, trainer=_resumable(cfg.trainer, Path(cfg.output_folder))))


def _prepare(cfg: C.PrepareRecipe) -> None:
    from l2i.prepare import prepare
    print(prepare(cfg), flush=True)


def _prepare_stage(source: str | Path, out: Path, data: C.DataConfig, sample_rate: int,
                   needs: tuple[str, ...], extra: dict[str, Any]) -> Stage | None:
    """The stage that decodes the dataset once into ``out/shards`` (float32: the values every
    stage decoded for itself before), the data folder of every training stage; None when the
    training stages cannot read shards (:func:`l2i.shards.streamable`: variable-length clips,
    random crops, ``data.cache: false``), which then read ``source`` as before."""
    from l2i.shards import streamable

    if not streamable(data, random_crop=True):
        return None
    shards = out / "shards"
    cfg = C.PrepareRecipe(data_folder=str(source), output_folder=str(shards), data=data,
                          sample_rate=int(sample_rate), dtype="float32", progress=False)
    return Stage(PREPARE, shards, shards / "index.json", lambda: _prepare(cfg), cfg, needs,
                 ("data_folder", "progress"), extra, outputs=(shards,),
                 record=out / "shards.stage.json")  # l2i prepare writes into an empty folder


def _evaluate(cfg: C.EvaluateRecipe) -> None:
    from l2i.evaluation import evaluate
    evaluate(cfg)


def _report(cfg: C.ReportRecipe) -> None:
    from l2i.report import write_report
    write_report(cfg)


def _device_overrides(device: str) -> dict[str, Any]:
    return {"trainer.device": device}


SYNTH, PREPARE, CLASSIFIER, NMF, L2I, EVALUATE, REPORT = (
    "synthesise dataset", "decode the audio once (shards)", "train classifier",
    "learn NMF dictionary", "train L2I interpreter", "evaluate on the test fold",
    "write report")


def _report_stage(out: Path, needs: tuple[str, ...]) -> Stage:
    report = C.ReportRecipe(run_folder=str(out), output=str(out / "report.html"))
    return Stage(REPORT, out, out / "report.html", lambda: _report(report), report, needs,
                 drop=("run_folder",), outputs=(out / "report.html",),
                 record=out / "report.stage.json")


def demo(cfg: C.DemoRecipe) -> str:
    """``l2i demo``: synthesise a dataset, train classifier, NMF and L2I, evaluate, report."""
    from l2i.synthetic import synthesize_dataset

    out = Path(cfg.output_folder)
    out.mkdir(parents=True, exist_ok=True)
    C.save_config(cfg, out / "config.yaml")
    rec = recipes_folder() / "demo"
    data = out / "data"
    base = C.load_config(C.ClassifierRecipe, rec / "classifier.yaml")
    prep = _prepare_stage(data, out, base.data, base.features.sample_rate, (SYNTH,), {})
    common = {"data_folder": str(prep.folder if prep else data)}  # the training stages' data
    clf = C.load_config(C.ClassifierRecipe, rec / "classifier.yaml", {
        **common, "output_folder": str(out / "classifier"), **_device_overrides(cfg.device),
        "trainer.seed": cfg.seed})
    nmf = C.load_config(C.NMFRecipe, rec / "nmf.yaml", {
        **common, "output_folder": str(out / "nmf"), "nmf.device": cfg.device,
        "nmf.seed": cfg.seed})
    l2i = C.load_config(C.L2IRecipe, rec / "l2i.yaml", {
        **common, "output_folder": str(out / "l2i"), **_device_overrides(cfg.device),
        "classifier_ckpt": str(out / "classifier" / "classifier.ckpt"),
        "nmf": str(out / "nmf" / "nmf.pt"), "trainer.seed": cfg.seed})
    ev = C.load_config(C.EvaluateRecipe, None, {  # the synthetic folder: its true events
        "ckpt": str(out / "l2i" / "l2i.ckpt"), "data_folder": str(data),
        "output_folder": str(out / "eval"),
        "data.train_folds": l2i.data.train_folds, "data.valid_folds": l2i.data.valid_folds,
        "data.test_folds": l2i.data.test_folds, "device": cfg.device, "seed": cfg.seed,
        "n_examples": DEMO_EXAMPLES})
    synth = C.SynthRecipe(output_folder=str(data), n_per_class=cfg.n_per_class, seed=cfg.seed,
                          sample_rate=clf.features.sample_rate)
    paths = ("data_folder", "classifier_ckpt", "nmf", "ckpt", "classifier_recipe", "nmf_recipe")
    src = (PREPARE,) if prep else (SYNTH,)
    run_stages([
        Stage(SYNTH, data, data / "meta" / "esc50.csv", lambda: print(synthesize_dataset(synth)),
              synth),
        *([prep] if prep else []),
        Stage(CLASSIFIER, out / "classifier", out / "classifier" / "classifier.ckpt",
              lambda: _train_classifier(clf), clf, src, paths, resumable=True),
        Stage(NMF, out / "nmf", out / "nmf" / "nmf.pt", lambda: _train_nmf(nmf), nmf, src,
              paths),
        Stage(L2I, out / "l2i", out / "l2i" / "l2i.ckpt", lambda: _train_interpreter(l2i), l2i,
              (*src, CLASSIFIER, NMF), paths, resumable=True),
        Stage(EVALUATE, out / "eval", out / "eval" / "metrics.json", lambda: _evaluate(ev), ev,
              (SYNTH, L2I), paths),
        _report_stage(out, (CLASSIFIER, NMF, L2I, EVALUATE)),
    ])
    return _summary(out)


def _given_file(path: str) -> str:
    """A file the user gave (not made by a stage): its path and content digest, hashed."""
    return f"{Path(path).resolve()}#{file_digest(path)}"


def run_pipeline(cfg: C.L2IRecipe) -> str:
    """``l2i run RECIPE --data_folder D``: every stage on a real dataset.

    The L2I recipe names the classifier and NMF recipes (``classifier_recipe``, ``nmf_recipe``);
    ``data_folder``, the ``data`` section and the device are shared by all stages. A stage whose
    checkpoint is given (``--classifier_ckpt``, ``--nmf``) is not trained (the digest of the
    given file is part of the later stages' hashes), nor a classifier given as code
    (``classifier.module``; the NMF recipe's ``features`` are then l2i's STFT).
    """
    if not cfg.data_folder:
        raise ConfigError("l2i run needs --data_folder (an ESC-50 folder, a CSV manifest's "
                          "folder or a folder per class)")
    out = Path(cfg.output_folder)
    out.mkdir(parents=True, exist_ok=True)
    data_over = {f"data.{k}": v for k, v in C.to_dict(cfg.data).items()}
    paths = ("data_folder", "classifier_ckpt", "nmf", "ckpt", "classifier_recipe", "nmf_recipe",
             "init")
    data_id = {"data_folder": str(Path(cfg.data_folder).resolve())}
    sr = _run_sample_rate(cfg)
    prep = _prepare_stage(cfg.data_folder, out, cfg.data, sr, (), data_id) if sr else None
    stages: list[Stage] = [prep] if prep else []
    src = (PREPARE,) if prep else ()
    shared = {"data_folder": str(prep.folder) if prep else cfg.data_folder}
    clf_ckpt, nmf_path = cfg.classifier_ckpt, cfg.nmf
    l2i_extra = dict(data_id)
    features = None
    if not clf_ckpt and not cfg.classifier.module:  # a classifier given as code: no training
        if not cfg.classifier_recipe:
            raise ConfigError("give --classifier_ckpt or a classifier_recipe in the L2I recipe")
        clf = C.load_config(C.ClassifierRecipe, cfg.classifier_recipe, {
            **shared, **data_over, "output_folder": str(out / "classifier"),
            "trainer.device": cfg.trainer.device, "trainer.seed": cfg.trainer.seed})
        features = clf.features
        clf_ckpt = str(out / "classifier" / "classifier.ckpt")
        stages.append(Stage(CLASSIFIER, out / "classifier", Path(clf_ckpt),
                            lambda: _train_classifier(clf), clf, src, paths, data_id,
                            resumable=True))
    else:
        l2i_extra["classifier_ckpt"] = _given_file(clf_ckpt)
    if not nmf_path:
        nmf_stage = _nmf_stage(cfg, {**shared, **data_over}, out, features, src, paths, data_id)
        nmf_path = str(nmf_stage.artefact)
        stages.append(nmf_stage)
    else:
        l2i_extra["nmf"] = _given_file(nmf_path)
    l2i = replace(cfg, output_folder=str(out / "l2i"), classifier_ckpt=clf_ckpt, nmf=nmf_path,
                  data_folder=shared["data_folder"])
    ev = C.EvaluateRecipe(ckpt=str(out / "l2i" / "l2i.ckpt"), data_folder=cfg.data_folder,
                          output_folder=str(out / "eval"), data=cfg.data,
                          device=cfg.trainer.device, seed=cfg.trainer.seed)
    upstream = tuple(s.name for s in stages)
    stages += [
        Stage(L2I, out / "l2i", out / "l2i" / "l2i.ckpt", lambda: _train_interpreter(l2i), l2i,
              upstream, paths, l2i_extra, resumable=True),
        Stage(EVALUATE, out / "eval", out / "eval" / "metrics.json", lambda: _evaluate(ev), ev,
              (L2I,), paths, data_id),
        _report_stage(out, (*upstream, L2I, EVALUATE)),
    ]
    run_stages(stages)
    return _summary(out)


def _nmf_stage(cfg: C.L2IRecipe, over: dict[str, Any], out: Path, features: Any,
               src: tuple[str, ...], paths: tuple[str, ...], data_id: dict[str, str]) -> Stage:
    """The NMF stage of ``l2i run`` (``cfg.nmf_recipe`` with the shared data ``over``rides,
    and the classifier recipe's ``features`` when l2i trains the classifier)."""
    if not cfg.nmf_recipe:
        raise ConfigError("give --nmf or an nmf_recipe in the L2I recipe")
    over = {**over, "output_folder": str(out / "nmf"), "nmf.device": cfg.trainer.device}
    if features is not None:
        over.update({f"features.{k}": v for k, v in C.to_dict(features).items()})
    nmf = C.load_config(C.NMFRecipe, cfg.nmf_recipe, over)
    nmf_extra = {**data_id, **({"init": _given_file(nmf.init)} if nmf.init else {})}
    return Stage(NMF, out / "nmf", out / "nmf" / "nmf.pt", lambda: _train_nmf(nmf), nmf, src,
                 paths, nmf_extra)


def _run_sample_rate(cfg: C.L2IRecipe) -> int | None:
    """The sample rate ``l2i run`` decodes the shards at: the trained classifier's features,
    else the trained NMF's; None when both are given (L2I then decodes for itself)."""
    if not cfg.classifier_ckpt and not cfg.classifier.module and cfg.classifier_recipe:
        return C.load_config(C.ClassifierRecipe, cfg.classifier_recipe).features.sample_rate
    if not cfg.nmf and cfg.nmf_recipe:
        return C.load_config(C.NMFRecipe, cfg.nmf_recipe).features.sample_rate
    return None


def _summary(out: Path) -> str:
    """The report's path and the headline test metrics of the evaluation."""
    import json

    lines = [f"report: {out / 'report.html'}"]
    path = out / "eval" / "metrics.json"
    if path.exists():
        m = json.loads(path.read_text()).get("metrics", {})
        keys = ["fidelity_top1", "AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP"]
        shown = [f"{k}={m[k]:.3g}" for k in keys if isinstance(m.get(k), (int, float))]
        lines.append("test metrics: " + " ".join(shown))
        loc = m.get("localisation")
        if loc:
            auc = {k: v["auc"] for k, v in loc.items() if isinstance(v, dict)}
            lines.append("localisation ROC-AUC vs the true events: " + ", ".join(
                f"{k} {v:.3f}" for k, v in auc.items()))
    return "\n".join(lines)
