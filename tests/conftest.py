"""Shared fixtures: a tiny synthetic dataset (made once per test session) and matching features.

``tiny_dataset``: 8 classes x 4 clips, 1 s at 8 kHz, ESC-50 layout, 4 folds (one clip of each
class per fold), so ``train_folds [1, 2] / valid_folds [3] / test_folds [4]`` gives 16 / 8 / 8
clips. Treat it as read-only (copy it into ``tmp_path`` to modify it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from l2i.config import DataConfig, FeaturesConfig, SynthRecipe
from l2i.synthetic import synthesize_dataset

TINY_SR = 8000
TINY_CLASSES = 8
TINY_PER_CLASS = 4
TINY_FOLDS = 4
TINY_DURATION_S = 1.0


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Folder of a tiny synthetic ESC-50-layout dataset (8 classes x 4 clips, 1 s, 8 kHz)."""
    out = tmp_path_factory.mktemp("tiny_synth")
    synthesize_dataset(SynthRecipe(output_folder=str(out), n_per_class=TINY_PER_CLASS,
                                   n_folds=TINY_FOLDS, seed=0, sample_rate=TINY_SR,
                                   duration_s=TINY_DURATION_S, n_classes=TINY_CLASSES))
    return out


@pytest.fixture(scope="session")
def tiny_features() -> FeaturesConfig:
    """STFT settings matching ``tiny_dataset``: 8 kHz, n_fft 256 (129 bins), 32 mels."""
    return FeaturesConfig(sample_rate=TINY_SR, n_fft=256, n_mels=32)


@pytest.fixture
def tiny_data_config() -> DataConfig:
    """DataConfig for ``tiny_dataset``: folds 1,2 / 3 / 4, 1 s clips."""
    return DataConfig(format="esc50", train_folds=[1, 2], valid_folds=[3], test_folds=[4],
                      duration_s=TINY_DURATION_S)


def random_interpreter(features: FeaturesConfig, class_names: list[str], n_components: int = 6,
                       seed: int = 0):
    """An untrained but complete :class:`l2i.interpreter.Interpreter`: a narrow conv2d
    classifier, a small psi/theta and a random dictionary ``W (F, n_components)``."""
    import torch

    from l2i.config import ClassifierModelConfig, PsiConfig, ThetaConfig
    from l2i.interpreter import Interpreter
    from l2i.models import build_classifier, classifier_dict, default_maps
    from l2i.models.psi import Psi
    from l2i.models.theta import Theta

    torch.manual_seed(seed)
    mc = ClassifierModelConfig(arch="conv2d", width=8, embed_dim=16)
    clf = build_classifier(mc, features, len(class_names))
    psi = Psi(clf.map_channels, n_components,
              PsiConfig(maps=default_maps(clf), hidden=16, n_layers=1))  # as training builds it
    theta = Theta(n_components, len(class_names), ThetaConfig(hidden=8))
    W = torch.rand(features.n_freq, n_components)
    return Interpreter(clf, psi, theta, W, features, class_names,
                       classifier_record=classifier_dict(clf, mc, features, class_names))
