"""The explainer protocol on a toy classifier whose answer is known.

The toy classifier scores class 0 with the mean magnitude inside a fixed time-frequency region
R and class 1 with the mean outside it, so "what it listens to" for class 0 is exactly R. An
oracle explainer returning R must localise the event perfectly (ROC-AUC 1), keep the decision
when R alone is kept (AI 100, Fid-In 1) and lose it when R is removed, and beat every baseline.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from l2i import features as feats
from l2i.config import FeaturesConfig
from l2i.errors import DataError
from l2i.explainers import (
    Attribution,
    MaskExplainer,
    SpecBatch,
    as_spec,
    build_baseline,
    class_probs,
    reclassify,
)
from l2i.scoring import aggregate, score_explainers

FEAT = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=16)
N = 4000  # 0.5 s
T = feats.n_frames(N, FEAT)
BAND = (20, 40)  # STFT bins of the event (625-1250 Hz)
SPAN = (5, 15)  # frames of the event


def region() -> torch.Tensor:
    r = torch.zeros(T, FEAT.n_freq, dtype=torch.bool)
    r[SPAN[0]:SPAN[1], BAND[0]:BAND[1]] = True
    return r  # (T, F)


class Toy(nn.Module):
    """logits = (k * mean |X| in R, k * mean |X| outside R); phase/length recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(4.0), requires_grad=False)
        self.register_buffer("r", region().float())
        self.calls: list[tuple[bool, int | None]] = []

    def forward(self, mag, phase=None, length=None):
        self.calls.append((phase is not None, length))
        inside = (mag * self.r).sum(dim=(1, 2)) / self.r.sum()  # (B,)
        outside = (mag * (1 - self.r)).sum(dim=(1, 2)) / (1 - self.r).sum()  # (B,)
        return torch.stack([self.k * inside, self.k * outside], dim=1), {}


class Oracle(MaskExplainer):
    name = "oracle"

    def explain_spec(self, spec, target, **kwargs):
        return region().float().expand_as(spec.mag).to(spec.mag.device), {}


def clips(n: int = 6, seed: int = 0) -> np.ndarray:
    """Weak noise everywhere plus a strong tone burst inside R. ``(n, N)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) / FEAT.sample_rate
    hop = FEAT.hop_length
    env = np.zeros(N)
    env[SPAN[0] * hop + FEAT.win_length:(SPAN[1] - 1) * hop] = 1.0
    f0 = (BAND[0] + BAND[1]) / 2 * FEAT.sample_rate / FEAT.n_fft
    out = [0.01 * rng.standard_normal(N) + 0.5 * env * np.sin(2 * np.pi * (f0 + 20 * i) * t)
           for i in range(n)]
    return np.asarray(out, dtype=np.float32)


def truths(n: int) -> list[np.ndarray]:
    return [region().numpy() for _ in range(n)]


def test_reclassify_passes_phase_and_length_and_class_probs():
    toy = Toy()
    spec = as_spec(torch.from_numpy(clips(2)), FEAT)
    assert spec.phase is not None and spec.length == N and spec.mag.shape == (2, T, FEAT.n_freq)
    logits, _ = reclassify(toy, spec.mag, spec.phase, spec.length)
    assert toy.calls[-1] == (True, N)
    assert torch.allclose(class_probs(logits).sum(1), torch.ones(2))
    assert torch.allclose(class_probs(logits, "sigmoid"), torch.sigmoid(logits))
    # a (mag, phase) pair and a SpecBatch are accepted as they are
    same = as_spec((spec.mag, spec.phase), FEAT)
    assert torch.equal(same.mag, spec.mag) and same.length is None
    with pytest.raises(DataError, match="frequency bins"):
        as_spec(torch.zeros(1, 10, 7), FEAT)
    with pytest.raises(DataError, match="differ"):
        SpecBatch(torch.zeros(1, 3, 4), torch.zeros(1, 3, 5))


def test_attribute_resolves_targets_and_clamps():
    toy = Toy()
    ex = Oracle(toy, FEAT)
    wav = torch.from_numpy(clips(3))
    a = ex.attribute(wav)
    assert isinstance(a, Attribution) and a.mask.shape == (3, T, FEAT.n_freq)
    assert a.target.tolist() == [0, 0, 0]  # the toy's prediction: the event is loud
    assert ex.attribute(wav, target=1).target.tolist() == [1, 1, 1]
    assert ex.attribute(wav, target=[1, 0, 1]).target.tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="2 targets for a batch of 3"):
        ex.attribute(wav, target=[1, 0])


def test_oracle_localises_perfectly_and_beats_every_baseline():
    toy = Toy()
    wavs = clips(6)
    explainers = [Oracle(toy, FEAT)] + [build_baseline(n, toy, FEAT, seed=1)
                                        for n in ("energy", "ones", "random", "saliency")]
    res = score_explainers(explainers, wavs, batch_size=4, truth_masks=truths(6), progress=False)
    labels = np.zeros(6, dtype=np.int64)
    m = {name: aggregate(r, labels) for name, r in res.items()}
    assert m["oracle"]["loc_auc"] == pytest.approx(1.0)
    assert m["oracle"]["AI"] == 100.0 and m["oracle"]["Fid-In"] == 1.0
    assert m["oracle"]["AD"] == 0.0
    for base in ("energy", "ones", "random"):
        assert m["oracle"]["loc_auc"] > m[base]["loc_auc"] + 0.05, base
        assert m["oracle"]["FF"] > m[base]["FF"] + 0.05, base
    assert m["ones"]["loc_auc"] == pytest.approx(0.5)
    # the toy's class-0 score is linear in R: its gradient is R itself (captum finds it)
    assert m["saliency"]["loc_auc"] == pytest.approx(1.0)
    # the random baseline has the oracle's mean mask per clip
    rnd = res["random"].columns["mask_mean"]
    assert np.allclose(rnd, res["oracle"].columns["mask_mean"], atol=0.02)


def test_trivial_baselines():
    toy = Toy()
    spec = as_spec(torch.from_numpy(clips(2)), FEAT)
    ones = build_baseline("ones", toy, FEAT).attribute(spec).mask
    assert torch.equal(ones, torch.ones_like(spec.mag))
    energy = build_baseline("energy", toy, FEAT).attribute(spec).mask
    assert torch.allclose(energy, spec.mag / spec.mag.amax(dim=(1, 2), keepdim=True))
    r1 = build_baseline("random", toy, FEAT, seed=5)
    a = r1.attribute(spec, mean=torch.tensor([0.1, 0.8])).mask
    assert a.min() >= 0 and a.max() <= 1
    assert a[0].mean() == pytest.approx(0.1, abs=0.01) and a[1].mean() == pytest.approx(0.8,
                                                                                          abs=0.01)
    b = build_baseline("random", toy, FEAT, seed=5).attribute(spec, mean=torch.tensor([0.1, 0.8]))
    assert torch.equal(a, b.mask)  # seeded
    assert build_baseline("random", toy, FEAT).attribute(spec).mask.mean() == pytest.approx(
        0.5, abs=0.01)
