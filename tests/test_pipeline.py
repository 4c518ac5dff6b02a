"""Stage chaining: finished stages are reused, unfinished ones run in order."""

from pathlib import Path

from l2i import config as C
from l2i import pipeline


def test_finished_stages_are_skipped_and_others_run_in_order(tmp_path, capsys):
    done = tmp_path / "a.txt"
    done.write_text("x")
    calls = []

    def make(name: str, path: Path):
        def run():
            calls.append(name)
            path.write_text(name)
        return run

    b, c = tmp_path / "b.txt", tmp_path / "c.txt"
    stages = [pipeline.Stage("A", done, make("A", done)), pipeline.Stage("B", b, make("B", b)),
              pipeline.Stage("C", c, make("C", c))]
    pipeline.run_stages(stages)
    assert calls == ["B", "C"]
    out = capsys.readouterr().out
    assert "[1/3] A: done already" in out and "[3/3] C: finished" in out
    pipeline.run_stages(stages)  # a re-run reuses everything
    assert calls == ["B", "C"]


def test_interrupted_training_resumes(tmp_path):
    trainer = C.TrainerConfig()
    assert not pipeline._resumable(trainer, tmp_path).resume
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
