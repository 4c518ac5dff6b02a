"""``l2i interpret`` (issue 15): components, long recordings, the page, warnings, targets."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import random_interpreter
from test_report import CHROMIUM_FLAGS, _chromium, _fake_run, _wav
from torch import nn

from l2i.config import FeaturesConfig, InterpretRecipe, PsiConfig, ThetaConfig
from l2i.explain import Explainer, default_confidence_level
from l2i.interpret import interpret_files
from l2i.longform import OverlapAdd, array_blocks, iter_windows, n_windows

SR = 8000
FEATS = FeaturesConfig(sample_rate=SR, n_fft=256, n_mels=32)
CLASSES = ["dog", "rain", "siren"]
K = 6


def _tone(seconds: float, hz: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    noise = np.random.default_rng(seed).standard_normal(t.shape) * 0.02
    return (0.5 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from l2i.interpreter import save_interpreter

    path = tmp_path_factory.mktemp("h9") / "l2i.ckpt"
    save_interpreter(path, random_interpreter(FEATS, CLASSES, K))
    return path


# --------------------------------------------------------------------------- 1. components
@pytest.mark.parametrize("seconds", [1.5, 0.6])  # 0.6 s: padded for the classifier
def test_component_audio_adds_up_to_the_explanation(seconds):
    ex = Explainer(random_interpreter(FEATS, CLASSES, K), relevance_th=-2.0)  # select all
    e = ex.explain(_tone(seconds, 700), SR)[0]
    assert len(e.selected) == K
    total = sum(e.component_audio(k) for k in e.selected)
    assert np.abs(e.audio).max() > 0.1
    np.testing.assert_allclose(total, e.audio, atol=1e-5)
    masks = sum(e.component_mask(k) for k in e.selected)
    np.testing.assert_allclose(masks, e.mask, atol=1e-5)
    # a partial selection: its components add up to its (partial) explanation
    e2 = Explainer(ex.interpreter, top_k=2).explain(_tone(seconds, 700), SR)[0]
    np.testing.assert_allclose(sum(e2.component_audio(k) for k in e2.selected), e2.audio,
                               atol=1e-5)
    assert not np.allclose(e2.audio, e.audio, atol=1e-3)


def test_cli_writes_component_wavs_that_sum_to_the_explanation_wav(ckpt, tmp_path):
    sf.write(tmp_path / "clip.wav", _tone(1.2, 900), SR)
    out = tmp_path / "out"
    interpret_files(InterpretRecipe(ckpt=str(ckpt), files=[str(tmp_path / "clip.wav")],
                                    output_folder=str(out), device="cpu", relevance_th=-2.0))
    info = json.loads((out / "clip.json").read_text())
    wavs = sorted((out / "clip.components").glob("k*.wav"))
    assert [c["k"] for c in info["components"]] == info["selected_components"]
    assert len(wavs) == K and info["components_figure"] == "clip.components.png"
    expl, _ = sf.read(out / "clip.explanation.wav")
    total = sum(sf.read(w)[0] for w in wavs)
    np.testing.assert_allclose(total, expl, atol=K * 2.0 ** -15 + 1e-6)  # PCM-16 rounding


def test_atoms_figure_labels_every_atom_with_its_index(tmp_path, monkeypatch):
    import matplotlib.figure

    from l2i.training.nmf import atoms_figure

    seen = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: seen.append(fig) or real(fig, *a, **k))
    W = torch.rand(FEATS.n_freq, 12)
    atoms_figure(tmp_path / "atoms.png", W, FEATS, [1.0, 0.5])
    labels = sorted(int(t.get_text()) for t in seen[0].axes[0].get_xticklabels())
    assert labels == list(range(12))


# --------------------------------------------------------------------------- 2. long recordings
def test_windows_and_overlap_add_cover_the_recording_exactly():
    for n, win, hop, block in [(100, 20, 10, 7), (105, 20, 10, 33), (15, 20, 10, 4),
                               (101, 20, 7, 3)]:
        x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        wins = list(iter_windows(array_blocks(x, block), win, hop))
        assert len(wins) == n_windows(n, win, hop)
        assert all(np.array_equal(w, x[s:s + len(w)]) for s, w in wins)
        assert wins[-1][0] + len(wins[-1][1]) == n
        chunks: list[np.ndarray] = []
        ola = OverlapAdd(chunks.append)
        for s, w in wins:
            ola.add(s, w)
        ola.finish(n)
        np.testing.assert_allclose(np.concatenate(chunks), x, atol=1e-5)


class BandClassifier(nn.Module):
    """Hand-built: class c's logit is the mean log-energy in frequency band c."""

    map_names = ["bands"]

    def __init__(self, bands_hz: list[tuple[float, float]]) -> None:
        super().__init__()
        freqs = torch.linspace(0, SR / 2, FEATS.n_freq)
        sel = torch.stack([(freqs >= lo) & (freqs < hi) for lo, hi in bands_hz]).float()
        self.register_buffer("bands", sel / sel.sum(1, keepdim=True))  # (C, F)
        self.map_channels = {"bands": len(bands_hz)}

    def forward(self, mag):  # mag (B, T, F)
        e = torch.log1p(mag) @ self.bands.T  # (B, T, C)
        return 10.0 * e.mean(1), {"bands": e.transpose(1, 2)[..., None]}  # (B,C), (B,C,T,1)


