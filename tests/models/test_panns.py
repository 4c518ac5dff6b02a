"""PANNs Cnn14 as published: front end, head and the release's 84 keys.

References written here from the published code (audioset_tagging_cnn ``pytorch/models.py``,
torchlibrosa ``Spectrogram``/``LogmelFilterBank``, librosa's Slaney mel): a numpy log-mel and a
functional forward over the state dict. Where librosa / torchlibrosa / panns_inference are
installed (dev extras; torchlibrosa builds its mel matrix with librosa) they are compared too;
nothing needs them.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cnn14_reference import cnn14_embedding

from l2i.errors import L2IError
from l2i.models import panns
from l2i.models.panns import Cnn14, build, slaney_mel_filters

SR = 32000
SMALL = (2, 2, 4, 4, 8, 16)


def _clip(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Noise + a 440 Hz tone + a chirp, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    x = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 440 * t)
    x += 0.2 * np.sin(2 * np.pi * (200 + 3000 * t) * t)
    return x.astype(np.float32)


# --------------------------------------------------------------------------- numpy reference
def np_slaney_mel(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa.filters.mel(htk=False, norm='slaney').T, re-derived: (n_fft//2+1, n_mels)."""
    def hz2mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000.0, 3.0 * f / 200.0,
                        15.0 + 27.0 * np.log(np.maximum(f, 1e-10) / 1000.0) / np.log(6.4))

    def mel2hz(m):
        return np.where(m < 15.0, 200.0 * m / 3.0,
                        1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)))

    fft_f = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel2hz(np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, fft_f.size))
    for m in range(n_mels):
        lo, c, hi = mel_f[m], mel_f[m + 1], mel_f[m + 2]
        up = (fft_f - lo) / (c - lo)
        down = (hi - fft_f) / (hi - c)
        fb[m] = np.maximum(0, np.minimum(up, down)) * 2.0 / (hi - lo)
    return fb.T


