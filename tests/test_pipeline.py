"""Stage chaining: stages keyed on their config hash are reused, changed ones re-run."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from l2i import config as C
from l2i import pipeline


def _clf(**trainer) -> C.ClassifierRecipe:
    return C.ClassifierRecipe(trainer=C.TrainerConfig(**trainer))


def _toy_stages(tmp_path: Path, calls: list[str], cfgs: dict[str, C.ClassifierRecipe]):
    """Stages A -> B -> C and D (reads A only); each writes its artefact."""
    def make(name: str):
        def run():
            calls.append(name)
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / "out.txt").write_text(name)
        return run

    needs = {"A": (), "B": ("A",), "C": ("B",), "D": ("A",)}
    return [pipeline.Stage(n, tmp_path / n, tmp_path / n / "out.txt", make(n), cfgs[n], needs[n])
            for n in "ABCD"]


def test_reruns_reuse_unchanged_stages_and_rerun_changed_ones_downstream(tmp_path, capsys):
    calls: list[str] = []
    cfgs = {n: _clf(seed=i) for i, n in enumerate("ABCD")}
    pipeline.run_stages(_toy_stages(tmp_path, calls, cfgs))
    assert calls == ["A", "B", "C", "D"]
    rec = json.loads((tmp_path / "B" / "stage.json").read_text())
    assert rec["finished"] and rec["config"]["trainer.seed"] == 1 and "A" in rec["inputs"]
    capsys.readouterr()
    # an unchanged re-run reuses everything, and says so
    pipeline.run_stages(_toy_stages(tmp_path, calls, cfgs))
    assert calls == ["A", "B", "C", "D"]
    assert capsys.readouterr().out.count("config unchanged") == 4
    # keys that do not change results (device, progress, workers) keep the stages
    cfgs["A"] = replace(cfgs["A"], output_folder="elsewhere", trainer=replace(
        cfgs["A"].trainer, device="cpu", progress=False, num_workers=3))
    pipeline.run_stages(_toy_stages(tmp_path, calls, cfgs))
    assert calls == ["A", "B", "C", "D"]
    # a changed option re-runs its stage and every stage reading it, and names the key
    (tmp_path / "B" / "stale.txt").write_text("old output")
    cfgs["B"] = replace(cfgs["B"], trainer=replace(cfgs["B"].trainer, lr=0.5))
    capsys.readouterr()
    pipeline.run_stages(_toy_stages(tmp_path, calls, cfgs))
    assert calls[4:] == ["B", "C"]
    out = capsys.readouterr().out
    assert "trainer.lr: 0.001 -> 0.5" in out and "its inputs changed: B" in out
    assert not (tmp_path / "B" / "stale.txt").exists()  # outdated outputs are removed
    # a key only the record or only the config has (a field an l2i update added) is no change
    rec_path = tmp_path / "A" / "stage.json"
    rec = json.loads(rec_path.read_text())
    del rec["config"]["trainer.min_delta"]
    rec_path.write_text(json.dumps(rec))
    pipeline.run_stages(_toy_stages(tmp_path, calls, cfgs))
    assert calls[6:] == []
    # a change upstream propagates: A re-runs B, C and D
    cfgs["A"] = replace(cfgs["A"], trainer=replace(cfgs["A"].trainer, epochs=2))
    pipeline.run_stages(_toy_stages(tmp_path, calls, cfgs))
    assert calls[6:] == ["A", "B", "C", "D"]


def test_outputs_without_a_stage_record_are_not_trusted(tmp_path, capsys):
    calls: list[str] = []
    cfgs = {n: _clf() for n in "ABCD"}
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "out.txt").write_text("made by an older l2i")
    pipeline.run_stages(_toy_stages(tmp_path, calls, cfgs))
    assert calls == ["A", "B", "C", "D"] and "no stage record" in capsys.readouterr().out


def test_an_interrupted_stage_says_how_to_resume(tmp_path):
    def stop():
        raise KeyboardInterrupt

    stage = pipeline.Stage("train", tmp_path / "t", tmp_path / "t" / "x", stop, C.TrainerConfig())
    with pytest.raises(KeyboardInterrupt, match="run the same command again"):
        pipeline.run_stages([stage])
    assert not json.loads((tmp_path / "t" / "stage.json").read_text())["finished"]


def test_interrupted_training_resumes(tmp_path):
    trainer = C.TrainerConfig()
    assert not pipeline._resumable(trainer, tmp_path).resume
    # a stage run afresh (its folder cleared) must not fail on a --trainer.resume given to l2i run
    assert not pipeline._resumable(C.TrainerConfig(resume=True), tmp_path).resume
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert pipeline._resumable(trainer, tmp_path).resume


def test_demo_recipes_are_shipped():
    folder = pipeline.recipes_folder() / "demo"
    for name in ("classifier.yaml", "nmf.yaml", "l2i.yaml"):
        assert (folder / name).is_file(), name


def test_l2i_recipe_stage_paths_resolve_relative_to_recipe(tmp_path):
    (tmp_path / "sub").mkdir()
    recipe = tmp_path / "sub" / "l2i.yaml"
    recipe.write_text("classifier_recipe: clf.yaml\nnmf_recipe: /abs/nmf.yaml\n")
    cfg = C.load_config(C.L2IRecipe, recipe)
    assert cfg.classifier_recipe == str(tmp_path / "sub" / "clf.yaml")
    assert cfg.nmf_recipe == "/abs/nmf.yaml"


def test_summary_reports_metrics_and_localisation(tmp_path):
    import json

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"metrics": {
        "fidelity_top1": 96.7, "AI": 18.3, "Fid-In": 0.8,
        "localisation": {"l2i_mask": {"auc": 0.75}, "input_energy": {"auc": 0.9},
                         "n_clips_with_events": 60}}}))
    text = pipeline._summary(tmp_path)
    assert "fidelity_top1=96.7" in text and "Fid-In=0.8" in text
    assert "l2i_mask 0.750" in text and "input_energy 0.900" in text
    assert str(tmp_path / "report.html") in text


def test_run_pipeline_end_to_end_on_tiny_data(tiny_dataset, tmp_path, capsys):
    """`l2i run`: classifier, NMF, L2I, evaluate and report from one recipe; a re-run reuses."""
    feats = ("features:\n  sample_rate: 8000\n  n_fft: 256\n  n_mels: 32\n")
    data = ("data:\n  train_folds: [1, 2]\n  valid_folds: [3]\n  test_folds: [4]\n"
            "  duration_s: 1.0\n")
    (tmp_path / "clf.yaml").write_text(
        feats + data + "trainer:\n  epochs: 1\n  batch_size: 8\n  progress: false\n"
        "model:\n  width: 4\n  embed_dim: 16\n")
    (tmp_path / "nmf.yaml").write_text(feats + data + "nmf:\n  n_components: 8\n  n_iter: 5\n")
    (tmp_path / "l2i.yaml").write_text(
        data + "classifier_recipe: clf.yaml\nnmf_recipe: nmf.yaml\n"
        "trainer:\n  epochs: 1\n  batch_size: 8\n  progress: false\n"
        "psi:\n  hidden: 8\n  n_layers: 1\n  freq_reduce: flatten\ntheta:\n  hidden: 4\n")
    out = tmp_path / "run"
    cfg = C.load_config(C.L2IRecipe, tmp_path / "l2i.yaml", {
        "data_folder": str(tiny_dataset), "output_folder": str(out)})
    summary = pipeline.run_pipeline(cfg)
    for path in ("classifier/classifier.ckpt", "nmf/nmf.pt", "l2i/l2i.ckpt",
                 "eval/metrics.json", "report.html"):
        assert (out / path).is_file(), path
    assert "fidelity_top1=" in summary and "localisation ROC-AUC" in summary
    # the audio is decoded once, into out/shards, which every training stage read
    decoded = [p for p in out.rglob("*.npy") if p.name.split("-")[0] in ("train", "valid",
                                                                          "test")]
    assert decoded and {p.parent for p in decoded} == {out / "shards"}
    for stage in ("classifier", "nmf", "l2i"):
        recipe = yaml.safe_load((out / stage / "config.yaml").read_text())
        assert recipe["data_folder"] == str(out / "shards"), stage
    capsys.readouterr()
    pipeline.run_pipeline(cfg)  # everything finished: reused, nothing retrained
    assert capsys.readouterr().out.count("config unchanged") == 6
    # one changed L2I option: classifier and NMF reused, L2I, evaluation and report re-run
    old_eval = json.loads((out / "eval" / "metrics.json").read_text())
    pipeline.run_pipeline(replace(cfg, trainer=replace(cfg.trainer, epochs=2)))
    text = capsys.readouterr().out
    assert text.count("config unchanged") == 3 and "trainer.epochs: 1 -> 2" in text
    assert json.loads((out / "l2i" / "metrics.json").read_text())["epochs"] == 2
    assert json.loads((out / "eval" / "metrics.json").read_text()) != old_eval


def test_demo_stages_follow_the_demo_options(tmp_path, monkeypatch):
    """The issue's case: `l2i demo --n_per_class 30 --seed 5` on a finished folder must re-run
    every stage; `--device cpu` changes no result and keeps them all."""
    captured: list[list[pipeline.Stage]] = []
    monkeypatch.setattr(pipeline, "run_stages", lambda stages: captured.append(stages) or {})
    monkeypatch.setattr(pipeline, "_summary", lambda out: "")
    for over in ({}, {"device": "cpu"}, {"n_per_class": 30, "seed": 5}):
        pipeline.demo(C.DemoRecipe(output_folder=str(tmp_path), **over))

    def hashes(stages: list[pipeline.Stage]) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in stages:
            out[s.name] = pipeline.stage_hash(s, out)
        return out

    by_name = {s.name: s for s in captured[0]}  # one decoded copy, read by every training stage
    assert by_name[pipeline.PREPARE].config.data_folder == str(tmp_path / "data")
    for name in (pipeline.CLASSIFIER, pipeline.NMF, pipeline.L2I):
        assert by_name[name].config.data_folder == str(tmp_path / "shards"), name
        assert pipeline.PREPARE in by_name[name].needs
    first, device, other = map(hashes, captured)
    assert first == device
    assert all(first[name] != other[name] for name in first)
    assert C.load_config(C.DemoRecipe, tmp_path / "config.yaml").n_per_class == 30