def _band_explainer() -> Explainer:
    from l2i.interpreter import Interpreter
    from l2i.models.psi import Psi
    from l2i.models.theta import Theta

    torch.manual_seed(0)
    clf = BandClassifier([(200, 800), (1200, 2000), (2800, 3600)])
    psi = Psi(clf.map_channels, K, PsiConfig(hidden=8, n_layers=1))
    theta = Theta(K, len(CLASSES), ThetaConfig(hidden=4))
    return Explainer(Interpreter(clf, psi, theta, torch.rand(FEATS.n_freq, K), FEATS, CLASSES))


def test_long_recording_timeline_finds_the_events():
    # events at known times: dog 0-6 s (500 Hz), siren 6-12 s (3200 Hz), rain 12-18 s (1600 Hz)
    events = [("dog", 0, 6, 500), ("siren", 6, 12, 3200), ("rain", 12, 18, 1600)]
    x = np.concatenate([_tone(b - a, hz, seed=i) for i, (_, a, b, hz) in enumerate(events)])
    long = _band_explainer().explain_long(x, SR, window_s=2.0, hop_s=1.0)
    segs = long.timeline.segments()
    assert [s["class"] for s in segs] == ["dog", "siren", "rain"]
    for seg, (_, a, b, _) in zip(segs, events):
        assert abs(seg["start_s"] - a) <= 1.0 and abs(seg["end_s"] - b) <= 1.0
    assert len(long.timeline) == n_windows(len(x), 2 * SR, SR) == 17
    assert long.audio.shape == x.shape
    # a 44.1 kHz copy, resampled, gives the same segments
    import soxr
    x44 = soxr.resample(x, SR, 44100).astype(np.float32)
    long44 = _band_explainer().explain_long(x44, 44100, window_s=2.0, hop_s=1.0)
    assert [s["class"] for s in long44.timeline.segments()] == ["dog", "siren", "rain"]


