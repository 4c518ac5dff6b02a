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
    capsys.readouterr()
    pipeline.run_pipeline(cfg)  # everything finished: reused, nothing retrained
    assert capsys.readouterr().out.count("done already") == 5
