"""CNN14: SpeechBrain layout (names, parameter count), map shapes on a tiny input."""

from __future__ import annotations

import torch

from l2i.config import ClassifierModelConfig, FeaturesConfig
from l2i.models import build_classifier
from l2i.models.cnn14 import CNN14

FEAT = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32)
SB_PARAMS_80_MELS = 75_477_472  # SpeechBrain Cnn14(mel_bins=80) embedding model


def test_cnn14_layout_shapes_and_size():
    torch.manual_seed(0)
    model = build_classifier(ClassifierModelConfig(arch="cnn14", embed_dim=2048), FEAT, 5)
    assert isinstance(model, CNN14)
    assert model.map_names == ("block3", "block4", "block5", "block6")
    assert model.map_channels == {"block3": 256, "block4": 512, "block5": 1024, "block6": 2048}
    keys = set(model.state_dict())
    assert {"norm0.running_mean", "conv_block6.conv2.weight", "conv_block1.norm2.weight",
            "classifier.weight", "classifier.bias"} <= keys
    assert len(keys) == 77 + 2  # the 77 SpeechBrain keys + Linear head
    n = sum(p.numel() for p in model.parameters())
    bn0_diff = 2 * (80 - 32)  # norm0 affine parameters scale with the mel count
    assert n == SB_PARAMS_80_MELS - bn0_diff + 2048 * 5 + 5
    model.eval()
    with torch.no_grad():
        logits, maps = model(torch.rand(2, 64, FEAT.n_freq))  # (B, T, F)
    assert logits.shape == (2, 5)
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "block3": (2, 256, 8, 4), "block4": (2, 512, 4, 2), "block5": (2, 1024, 2, 1),
        "block6": (2, 2048, 2, 1)}  # T 64 and 32 mels halved per block, block6 not pooled


def test_cnn14_small_embedding_head():
    model = CNN14(FEAT, 3, embed_dim=8, channels=(2, 2, 4, 4, 8, 16)).eval()
    assert model.classifier.in_features == 8 and model.fc1[0].in_features == 16
    with torch.no_grad():
        logits, _ = model(torch.rand(1, 40, FEAT.n_freq))
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()