def test_cli_streams_a_long_file_into_timeline_wav_and_json(ckpt, tmp_path):
    x = np.concatenate([_tone(3.0, 500), _tone(4.5, 2500, seed=1)])  # 7.5 s
    x16 = np.repeat(x, 2)  # a 16 kHz file: streamed through soxr's ResampleStream
    sf.write(tmp_path / "rec.wav", np.stack([x16, x16], 1), 2 * SR)  # stereo
    out = tmp_path / "out"
    cfg = InterpretRecipe(ckpt=str(ckpt), files=[str(tmp_path / "rec.wav")],
                          output_folder=str(out), device="cpu", window_s=2.0, hop_s=1.0)
    msg = interpret_files(cfg)
    assert "7 windows" in msg
    rows = list(csv.reader((out / "rec.timeline.csv").open()))
    assert rows[0] == (["start_s", "end_s", "predicted"] + [f"p_{c}" for c in CLASSES]
                       + [f"theta_{c}" for c in CLASSES])
    assert len(rows) == 1 + 7 and rows[-1][:2] == ["5.500", "7.500"]
    probs = np.array([[float(v) for v in r[3:]] for r in rows[1:]])  # (7, 2C)
    np.testing.assert_allclose(probs[:, :3].sum(1), 1.0, atol=1e-4)
    wav, sr = sf.read(out / "rec.explanation.wav")
    assert sr == SR and abs(len(wav) - len(x)) <= 2
    info = json.loads((out / "rec.json").read_text())
    assert info["kind"] == "long" and info["n_windows"] == 7
    assert info["segments"][0]["start_s"] == 0 and info["segments"][-1]["end_s"] == 7.5
    assert (out / "rec.timeline.png").read_bytes()[:4] == b"\x89PNG"
    # the same windows through the API (an array) give the same probabilities
    # (soxr's one-shot resampling there, its stream here: equal but for rounding)
    api = Explainer.load(ckpt).explain_long(x16, 2 * SR, window_s=2.0, hop_s=1.0)
    np.testing.assert_allclose(api.timeline.probs(), probs[:, :3], atol=1e-4)
    np.testing.assert_allclose(api.timeline.probs("theta"), probs[:, 3:], atol=1e-4)
    # stream never: explained as one clip
    interpret_files(InterpretRecipe(**{**cfg.__dict__, "stream": "never",
                                       "output_folder": str(tmp_path / "o2")}))
    assert not (tmp_path / "o2" / "rec.timeline.csv").exists()
    assert (tmp_path / "o2" / "rec.components").is_dir()


# --------------------------------------------------------------------------- 3. the page
def test_interpret_page_loads_in_headless_chromium(ckpt, tmp_path):
    chromium = _chromium()
    sf.write(tmp_path / "clip.wav", _tone(1.0, 600), SR)
    sf.write(tmp_path / "long.wav", _tone(6.0, 1500), SR)
    out = tmp_path / "out"
    interpret_files(InterpretRecipe(ckpt=str(ckpt), files=[str(tmp_path)], output_folder=str(
        out), device="cpu", window_s=2.0, top_k=2))
    page = out / "index.html"
    html = page.read_text()
    assert "clip.components/k" in html and "long.timeline.png" in html
    n_comp = len(json.loads((out / "clip.json").read_text())["selected_components"])
    # players: clip input, explanation, components; long input (relative link), explanation
    n_audio, n_img = 2 + n_comp + 2, 3
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*data-loaded=\"([^\"]*)\"", proc.stdout)
    assert body, f"no <body data-loaded> in chromium's DOM dump: {proc.stderr[-2000:]}"
    assert body.group(1) == f"img={n_img}/{n_img} audio={n_audio}/{n_audio}"


# --------------------------------------------------------------------------- 4. warnings
def _codes(expl) -> set[str]:
    return {w["code"] for w in expl.warnings}


def test_max_prob_quantile_hand_checked():
    from l2i.explain import max_prob_quantile

    logits = np.log(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]))  # top: 0.9, 0.6, 0.8
    assert max_prob_quantile(logits, q=0.0) == pytest.approx(0.6)
    assert max_prob_quantile(logits, q=0.5) == pytest.approx(0.8)
    assert max_prob_quantile(np.zeros((2, 3)), q=0.5, activation="sigmoid") == 0.5


def test_each_warning_fires_on_its_case():
    interp = random_interpreter(FEATS, CLASSES, K)
    ex = Explainer(interp)
    x = _tone(1.0, 700)
    assert "silent_input" in _codes(ex.explain(np.zeros(SR, np.float32), SR)[0])
    assert "silent_input" not in _codes(ex.explain(x, SR)[0])
    ex.min_confidence = 0.99  # nothing this model says is that sure
    assert "low_confidence" in _codes(ex.explain(x, SR)[0])
    ex.min_confidence = 0.01
    assert "low_confidence" not in _codes(ex.explain(x, SR)[0])
    # calibration stored by the classifier's training wins over the rule
    ex.min_confidence = None
    assert ex.confidence_level == pytest.approx(default_confidence_level(3))
    interp.classifier_record = {**interp.classifier_record,
                                "metrics": {"valid_max_prob_q05": 0.77}}
    assert ex.confidence_level == pytest.approx(0.77)
    e = Explainer(interp, relevance_th=1.5).explain(x, SR)[0]  # r <= 1: nothing passes
    assert "empty_selection" in _codes(e) and not np.any(e.audio)
    # theta made to prefer another class than the classifier's
    c = ex.explain(x, SR)[0].predicted
    with torch.no_grad():
        interp.theta.linear.weight.zero_()
        interp.theta.linear.weight[(c + 1) % 3] = 5.0
    e = ex.explain(x, SR)[0]
    assert "theta_disagrees" in _codes(e) and e.predicted == c
    with torch.no_grad():
        interp.theta.linear.weight.zero_()
        interp.theta.linear.weight[c] = 5.0  # now theta agrees
    assert "theta_disagrees" not in _codes(ex.explain(x, SR)[0])


