"""The classifier interface, the conv2d model and self-describing checkpoints."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from l2i.config import ClassifierModelConfig, FeaturesConfig
from l2i.errors import L2IError
from l2i.models import build_classifier, default_maps, load_classifier, save_classifier

FEAT = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32)  # 129 STFT bins
NAMES = ["a", "b", "c"]


def _conv2d(width: int = 4, **kw) -> tuple:
    cfg = ClassifierModelConfig(arch="conv2d", width=width, embed_dim=16, **kw)
    torch.manual_seed(0)
    return build_classifier(cfg, FEAT, len(NAMES)), cfg


def test_conv2d_shapes_and_interface():
    model, _ = _conv2d(width=4)
    mag = torch.rand(2, 64, FEAT.n_freq)  # (B, T, F)
    logits, maps = model(mag)
    assert logits.shape == (2, 3)
    assert tuple(maps) == model.map_names == ("block1", "block2", "block3", "block4")
    # block1 stride 2, block2/3 pool 2x2, block4 pool 1x2 in frequency only
    assert maps["block1"].shape == (2, 4, 32, 16)
    assert maps["block2"].shape == (2, 8, 16, 8)
    assert maps["block3"].shape == (2, 16, 8, 4)
    assert maps["block4"].shape == (2, 32, 8, 2)
    assert model.map_channels == {"block1": 4, "block2": 8, "block3": 16, "block4": 32}
    # psi and L-MAC read the last two unless a recipe names others (the maps of old runs)
    assert default_maps(model) == ["block3", "block4"]
    assert model.frontend.n_out == 32
    model.eval()
    a, _ = model(mag)
    b, _ = model.forward_features(model.frontend(mag))
    torch.testing.assert_close(a, b)


def test_default_maps_of_a_classifier_without_them_is_every_map():
    class Bare(torch.nn.Module):
        map_channels = {"x": 2, "y": 3}

    assert default_maps(Bare()) == ["x", "y"]


def test_conv2d_any_length_and_log1p_mag_input():
    model, _ = _conv2d(input="log1p_mag")
    logits, maps = model.eval()(torch.rand(1, 37, FEAT.n_freq))
    assert logits.shape == (1, 3)
    assert maps["block4"].shape == (1, 32, 4, 8)  # T 37 -> 19 (stride 2) -> 9 -> 4 -> 4; F 129 -> 8


def test_save_load_round_trip(tmp_path):
    model, cfg = _conv2d()
    model.train()(torch.rand(4, 40, FEAT.n_freq))  # move BN running stats off their init
    path = save_classifier(tmp_path / "classifier.ckpt", model, cfg, FEAT, NAMES,
                           {"test_accuracy": 0.5})
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "l2i-classifier" and raw["version"] == 2
    assert raw["model"] == asdict(cfg) and raw["features"] == asdict(FEAT)
    assert raw["class_names"] == NAMES and raw["n_classes"] == 3
    loaded, info = load_classifier(path)
    assert not loaded.training
    assert info.class_names == NAMES and info.metrics == {"test_accuracy": 0.5}
    assert info.features == FEAT and info.model == cfg
    mag = torch.rand(2, 40, FEAT.n_freq)
    model.eval()
    torch.testing.assert_close(loaded(mag)[0], model(mag)[0])
    loaded2, _ = load_classifier(raw)  # the dict itself (embedded in l2i.ckpt)
    torch.testing.assert_close(loaded2(mag)[0], model(mag)[0])
    assert not list(tmp_path.glob("*.tmp"))


def test_load_errors(tmp_path):
    with pytest.raises(L2IError, match="not found"):
        load_classifier(tmp_path / "nope.ckpt")
    torch.save({"W": torch.zeros(3, 2)}, tmp_path / "nmf.pt")
    with pytest.raises(L2IError, match="not an l2i classifier"):
        load_classifier(tmp_path / "nmf.pt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(L2IError, match="could not be read"):
        load_classifier(tmp_path / "junk.ckpt")
    model, cfg = _conv2d()
    path = save_classifier(tmp_path / "c.ckpt", model, cfg, FEAT, NAMES)
    raw = torch.load(path, weights_only=True)
    raw["model"]["width"] = 8  # weights no longer fit
    with pytest.raises(L2IError, match="do not fit"):
        load_classifier(raw)


def test_build_errors(tmp_path):
    with pytest.raises(L2IError, match="model.arch"):
        build_classifier(ClassifierModelConfig(arch="resnet"), FEAT, 3)
    with pytest.raises(L2IError, match="model.input"):
        build_classifier(ClassifierModelConfig(input="mfcc"), FEAT, 3)
    with pytest.raises(L2IError, match="at least 2 classes"):
        build_classifier(ClassifierModelConfig(), FEAT, 1)
    model, cfg = _conv2d()
    with pytest.raises(L2IError, match="class names"):
        save_classifier(tmp_path / "x.ckpt", model, cfg, FEAT, ["a"])
    assert not list(tmp_path.iterdir())
