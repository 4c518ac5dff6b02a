"""The faithfulness terms of L2I training: hand-checked values, gradients, 0 = the old loss."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from l2i.config import L2ILossConfig, PsiConfig, ThetaConfig, TrainerConfig
from l2i.errors import ConfigError
from l2i.interpreter import Interpreter, InterpreterOutput, class_probs
from l2i.models.psi import Psi
from l2i.models.theta import Theta
from l2i.training.interpreter import (
    L2IModule,
    WaveSplit,
    faith_in_loss,
    faith_out_loss,
    faithfulness_terms,
    l2i_loss,
    training_mask,
)

K = 4


class LinearClassifier(nn.Module):
    """logits = (sum over bins of |X|) * a: silence gives logits 0 (uniform softmax)."""

    map_names = ("conv",)
    map_channels = {"conv": 2}

    def __init__(self, a: list[float]) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.conv = nn.Conv1d(1, 2, 1)

    def forward(self, mag, phase=None, length=None):
        s = mag.sum(dim=(1, 2))  # (B,)
        m = self.conv(mag.mean(dim=2, keepdim=True).transpose(1, 2))  # (B, 2, T)
        return s[:, None] * self.a[None], {"conv": m[..., None]}  # (B, C), (B, 2, T, 1)


def test_faith_in_and_out_by_hand_softmax():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # p = [1/4, 3/4], [1/2, 1/2]
    target = torch.tensor([1, 0])
    assert faith_in_loss(logits, target).item() == pytest.approx(
        -(math.log(0.75) + math.log(0.5)) / 2, rel=1e-6)
    assert faith_out_loss(logits, target).item() == pytest.approx(
        -(math.log(0.25) + math.log(0.5)) / 2, rel=1e-6)
    # the same values as class_probs gives
    p = class_probs(logits, "softmax").gather(1, target[:, None])[:, 0]
    assert faith_out_loss(logits, target).item() == pytest.approx(
        float(-torch.log(1 - p).mean()), rel=1e-6)


def test_faith_terms_by_hand_sigmoid_and_finite_when_certain():
    logits = torch.tensor([[0.0, 2.0]])
    t = torch.tensor([1])
    p = 1 / (1 + math.exp(-2.0))
    assert faith_in_loss(logits, t, "sigmoid").item() == pytest.approx(-math.log(p), rel=1e-6)
    assert faith_out_loss(logits, t, "sigmoid").item() == pytest.approx(-math.log(1 - p),
                                                                       rel=1e-6)
    certain = torch.tensor([[-200.0, 200.0]])  # p_c = 1 in float32: -log(1 - p_c) stays finite
    assert torch.isfinite(faith_out_loss(certain, t))
    assert faith_out_loss(certain, t).item() == pytest.approx(400.0, rel=1e-5)


def test_mask_of_ones_gives_the_hand_computed_terms():
    clf = LinearClassifier([1.0, -1.0])
    mag = torch.full((1, 3, 2), 0.5)  # sum 3: logits [3, -3]
    target = torch.tensor([0])
    t = faithfulness_terms(clf, torch.ones(1, 3, 2), mag, target, "softmax")
    # masked-out rest is silence: logits [0, 0], p_c = 1/2 -> -log(1/2)
    assert t["faith_out"].item() == pytest.approx(math.log(2.0), rel=1e-6)
    # masked-in is the input: -log softmax([3, -3])_0 = log(1 + e^-6)
    assert t["faith_in"].item() == pytest.approx(math.log1p(math.exp(-6.0)), rel=1e-4)
    assert t["mask_l1"].item() == pytest.approx(1.0)
    t0 = faithfulness_terms(clf, torch.zeros(1, 3, 2), mag, target, "softmax")
    assert t0["faith_in"].item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert t0["mask_l1"].item() == 0.0


def test_training_mask_uses_the_positive_relevance_as_weights():
    W = torch.tensor([[1.0, 1.0], [1.0, 3.0]])  # (F=2, K=2)
    H = torch.ones(1, 2, 3)  # (B, K, T)
    theta_w = torch.tensor([[2.0, -1.0]])  # component 1 argues against class 0
    out = InterpreterOutput(logits=torch.zeros(1, 1), H=H, theta_logits=torch.zeros(1, 1),
                            z=torch.ones(1, 2))
    m = training_mask(out, W, theta_w, torch.tensor([0]))
    assert m.shape == (1, 3, 2)
    # weights relu([1, -0.5]) = [1, 0]: the share of component 0, 1/2 and 1/4 per bin
    assert torch.allclose(m[0], torch.tensor([[0.5, 0.25]] * 3), atol=1e-6)
    # r = [0.5, 1]: component 0 counts half (soft weights; a threshold of 0.5 would drop it)
    theta_w2 = torch.tensor([[1.0, 2.0]])
    m2 = training_mask(out, W, theta_w2, torch.tensor([0]))
    expected = torch.tensor([(0.5 + 1) / 2, (0.5 + 3) / 4])  # soft weights, not a threshold
    assert torch.allclose(m2[0], expected.expand(3, 2), atol=1e-6)


def _interp(n_freq: int = 5, n_classes: int = 2) -> Interpreter:
    torch.manual_seed(0)
    # softplus: every component active (a ReLU psi this small can leave one alive, and a mask
    # of one component is all ones, with no gradient to theta)
    psi = Psi(LinearClassifier.map_channels, K, PsiConfig(hidden=8, n_layers=1,
                                                          activation="softplus"))
    theta = Theta(K, n_classes, ThetaConfig(hidden=4))
    clf = LinearClassifier([0.3, -0.3])
    from l2i.config import FeaturesConfig

    features = FeaturesConfig(sample_rate=8000, n_fft=8, win_ms=1.0, hop_ms=0.5,
                              n_mels=4)
    assert features.n_freq == n_freq
    return Interpreter(clf, psi, theta, torch.rand(n_freq, K), features,
                       [str(i) for i in range(n_classes)])


def _batch(n: int = 3, seed: int = 0) -> dict:
    wavs = np.random.default_rng(seed).uniform(-1, 1, (n, 64)).astype(np.float32)
    return WaveSplit(wavs, np.arange(n) % 2).__getitems__(list(range(n)))


def test_zero_weights_leave_the_old_loss_exactly():
    interp = _interp()
    batch = _batch()
    old, o = L2IModule(interp, L2ILossConfig(), TrainerConfig()).shared_step(batch, False)
    assert set(old) == {"loss", "rec_mse", "sparsity", "fidelity"}
    ref = l2i_loss(o["recon"], o["target"], o["H"], o["theta_logits"], o["logits"],
                   L2ILossConfig())
    assert old["loss"].item() == ref["loss"].item()  # bit for bit
    cfg = L2ILossConfig(faith_in=2.0, faith_out=0.5, mask_l1=3.0)
    new, _ = L2IModule(interp, cfg, TrainerConfig()).shared_step(batch, False)
    assert new["loss"].item() == pytest.approx(
        old["loss"].item() + 2 * new["faith_in"].item() + 0.5 * new["faith_out"].item()
        + 3 * new["mask_l1"].item(), rel=1e-6)


def test_faith_gradients_reach_psi_and_theta_not_the_classifier():
    interp = _interp()
    cfg = L2ILossConfig(alpha=0.0, beta=0.0, fid_weight=0.0, faith_in=1.0, faith_out=1.0,
                        mask_l1=1.0)
    module = L2IModule(interp, cfg, TrainerConfig()).train()
    terms, _ = module.shared_step(_batch(), True)
    terms["loss"].backward()
    psi_grad = sum(float(p.grad.abs().sum()) for p in interp.psi.parameters()
                   if p.grad is not None)
    assert psi_grad > 0
    assert interp.theta.linear.weight.grad is not None
    assert float(interp.theta.linear.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in interp.classifier.parameters())


def test_faith_psi_false_trains_theta_only_with_the_same_terms():
    interp = _interp()
    batch = _batch()
    kw = dict(alpha=0.0, beta=0.0, fid_weight=0.0, faith_in=1.0, faith_out=1.0, mask_l1=1.0)
    both, _ = L2IModule(interp, L2ILossConfig(**kw), TrainerConfig()).shared_step(batch, True)
    interp.zero_grad()
    module = L2IModule(interp, L2ILossConfig(**kw, faith_psi=False), TrainerConfig()).train()
    terms, _ = module.shared_step(batch, True)
    # the same values (H is only detached), but the gradient stops at psi's output
    for k in ("faith_in", "faith_out", "mask_l1"):
        assert terms[k].item() == pytest.approx(both[k].item(), rel=1e-6)
    terms["loss"].backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in interp.psi.parameters())
    assert float(interp.theta.linear.weight.grad.abs().sum()) > 0
    att = [p for n, p in interp.theta.named_parameters() if not n.startswith("linear")]
    assert att and any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in att)


def test_negative_faith_weight_is_a_config_error():
    with pytest.raises(ConfigError, match="faith_out"):
        L2IModule(_interp(), L2ILossConfig(faith_out=-1.0), TrainerConfig())


def test_code_classifier_with_the_cache_asks_for_cache_maps_false():
    interp = _interp()
    interp.classifier.needs_phase = True
    module = L2IModule(interp, L2ILossConfig(faith_in=1.0), TrainerConfig())
    batch = _batch()
    reduced = interp.psi.reduce(interp.classify(torch.rand(3, 17, 5))[1])
    cached = {"reduced": reduced, "logits": torch.zeros(3, 2),
              "target": torch.rand(3, 17, 5), "label": batch["label"]}
    with pytest.raises(ConfigError, match="cache_maps false"):
        module.shared_step(cached, False)  # no audio in the batch: no phase
    # raw batches carry the phase, cached ones their audio: both work
    terms, _ = module.shared_step(batch, False)
    assert torch.isfinite(terms["faith_in"])
    terms, _ = module.shared_step({**cached, "audio": batch["wav"]}, False)
    assert torch.isfinite(terms["faith_in"])


def test_train_with_faith_terms_end_to_end(artefacts_faith, tmp_path):
    from l2i.config import L2IRecipe, load_config
    from l2i.training.interpreter import train_interpreter

    art = artefacts_faith
    cfg = load_config(L2IRecipe, art["recipe"], {
        "data_folder": str(art["data"]), "classifier_ckpt": str(art["clf"]),
        "nmf": str(art["nmf"]), "output_folder": str(tmp_path / "run"), "trainer.epochs": 1,
        "loss.faith_in": 1.0, "loss.faith_out": 1.0, "loss.mask_l1": 0.5})
    path = train_interpreter(cfg)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["cache"] and 0.0 <= m["valid/fid_top1"] <= 1.0
    rec = torch.load(path, weights_only=True)
    assert rec["loss"]["faith_in"] == 1.0 and rec["loss"]["mask_l1"] == 0.5


@pytest.fixture
def artefacts_faith(tmp_path, tiny_dataset, tiny_features):
    from l2i.config import ClassifierModelConfig
    from l2i.models import build_classifier, save_classifier
    from l2i.nmf import save_dictionary

    torch.manual_seed(0)
    model_cfg = ClassifierModelConfig(arch="conv2d", width=2, embed_dim=8, dropout=0.0)
    clf = build_classifier(model_cfg, tiny_features, 8)
    save_classifier(tmp_path / "classifier.ckpt", clf, model_cfg, tiny_features,
                    [f"class{i}" for i in range(8)])
    save_dictionary(tmp_path / "nmf.pt", torch.rand(tiny_features.n_freq, 6), tiny_features)
    (tmp_path / "l2i.yaml").write_text(
        "data: {format: esc50, train_folds: [1, 2], valid_folds: [3], test_folds: [4], "
        "duration_s: 1.0}\ntrainer: {epochs: 1, batch_size: 8, lr: 0.01, device: cpu, "
        "progress: false, seed: 0}\npsi: {hidden: 16, n_layers: 1, dropout: 0.0}\n"
        "theta: {hidden: 8}\n")
    return {"clf": tmp_path / "classifier.ckpt", "nmf": tmp_path / "nmf.pt",
            "recipe": tmp_path / "l2i.yaml", "data": tiny_dataset}


def test_faith_clips_uses_the_first_clips_of_the_batch():
    interp = _interp()
    batch = _batch(4)
    full = L2IModule(interp, L2ILossConfig(faith_in=1.0, faith_out=1.0), TrainerConfig())
    part = L2IModule(interp, L2ILossConfig(faith_in=1.0, faith_out=1.0, faith_clips=2),
                     TrainerConfig())
    first = {k: v[:2] for k, v in batch.items()}
    a, _ = part.shared_step(batch, False)
    b, _ = full.shared_step(first, False)
    assert a["faith_in"].item() == pytest.approx(b["faith_in"].item(), rel=1e-5)
    assert a["faith_out"].item() == pytest.approx(b["faith_out"].item(), rel=1e-5)
    with pytest.raises(ConfigError, match="faith_clips"):
        L2IModule(interp, L2ILossConfig(faith_clips=-1), TrainerConfig())