def np_logmel(wav: np.ndarray) -> np.ndarray:
    """PANNs' front end in numpy (float64): reflect pad, periodic Hann, |rfft|^2, mel, dB."""
    n_fft, hop = 1024, 320
    x = np.pad(wav.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (x.size - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([x[i * hop: i * hop + n_fft] for i in range(n_frames)])  # (T, n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (T, 513)
    mel = power @ np_slaney_mel(SR, n_fft, 64, 50.0, 14000.0)
    return 10.0 * np.log10(np.maximum(mel, 1e-10))  # (T, 64)


def reference_forward(sd: dict, wav: torch.Tensor) -> dict:
    """PANNs Cnn14.forward in eval mode, functional, from the state dict (models.py)."""
    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"],
                            sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)

    x = F.pad(wav[:, None, :], (512, 512), mode="reflect")
    re = F.conv1d(x, sd["spectrogram_extractor.stft.conv_real.weight"], stride=320)
    im = F.conv1d(x, sd["spectrogram_extractor.stft.conv_imag.weight"], stride=320)
    power = (re ** 2 + im ** 2)[:, None].transpose(2, 3)  # (B, 1, T, 513)
    x = 10 * torch.log10(torch.clamp(power @ sd["logmel_extractor.melW"], min=1e-10))
    x = bn(x.transpose(1, 3), "bn0").transpose(1, 3)
    x = cnn14_embedding(x, sd, bn, "bn1", "bn2")  # (B, 2048)
    x = F.relu(F.linear(x, sd["fc1.weight"], sd["fc1.bias"]))
    return {"clipwise_output": torch.sigmoid(F.linear(x, sd["fc_audioset.weight"],
                                                      sd["fc_audioset.bias"])), "embedding": x}


def _random_state(model: torch.nn.Module, seed: int = 0) -> dict:
    """The model's state with every BN/linear/conv weight randomised (front end kept)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith(("spectrogram_extractor", "logmel_extractor")) or not v.is_floating_point():
            sd[k] = v.clone()
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith(("running_mean", "bias")):
            sd[k] = 0.3 * torch.randn(v.shape, generator=g)
        elif k.startswith("bn") or ".bn" in k:
            sd[k] = 1 + 0.2 * torch.randn(v.shape, generator=g)
        else:
            fan_in = max(1, v[0].numel())
            sd[k] = torch.randn(v.shape, generator=g) / math.sqrt(fan_in)
    sd["bn0.running_mean"] = -40 + 10 * torch.randn(64, generator=g)  # dB-scale input stats
    sd["bn0.running_var"] = 100 + 50 * torch.rand(64, generator=g)
    return sd


# --------------------------------------------------------------------------- tests
def test_published_layout_has_the_84_release_keys():
    model = Cnn14()
    sd = model.state_dict()
    assert len(sd) == 84
    shapes = {"spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
              "spectrogram_extractor.stft.conv_imag.weight": (513, 1, 1024),
              "logmel_extractor.melW": (513, 64), "bn0.running_var": (64,),
              "conv_block1.conv1.weight": (64, 1, 3, 3), "conv_block6.bn2.weight": (2048,),
              "conv_block6.conv2.weight": (2048, 2048, 3, 3), "fc1.weight": (2048, 2048),
              "fc_audioset.weight": (527, 2048), "fc_audioset.bias": (527,)}
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert sorted(frozen) == ["logmel_extractor.melW",
                              "spectrogram_extractor.stft.conv_imag.weight",
                              "spectrogram_extractor.stft.conv_real.weight"]


def test_logmel_equals_numpy_reference_within_1e3_db():
    wav = _clip(1.0)
    ref = np_logmel(wav)
    model = Cnn14(n_classes=3, channels=SMALL).eval()
    with torch.no_grad():
        ours = model.logmel(torch.from_numpy(wav)[None])[0].double().numpy()
    assert ours.shape == ref.shape == (1 + SR // 320, 64)
    assert np.abs(ours - ref).max() < 1e-3
    np.testing.assert_allclose(slaney_mel_filters().double().numpy(),
                               np_slaney_mel(SR, 1024, 64, 50.0, 14000.0), rtol=1e-5, atol=1e-8)


def test_checkpoint_loads_strictly_and_matches_reference_forward(tmp_path, capsys):
    torch.manual_seed(0)
    sd = _random_state(Cnn14(n_classes=5, channels=SMALL))
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3},
               tmp_path / "Cnn14_small.pth")
    model, names = build(tmp_path / "Cnn14_small.pth")
    assert names == [f"class_{i}" for i in range(5)] and not model.training
    assert model.fc_audioset.out_features == 5 and model.conv_block6.conv1.out_channels == 16
    err = capsys.readouterr().err
    assert "loaded  84 tensors" in err and "missing (fresh init) 0" in err
    wav = torch.from_numpy(np.stack([_clip(1.0, 2), _clip(1.0, 3)]))
    with torch.no_grad():
        out, ref = model(wav), reference_forward(sd, wav)
    torch.testing.assert_close(out["clipwise_output"], ref["clipwise_output"], rtol=1e-4,
                               atol=1e-6)
    torch.testing.assert_close(out["embedding"], ref["embedding"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.sigmoid(out["logits"]), out["clipwise_output"])
    assert out["clipwise_output"].std() > 0.01  # not a saturated, trivially equal output


def test_bad_checkpoints_and_class_names(tmp_path):
    sd = _random_state(Cnn14(n_classes=5, channels=SMALL))
    torch.save({"model": {k: v for k, v in sd.items() if k != "bn0.running_var"}},
               tmp_path / "missing.pth")
    with pytest.raises(L2IError, match=r"missing keys \['bn0.running_var'\]"):
        build(tmp_path / "missing.pth")
    torch.save({"model": {**sd, "att_block.att.weight": torch.zeros(1)}}, tmp_path / "extra.pth")
    with pytest.raises(L2IError, match="unexpected keys.*att_block"):
        build(tmp_path / "extra.pth")
    with pytest.raises(L2IError, match="not found"):
        build(tmp_path / "nope.pth")
    torch.save({"model": sd}, tmp_path / "ok.pth")
    (tmp_path / "labels.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},/m/0{i},"Name, {i}"\n' for i in range(5)))
    _, names = build(tmp_path / "ok.pth", tmp_path / "labels.csv")
    assert names == [f"Name, {i}" for i in range(5)]
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    with pytest.raises(L2IError, match="gives 3 class names, the model has 5"):
        build(tmp_path / "ok.pth", tmp_path / "names.txt")


def _import_original_panns():
    """panns_inference.models without running its package __init__ (it downloads labels)."""
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or importlib.util.find_spec("torchlibrosa") is None:
        pytest.skip("panns_inference / torchlibrosa not installed")
    pkg = types.ModuleType("_panns_orig")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("_panns_orig", pkg)
    mspec = importlib.util.spec_from_file_location(
        "_panns_orig.models", f"{pkg.__path__[0]}/models.py")
    mod = importlib.util.module_from_spec(mspec)
    sys.modules["_panns_orig.models"] = mod
    mspec.loader.exec_module(mod)
    return mod


def test_equals_the_original_panns_code(monkeypatch):
    orig_mod = _import_original_panns()
    widths, init = [], orig_mod.ConvBlock.__init__

    def narrow_init(self, in_channels, out_channels):  # the original's blocks, narrow (fast)
        widths.append((in_channels, out_channels))
        k = len(widths)
        init(self, 1 if k == 1 else SMALL[k - 2], SMALL[k - 1])

    monkeypatch.setattr(orig_mod.ConvBlock, "__init__", narrow_init)
    torch.manual_seed(0)
    orig = orig_mod.Cnn14(sample_rate=SR, window_size=1024, hop_size=320, mel_bins=64, fmin=50,
                          fmax=14000, classes_num=527)
    assert [w for _, w in widths] == list(panns.CHANNELS)  # the published widths
    assert (orig.fc1.in_features, orig.fc_audioset.out_features) == (2048, 527)
    orig.fc1, orig.fc_audioset = torch.nn.Linear(16, 16), torch.nn.Linear(16, 5)
    ours = Cnn14(n_classes=5, channels=SMALL).eval()
    theirs = orig.state_dict()
    assert sorted(theirs) == sorted(ours.state_dict())  # the same 84 names
    for k in ("spectrogram_extractor.stft.conv_real.weight",
              "spectrogram_extractor.stft.conv_imag.weight", "logmel_extractor.melW"):
        torch.testing.assert_close(ours.state_dict()[k], theirs[k], rtol=1e-5, atol=1e-6)
    sd = _random_state(ours, seed=4)
    orig.load_state_dict(sd)
    ours.load_state_dict(sd)
    orig.eval()
    wav = torch.from_numpy(np.stack([_clip(0.5, 5), _clip(0.5, 6)]))
    with torch.no_grad():  # the original forward code, run by the original module
        a, b = ours(wav), orig(wav)
        mel_theirs = orig.logmel_extractor(orig.spectrogram_extractor(wav))[:, 0]
        assert (ours.logmel(wav) - mel_theirs).abs().max() < 1e-3
    torch.testing.assert_close(a["clipwise_output"], b["clipwise_output"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a["embedding"], b["embedding"], rtol=1e-4, atol=1e-5)
    assert b["clipwise_output"].std() > 0.01


def test_module_interface_for_hooks():
    model = Cnn14(n_classes=4, channels=SMALL).eval()
    names = dict(model.named_modules())
    assert {f"conv_block{k}" for k in range(1, 7)} | {"fc1", "fc_audioset"} <= set(names)
    assert model.sample_rate == 32000 and model.activation == "sigmoid"
    with pytest.raises(ValueError, match="more than 512 samples"):
        model(torch.zeros(1, 400))
    assert panns.N_AUDIOSET == 527
