"""A classifier given as code (classifier.module): hooks, any map layout, multi-label, records.

The models live in tests/custom_models.py, each with another interface: a 2-D CNN over a torch
log-mel front end, a 1-D conv net on the raw waveform (at 16 kHz, so l2i resamples), a forward
returning (embedding, logits), a tiny transformer returning tokens, a multi-label tagger.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from l2i import cli
from l2i import features as feats
from l2i.config import ClassifierSpec
from l2i.errors import ConfigError, L2IError
from l2i.interpreter import build_interpreter, class_probs, load_interpreter
from l2i.models.hooked import build_hooked, state_sha256
from l2i.models.psi import canonical_map, find_time_axis
from l2i.nmf import save_dictionary

MODELS = Path(__file__).parent / "custom_models.py"
K = 6
SPECS = {  # name -> (builder, spec keys, expected canonical map shapes for 1 s at 8 kHz)
    "logmel_cnn": ("build_logmel_cnn", {"layers": ["encoder.block1", "encoder.block2"]},
                   {"encoder.block1": (8, 63, 12), "encoder.block2": (16, 31, 6)}),
    "wave_conv1d": ("build_wave_conv1d", {"layers": ["convs.1", "convs.3"],
                                          "sample_rate": 16000},
                    {"convs.1": (8, 499), "convs.3": (16, 248)}),
    "embed_logits": ("build_embed_logits", {"layers": ["encoder.block2"], "output": 1},
                     {"encoder.block2": (16, 31, 6)}),
    "transformer": ("build_transformer", {"layers": ["encoder.layers.0"]},
                    {"encoder.layers.0": (16, 62)}),
    "multilabel": ("build_multilabel", {"layers": ["encoder.block2"], "output": "clipwise",
                                        "activation": "sigmoid"},
                   {"encoder.block2": (16, 31, 6)}),
}


def spec_of(name: str, models: Path = MODELS, **over) -> ClassifierSpec:
    builder, keys, _ = SPECS[name]
    return ClassifierSpec(module=f"{models}:{builder}", **{"sample_rate": 8000, **keys, **over})


def test_time_axis_and_canonical_layouts():
    assert find_time_axis((2, 8, 31, 6), (2, 8, 63, 6)) == 2
    assert find_time_axis((2, 31, 16), (2, 62, 16)) == 1
    assert find_time_axis((2, 16), (2, 16)) is None
    # two growing axes: the one growing most
    assert find_time_axis((2, 10, 4), (2, 21, 5)) == 1
    x = torch.arange(2 * 3 * 5 * 4.0).reshape(2, 3, 5, 4)  # (B, C, F, T): time on axis 3
    c = canonical_map(x, 3)
    assert c.shape == (2, 3, 4, 5) and torch.equal(c[1, 2, 3], x[1, 2, :, 3])
    tokens = torch.randn(2, 7, 16)  # (B, T, D)
    assert torch.equal(canonical_map(tokens, 1), tokens.transpose(1, 2))
    assert canonical_map(torch.randn(2, 9), 1).shape == (2, 1, 9)


@pytest.mark.parametrize("name", list(SPECS))
def test_every_interface_gives_logits_and_maps(name, tiny_features):
    h = build_hooked(spec_of(name), tiny_features, (0.5, 1.0))
    _, _, shapes = SPECS[name]
    assert h.n_classes == 8 and h.activation == SPECS[name][1].get("activation", "softmax")
    assert h.map_channels == {n: s[0] for n, s in shapes.items()}
    wav = 0.1 * torch.randn(3, 8000, generator=torch.Generator().manual_seed(1))
    spec = feats.stft(wav, tiny_features)
    logits, maps = h(spec.abs(), torch.angle(spec), 8000)
    assert logits.shape == (3, 8)
    assert {n: tuple(m.shape[1:]) for n, m in maps.items()} == shapes
    # magnitude + phase re-synthesise the clip: the same logits as on the waveform itself
    direct, _ = h.forward_wave(h.resampler(wav) if h.resampler is not None else wav)
    torch.testing.assert_close(logits, direct, rtol=1e-4, atol=1e-4)
    with pytest.raises(L2IError, match="needs the input's phase"):
        h(spec.abs())


def test_resampling_to_the_model_rate_is_differentiable(tiny_features):
    h = build_hooked(spec_of("wave_conv1d"), tiny_features, (0.5, 1.0))
    wav = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(2))
    spec = feats.stft(wav, tiny_features)
    mag = spec.abs().requires_grad_(True)
    logits, _ = h(mag, torch.angle(spec), 8000)
    logits[:, 0].sum().backward()
    assert mag.grad is not None and mag.grad.abs().sum() > 0
    # 8 kHz -> 16 kHz: twice the samples; a band-limited signal comes back at even samples
    t = torch.arange(8000) / 8000.0
    tone = (0.5 * torch.sin(2 * torch.pi * 440 * t) + 0.3 * torch.sin(2 * torch.pi * 1250 * t))
    up = h.resampler(tone[None])
    assert up.shape == (1, 16000)
    torch.testing.assert_close(up[0, 1000:-1000:2], tone[500:-500], rtol=0, atol=2e-3)


def test_torchscript_and_patch_folding_fail_with_their_messages(tiny_features):
    with pytest.raises(ConfigError, match="TorchScript.*hooks are not supported"):
        build_hooked(ClassifierSpec(module=f"{MODELS}:build_scripted", layers=["convs.1"],
                                    sample_rate=8000), tiny_features)
    with pytest.raises(L2IError, match="returns a batch of 8 for an input batch of 2.*folds"):
        build_hooked(ClassifierSpec(module=f"{MODELS}:build_patch_folding", layers=["conv"],
                                    sample_rate=8000), tiny_features)


def test_bad_specs_name_the_key(tiny_features):
    with pytest.raises(ConfigError, match="did you mean encoder.block1"):
        build_hooked(spec_of("logmel_cnn", layers=["encoder.blok1"]), tiny_features)
    with pytest.raises(ConfigError, match="classifier.output"):
        build_hooked(spec_of("embed_logits", output=None), tiny_features)
    with pytest.raises(ConfigError, match="no such item"):
        build_hooked(spec_of("multilabel", output="logits"), tiny_features)
    with pytest.raises(L2IError, match="no axis grows"):
        build_hooked(spec_of("logmel_cnn", layers=["head"]), tiny_features)
    with pytest.raises(ConfigError, match="not found"):
        build_hooked(ClassifierSpec(module="nowhere.py:build", layers=["x"]), tiny_features)
    with pytest.raises(ConfigError, match="no callable 'build_logmel'"):
        build_hooked(ClassifierSpec(module=f"{MODELS}:build_logmel", layers=["x"]),
                     tiny_features)
    with pytest.raises(ConfigError, match="classifier.layers is empty.*encoder"):
        build_hooked(spec_of("logmel_cnn", layers=[]), tiny_features)


def test_class_probs_and_probabilities_as_scores():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    assert torch.allclose(class_probs(logits), logits.softmax(1))
    assert torch.allclose(class_probs(logits, "sigmoid"), torch.sigmoid(logits))
    from l2i.models.hooked import to_logits
    p = torch.tensor([[0.9, 0.2]])
    sig = ClassifierSpec(activation="sigmoid", scores="probabilities")
    assert torch.allclose(torch.sigmoid(to_logits(p, sig)), p)
    soft = ClassifierSpec(activation="softmax", scores="probabilities")
    assert torch.allclose(to_logits(p, soft).softmax(1), p / p.sum())


# ---------------------------------------------------------------------------- end to end
RECIPE = """\
classifier:
  module: {module}
  sample_rate: 8000
  layers: [encoder.block1, encoder.block2]