def test_warnings_reach_the_cli_json_and_page(ckpt, tmp_path, capsys):
    sf.write(tmp_path / "quiet.wav", np.zeros(SR, np.float32), SR)
    out = tmp_path / "out"
    interpret_files(InterpretRecipe(ckpt=str(ckpt), files=[str(tmp_path / "quiet.wav")],
                                    output_folder=str(out), device="cpu",
                                    relevance_th=1.5))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("l2i: warning:")]
    assert any("silent" in ln for ln in lines) and any("no component" in ln for ln in lines)
    codes = {w["code"] for w in json.loads((out / "quiet.json").read_text())["warnings"]}
    assert {"silent_input", "empty_selection"} <= codes
    html = (out / "index.html").read_text()
    assert "the input is silent" in html and "no component passed" in html


# --------------------------------------------------------------------------- 5. targets
def test_several_targets(ckpt, tmp_path):
    sf.write(tmp_path / "c.wav", _tone(1.0, 800), SR)

    def run(folder: str, **kw):
        interpret_files(InterpretRecipe(ckpt=str(ckpt), files=[str(tmp_path / "c.wav")],
                                        output_folder=str(tmp_path / folder), device="cpu",
                                        components=False, **kw))
        return sorted(p.name for p in (tmp_path / folder).glob("c.*.json"))

    assert run("named", target="dog,siren") == ["c.dog.json", "c.siren.json"]
    probs = json.loads((tmp_path / "named" / "c.dog.json").read_text())["classifier_probs"]
    top2 = sorted(probs, key=lambda n: -probs[n])[:2]
    assert run("top", target="all", top_classes=2) == sorted(f"c.{n}.json" for n in top2)
    above = [n for n in CLASSES if probs[n] >= 0.3] or top2[:1]
    assert run("level", target="all", target_min_prob=0.3) == sorted(f"c.{n}.json"
                                                                     for n in above)
    from l2i.errors import ConfigError
    with pytest.raises(ConfigError, match="did you mean"):
        run("bad", target="dog,sirne")


def test_bad_window_settings_are_refused_before_any_output(ckpt, tmp_path, capsys):
    from l2i.cli import main

    sf.write(tmp_path / "c.wav", _tone(1.0, 800), SR)
    out = tmp_path / "out"
    args = ["interpret", str(ckpt), str(tmp_path / "c.wav"), "--output_folder", str(out),
            "--device", "cpu"]
    assert main(args + ["--window_s", "1", "--hop_s", "2"]) == 2
    assert "hop_s" in capsys.readouterr().err and not out.exists()
    assert main(args + ["--stream", "sometimes"]) == 2
    assert "stream must be one of" in capsys.readouterr().err and not out.exists()


def test_report_plays_each_example_component_by_component(tmp_path):
    from l2i.config import ReportRecipe
    from l2i.report import write_report

    root = _fake_run(tmp_path / "run", n_examples=1)
    ex = root / "eval" / "examples"
    info = json.loads((ex / "4-100-A-0.json").read_text())
    info["components"] = [{"k": k, "relevance": r, "wav": f"4-100-A-0.components/k{k}.wav"}
                          for k, r in ((4, 1.0), (1, 0.5))]
    for c in info["components"]:
        (ex / c["wav"]).parent.mkdir(exist_ok=True)
        _wav(ex / c["wav"], 200 + 100 * c["k"])
    (ex / "4-100-A-0.json").write_text(json.dumps(info))
    page = Path(write_report(ReportRecipe(run_folder=str(root)))).read_text()
    card = page.split("each selected component alone", 1)[1]
    assert card.index("k=4") < card.index("k=1")
    assert len(re.findall(r"<audio[^>]*src='data:audio/wav;base64,", page)) == 2 + 2
