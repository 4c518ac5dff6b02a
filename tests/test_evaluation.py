"""``l2i evaluate``: contamination from the test fold, batched metrics, and the output files."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import random_interpreter

from l2i.config import (
    DataConfig,
    EvaluateRecipe,
    FeaturesConfig,
)
from l2i.errors import ConfigError, DataError, L2IError
from l2i.evaluation import aggregate, contaminate, draw_partners, pick_examples, score_clips

K = 6


def _interpreter(features: FeaturesConfig, class_names: list[str], seed: int = 0):
    return random_interpreter(features, class_names, K, seed)


@pytest.fixture(scope="module")
def class_names(tiny_dataset) -> list[str]:
    from l2i.data import load_dataset

    dc = DataConfig(train_folds=[1, 2], valid_folds=[3], test_folds=[4], duration_s=1.0)
    return list(load_dataset(tiny_dataset, dc).class_names)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_features, class_names):
    from l2i.interpreter import save_interpreter

    path = tmp_path_factory.mktemp("l2i") / "l2i.ckpt"
    save_interpreter(path, _interpreter(tiny_features, class_names))
    return path


def _recipe(ckpt, data, out, **kw) -> EvaluateRecipe:
    dc = DataConfig(train_folds=[1, 2], valid_folds=[3], test_folds=[4], duration_s=1.0)
    kw.setdefault("batch_size", 8)
    return EvaluateRecipe(ckpt=str(ckpt), data_folder=str(data), output_folder=str(out), data=dc,
                          device="cpu", **kw)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, tiny_ckpt, tiny_dataset):
    from l2i.evaluation import evaluate

    out = tmp_path_factory.mktemp("eval_clean")
    summary = evaluate(_recipe(tiny_ckpt, tiny_dataset, out, n_examples=2, batch_size=3))
    return out, summary


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- contamination
def _signals(n: int = 4, s: int = 4000) -> np.ndarray:
    t = np.arange(s) / 8000.0
    return np.stack([0.5 * np.sin(2 * np.pi * (200 + 150 * i) * t) for i in range(n)]
                    ).astype(np.float32)  # (N, S)


def test_no_contamination_returns_the_clips():
    x = _signals()
    out, partner = contaminate(x, np.arange(4), "none", seed=0)
    assert partner is None and np.array_equal(out, x)


def test_white_noise_is_seeded_at_0db_and_peak_normalised():
    x = _signals()
    a, _ = contaminate(x, np.arange(4), "white_noise", seed=0)
    b, _ = contaminate(x, np.arange(4), "white_noise", seed=0)
    c, _ = contaminate(x, np.arange(4), "white_noise", seed=1)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert a.shape == x.shape and a.dtype == np.float32
    assert np.abs(a).max(axis=1) == pytest.approx(np.ones(4), abs=1e-6)
    # 0 dB: the part of the mix along the clean clip and the rest have equal energy
    coef = (a * x).sum(1, keepdims=True) / (x * x).sum(1, keepdims=True)  # (N, 1)
    sig, rest = coef * x, a - coef * x
    ratio = (sig ** 2).sum(1) / (rest ** 2).sum(1)
    assert np.allclose(ratio, 1.0, atol=0.1)


def test_mixtures_hand_computed_with_a_clip_of_another_class():
    x = _signals(3)
    labels = np.array([0, 0, 1])
    out, partner = contaminate(x, labels, "mixtures", seed=3)
    assert partner.tolist()[:2] == [2, 2] and partner[2] in (0, 1)
    assert (labels[partner] != labels).all()
    for i, j in enumerate(partner):
        mix = 0.8 * x[i] / np.linalg.norm(x[i]) + 0.2 * x[j] / np.linalg.norm(x[j])
        assert np.allclose(out[i], mix / np.abs(mix).max(), atol=1e-5)
    again, p2 = contaminate(x, labels, "mixtures", seed=3)
    assert np.array_equal(out, again) and np.array_equal(partner, p2)


def test_partners_are_random_but_seeded_and_never_same_class():
    labels = np.repeat(np.arange(5), 6)
    p1 = draw_partners(labels, np.random.default_rng(0))
    p2 = draw_partners(labels, np.random.default_rng(0))
    p3 = draw_partners(labels, np.random.default_rng(1))
    assert np.array_equal(p1, p2) and not np.array_equal(p1, p3)
    assert (labels[p1] != labels).all() and len(set(p1.tolist())) > 10


def test_contamination_errors():
    x = _signals(2)
    with pytest.raises(DataError, match="two classes"):
        contaminate(x, np.array([1, 1]), "mixtures", seed=0)
    with pytest.raises(ConfigError, match="contamination"):
        contaminate(x, np.array([0, 1]), "pink", seed=0)
    with pytest.raises(ConfigError, match="noise_folder"):
        contaminate(x, np.array([0, 1]), "noise_folder", seed=0)


def test_noise_folder_contamination_is_seeded(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(tmp_path / f"n{i}.wav", (0.3 * rng.standard_normal(6000)).astype(np.float32),
                 8000)
    x = _signals()
    a, _ = contaminate(x, np.arange(4), "noise_folder", 0, str(tmp_path), 8000)
    b, _ = contaminate(x, np.arange(4), "noise_folder", 0, str(tmp_path), 8000)
    w, _ = contaminate(x, np.arange(4), "white_noise", 0)
    assert np.array_equal(a, b) and not np.allclose(a, x) and not np.allclose(a, w)
    assert np.abs(a).max() <= 1.0


def test_pick_examples_cycles_through_classes():
    labels = np.array([2, 2, 0, 1, 0, 1])
    assert pick_examples(labels, 4) == [2, 3, 0, 4]
    assert pick_examples(labels, 10) == [2, 3, 0, 4, 5, 1]
    assert pick_examples(labels, 0) == []


# --------------------------------------------------------------------------- batched core
def test_score_clips_extremes_all_and_no_components(tiny_features, class_names):
    from l2i.explain import Explainer

    interp = _interpreter(tiny_features, class_names)
    x = _signals(4, 4000)
    x[3] *= 0.1
    every = score_clips(Explainer(interp, relevance_th=-2.0), x, batch_size=3, progress=False)
    c = every.columns
    assert c["p"].shape == (4,) and (c["n_selected"] == K).all()
    # every component selected: M = W H / (W H + eps) ~ 1, so the masked-in input is the input
    assert np.allclose(c["o"], c["p"], atol=1e-4)
    assert (c["Fid-In"] == 1).all() and c["AD"].max() < 0.1
    assert np.allclose(c["FF"], c["p"] - c["q"])
    assert np.allclose(c["AI"], 100.0 * (c["o"] > c["p"]))
    agg = aggregate(every, np.zeros(4, dtype=np.int64))
    assert agg["accuracy"] == pytest.approx(100 * np.mean(c["prediction"] == 0))
    assert agg["FF"] == pytest.approx(float(np.mean(c["p"] - c["q"])))
    assert agg["fidelity_top5"] == pytest.approx(100 * np.mean(c["fid_top5"]))
    none = score_clips(Explainer(interp, relevance_th=1.0), x, batch_size=4, progress=False)
    n = none.columns
    assert (n["n_selected"] == 0).all() and np.isnan(n["SPS"]).all()
    # the empty mask: masked-out input is the input, so q == p
    assert np.allclose(n["q"], n["p"], atol=1e-5) and np.allclose(n["FF"], 0, atol=1e-5)
    agg0 = aggregate(none, np.zeros(4, dtype=np.int64))
    assert agg0["SPS"] is None and agg0["COMP"] is None
    assert agg0["component_removal"]["mean_removed"] == 0


def test_score_clips_removal_matches_metrics_component_removal(tiny_features, class_names):
    from l2i import features as feats
    from l2i.explain import Explainer
    from l2i.metrics import component_removal

    interp = _interpreter(tiny_features, class_names, seed=1)
    ex = Explainer(interp, top_k=2)
    x = _signals(4, 4000)
    res = score_clips(ex, x, batch_size=4, seed=7, progress=False).columns
    mag = feats.magnitude(feats.stft(torch.from_numpy(x), tiny_features))
    b = ex.explain_batch(mag)
    ref = component_removal(lambda m: interp.classify(m)[0].softmax(1), interp.W, b.H, mag,
                            b.selected, generator=torch.Generator().manual_seed(7))
    assert np.allclose(res["p_removed_relevant"], ref["p_relevant"].numpy(), atol=1e-5)
    assert np.allclose(res["p_removed_random"], ref["p_random"].numpy(), atol=1e-5)
    assert np.allclose(res["drop_relevant"], ref["drop_relevant"].numpy(), atol=1e-5)
    assert (res["n_selected"] <= 2).all()


# --------------------------------------------------------------------------- l2i evaluate
def test_evaluate_writes_metrics_in_valid_ranges(clean_run, tiny_features):
    out, summary = clean_run
    assert "metrics.json" in summary
    data = json.loads((out / "metrics.json").read_text())
    assert data["kind"] == "l2i-evaluate"
    m, counts, settings = data["metrics"], data["counts"], data["settings"]
    assert counts["n_clips"] == 8 and sum(counts["per_class"].values()) == 8
    assert settings["test_folds"] == [4] and settings["contamination"] == "none"
    assert settings["relevance_th"] == pytest.approx(0.2)
    for key in ("AI", "AD", "AG", "fidelity_top1", "fidelity_top3", "fidelity_top5",
                "accuracy"):
        assert 0.0 <= m[key] <= 100.0, key
    assert -1.0 <= m["FF"] <= 1.0 and 0.0 <= m["Fid-In"] <= 1.0
    assert m["fidelity_top1"] <= m["fidelity_top3"] <= m["fidelity_top5"]
    n_bins = counts["n_frames"] * tiny_features.n_freq
    if m["SPS"] is not None:
        assert 0.0 <= m["SPS"] < 1.0 and 0.0 <= m["COMP"] <= math.log(n_bins) + 1e-9
    loc = m["localisation"]  # the synthetic dataset has meta/events.csv
    assert loc["n_clips_with_events"] == 8
    for method in ("l2i_mask", "l2i_energy", "input_energy"):
        assert 0.0 <= loc[method]["auc"] <= 1.0 and 0.0 <= loc[method]["iou_topn"] <= 1.0
    assert m["loc_auc"] == loc["l2i_mask"]["auc"]
    # strict JSON: no NaN literals
    assert "NaN" not in (out / "metrics.json").read_text()


def test_evaluate_per_clip_csv_markdown_examples_config(clean_run, class_names):
    out, _ = clean_run
    rows = _rows(out / "per_clip.csv")
    assert len(rows) == 8
    assert all(r["id"].split("/")[-1].startswith("4-") for r in rows)  # test fold only
    for r in rows:
        p, o, q = float(r["p"]), float(r["o"]), float(r["q"])
        assert 0 <= p <= 1 and 0 <= o <= 1 and 0 <= q <= 1
        if abs(o - p) > 1e-6:
            assert float(r["AI"]) == (100.0 if o > p else 0.0)
        assert r["prediction_name"] == class_names[int(r["prediction"])]
        assert r["label_name"] == class_names[int(r["label"])]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["AI"] == pytest.approx(np.mean([float(r["AI"]) for r in rows]), abs=1e-4)
    md = (out / "metrics.md").read_text()
    head = "| Method | AI | AD | AG | FF | Fid-In | SPS | COMP | Fid@1 % | loc ROC-AUC | ms/clip |"
    assert head in md
    # one row per explainer (L2I and the default trivial baselines), then the reference rows
    for row in ("| l2i |", "| energy |", "| ones |", "| random |"):
        assert row in md
    assert "6.75 | 25.93" in md and "Localisation" in md
    ex = out / "examples"
    names = sorted(p.name[:-5] for p in ex.glob("*.json"))
    assert len(names) == 2
    for name in names:
        for suffix in (".input.wav", ".explanation.wav", ".png"):
            assert (ex / f"{name}{suffix}").is_file()
        info = json.loads((ex / f"{name}.json").read_text())
        assert info["label_name"] in class_names and "theta_probs" in info
        assert 0 <= info["p"] <= 1 and isinstance(info["selected_components"], list)
        # each selected component alone, for the report's component players
        assert [c["k"] for c in info["components"]] == info["selected_components"]
        assert all((ex / c["wav"]).is_file() for c in info["components"])
        wav, sr = sf.read(ex / f"{name}.input.wav")
        assert sr == 8000 and wav.shape == (8000,)
    assert (out / "config.yaml").is_file()


def test_evaluate_mixtures_uses_test_fold_only_and_is_seeded(tmp_path, tiny_ckpt, tiny_dataset,
                                                             clean_run):
    from l2i.evaluation import evaluate

    clean_rows = _rows(clean_run[0] / "per_clip.csv")
    runs = []
    for name in ("a", "b"):
        evaluate(_recipe(tiny_ckpt, tiny_dataset, tmp_path / name, contamination="mixtures",
                         n_examples=0, seed=5))
        runs.append(_rows(tmp_path / name / "per_clip.csv"))
    assert runs[0] == runs[1]  # seeded
    ids = {r["id"] for r in clean_rows}
    label = {r["id"]: r["label"] for r in clean_rows}
    for r in runs[0]:
        assert r["mixed_with"] in ids and r["mixed_with"] != r["id"]
        assert label[r["mixed_with"]] != r["label"]
    assert [r["p"] for r in runs[0]] != [r["p"] for r in clean_rows]  # different inputs
    assert not (tmp_path / "a" / "examples").exists()


def test_evaluate_test_folds_shortcut_overrides_data_section(tmp_path, tiny_ckpt, tiny_dataset):
    from l2i.evaluation import evaluate

    evaluate(_recipe(tiny_ckpt, tiny_dataset, tmp_path, test_folds=[2], n_examples=1,
                     contamination="white_noise"))
    rows = _rows(tmp_path / "per_clip.csv")
    assert len(rows) == 8 and all(r["id"].split("/")[-1].startswith("2-") for r in rows)
    # a contaminated example keeps its clean clip beside the noisy input
    (clean,) = (tmp_path / "examples").glob("*.clean.wav")
    noisy = clean.with_name(clean.name.replace(".clean.", ".input."))
    assert not np.allclose(sf.read(clean)[0], sf.read(noisy)[0], atol=1e-3)
    assert json.loads((tmp_path / "metrics.json").read_text())["settings"]["test_folds"] == [2]


def test_evaluate_errors(tmp_path, tiny_ckpt, tiny_dataset, tiny_features, class_names):
    from l2i.evaluation import evaluate
    from l2i.interpreter import save_interpreter

    with pytest.raises(ConfigError, match="not found"):
        evaluate(_recipe(tmp_path / "missing.ckpt", tiny_dataset, tmp_path / "o"))
    with pytest.raises(ConfigError, match="noise_folder"):
        evaluate(_recipe(tiny_ckpt, tiny_dataset, tmp_path / "o", contamination="noise_folder"))
    with pytest.raises(ConfigError, match="contamination"):
        evaluate(_recipe(tiny_ckpt, tiny_dataset, tmp_path / "o", contamination="babble"))
    other = _interpreter(tiny_features, ["cat"] + class_names[1:])
    save_interpreter(tmp_path / "other.ckpt", other)
    with pytest.raises(DataError, match=r"label 'up_chirp' is not a class of the model"):
        evaluate(_recipe(tmp_path / "other.ckpt", tiny_dataset, tmp_path / "o"))
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_evaluate_maps_labels_by_class_name(tmp_path, tiny_dataset, tiny_features, class_names):
    from l2i.evaluation import evaluate
    from l2i.interpreter import save_interpreter

    shuffled = list(reversed(class_names))
    save_interpreter(tmp_path / "rev.ckpt", _interpreter(tiny_features, shuffled))
    cfg = replace(_recipe(tmp_path / "rev.ckpt", tiny_dataset, tmp_path / "o"), n_examples=0)
    evaluate(cfg)
    for r in _rows(tmp_path / "o" / "per_clip.csv"):
        assert r["label_name"] == shuffled[int(r["label"])]
        assert r["label_name"] == class_names[int(r["id"].split("-")[-1].split(".")[0])]


def test_evaluate_takes_data_settings_from_the_checkpoint(tmp_path, tiny_dataset, tiny_features,
                                                          class_names):
    from dataclasses import asdict

    from l2i.evaluation import evaluate
    from l2i.interpreter import save_interpreter

    dc = DataConfig(train_folds=[1, 2], valid_folds=[3], test_folds=[4], duration_s=0.5)
    save_interpreter(tmp_path / "m.ckpt", _interpreter(tiny_features, class_names),
                     recipe={"data_folder": str(tiny_dataset), "data": asdict(dc)})
    # only the checkpoint: data folder, folds and clip length come from its training recipe
    evaluate(EvaluateRecipe(ckpt=str(tmp_path / "m.ckpt"), output_folder=str(tmp_path / "a"),
                            n_examples=1, device="cpu"))
    rows = _rows(tmp_path / "a" / "per_clip.csv")
    assert len(rows) == 8 and all(r["id"].split("/")[-1].startswith("4-") for r in rows)
    wav, _ = sf.read(next((tmp_path / "a" / "examples").glob("*.input.wav")))
    assert wav.shape == (4000,)  # 0.5 s at 8 kHz, as in training
    # --test_folds 3 works although fold 3 is the recipe's valid fold
    evaluate(EvaluateRecipe(ckpt=str(tmp_path / "m.ckpt"), output_folder=str(tmp_path / "b"),
                            test_folds=[3], n_examples=0, device="cpu"))
    rows = _rows(tmp_path / "b" / "per_clip.csv")
    assert all(r["id"].split("/")[-1].startswith("3-") for r in rows)


def test_evaluate_needs_fixed_length_clips(tmp_path, tiny_ckpt, tiny_dataset):
    from l2i.evaluation import evaluate

    cfg = _recipe(tiny_ckpt, tiny_dataset, tmp_path)
    cfg = replace(cfg, data=replace(cfg.data, duration_s=None))
    with pytest.raises(ConfigError, match="duration_s"):
        evaluate(cfg)


def test_example_names_from_clip_ids():
    from l2i.evaluation import _safe_name

    assert _safe_name("4-100003-A-0.wav") == "4-100003-A-0"
    assert _safe_name("dog/01.wav") == "dog_01" != _safe_name("cat/01.wav")
    assert _safe_name("../a b.flac") == "a_b" and _safe_name("...") == "clip"


def test_evaluate_from_another_directory_finds_the_training_data(tmp_path, monkeypatch,
                                                                  tiny_dataset, tiny_features,
                                                                  class_names):
    """Train tiny with a RELATIVE --data_folder, then evaluate from elsewhere without one."""
    import shutil

    from l2i.config import ClassifierModelConfig, L2IRecipe, TrainerConfig
    from l2i.evaluation import evaluate
    from l2i.models import build_classifier, save_classifier
    from l2i.nmf import save_dictionary
    from l2i.training.interpreter import train_interpreter

    work = tmp_path / "work"
    shutil.copytree(tiny_dataset, work / "data")
    mc = ClassifierModelConfig(arch="conv2d", width=2, embed_dim=8)
    torch.manual_seed(0)
    save_classifier(work / "clf.ckpt", build_classifier(mc, tiny_features, 8), mc,
                    tiny_features, class_names)
    save_dictionary(work / "nmf.pt", torch.rand(tiny_features.n_freq, K), tiny_features)
    monkeypatch.chdir(work)
    dc = DataConfig(train_folds=[1, 2], valid_folds=[3], test_folds=[4], duration_s=1.0)
    train_interpreter(L2IRecipe(
        data_folder="data", classifier_ckpt="clf.ckpt", nmf="nmf.pt", output_folder="run",
        data=dc, trainer=TrainerConfig(epochs=1, batch_size=8, device="cpu", progress=False)))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    ckpt = work / "run" / "l2i.ckpt"
    evaluate(EvaluateRecipe(ckpt=str(ckpt), output_folder="ev", n_examples=0, device="cpu"))
    report = json.loads((tmp_path / "elsewhere" / "ev" / "metrics.json").read_text())
    assert report["settings"]["data_folder"] == str((work / "data").resolve())
    assert report["counts"]["n_clips"] == 8
    (work / "data").rename(work / "moved")
    with pytest.raises(DataError, match=r"data folder \S+/work/data not found \(tried .*, the "
                                        r"training data folder stored in .*l2i\.ckpt\): pass "
                                        r"--data_folder"):
        evaluate(EvaluateRecipe(ckpt=str(ckpt), output_folder="ev2", device="cpu"))


# --------------------------------------------------------------------------- comparison
def test_evaluate_writes_one_row_per_explainer(clean_run):
    out, summary = clean_run
    data = json.loads((out / "metrics.json").read_text())
    ex = data["explainers"]
    assert list(ex) == ["l2i", "energy", "ones", "random"] == data["settings"]["explainers"]
    for name, m in ex.items():
        for key in ("AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP", "ms_per_clip", "loc_auc"):
            assert key in m, (name, key)
        assert m["ms_per_clip"] > 0
    # only L2I has components: fidelity and the removal test
    assert "component_removal" in ex["l2i"] and "component_removal" not in ex["ones"]
    assert "fidelity_top1" in ex["l2i"] and "fidelity_top1" not in ex["energy"]
    # the all-ones mask re-classifies the input itself
    assert ex["ones"]["AD"] == pytest.approx(0.0, abs=1e-6) and ex["ones"]["Fid-In"] == 1.0
    assert ex["ones"]["AI"] == 0.0
    assert ex["ones"]["loc_auc"] == pytest.approx(0.5)  # a constant map cannot localise
    # the legacy top-level block is the first explainer's, with the old localisation names
    legacy = data["metrics"]
    assert legacy["AI"] == ex["l2i"]["AI"] and legacy["loc_auc"] == ex["l2i"]["loc_auc"]
    assert set(legacy["localisation"]) >= {"l2i_mask", "l2i_energy", "input_energy"}
    rows = _rows(out / "per_clip.csv")
    # the random baseline matches the L2I mask's mean per clip
    for r in rows:
        assert float(r["random:mask_mean"]) == pytest.approx(float(r["mask_mean"]), abs=0.03)
    name = next((out / "examples").glob("*.json")).name[:-5]
    info = json.loads((out / "examples" / f"{name}.json").read_text())
    assert set(info["explainer_wavs"]) == {"l2i", "energy", "ones", "random"}
    for wav in info["explainer_wavs"].values():
        assert (out / "examples" / wav).is_file()
    assert (out / "examples" / info["masks_figure"]).is_file()
    assert "random:" in summary


def test_evaluate_compares_checkpoints_and_gradient_baselines(tmp_path, tiny_ckpt, tiny_dataset,
                                                              tiny_features, class_names):
    from l2i.evaluation import evaluate
    from l2i.interpreter import save_interpreter

    twin = tmp_path / "twin.ckpt"  # same seed: the same classifier
    save_interpreter(twin, _interpreter(tiny_features, class_names))
    evaluate(_recipe(tiny_ckpt, tiny_dataset, tmp_path / "o", extra_ckpts=[str(twin)],
                     baselines=["saliency", "gradcam", "ones"], metric_compat="speechbrain",
                     n_examples=1, contamination="mixtures"))
    data = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert list(data["explainers"]) == ["l2i", "l2i-2", "saliency", "gradcam", "ones"]
    # the twin explains identically
    assert data["explainers"]["l2i"]["AI"] == data["explainers"]["l2i-2"]["AI"]
    for m in data["explainers"].values():
        assert 0.0 <= m["AD_sb"] <= 100 * (1 - 1 / math.e) + 1e-9
    md = (tmp_path / "o" / "metrics.md").read_text()
    assert "AD (SB)" in md and "| saliency |" in md and "| gradcam |" in md
    other = tmp_path / "other.ckpt"
    save_interpreter(other, _interpreter(tiny_features, class_names, seed=3))
    with pytest.raises(L2IError, match="same --classifier_ckpt"):
        evaluate(_recipe(tiny_ckpt, tiny_dataset, tmp_path / "x", extra_ckpts=[str(other)]))
    with pytest.raises(ConfigError, match="unknown baseline 'salency'.*saliency"):
        evaluate(_recipe(tiny_ckpt, tiny_dataset, tmp_path / "x", baselines=["salency"]))
    with pytest.raises(ConfigError, match="metric_compat"):
        evaluate(_recipe(tiny_ckpt, tiny_dataset, tmp_path / "x", metric_compat="quantus"))
    assert not (tmp_path / "x" / "metrics.json").exists()
