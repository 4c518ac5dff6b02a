"""captum gradient explainers on every classifier kind l2i has (conv2d, CNN14 width-reduced, a
classifier given as code: gradients through the inverse STFT and the resampler)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from l2i.config import ClassifierModelConfig, FeaturesConfig
from l2i.errors import ConfigError, L2IError
from l2i.explainers import as_spec, build_baseline
from l2i.explainers.gradient import (
    GradCAMExplainer,
    IntegratedGradientsExplainer,
    SmoothGradExplainer,
    cam_to_stft,
    default_layer,
)
from l2i.models import build_classifier
from l2i.models.cnn14 import CNN14

FEAT = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32)


def classifier(arch: str) -> nn.Module:
    torch.manual_seed(0)
    if arch == "code":  # a 1-D conv net on 16 kHz waveforms, hooked (tests/custom_models.py)
        from pathlib import Path

        from l2i.config import ClassifierSpec
        from l2i.models.hooked import build_hooked

        models = Path(__file__).resolve().parents[1] / "custom_models.py"
        spec = ClassifierSpec(module=f"{models}:build_wave_conv1d", sample_rate=16000,
                              layers=["convs.1", "convs.3"])
        return build_hooked(spec, FEAT, (0.5, 1.0)).eval().requires_grad_(False)
    if arch == "cnn14":
        model = CNN14(FEAT, 3, channels=(4, 4, 8, 8, 8, 8), embed_dim=8)
    else:
        model = build_classifier(ClassifierModelConfig(arch="conv2d", width=4, embed_dim=8),
                                 FEAT, 3)
    return model.eval().requires_grad_(False)


def wavs(n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.3 * torch.randn(n, 4000, generator=g)  # 0.5 s


@pytest.mark.parametrize("arch", ["conv2d", "cnn14", "code"])
def test_every_gradient_method_on_every_classifier(arch):
    clf = classifier(arch)
    spec = as_spec(wavs(), FEAT)
    methods = [build_baseline("saliency", clf, FEAT), build_baseline("gradcam", clf, FEAT),
               IntegratedGradientsExplainer(clf, FEAT, n_steps=4),
               SmoothGradExplainer(clf, FEAT, n_samples=2)]
    for ex in methods:
        a = ex.attribute(spec, target=1)
        assert a.mask.shape == spec.mag.shape, ex.name
        assert torch.isfinite(a.mask).all(), ex.name
        assert a.mask.min() >= 0 and a.mask.max() <= 1, ex.name
        peak = a.mask.reshape(2, -1).amax(dim=1)
        # per-clip max normalisation (Grad-CAM's ReLU may leave nothing: an all-zero mask)
        assert all(abs(v - 1) < 1e-5 or (ex.name == "gradcam" and v == 0) for v in peak.tolist())
    # batched = one clip at a time (Saliency is deterministic)
    sal = build_baseline("saliency", clf, FEAT)
    both = sal.attribute(spec, target=[0, 2]).mask
    one = sal.attribute(as_spec(wavs()[1:], FEAT), target=2).mask
    assert torch.allclose(both[1], one[0], atol=1e-5)
    # the classifier's weights got no gradients
    assert all(p.grad is None for p in clf.parameters())


def test_gradcam_layer_by_name_and_mapping_to_the_stft_grid():
    clf = classifier("conv2d")
    assert default_layer(clf) == "block4" and default_layer(classifier("cnn14")) == "conv_block6"
    ex = GradCAMExplainer(clf, FEAT, layer="block3")
    assert ex.layer is clf.block3
    with pytest.raises(ConfigError, match="not a module.*block1"):
        GradCAMExplainer(clf, FEAT, layer="block9")
    # a map constant over mel bands stays constant on the STFT bins it covers
    cam = torch.ones(1, 3, 4)
    up = cam_to_stft(cam, clf, 10, FEAT.n_freq)
    assert up.shape == (1, 10, FEAT.n_freq)
    covered = clf.frontend.fb.sum(dim=1) > 0
    assert torch.allclose(up[0][:, covered], torch.ones(10, int(covered.sum())))


def test_non_differentiable_front_end_is_a_clear_error():
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(FEAT.n_freq, 2)

        def forward(self, mag, phase=None, length=None):
            x = torch.from_numpy(mag.detach().numpy())  # features computed outside autograd
            return self.lin(x.mean(dim=1)).detach(), {}

    ex = build_baseline("saliency", Detached(), FEAT)
    with pytest.raises(L2IError, match="front end is differentiable"):
        ex.attribute(wavs(1), target=0)
