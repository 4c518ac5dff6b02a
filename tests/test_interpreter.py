"""Interpreter bundle: forward shapes, frozen classifier, l2i.ckpt round trip and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from l2i.config import ClassifierModelConfig, FeaturesConfig, PsiConfig, ThetaConfig
from l2i.errors import L2IError
from l2i.interpreter import Interpreter, load_interpreter, reconstruct, save_interpreter
from l2i.models import build_classifier, classifier_dict
from l2i.models.psi import Psi
from l2i.models.theta import Theta

FEATS = FeaturesConfig(sample_rate=8000, n_fft=64, n_mels=16)  # 33 bins


class ToyClassifier(nn.Module):
    """The classifier interface in miniature: mag (B, T, F) -> (logits, {name: (B,C,T',F')})."""

    map_names = ("conv",)
    map_channels = {"conv": 3}

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(3, n_classes)

    def forward(self, mag):
        m = torch.relu(self.bn(self.conv(torch.log1p(mag).unsqueeze(1))))  # (B, 3, T/2, F/2)
        return self.head(self.drop(m.mean(dim=(2, 3)))), {"conv": m}


def _interp(K: int = 5, C: int = 4) -> Interpreter:
    psi = Psi(ToyClassifier.map_channels, K, PsiConfig(hidden=8, n_layers=1))
    theta = Theta(K, C, ThetaConfig(hidden=4))
    return Interpreter(ToyClassifier(C), psi, theta, torch.rand(FEATS.n_freq, K), FEATS,
                       [f"c{i}" for i in range(C)])


def test_forward_shapes_for_any_length():
    interp = _interp()
    for T in (7, 40):
        out = interp(torch.rand(3, T, FEATS.n_freq), return_maps=True)
        assert out.logits.shape == (3, 4) and out.theta_logits.shape == (3, 4)
        assert out.H.shape == (3, 5, T) and out.z.shape == (3, 5)
        assert bool((out.H >= 0).all()) and bool((out.z >= 0).all())
        assert out.maps is not None and "conv" in out.maps
        assert interp.reconstruct(out.H).shape == (3, T, FEATS.n_freq)


def test_classifier_is_frozen_and_stays_in_eval_mode():
    interp = _interp().train()
    assert not interp.classifier.training and interp.psi.training
    assert not any(p.requires_grad for p in interp.classifier.parameters())
    assert all(p.requires_grad for p in interp.psi.parameters())
    assert "W" in dict(interp.named_buffers()) and "W" not in dict(interp.named_parameters())


def test_reconstruct_is_W_times_H():
    W = torch.tensor([[1.0, 2.0], [0.0, 3.0], [4.0, 0.0]])  # (F=3, K=2)
    H = torch.tensor([[[1.0, 0.0], [1.0, 2.0]]])  # (B=1, K=2, T=2)
    expected = torch.tensor([[[3.0, 3.0, 4.0], [4.0, 6.0, 0.0]]])  # (B, T, F)
    assert torch.allclose(reconstruct(W, H), expected)


def test_bad_shapes_are_rejected():
    interp = _interp()
    with pytest.raises(L2IError, match="magnitude"):
        interp(torch.rand(2, 10, FEATS.n_freq + 1))
    with pytest.raises(L2IError, match="K="):
        Interpreter(ToyClassifier(), interp.psi, interp.theta, torch.rand(FEATS.n_freq, 9),
                    FEATS, ["a", "b", "c", "d"])


def test_save_load_round_trip(tmp_path):
    model_cfg = ClassifierModelConfig(arch="conv2d", width=2, embed_dim=8)
    names = ["a", "b", "c"]
    clf = build_classifier(model_cfg, FEATS, 3).eval()
    psi = Psi(clf.map_channels, 4, PsiConfig(hidden=8, n_layers=1))
    theta = Theta(4, 3, ThetaConfig(hidden=4))
    interp = Interpreter(clf, psi, theta, torch.rand(FEATS.n_freq, 4), FEATS, names,
                         relevance_th=0.3,
                         classifier_record=classifier_dict(clf, model_cfg, FEATS, names))
    path = save_interpreter(tmp_path / "l2i.ckpt", interp.eval(), metrics={"test/fid_top1": 1.0})
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically
    record = torch.load(path, weights_only=True)
    assert record["format"] == "l2i-interpreter" and record["class_names"] == names
    assert set(record) >= {"classifier", "W", "features", "psi", "theta", "loss", "recipe",
                           "metrics"}
    back = load_interpreter(path, "cpu")
    mag = torch.rand(2, 30, FEATS.n_freq)
    a, b = interp(mag), back(mag)
    for x, y in ((a.logits, b.logits), (a.H, b.H), (a.theta_logits, b.theta_logits)):
        assert torch.allclose(x, y, atol=1e-6)
    assert back.relevance_th == pytest.approx(0.3) and back.metrics["test/fid_top1"] == 1.0
    assert back.class_names == names and back.features.n_fft == FEATS.n_fft


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(L2IError, match="not found"):
        load_interpreter(tmp_path / "missing.ckpt")
    bad = tmp_path / "bad.ckpt"
    torch.save({"format": "l2i-nmf", "W": torch.rand(3, 2)}, bad)
    with pytest.raises(L2IError, match="not an L2I interpreter"):
        load_interpreter(bad)
    with pytest.raises(L2IError, match="classifier checkpoint record"):
        save_interpreter(tmp_path / "x.ckpt", _interp())