data: {{format: esc50, train_folds: [1, 2], valid_folds: [3], test_folds: [4], duration_s: 1.0}}
trainer: {{epochs: 1, batch_size: 8, lr: 0.01, optimizer: adam, scheduler: plateau,
          device: cpu, progress: false, seed: 0}}
psi: {{hidden: 16, n_layers: 1, freq_reduce: meanmax}}
theta: {{hidden: 8}}
"""


@pytest.fixture(scope="module")
def code_run(tmp_path_factory, tiny_dataset, tiny_features):
    """``l2i train --classifier.module`` on the tiny data, from a copy of custom_models.py."""
    root = tmp_path_factory.mktemp("code_clf")
    models = root / "my_models.py"
    shutil.copy(MODELS, models)
    W = torch.rand(tiny_features.n_freq, K, generator=torch.Generator().manual_seed(0))
    save_dictionary(root / "nmf.pt", W, tiny_features)
    recipe = root / "l2i.yaml"
    recipe.write_text(RECIPE.format(module=f"{models}:build_logmel_cnn"))
    out = root / "run"
    rc = cli.main(["train", str(recipe), "--data_folder", str(tiny_dataset), "--nmf",
                   str(root / "nmf.pt"), "--output_folder", str(out)])
    assert rc == 0
    return {"root": root, "models": models, "out": out, "recipe": recipe}


def test_train_evaluate_interpret_a_classifier_given_as_code(code_run, tiny_dataset, tmp_path,
                                                             capsys):
    out = code_run["out"]
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["test/fid_top1"] <= m["test/fid_top3"] <= 1.0
    ck = torch.load(out / "l2i.ckpt", weights_only=True)
    rec = ck["classifier"]
    assert rec["format"] == "l2i-classifier-code"
    assert rec["spec"]["module"] == f"{code_run['models'].resolve()}:build_logmel_cnn"
    import hashlib
    assert rec["module_sha256"] == hashlib.sha256(code_run["models"].read_bytes()).hexdigest()
    from custom_models import build_logmel_cnn
    assert rec["state_sha256"] == state_sha256(build_logmel_cnn())
    assert rec["layers"]["encoder.block2"] == {"shape": [16, 31, 6], "time_axis": 2,
                                               "channels": 16, "bins": 6}
    assert "state_dict" not in rec
    ev = tmp_path / "eval"
    assert cli.main(["evaluate", str(out / "l2i.ckpt"), "--output_folder", str(ev),
                     "--n_examples", "0", "--device", "cpu"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())["metrics"]
    assert 0 <= metrics["fidelity_top1"] <= 100 and np.isfinite(metrics["AI"])
    clip = next((tiny_dataset / "audio").glob("*.wav"))
    ex = tmp_path / "expl"
    assert cli.main(["interpret", str(out / "l2i.ckpt"), str(clip), "--output_folder", str(ex),
                     "--device", "cpu"]) == 0
    assert (ex / f"{clip.stem}.explanation.wav").is_file()


def test_loading_refuses_changed_code_or_weights(code_run):
    out = code_run["out"]
    record = torch.load(out / "l2i.ckpt", weights_only=True)
    bad = json.loads(json.dumps({k: v for k, v in record["classifier"].items()}))
    bad["state_sha256"] = "0" * 64
    with pytest.raises(L2IError, match="weights built by .* differ"):
        build_interpreter({**record, "classifier": bad})
    copy = code_run["root"] / "copy.ckpt"
    shutil.copy(out / "l2i.ckpt", copy)
    models = code_run["models"]
    original = models.read_text()
    try:
        models.write_text(original + "\nprint('changed')\n")
        with pytest.raises(L2IError, match="changed since the interpreter was trained"):
            load_interpreter(copy)
    finally:
        models.write_text(original)
    assert load_interpreter(copy).classifier.n_classes == 8


def test_bad_classifier_sections_fail_from_the_cli(code_run, tiny_dataset, tmp_path, capsys):
    base = ["train", str(code_run["recipe"]), "--data_folder", str(tiny_dataset), "--nmf",
            str(code_run["root"] / "nmf.pt"), "--output_folder", str(tmp_path / "o")]
    assert cli.main(base + ["--classifier.layers", "[encoder.blok2]"]) == 2
    assert "did you mean encoder.block2" in capsys.readouterr().err
    assert cli.main(base + ["--classifier.module", f"{MODELS}:build_scripted",
                            "--classifier.layers", "[convs.1]"]) == 2
    assert "TorchScript" in capsys.readouterr().err
    assert not (tmp_path / "o" / "l2i.ckpt").exists()


def test_multilabel_fidelity_and_per_class_explanations(tiny_dataset, tiny_features, tmp_path):
    W = torch.rand(tiny_features.n_freq, K, generator=torch.Generator().manual_seed(0))
    save_dictionary(tmp_path / "nmf.pt", W, tiny_features)
    recipe = tmp_path / "l2i.yaml"
    recipe.write_text(RECIPE.format(module=f"{MODELS}:build_multilabel"))
    out = tmp_path / "run"
    assert cli.main(["train", str(recipe), "--data_folder", str(tiny_dataset), "--nmf",
                     str(tmp_path / "nmf.pt"), "--output_folder", str(out),
                     "--classifier.layers", "[encoder.block2]", "--classifier.output",
                     "clipwise", "--classifier.activation", "sigmoid",
                     "--classifier.kwargs", "{scale: 40.0}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["test/fid_agreement"] <= 1.0 and 0.0 <= m["test/fid_auprc"] <= 1.0
    interp = load_interpreter(out / "l2i.ckpt")
    assert interp.activation == "sigmoid"
    from l2i.evaluation import score_clips
    from l2i.explain import Explainer
    wavs = 0.1 * np.random.default_rng(0).standard_normal((3, 8000)).astype(np.float32)
    res = score_clips(Explainer(interp), wavs, batch_size=2, progress=False)
    assert 0.0 <= res.multilabel["fid_agreement"] <= 1.0
    clip = next((tiny_dataset / "audio").glob("*.wav"))
    from l2i.audio import load_audio
    from l2i.config import InterpretRecipe
    from l2i.explain import Explainer
    from l2i.interpret import choose_targets
    ex = Explainer(interp)
    x = load_audio(clip, 8000, duration_s=None)
    probs = ex.explain(x, 8000)[0].classifier_probs
    assert np.all((probs >= 0) & (probs <= 1)) and probs.sum() > 1.0  # sigmoids, not softmax
    on = choose_targets("multilabel", probs, InterpretRecipe(), threshold=0.5)
    assert on == [i for i in np.argsort(-probs) if probs[i] > 0.5] or on == [probs.argmax()]
    expl = tmp_path / "expl"
    assert cli.main(["interpret", str(out / "l2i.ckpt"), str(clip), "--output_folder",
                     str(expl), "--device", "cpu"]) == 0
    assert len(list(expl.glob(f"{clip.stem}.*.explanation.wav"))) == len(on)
    assert cli.main(["interpret", str(out / "l2i.ckpt"), str(clip), "--output_folder",
                     str(tmp_path / "one"), "--target", "2", "--device", "cpu"]) == 0
    assert (tmp_path / "one" / f"{clip.stem}.explanation.wav").is_file()


def test_multilabel_losses_and_auprc_by_hand():
    from sklearn.metrics import average_precision_score

    from l2i.metrics import average_precision, macro_average_precision, multilabel_fidelity
    from l2i.training.interpreter import binary_fidelity

    theta, f = torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, -2.0]])
    t = torch.sigmoid(f)
    want = -(t * torch.log(torch.sigmoid(theta)) + (1 - t) * torch.log(1 - torch.sigmoid(theta)))
    assert binary_fidelity(theta, f).item() == pytest.approx(want.mean().item(), rel=1e-5)
    rng = np.random.default_rng(0)
    s, y = rng.random((40, 3)), rng.random((40, 3)) > 0.6
    for c in range(3):
        assert average_precision(torch.tensor(s[:, c]), torch.tensor(y[:, c])) == \
            pytest.approx(average_precision_score(y[:, c], s[:, c]))
    assert macro_average_precision(torch.tensor(s), torch.tensor(y)) == pytest.approx(
        average_precision_score(y, s, average="macro"))
    fid = multilabel_fidelity(torch.tensor([[3.0, -3.0], [-1.0, 2.0]]),
                              torch.tensor([[1.0, -1.0], [1.0, 1.0]]))
    assert fid["fid_agreement"] == pytest.approx(0.75) and fid["fid_auprc"] == pytest.approx(
        (1.0 + 1.0) / 2)
    assert fid["fid_agreement_per_class"] == pytest.approx([0.5, 1.0])


def test_own_classifiers_accept_and_ignore_phase(tiny_features):
    from l2i.config import ClassifierModelConfig
    from l2i.models import build_classifier

    clf = build_classifier(ClassifierModelConfig(width=2, embed_dim=8), tiny_features, 3).eval()
    mag = torch.rand(2, 40, tiny_features.n_freq)
    a, _ = clf(mag)
    b, _ = clf(mag, phase=torch.rand_like(mag), length=1234)
    assert torch.equal(a, b) and clf.activation == "softmax"




def test_the_worked_example_of_the_docs_runs_as_printed(tmp_path):
    doc = (Path(__file__).parents[1] / "docs" / "custom_classifier.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.splitlines()) <= 30
    (tmp_path / "my_models.py").write_text(code)
    spec = ClassifierSpec(module=f"{tmp_path / 'my_models.py'}:build", sample_rate=16000,
                          layers=["encoder.2", "encoder.5"])
    from l2i.config import FeaturesConfig
    from l2i.models.hooked import describe_layers
    h = build_hooked(spec, FeaturesConfig(), (1.0, 2.0))
    printed = doc.split("hooked layers for 2 s:\n", 1)[1].split("```", 1)[0].strip()
    assert describe_layers(h.layers).strip() == printed
