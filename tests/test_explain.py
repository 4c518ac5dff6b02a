"""Explanation math on tiny hand-built W/H, and the Explainer / ``l2i interpret`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import random_interpreter

from l2i import features as feats
from l2i.audio import peak_normalize
from l2i.config import (
    FeaturesConfig,
    InterpretRecipe,
)
from l2i.errors import ConfigError, DataError, L2IError
from l2i.explain import (
    Explainer,
    Explanation,
    Explanations,
    audio_files,
    explanation_magnitude,
    interpret_files,
    ratio_mask,
    relevance,
    select_components,
    to_audio,
)

CLASSES = ["dog", "rain", "siren"]


# --------------------------------------------------------------------------- relevance / selection
def test_relevance_hand_computed():
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 0.0]])  # (C, K)
    z = torch.tensor([[1.0, 1.0, 4.0], [1.0, 1.0, 4.0]])  # (B, K)
    r = relevance(w, z, torch.tensor([0, 1]))
    # class 0: w*z = [1, -2, 2] / 2; class 1: [0, 1, 0] / 1
    assert torch.allclose(r, torch.tensor([[0.5, -1.0, 1.0], [0.0, 1.0, 0.0]]))


def test_relevance_silent_clip_is_zero_not_nan():
    r = relevance(torch.ones(2, 3), torch.zeros(1, 3), torch.tensor([1]))
    assert torch.equal(r, torch.zeros(1, 3))
    assert not select_components(r).any()


def test_select_components_threshold_and_top_k():
    r = torch.tensor([[0.5, -1.0, 1.0, 0.2, 0.1]])
    assert select_components(r, 0.2).tolist() == [[True, False, True, False, False]]
    assert select_components(r, 0.0).tolist() == [[True, False, True, True, True]]
    assert select_components(r, top_k=1).tolist() == [[False, False, True, False, False]]
    assert select_components(r, top_k=2).tolist() == [[True, False, True, False, False]]
    # top-k keeps positive relevance only: 4 positives, k = 5 -> 4 components
    assert select_components(r, top_k=5).sum().item() == 4
    with pytest.raises(ValueError):
        select_components(r, top_k=0)


# --------------------------------------------------------------------------- mask
W3 = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # (F=3, K=2)
H3 = torch.tensor([[[1.0, 2.0], [0.0, 2.0]]])  # (B=1, K=2, T=2)


def test_ratio_mask_hand_computed():
    # W H: t0 = [1, 1, 0], t1 = [2, 4, 2]; W_0 H_0: t0 = [1, 1, 0], t1 = [2, 2, 0]
    m0 = ratio_mask(W3, H3, torch.tensor([[True, False]]))
    assert m0.shape == (1, 2, 3)  # (B, T, F)
    assert torch.allclose(m0[0], torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.5, 0.0]]), atol=1e-6)
    m1 = ratio_mask(W3, H3, torch.tensor([[False, True]]))
    assert torch.allclose(m1[0], torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 1.0]]), atol=1e-6)


def test_complementary_masks_sum_to_one_where_wh_positive():
    g = torch.Generator().manual_seed(0)
    W = torch.rand(17, 6, generator=g)
    H = torch.rand(3, 6, 11, generator=g)
    H[0, :, 4] = 0.0  # a silent frame: W H = 0 there
    sel = torch.rand(3, 6, generator=g) > 0.5
    m, mc = ratio_mask(W, H, sel), ratio_mask(W, H, ~sel)
    assert (m >= 0).all() and (m <= 1).all()
    wh = torch.einsum("fk,bkt->btf", W, H)
    pos = wh > 1e-6
    assert torch.allclose((m + mc)[pos], torch.ones(int(pos.sum())), atol=1e-5)
    assert (m[0, 4] == 0).all() and (mc[0, 4] == 0).all()


def test_empty_selection_gives_zero_mask_and_negative_inputs_are_clamped():
    assert torch.equal(ratio_mask(W3, H3, torch.zeros(1, 2, dtype=torch.bool)),
                       torch.zeros(1, 2, 3))
    m = ratio_mask(-W3, H3, torch.ones(1, 2, dtype=torch.bool))
    assert torch.equal(m, torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="ratio_mask"):
        ratio_mask(W3, H3[0], torch.ones(1, 2))


def test_explanation_and_remainder_add_up_to_input():
    mag = torch.rand(2, 5, 3) * 4
    mask = torch.rand(2, 5, 3)
    total = explanation_magnitude(mask, mag) + explanation_magnitude(1 - mask, mag)
    assert torch.allclose(total, mag, atol=1e-6)
    assert torch.allclose(explanation_magnitude(torch.full_like(mag, 0.5), mag), mag / 2)


def test_to_audio_round_trip_with_all_ones_mask():
    cfg = FeaturesConfig(sample_rate=16000)
    g = torch.Generator().manual_seed(0)
    wav = (torch.rand(2, 16000 + 123, generator=g) - 0.5)  # (B, N), not a whole frame count
    spec = feats.stft(wav, cfg)
    mag, ph = feats.magnitude(spec), feats.phase(spec)
    out = to_audio(explanation_magnitude(torch.ones_like(mag), mag), ph, cfg, wav.shape[1])
    assert out.shape == wav.shape
    assert (out - wav).abs().max() < 1e-4


# --------------------------------------------------------------------------- Explainer
FEATS = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32)
K = 6


def _tiny_interpreter(seed: int = 0):
    return random_interpreter(FEATS, CLASSES, K, seed)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from l2i.interpreter import save_interpreter

    path = tmp_path_factory.mktemp("l2i") / "l2i.ckpt"
    save_interpreter(path, _tiny_interpreter())
    return path


def _tone(sr: float, seconds: float, hz: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    noise = np.random.default_rng(seed).standard_normal(t.shape) * 0.05
    return (0.5 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


def test_explainer_single_clip_consistent_with_pure_functions(tiny_ckpt):
    ex = Explainer.load(tiny_ckpt)
    assert ex.relevance_th == pytest.approx(0.2) and ex.sample_rate == 8000
    assert ex.normalize == "peak"  # nothing recorded: the recipes' default
    x = peak_normalize(_tone(8000, 1.5))  # as explain normalises it
    e = ex.explain(x, 8000)[0]
    T = feats.n_frames(len(x), FEATS)
    assert e.audio.shape == x.shape and e.sample_rate == 8000
    assert e.mask.shape == (T, FEATS.n_freq) == e.input_magnitude.shape
    assert e.H.shape == (K, T) and e.relevance.shape == (K,)
    assert e.classifier_probs.shape == (3,) and e.theta_probs.sum() == pytest.approx(1, abs=1e-5)
    assert e.target == e.predicted and e.target_name == CLASSES[e.target]
    assert (e.mask >= 0).all() and (e.mask <= 1).all()
    # selection is the relevance rule, listed most relevant first
    assert sorted(e.selected) == [k for k in range(K) if e.relevance[k] > 0.2]
    assert list(e.relevance[e.selected]) == sorted(e.relevance[e.selected], reverse=True)
    # the mask is the ratio mask of the selected components
    sel = torch.zeros(1, K, dtype=torch.bool)
    sel[0, e.selected] = True
    m = ratio_mask(ex.interpreter.W, torch.from_numpy(e.H)[None], sel)[0]
    assert np.allclose(m.numpy(), e.mask, atol=1e-6)
    # and the audio is the inverse STFT of M * |X| with the input's phase
    spec = feats.stft(torch.from_numpy(x)[None], FEATS)
    ref = to_audio(torch.from_numpy(e.mask)[None] * spec.abs(), spec.angle(), FEATS, len(x))[0]
    assert np.allclose(ref.numpy(), e.audio, atol=1e-5)
    summary = e.summary()
    json.dumps(summary)
    assert summary["selected_components"] == e.selected and len(summary["top5"]) == 3


def test_explainer_all_or_no_components(tiny_ckpt):
    x = peak_normalize(_tone(8000, 1.0))
    everything = Explainer.load(tiny_ckpt, relevance_th=-2.0).explain(x, 8000)[0]
    assert len(everything.selected) == K
    # every component selected: M = W H / (W H + eps) ~ 1, the explanation is the input
    assert np.abs(everything.audio - x).max() < 1e-3
    nothing = Explainer.load(tiny_ckpt, relevance_th=1.0).explain(x, 8000)[0]
    assert nothing.selected == [] and not nothing.mask.any() and not nothing.audio.any()
    one = Explainer.load(tiny_ckpt, top_k=1).explain(x, 8000)[0]
    assert one.selected == [int(np.argmax(one.relevance))] and one.top_k == 1


def test_explainer_batch_targets_resampling_and_lengths(tiny_ckpt):
    ex = Explainer.load(tiny_ckpt)
    batch = np.stack([_tone(22050, 2.0, 300, 1), _tone(22050, 2.0, 1200, 2)])
    out = ex.explain(torch.from_numpy(batch), 22050, target="rain", batch=True)
    assert isinstance(out, Explanations) and len(out) == 2
    assert all(e.target == 1 and e.target_name == "rain" for e in out)
    assert out[0].audio.shape == (16000,)  # resampled to 8 kHz
    assert ex.explain(batch[0], 22050, target=2)[0].target == 2
    assert [e.target for e in ex.explain(batch, 22050, target=["siren", 0], batch=True)] == [2, 0]
    with pytest.raises(ConfigError, match="2 clips"):
        ex.explain(batch, 22050, target=[1], batch=True)
    assert ex.explain(batch[0], 22050, target="0")[0].target == 0
    short = ex.explain(_tone(8000, 0.05), 8000)[0]  # padded for the classifier, cropped back
    assert short.audio.shape == (400,) and short.mask.shape[0] == feats.n_frames(400, FEATS)
    with pytest.raises(ConfigError, match="not one of"):
        ex.explain(batch[0], 22050, target="cat")[0]
    with pytest.raises(ConfigError, match="out of range"):
        ex.explain(batch[0], 22050, target=3)[0]
    with pytest.raises(DataError):
        ex.explain(np.zeros((2, 3, 4), np.float32), 8000)[0]
    with pytest.raises(DataError, match="NaN"):
        ex.explain(np.full(800, np.nan, np.float32), 8000)[0]


def test_explain_always_returns_a_batch_object(tiny_ckpt):
    """One clip or many: an Explanations, indexable, iterable, sliceable, with the tensors."""
    ex = Explainer.load(tiny_ckpt)
    one = ex.explain(_tone(8000, 1.0, 700), 8000)
    assert isinstance(one, Explanations) and len(one) == 1
    assert isinstance(one[0], Explanation) and list(one) == [one[0]]
    assert one.targets == [one[0].target] and one.predicted == [one[0].predicted]
    assert one.target_names == [CLASSES[one[0].target]]
    assert one.tensors.mask.shape[0] == 1 and one.summaries()[0] == one[0].summary()
    many = ex.explain(np.stack([_tone(8000, 1.0, 300), _tone(8000, 1.0, 1500)]), 8000,
                      target=[0, 2], batch=True)
    assert len(many) == 2 and many.targets == [0, 2] and many[-1].target == 2
    part = many[1:]
    assert isinstance(part, Explanations) and part.targets == [2]
    np.testing.assert_allclose(many[0].mask, many.tensors.mask[0, :many[0].mask.shape[0]].numpy(),
                               atol=1e-6)


def test_explain_batch_on_magnitudes(tiny_ckpt):
    ex = Explainer.load(tiny_ckpt)
    wav = torch.from_numpy(np.stack([_tone(8000, 1.0, 200), _tone(8000, 1.0, 2000)]))
    mag = feats.stft(wav, FEATS).abs()  # (B, T, F)
    b = ex.explain_batch(mag)
    assert b.mask.shape == mag.shape and b.H.shape == (2, K, mag.shape[1])
    assert torch.equal(b.target, b.logits.argmax(1))
    assert torch.allclose(b.probs.sum(1), torch.ones(2))
    b2 = ex.explain_batch(mag, target=torch.tensor([0, 2]))
    assert b2.target.tolist() == [0, 2]


def test_interpret_files_writes_wav_png_json(tiny_ckpt, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    stereo = np.stack([_tone(44100, 2.3, 500), _tone(44100, 2.3, 700)], axis=1)  # (N, 2)
    sf.write(src / "street.wav", stereo, 44100)
    (src / "b").mkdir()
    sf.write(src / "b" / "street.flac", _tone(16000, 0.7), 16000)  # same stem, other format
    out = tmp_path / "out"
    cfg = InterpretRecipe(ckpt=str(tiny_ckpt), files=[str(src / "street.wav"),
                                                      str(src / "b" / "street.flac")],
                          output_folder=str(out), target="siren", device="cpu")
    msg = interpret_files(cfg)
    assert "street" in msg
    for name, dur in (("street", 2.3), ("street-2", 0.7)):
        x, sr = sf.read(out / f"{name}.explanation.wav")
        assert sr == 8000 and x.shape == (int(round(dur * 8000)),)
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        info = json.loads((out / f"{name}.json").read_text())
        assert info["target"] == 2 and info["target_name"] == "siren"
        assert info["duration_s"] == pytest.approx(dur, abs=1e-3)
        assert len(info["relevance"]) == K and set(info["classifier_probs"]) == set(CLASSES)
        assert math.isclose(sum(info["theta_probs"].values()), 1.0, abs_tol=1e-4)
    assert (out / "config.yaml").exists()
    with pytest.raises(DataError, match="not found"):
        interpret_files(InterpretRecipe(ckpt=str(tiny_ckpt), files=[str(src / "nope.wav")],
                                        output_folder=str(out)))
    with pytest.raises(ConfigError, match="checkpoint"):
        interpret_files(InterpretRecipe(ckpt=str(tmp_path / "missing.ckpt"),
                                        files=[str(src / "street.wav")], output_folder=str(out)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error message")
def test_load_on_missing_cuda_is_a_clear_error(tiny_ckpt):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Explainer.load(tiny_ckpt, device="cuda")
    with pytest.raises(ConfigError, match="not a valid torch device"):
        Explainer.load(tiny_ckpt, device="gpu0")


# --------------------------------------------------------------------------- input shapes (API)
def _stereo_file(path, sr: int = 44100, seconds: float = 1.3, amp: float = 1.0):
    x = amp * np.stack([_tone(sr, seconds, 500), _tone(sr, seconds, 900, seed=1)], axis=1)
    sf.write(path, x, sr, subtype="PCM_16")  # (N, 2)
    return path


def test_explain_soundfile_stereo_is_one_clip_not_n_clips(tiny_ckpt, tmp_path):
    ex = Explainer.load(tiny_ckpt)
    path = _stereo_file(tmp_path / "stereo.wav")
    wav, sr = sf.read(path)  # (N, 2) float64, what docs/method.md tells users to do
    assert wav.shape[1] == 2
    e = ex.explain(wav, sr)[0]
    assert not isinstance(e, list) and e.audio.shape == (int(round(wav.shape[0] * 8000 / sr)),)
    mono = ex.explain(wav.astype(np.float32).mean(axis=1), sr)[0]  # the documented downmix
    np.testing.assert_allclose(e.mask, mono.mask, atol=1e-6)
    np.testing.assert_allclose(e.relevance, mono.relevance, atol=1e-6)
    # torchaudio's (channels, S) and int16 PCM (scaled by 1/32768) are the same clip
    chan_first = ex.explain(torch.from_numpy(wav.T.copy()), sr)[0]
    np.testing.assert_allclose(chan_first.mask, e.mask, atol=1e-6)
    pcm, _ = sf.read(path, dtype="int16")
    np.testing.assert_allclose(ex.explain(pcm, sr)[0].mask, e.mask, atol=1e-5)
    pcm32, _ = sf.read(path, dtype="int32")
    np.testing.assert_allclose(ex.explain(pcm32, sr)[0].mask, e.mask, atol=1e-5)


def test_explain_refuses_ambiguous_shapes_naming_them(tiny_ckpt):
    ex = Explainer.load(tiny_ckpt)
    with pytest.raises(L2IError, match=r"\(9, 800\) is ambiguous"):
        ex.explain(np.zeros((9, 800), np.float32), 8000)[0]  # 9 clips? pass batch=True
    with pytest.raises(L2IError, match=r"\(3, 3\) is ambiguous"):
        ex.explain(np.zeros((3, 3), np.float32), 8000)[0]
    assert len(ex.explain(np.zeros((9, 800), np.float32), 8000, batch=True)) == 9


def test_explain_size_guard_refuses_before_allocating(tiny_ckpt):
    import tracemalloc

    ex = Explainer.load(tiny_ckpt, max_memory_mb=64)
    # the reported case: 4 s of 48 kHz stereo taken as 192000 clips of 2 samples (each padded
    # to 1 s) would need tens of GB; refused up front
    wav = np.zeros((4 * 48000, 2), np.float32)
    tracemalloc.start()
    try:
        with pytest.raises(L2IError, match=r"192000 clip\(s\).*max_memory_mb=64"):
            ex.explain(wav, 48000, batch=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # a copy of the input at most, never the padded batch
    long = np.zeros(8000 * 600, np.float32)  # 10 min at 8 kHz
    assert ex.memory_estimate_mb(1, long.size, 8000) > 64
    with pytest.raises(L2IError, match="max_memory_mb"):
        ex.explain(long, 8000)[0]
    ex.max_memory_mb = None  # no limit
    assert ex.explain(long[:16000], 8000)[0].audio.shape == (16000,)


# --------------------------------------------------------------------------- normalisation
def test_quiet_clip_is_explained_like_the_loud_one(tiny_ckpt):
    ex = Explainer.load(tiny_ckpt)
    x = _tone(8000, 1.5, 700)
    loud, quiet = ex.explain(x, 8000)[0], ex.explain(x / 100, 8000)[0]
    assert quiet.predicted == loud.predicted
    np.testing.assert_allclose(quiet.relevance, loud.relevance, atol=1e-4)
    np.testing.assert_allclose(quiet.mask, loud.mask, atol=1e-4)


def test_normalisation_comes_from_the_checkpoint(tmp_path):
    from l2i.explain import checkpoint_normalize

    interp = _tiny_interpreter()
    assert checkpoint_normalize(interp) == "peak"  # nothing recorded: DataConfig's default
    interp.recipe = {"data": {"normalize": "none"}}  # an older checkpoint: its L2I recipe
    assert checkpoint_normalize(interp) == "none"
    interp.classifier_record = {**interp.classifier_record, "normalize": "peak"}
    assert checkpoint_normalize(interp) == "peak"  # the classifier's own record wins
    interp.classifier_record["normalize"] = "none"
    ex = Explainer(interp)
    x = _tone(8000, 1.0)
    everything = Explainer(interp, relevance_th=-2.0).explain(x / 10, 8000)[0]
    assert ex.normalize == "none" and np.abs(everything.audio - x / 10).max() < 1e-3
    with pytest.raises(ConfigError, match="normalize"):
        Explainer(interp, normalize="rms")


def test_cli_and_api_give_the_same_explanation(tiny_ckpt, tmp_path, monkeypatch):
    import l2i.interpret as interpret_mod
    from l2i.cli import main

    path = _stereo_file(tmp_path / "quiet.wav", amp=0.01)  # quiet: normalisation matters
    seen = []
    real = interpret_mod.write_explanation
    monkeypatch.setattr(interpret_mod, "write_explanation",
                        lambda expl, *a, **k: seen.append(expl) or real(expl, *a, **k))
    assert main(["interpret", str(tiny_ckpt), str(path), "--output_folder",
                 str(tmp_path / "out"), "--device", "cpu"]) == 0
    (cli,) = seen
    wav, sr = sf.read(path)
    api = Explainer.load(tiny_ckpt).explain(wav, sr)[0]
    assert api.predicted == cli.predicted and api.selected == cli.selected
    np.testing.assert_allclose(api.relevance, cli.relevance, atol=1e-6)
    np.testing.assert_allclose(api.mask, cli.mask, atol=1e-6)
    np.testing.assert_allclose(api.audio, cli.audio, atol=1e-6)
    info = json.loads((tmp_path / "out" / "quiet.json").read_text())
    np.testing.assert_allclose(info["relevance"], api.relevance, atol=1e-6)


# --------------------------------------------------------------------------- l2i interpret FOLDER
def test_interpret_folder_explains_the_audio_files_inside(tiny_ckpt, tmp_path):
    src = tmp_path / "clips"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "a.wav", _tone(8000, 1.0, 300), 8000)
    sf.write(src / "sub" / "b.flac", _tone(16000, 1.2, 900), 16000)
    (src / "notes.txt").write_text("not audio")
    sf.write(src / ".hidden.wav", _tone(8000, 0.5), 8000)
    out = src / "explanations"  # inside the input folder: never explained itself
    cfg = InterpretRecipe(ckpt=str(tiny_ckpt), files=[str(src)], output_folder=str(out),
                          device="cpu")
    msg = interpret_files(cfg)
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "b.json"]
    assert len([line for line in msg.splitlines() if " -> " in line]) == 2
    assert (out / "index.html").is_file()
    # a second run would not pick up the first run's explanation wavs
    assert audio_files([src], skip=out) == [src / "a.wav", src / "sub" / "b.flac"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no audio file"):
        interpret_files(InterpretRecipe(ckpt=str(tiny_ckpt), files=[str(tmp_path / "empty")],
                                        output_folder=str(tmp_path / "o2")))
