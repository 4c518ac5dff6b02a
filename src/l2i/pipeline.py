"""Whole-path commands: ``l2i demo`` (synthetic data) and ``l2i run`` (a real dataset).

Each stage writes into its own sub-folder of the output folder and is skipped when its final
artefact already exists, so a re-run reuses finished stages; an interrupted training stage
resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from l2i import config as C
from l2i.errors import ConfigError


@dataclass
class Stage:
    name: str
    artefact: Path  # the stage is finished when this file exists
    run: Callable[[], Any]


def recipes_folder() -> Path:
    """The ``recipes/`` folder shipped with l2i (repository checkout or installed package)."""
    here = Path(__file__).resolve()
    for cand in (here.parent / "recipes", here.parents[2] / "recipes"):
        if cand.is_dir():
            return cand
    raise ConfigError("cannot find l2i's recipes/ folder: run l2i from a checkout of the "
                      "repository (pip install -e .)")


def run_stages(stages: list[Stage]) -> None:
    """Run each unfinished stage in order, printing progress and timings."""
    n = len(stages)
    start = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        if stage.artefact.exists():
            print(f"[{i}/{n}] {stage.name}: done already ({stage.artefact}), reused", flush=True)
            continue
        print(f"[{i}/{n}] {stage.name} ...", flush=True)
        t0 = time.perf_counter()
        stage.run()
        print(f"[{i}/{n}] {stage.name}: finished in {time.perf_counter() - t0:.1f} s "
              f"(total {time.perf_counter() - start:.1f} s)", flush=True)


def _resumable(trainer: C.TrainerConfig, out: Path) -> C.TrainerConfig:
    """Resume an interrupted training stage from its last checkpoint."""
    has_last = (out / "checkpoints" / "last.ckpt").exists()
    return replace(trainer, resume=trainer.resume or has_last)


def _train_classifier(cfg: C.ClassifierRecipe) -> None:
    from l2i.training.classifier import train_classifier
    train_classifier(replace(cfg, trainer=_resumable(cfg.trainer, Path(cfg.output_folder))))


def _train_nmf(cfg: C.NMFRecipe) -> None:
    from l2i.training.nmf import train_nmf
    train_nmf(cfg)


def _train_interpreter(cfg: C.L2IRecipe) -> None:
    from l2i.training.interpreter import train_interpreter
    train_interpreter(replace(cfg, trainer=_resumable(cfg.trainer, Path(cfg.output_folder))))


def _evaluate(cfg: C.EvaluateRecipe) -> None:
    from l2i.evaluation import evaluate
    evaluate(cfg)


def _report(cfg: C.ReportRecipe) -> None:
    from l2i.report import write_report
    write_report(cfg)


def _device_overrides(device: str) -> dict[str, Any]:
    return {"trainer.device": device}


def demo(cfg: C.DemoRecipe) -> str:
    """``l2i demo``: synthesise a dataset, train classifier, NMF and L2I, evaluate, report."""
    from l2i.synthetic import synthesize_dataset

    out = Path(cfg.output_folder)
    out.mkdir(parents=True, exist_ok=True)
    C.save_config(cfg, out / "config.yaml")
    rec = recipes_folder() / "demo"
    data = out / "data"
    common = {"data_folder": str(data)}
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
    ev = C.load_config(C.EvaluateRecipe, None, {
        "ckpt": str(out / "l2i" / "l2i.ckpt"), **common, "output_folder": str(out / "eval"),
        "data.train_folds": l2i.data.train_folds, "data.valid_folds": l2i.data.valid_folds,
        "data.test_folds": l2i.data.test_folds, "device": cfg.device, "seed": cfg.seed})
    report = C.ReportRecipe(run_folder=str(out), output=str(out / "report.html"))
    synth = C.SynthRecipe(output_folder=str(data), n_per_class=cfg.n_per_class, seed=cfg.seed,
                          sample_rate=clf.features.sample_rate)
    run_stages([
        Stage("synthesise dataset", data / "meta" / "esc50.csv",
              lambda: print(synthesize_dataset(synth))),
        Stage("train classifier", out / "classifier" / "classifier.ckpt",
              lambda: _train_classifier(clf)),
        Stage("learn NMF dictionary", out / "nmf" / "nmf.pt", lambda: _train_nmf(nmf)),
        Stage("train L2I interpreter", out / "l2i" / "l2i.ckpt", lambda: _train_interpreter(l2i)),
        Stage("evaluate on the test fold", out / "eval" / "metrics.json", lambda: _evaluate(ev)),
        Stage("write report", out / "report.html", lambda: _report(report)),
    ])
    return _summary(out)


def run_pipeline(cfg: C.L2IRecipe) -> str:
    """``l2i run RECIPE --data_folder D``: every stage on a real dataset.

    The L2I recipe names the classifier and NMF recipes (``classifier_recipe``, ``nmf_recipe``);
    ``data_folder``, the ``data`` section and the device are shared by all stages. A stage whose
    checkpoint is given (``--classifier_ckpt``, ``--nmf``) is not trained, nor a classifier given
    as code (``classifier.module``; the NMF recipe's ``features`` are then l2i's STFT).
    """
    if not cfg.data_folder:
        raise ConfigError("l2i run needs --data_folder (an ESC-50 folder, a CSV manifest's "
                          "folder or a folder per class)")
    out = Path(cfg.output_folder)
    out.mkdir(parents=True, exist_ok=True)
    shared = {"data_folder": cfg.data_folder}
    data_over = {f"data.{k}": v for k, v in C.to_dict(cfg.data).items()}
    stages: list[Stage] = []
    clf_ckpt, nmf_path = cfg.classifier_ckpt, cfg.nmf
    features = None
    if not clf_ckpt and not cfg.classifier.module:  # a classifier given as code: no training
        if not cfg.classifier_recipe:
            raise ConfigError("give --classifier_ckpt or a classifier_recipe in the L2I recipe")
        clf = C.load_config(C.ClassifierRecipe, cfg.classifier_recipe, {
            **shared, **data_over, "output_folder": str(out / "classifier"),
            "trainer.device": cfg.trainer.device, "trainer.seed": cfg.trainer.seed})
        features = clf.features
        clf_ckpt = str(out / "classifier" / "classifier.ckpt")
        stages.append(Stage("train classifier", Path(clf_ckpt), lambda: _train_classifier(clf)))
    if not nmf_path:
        if not cfg.nmf_recipe:
            raise ConfigError("give --nmf or an nmf_recipe in the L2I recipe")
        over = {**shared, **data_over, "output_folder": str(out / "nmf"),
                "nmf.device": cfg.trainer.device}
        if features is not None:
            over.update({f"features.{k}": v for k, v in C.to_dict(features).items()})
        nmf = C.load_config(C.NMFRecipe, cfg.nmf_recipe, over)
        nmf_path = str(out / "nmf" / "nmf.pt")
        stages.append(Stage("learn NMF dictionary", Path(nmf_path), lambda: _train_nmf(nmf)))
    l2i = replace(cfg, output_folder=str(out / "l2i"), classifier_ckpt=clf_ckpt, nmf=nmf_path)
    ev = C.EvaluateRecipe(ckpt=str(out / "l2i" / "l2i.ckpt"), data_folder=cfg.data_folder,
                          output_folder=str(out / "eval"), data=cfg.data,
                          device=cfg.trainer.device, seed=cfg.trainer.seed)
    report = C.ReportRecipe(run_folder=str(out), output=str(out / "report.html"))
    stages += [
        Stage("train L2I interpreter", out / "l2i" / "l2i.ckpt", lambda: _train_interpreter(l2i)),
        Stage("evaluate on the test folds", out / "eval" / "metrics.json", lambda: _evaluate(ev)),
        Stage("write report", out / "report.html", lambda: _report(report)),
    ]
    run_stages(stages)
    return _summary(out)


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
